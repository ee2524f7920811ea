// Warp and block reductions shared by the norm, pooling-free reduction and loss kernels
// (batch_norm.cu, layer_norm.cu, group_norm.cu, cross_entropy.cu, linear.cu).
//
// Contracts: every block reduction must be called by ALL threads of the block (it syncs), the
// block size must be a multiple of 32 and at most 1024, and `smem` must hold 32 floats (block_sum,
// block_max) or 3 * 32 floats (block_welford). Results are returned to every thread.
#pragma once
#include "common.cuh"

#define FULL_MASK 0xffffffffu
#define NEG_INF_F __int_as_float((int)0xff800000u)

// ---- sums / maxima over 1-D or 2-D blocks (warp_reduce_sum/_max come from common.cuh) --------
// Thread index and warp count for 1-D or 2-D blocks (common.cuh's block_reduce_sum is 1-D only).
__device__ __forceinline__ int flat_thread_id() { return threadIdx.x + threadIdx.y * blockDim.x; }

__device__ __forceinline__ int warps_per_block() { return (blockDim.x * blockDim.y) >> 5; }

// Block-wide sum: each warp reduces with shuffles, lane 0 parks its total in smem[warp], then
// every warp re-reduces the (at most 32) parked totals so all threads hold the block total.
__device__ __forceinline__ float block_sum(float v, float* smem) {
  const int tid = flat_thread_id(), lane = tid & 31, warp = tid >> 5;
  v = warp_reduce_sum(v);
  __syncthreads();                      // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < warps_per_block() ? smem[lane] : 0.0f;
  return warp_reduce_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* smem) {
  const int tid = flat_thread_id(), lane = tid & 31, warp = tid >> 5;
  v = warp_reduce_max(v);
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < warps_per_block() ? smem[lane] : NEG_INF_F;
  return warp_reduce_max(v);
}

// Row reductions for kernels that give each row either one warp (blockDim.x == 32, blockDim.y
// rows per block) or the whole block (blockDim.y == 1). The branch is uniform over the block.
__device__ __forceinline__ float row_sum(float v, float* smem) {
  return blockDim.x == 32 ? warp_reduce_sum(v) : block_sum(v, smem);
}

__device__ __forceinline__ float row_max(float v, float* smem) {
  return blockDim.x == 32 ? warp_reduce_max(v) : block_max(v, smem);
}

// Element offset of the j-th value of channel c of an (N, C, HW) contiguous tensor (the per-channel
// reductions of batch_norm.cu and conv_bn_relu.cu).
__device__ __forceinline__ long long bn_offset(long long j, int c, int C, long long HW) {
  const long long n = j / HW;
  return (n * C + c) * HW + (j - n * HW);
}

// ---- Welford / Chan statistics ---------------------------------------------------------------
// (count, mean, M2 = sum of squared deviations). Counts are floats: exact below 2^24, which the
// launchers guarantee per thread and per block.
struct Welford {
  float n, mean, m2;
};

__device__ __forceinline__ Welford welford_empty() { return Welford{0.0f, 0.0f, 0.0f}; }

// Add one value (Welford's update).
__device__ __forceinline__ void welford_push(Welford& a, float v) {
  a.n += 1.0f;
  const float d = v - a.mean;
  a.mean += d / a.n;
  a.m2 += d * (v - a.mean);
}

// Write partial k of per-(channel, chunk) statistics (batch_norm.cu's layout, merged by its
// batch_norm_fwd_finalize_stats).
__device__ __forceinline__ void welford_store(const Welford& a, float* part_n, float* part_mean, float* part_m2,
                                              long long k) {
  part_n[k] = a.n;
  part_mean[k] = a.mean;
  part_m2[k] = a.m2;
}

// Merge two partial statistics (Chan et al.); empty partials are neutral.
__device__ __forceinline__ Welford welford_merge(Welford a, Welford b) {
  const float n = a.n + b.n;
  if (n == 0.0f) return a;
  const float wb = b.n / n;
  const float d = b.mean - a.mean;
  Welford r;
  r.n = n;
  r.mean = a.mean + d * wb;
  r.m2 = a.m2 + b.m2 + d * d * a.n * wb;
  return r;
}

// Merge across a warp with shuffles; lane 0 ends with the warp's statistics.
__device__ __forceinline__ Welford warp_welford(Welford a) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Welford b;
    b.n = __shfl_down_sync(FULL_MASK, a.n, o);
    b.mean = __shfl_down_sync(FULL_MASK, a.mean, o);
    b.m2 = __shfl_down_sync(FULL_MASK, a.m2, o);
    a = welford_merge(a, b);
  }
  return a;
}

// Merge across the block; every thread gets the block's statistics. smem: 3 * 32 floats.
__device__ __forceinline__ Welford block_welford(Welford a, float* smem) {
  const int tid = flat_thread_id(), lane = tid & 31, warp = tid >> 5;
  a = warp_welford(a);
  __syncthreads();
  if (lane == 0) {
    smem[warp] = a.n;
    smem[32 + warp] = a.mean;
    smem[64 + warp] = a.m2;
  }
  __syncthreads();
  if (warp == 0) {
    Welford b = welford_empty();
    if (lane < warps_per_block()) b = Welford{smem[lane], smem[32 + lane], smem[64 + lane]};
    b = warp_welford(b);
    if (lane == 0) {
      smem[0] = b.n;
      smem[32] = b.mean;
      smem[64] = b.m2;
    }
  }
  __syncthreads();
  return Welford{smem[0], smem[32], smem[64]};
}
