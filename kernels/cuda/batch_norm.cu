// BatchNorm over (N, H*W) per channel, optionally fused with ReLU; forward (train and eval) and
// backward. x is NCHW contiguous, viewed as (N, C, HW) (HW = 1 for 2-D (N, C) inputs).
//
// Train forward = three launches: per-(channel, chunk) Welford partials, one warp per channel to
// merge them (Chan) into mean/invstd and update the running stats, then one fused normalize +
// affine + ReLU pass. Eval forward = a C-length stats kernel + the same fused pass. Backward =
// per-(channel, chunk) partial sums of g and g*(x-mean) (g = dy, 0 where y <= 0 when relu), one
// warp per channel to finish them, then one elementwise dx pass.
// Channel c's values are j in [0, M), M = N*HW, at offset (j / HW * C + c) * HW + j % HW; a
// chunk is a contiguous range of j, so each block reads runs of HW contiguous elements.
// Parameters, statistics and partials are float32 (weight/bias given as float32 by the
// launcher, ones/zeros when absent). Specialisation: -DSCALAR_T=float|f16_t|bf16_t.
#include "scalar.cuh"
#include "reduce.cuh"

// Channel of flat element i of an (N, C, HW) tensor; 32-bit division when the tensor allows.
__device__ __forceinline__ int bn_channel(long long i, long long HW, int C, bool small) {
  if (small) return (int)(((unsigned)i / (unsigned)HW) % (unsigned)C);
  return (int)((i / HW) % C);
}

// Per-(channel, chunk) Welford statistics of x.
// Grid: (C, B) blocks; block (c, b) reduces j in [b*chunk, min((b+1)*chunk, M)) of channel c and
// writes partial c*B + b. Block: 1-D, a multiple of 32 threads (thread t takes j = start+t+k*blockDim).
extern "C" __global__ void batch_norm_fwd_welford_partials(
    const scalar_t* __restrict__ x, float* __restrict__ part_n, float* __restrict__ part_mean,
    float* __restrict__ part_m2, int C, long long HW, long long M, long long chunk) {
  __shared__ float smem[3 * 32];
  const int c = blockIdx.x, b = blockIdx.y, B = gridDim.y;
  const long long start = (long long)b * chunk;
  const long long end = min(start + chunk, M);
  Welford a = welford_empty();
  for (long long j = start + threadIdx.x; j < end; j += blockDim.x) welford_push(a, load(x, bn_offset(j, c, C, HW)));
  a = block_welford(a, smem);
  if (threadIdx.x == 0) welford_store(a, part_n, part_mean, part_m2, (long long)c * B + b);
}

// Merge the B partials of each channel (Chan), write mean and invstd = 1/sqrt(var + eps) (biased
// var) and, when update_running, blend running_mean/running_var with momentum (unbiased var).
// Grid: ceil(C / warps per block) blocks of 1-D warps; warp w of block k owns channel
// k*(blockDim/32) + w; lane l merges partials l, l+32, ... then the warp merges with shuffles.
extern "C" __global__ void batch_norm_fwd_finalize_stats(
    const float* __restrict__ part_n, const float* __restrict__ part_mean, const float* __restrict__ part_m2,
    int B, int C, float eps, float momentum, int update_running, float* __restrict__ mean,
    float* __restrict__ invstd, float* __restrict__ running_mean, float* __restrict__ running_var) {
  const int lane = threadIdx.x & 31;
  const int c = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (c >= C) return;                              // whole warps leave together
  Welford a = welford_empty();
  for (int b = lane; b < B; b += 32) {
    const long long k = (long long)c * B + b;
    a = welford_merge(a, Welford{part_n[k], part_mean[k], part_m2[k]});
  }
  a = warp_welford(a);
  if (lane == 0) {
    const float var = a.m2 / a.n;
    mean[c] = a.mean;
    invstd[c] = rsqrtf(var + eps);
    if (update_running) {
      const float unbiased = a.m2 / (a.n - 1.0f);
      running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * a.mean;
      running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
    }
  }
}

// Eval statistics: mean = running_mean, invstd = 1/sqrt(running_var + eps).
// Grid: 1-D, one thread per channel.
extern "C" __global__ void batch_norm_eval_stats(
    const float* __restrict__ running_mean, const float* __restrict__ running_var, int C, float eps,
    float* __restrict__ mean, float* __restrict__ invstd) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  mean[c] = running_mean[c];
  invstd[c] = rsqrtf(running_var[c] + eps);
}

