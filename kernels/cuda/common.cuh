// Device helpers shared by the CUDA C kernels of cnngpu (kernels/cuda/*.cu).
//
// Half-precision storage types are defined here rather than taken from cuda_fp16.h / cuda_bf16.h:
// NVRTC (which cupy.RawModule uses) only finds those headers when a CUDA toolkit include directory
// is configured, and these kernels must compile with none. Arithmetic is always done in float:
// load with to_float(), compute, store with from_float<T>(). Conversions use the hardware cvt
// instructions (round to nearest even).
//
// Stable interface (other op files include this): f16_t, bf16_t, to_float, from_float<T>,
// load_float, store_float, warp_reduce_sum, warp_reduce_max, block_reduce_sum, ceil_div, is_same_t,
// RowCached / fill_rows, sum_splits_at, EpTilePhase.
#pragma once

// 16-bit float storage. The bit pattern is the IEEE binary16 / bfloat16 value.
struct __align__(2) f16_t {
    unsigned short bits;
};
struct __align__(2) bf16_t {
    unsigned short bits;
};

template <typename A, typename B>
struct is_same_t {
    static constexpr bool value = false;
};
template <typename A>
struct is_same_t<A, A> {
    static constexpr bool value = true;
};

__host__ __device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// ---- conversions ------------------------------------------------------------------------------
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(double v) { return (float)v; }

__device__ __forceinline__ float to_float(f16_t v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

__device__ __forceinline__ float to_float(bf16_t v) {
    return __uint_as_float(((unsigned int)v.bits) << 16);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);

template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }

template <>
__device__ __forceinline__ double from_float<double>(float v) { return (double)v; }

template <>
__device__ __forceinline__ f16_t from_float<f16_t>(float v) {
    f16_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
    return h;
}

template <>
__device__ __forceinline__ bf16_t from_float<bf16_t>(float v) {
    bf16_t h;
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
#else
    // pre-Ampere: round to nearest even on the bit pattern; NaN stays a (quiet) NaN
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        h.bits = (unsigned short)((u >> 16) | 0x0040u);
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);
        h.bits = (unsigned short)(u >> 16);
    }
#endif
    return h;
}

template <typename T>
__device__ __forceinline__ float load_float(const T* p) { return to_float(*p); }

template <typename T>
__device__ __forceinline__ void store_float(T* p, float v) { *p = from_float<T>(v); }

// ---- reductions -------------------------------------------------------------------------------
__device__ __forceinline__ float warp_reduce_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_reduce_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum of v over the whole block; every thread gets the result. blockDim.x must be a multiple of
// 32 (at most 1024) and blockDim.y == blockDim.z == 1; `scratch` is __shared__ float[32]. Contains
// __syncthreads(), so every thread of the block must call it.
__device__ __forceinline__ float block_reduce_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_reduce_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (lane < nwarps) ? scratch[lane] : 0.0f;
    return warp_reduce_sum(v);
}

// ---- per-row state of an implicit-GEMM operand, kept in shared memory ---------------------------
// A loader that asks an operand functor (conv2d_igemm.cuh's interface) for the row state of every
// row it loads, on every slice, gets it from a per-block table filled once (fill_rows, before the
// main loop) through RowCached instead of decoding the row again. Op::RS must be a plain struct.
template <class Op>
struct RowCached : Op {
    const typename Op::RS* rows;  // [ROWS] in shared memory
    __device__ __forceinline__ typename Op::RS rstate(int row) const { return rows[row]; }
};

// table[row] = op.rstate(row) for row < ROWS, by the whole block, then a barrier (every thread of
// the block must call it).
template <int ROWS, class Op>
__device__ __forceinline__ RowCached<Op> fill_rows(const Op& op, typename Op::RS* table) {
    for (int row = threadIdx.x; row < ROWS; row += blockDim.x) table[row] = op.rstate(row);
    __syncthreads();
    return RowCached<Op>{op, table};
}

// Deterministic split-K: element i of the sum over s = 0..splits-1 (in this order) of the fp32
// partials ws[s * numel + i] (conv2d_bwd_sum_splits, and the fused block's conv_bn_relu.cu).
__device__ __forceinline__ float sum_splits_at(const float* __restrict__ ws, int splits, long long numel,
                                               long long i) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += ws[(long long)s * numel + i];
    return v;
}

// Implicit-GEMM epilogues with a block-wide phase (the fused BatchNorm statistics of
// conv2d_fwd_operands.cuh) declare `static constexpr bool TILE_PHASE = true` and tile_begin() /
// tile_end(), which the main loops (conv2d_igemm.cuh, conv2d_igemm_sm90.cuh) call from every thread
// around the stores; for every other epilogue this is false and nothing is called.
template <class E, class = void>
struct EpTilePhase {
    static constexpr bool value = false;
};
template <class E>
struct EpTilePhase<E, decltype(void(E::TILE_PHASE))> {
    static constexpr bool value = E::TILE_PHASE;
};