// y = (x - mean[c]) * (invstd[c] * weight[c]) + bias[c], then max(y, 0) when relu.
// Grid: 1-D grid-stride loop, one thread per element of x.
extern "C" __global__ void batch_norm_fwd_normalize_affine_relu(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ y, const float* __restrict__ mean,
    const float* __restrict__ invstd, const float* __restrict__ weight, const float* __restrict__ bias,
    long long total, long long HW, int C, int relu) {
  const bool small = total <= 0x7fffffffLL;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int c = bn_channel(i, HW, C, small);
    float v = (load(x, i) - mean[c]) * (invstd[c] * weight[c]) + bias[c];
    if (relu && v < 0.0f) v = 0.0f;                // NaN propagates, as max(y, 0)
    store(y, i, v);
  }
}

// Backward partial sums per (channel, chunk): sum_g = sum g, sum_gx = sum g * (x - mean[c]) with
// g = dy, 0 where y <= 0 when relu (NaN y passes dy, as torch's relu backward).
// Grid: (C, B) blocks, block (c, b) reduces chunk b of channel c into partial c*B + b (1-D blocks,
// a multiple of 32 threads).
extern "C" __global__ void batch_norm_bwd_channel_partial_sums(
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
    const float* __restrict__ mean, float* __restrict__ part_g, float* __restrict__ part_gx, int C,
    long long HW, long long M, long long chunk, int relu) {
  __shared__ float smem[32];
  const int c = blockIdx.x, b = blockIdx.y, B = gridDim.y;
  const long long start = (long long)b * chunk;
  const long long end = min(start + chunk, M);
  const float mu = mean[c];
  float sg = 0.0f, sgx = 0.0f;
  for (long long j = start + threadIdx.x; j < end; j += blockDim.x) {
    const long long o = bn_offset(j, c, C, HW);
    float g = load(dy, o);
    if (relu && load(y, o) <= 0.0f) g = 0.0f;      // NaN y passes dy, as torch
    sg += g;
    sgx += g * (load(x, o) - mu);
  }
  sg = block_sum(sg, smem);
  sgx = block_sum(sgx, smem);
  if (threadIdx.x == 0) {
    const long long k = (long long)c * B + b;
    part_g[k] = sg;
    part_gx[k] = sgx;
  }
}

// Finish the backward sums: dbias[c] = sum_g, dweight[c] = invstd[c] * sum_gx.
// Grid: ceil(C / warps per block) blocks; one warp per channel, lanes stride over the B partials.
extern "C" __global__ void batch_norm_bwd_finalize_sums(
    const float* __restrict__ part_g, const float* __restrict__ part_gx, const float* __restrict__ invstd,
    int B, int C, float* __restrict__ dbias, float* __restrict__ dweight) {
  const int lane = threadIdx.x & 31;
  const int c = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (c >= C) return;
  float sg = 0.0f, sgx = 0.0f;
  for (int b = lane; b < B; b += 32) {
    sg += part_g[(long long)c * B + b];
    sgx += part_gx[(long long)c * B + b];
  }
  sg = warp_reduce_sum(sg);
  sgx = warp_reduce_sum(sgx);
  if (lane == 0) {
    dbias[c] = sg;
    dweight[c] = sgx * invstd[c];
  }
}

// dx. training: dx = weight*invstd * (g - dbias/M - xhat * dweight/M), xhat = (x-mean)*invstd;
// eval: dx = g * weight * invstd (dbias/dweight unused, may be any buffer). store_g: also write the
// masked g to g_out (the fused conv block's residual gradient, in the same pass; else unused).
// Grid: 1-D grid-stride loop, one thread per element of x.
extern "C" __global__ void batch_norm_bwd_dx(
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
    const float* __restrict__ mean, const float* __restrict__ invstd, const float* __restrict__ weight,
    const float* __restrict__ dbias, const float* __restrict__ dweight, scalar_t* __restrict__ dx,
    long long total, long long HW, int C, float inv_count, int relu, int training, scalar_t* __restrict__ g_out,
    int store_g) {
  const bool small = total <= 0x7fffffffLL;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int c = bn_channel(i, HW, C, small);
    float g = load(dy, i);
    if (relu && load(y, i) <= 0.0f) g = 0.0f;      // NaN y passes dy, as torch
    const float is = invstd[c];
    float v;
    if (training) {
      const float xhat = (load(x, i) - mean[c]) * is;
      v = (g - dbias[c] * inv_count - xhat * (dweight[c] * inv_count)) * (is * weight[c]);
    } else {
      v = g * (is * weight[c]);
    }
    store(dx, i, v);
    if (store_g) store(g_out, i, g);
  }
}
