// conv2d forward: y = conv(x, w) + b, y (N, K, P, Q) contiguous NCHW.
//
// Specialisation (compile-time defines, set by cnngpu/backends/cupy_backend/conv.py):
//   SCALAR_T  float | f16_t | bf16_t   storage type of x, w, b, y (fp32 accumulation always)
//   VEC_A, VEC_B  1, or 16 bytes / sizeof(SCALAR_T): elements per global load of the implicit
//             GEMM's operand A (x) and B (w) (launcher, conv.operand_vecs: NHWC x when C/groups is
//             a multiple of it; an NCHW x only for 1x1, stride-1, unpadded convs with H*W a multiple
//             of it, its w when C/groups*R*S is -- for fp16 / bf16 a scalar A with a 16-byte B is
//             the mixed cp.async ring of conv2d_igemm.cuh)
//
// Entry points:
//   conv2d_fwd_direct_4ch / _1ch   direct convolution, input halo tile per channel in shared
//                                  memory, 4 (or 1) output channels per thread; any x strides.
//   conv2d_fwd_implicit_gemm       implicit GEMM (M = N*P*Q pixels, N = K/groups, reduction
//                                  R*S*C/groups) on x in NHWC and w in (K, R, S, C/groups), or on
//                                  x contiguous NCHW read in place and w as (K, C/groups, R, S),
//                                  all contiguous (the launcher makes them so); bias fused; optional
//                                  deterministic split-K (partials summed by conv2d_bwd.cu's
//                                  conv2d_bwd_sum_splits).
//   conv2d_fwd_implicit_gemm_bn_relu (+ _narrow)  the same main loop with the fused block's
//                                  epilogue (conv2d_fwd_operands.cuh FwdBnEpilogue): eval
//                                  BN-folded bias + residual + ReLU; training y + statistics partials.
// Geometry: output pixel (p, q) reads input (p*sh - ph + r*dh, q*sw - pw + s*dw); ph, pw are the
// begin paddings and P, Q the output sizes from ConvGeometry (end padding is implied).
#include "conv2d_igemm.cuh"

// DIRECT_TILE: output tile of the direct kernel (DIRECT_TILE^2 pixels, one per thread of a
// DIRECT_THREADS block); -D defines from cupy_backend/_config.py CONV_DEFINES
#if !defined(DIRECT_TILE) || !defined(DIRECT_THREADS)
#error "DIRECT_TILE and DIRECT_THREADS are -D defines from cupy_backend/_config.py CONV_DEFINES"
#endif
static_assert(DIRECT_THREADS == DIRECT_TILE * DIRECT_TILE, "one thread per output pixel of the tile");

// ------------------------------------------------------------------------------------------------
// Direct convolution.
// Grid: x = output tiles of 16 x 16 pixels (tile_q fastest), y = groups * ceil(Kg / KB) (group
// major), z = batch n. Block: 256 threads; thread (ty, tx) = (tid / 16, tid % 16) owns output pixel
// (p0 + ty, q0 + tx) for KB consecutive output channels of the group.
// Dynamic shared memory: float[IH * IW] input tile (with halo, zero-padded) + float[KB * R * S].
// ------------------------------------------------------------------------------------------------
template <int KB>
__device__ __forceinline__ void conv2d_fwd_direct_impl(
    const T* __restrict__ x, long long sxn, long long sxc, long long sxh, long long sxw,
    const T* __restrict__ w, const T* __restrict__ bias, int has_bias, T* __restrict__ y,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G) {
    extern __shared__ float direct_smem[];
    const int Cg = C / G, Kg = K / G, RS = R * S;
    const int tid = threadIdx.x, ty = tid / DIRECT_TILE, tx = tid % DIRECT_TILE;
    const int tiles_q = ceil_div(Q, DIRECT_TILE);
    const int tp = blockIdx.x / tiles_q, tq = blockIdx.x - tp * tiles_q;
    const int p0 = tp * DIRECT_TILE, q0 = tq * DIRECT_TILE;
    const int kblocks = ceil_div(Kg, KB);
    const int g = blockIdx.y / kblocks, kb0 = (blockIdx.y - g * kblocks) * KB;
    const int n = blockIdx.z;
    const int IH = (DIRECT_TILE - 1) * sh + (R - 1) * dh + 1;
    const int IW = (DIRECT_TILE - 1) * sw + (S - 1) * dw + 1;
    const int hbase = p0 * sh - ph, wbase = q0 * sw - pw;
    float* tile = direct_smem;
    float* wt = direct_smem + IH * IW;
    const int p = p0 + ty, q = q0 + tx;
    const bool active = p < P && q < Q;

    float acc[KB];
#pragma unroll
    for (int kk = 0; kk < KB; ++kk) acc[kk] = 0.0f;

    const T* xn = x + (long long)n * sxn;
    for (int c = 0; c < Cg; ++c) {
        const T* xc = xn + (long long)(g * Cg + c) * sxc;
        for (int i = tid; i < IH * IW; i += blockDim.x) {
            const int ih = i / IW, iw = i - ih * IW;
            const int h = hbase + ih, ww = wbase + iw;
            tile[i] = ((unsigned)h < (unsigned)H && (unsigned)ww < (unsigned)W)
                          ? load_float(xc + (long long)h * sxh + (long long)ww * sxw) : 0.0f;
        }
        for (int i = tid; i < KB * RS; i += blockDim.x) {
            const int kk = i / RS, rs = i - kk * RS, k = kb0 + kk;
            wt[i] = k < Kg ? load_float(w + ((long long)(g * Kg + k) * Cg + c) * RS + rs) : 0.0f;
        }
        __syncthreads();
        if (active) {
            const float* tp_ = tile + ty * sh * IW + tx * sw;
            for (int r = 0; r < R; ++r)
                for (int s = 0; s < S; ++s) {
                    const float v = tp_[r * dh * IW + s * dw];
#pragma unroll
                    for (int kk = 0; kk < KB; ++kk) acc[kk] = fmaf(v, wt[kk * RS + r * S + s], acc[kk]);
                }
        }
        __syncthreads();
    }
    if (!active) return;
#pragma unroll
    for (int kk = 0; kk < KB; ++kk) {
        const int k = kb0 + kk;
        if (k >= Kg) break;
        const int kg = g * Kg + k;
        float v = acc[kk];
        if (has_bias) v += load_float(bias + kg);
        y[(((long long)n * K + kg) * P + p) * Q + q] = from_float<T>(v);
    }
}

#define DIRECT_PARAMS                                                                          \
    const T *__restrict__ x, long long sxn, long long sxc, long long sxh, long long sxw,       \
        const T *__restrict__ w, const T *__restrict__ bias, int has_bias, T *__restrict__ y, \
        int N, int C, int H, int W, int K, int R, int S, int P, int Q, int sh, int sw, int ph, \
        int pw, int dh, int dw, int G
#define DIRECT_ARGS x, sxn, sxc, sxh, sxw, w, bias, has_bias, y, N, C, H, W, K, R, S, P, Q, sh, sw, \
                    ph, pw, dh, dw, G

extern "C" __global__ void __launch_bounds__(DIRECT_THREADS) conv2d_fwd_direct_4ch(DIRECT_PARAMS) {
    conv2d_fwd_direct_impl<4>(DIRECT_ARGS);
}

extern "C" __global__ void __launch_bounds__(DIRECT_THREADS) conv2d_fwd_direct_1ch(DIRECT_PARAMS) {
    conv2d_fwd_direct_impl<1>(DIRECT_ARGS);
}

#include "conv2d_fwd_operands.cuh"

// Grid: x = tiles of 128 output pixels m = (n, p, q) of the N*P*Q, y = tiles of 128 (or 64,
// _narrow) output channels within the group, z = g * splits + split. Block: 256 threads (see
// conv2d_igemm.cuh); dynamic shared memory: the launcher's igemm_smem_bytes. Split `split` runs
// the BK-slices [split * kt_chunk, min(+kt_chunk, ceil(Kred / BK))) of the R*S*C/groups
// reduction; with splits > 1 it writes its fp32 partial (split 0 with the bias) to ws[split]
// (splits, N, K, P, Q) and conv2d_bwd_sum_splits adds them up in order, else y is written
// directly. Activation layout (launcher, conv_policy.gemm_activation_layout):
//   x_nchw = 0: x_nhwc is x as (N, H, W, C) contiguous, w_krsc the weights as (K, R, S, C/groups)
//               (FwdOpA, reduction (r, s, c));
//   x_nchw = 1: x_nhwc is x itself, contiguous NCHW, read in place by FwdNchwOpA, and w_krsc the
//               weights as given, (K, C/groups, R, S) contiguous (reduction (c, r, s)).
// EpP: the epilogue's parameters (FwdPlainEp: bias + store; FwdBnEp: the fused block's).
template <int BN, class EpP = FwdPlainEp>
__device__ __forceinline__ void conv2d_fwd_implicit_gemm_impl(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ w_krsc, const T* __restrict__ bias,
    int has_bias, T* __restrict__ y, float* __restrict__ ws, int splits, int kt_chunk, int x_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G, const EpP& epp = EpP{}) {
    extern __shared__ __align__(16) unsigned char ig_smem[];
    __shared__ FwdOpA::RS s_rows[IG_BM];  // NHWC x: the tile's row states (RowCached)
    const int g = blockIdx.z / splits, split = blockIdx.z - g * splits;
    const int m0 = blockIdx.x * IG_BM, n0 = blockIdx.y * BN;
    const int Cg = C / G, Kg = K / G, PQ = P * Q, M = N * PQ, Kred = R * S * Cg;
    const int ktiles = ceil_div(Kred, IG_BK);
    const int kt_begin = min(split * kt_chunk, ktiles), kt_end = min(kt_begin + kt_chunk, ktiles);
    float* wsp = splits > 1 ? ws + (long long)split * N * K * PQ : nullptr;
    const FwdOpB b{w_krsc, n0, Kg, g, Kred};
    const auto ep = epp.make(FwdEpilogue{y, wsp, bias, has_bias && split == 0, m0, n0, M, PQ, K, Kg, g}, split,
                             reinterpret_cast<float*>(ig_smem), IG_BM, BN);
    if (x_nchw) {
        const FwdNchwOpA an{x_nhwc, m0, M, PQ, Q, H, W, C, Cg, R, S, sh, sw, ph, pw, dh, dw, g, Kred};
        igemm_tile<T, BN, VEC_A, VEC_B, false, true>(an, b, ep, kt_begin, kt_end);
    } else {
        const FwdOpA a{x_nhwc, m0, M, PQ, Q, H, W, C, Cg, S, sh, sw, ph, pw, dh, dw, g, Kred};
        igemm_tile<T, BN, VEC_A, VEC_B, true, true>(fill_rows<IG_BM>(a, s_rows), b, ep, kt_begin, kt_end);
    }
}

extern "C" __global__ void __launch_bounds__(IG_THREADS, IG_MIN_BLOCKS) conv2d_fwd_implicit_gemm(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ w_krsc, const T* __restrict__ bias,
    int has_bias, T* __restrict__ y, float* __restrict__ ws, int splits, int kt_chunk, int x_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G) {
    conv2d_fwd_implicit_gemm_impl<IG_BN>(
        x_nhwc, w_krsc, bias, has_bias, y, ws, splits, kt_chunk, x_nchw, N, C, H, W, K, R, S, P, Q, sh, sw,
        ph, pw, dh, dw, G);
}

// The same with 64-column tiles (IG_BN_NARROW), for GEMMs with at most 64 columns per group.
extern "C" __global__ void __launch_bounds__(IG_THREADS, IG_MIN_BLOCKS) conv2d_fwd_implicit_gemm_narrow(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ w_krsc, const T* __restrict__ bias,
    int has_bias, T* __restrict__ y, float* __restrict__ ws, int splits, int kt_chunk, int x_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G) {
    conv2d_fwd_implicit_gemm_impl<IG_BN_NARROW>(
        x_nhwc, w_krsc, bias, has_bias, y, ws, splits, kt_chunk, x_nchw, N, C, H, W, K, R, S, P, Q, sh, sw,
        ph, pw, dh, dw, G);
}

// The fused conv -> BatchNorm -> (+ residual) -> (ReLU) block (FwdBnEpilogue, conv2d_fwd_operands.cuh):
// the plain arguments (bias / has_bias unused: pass has_bias = 0) then the epilogue's. Grid, block
// and split-K as conv2d_fwd_implicit_gemm; dynamic shared memory at least the statistics stage
// (fused_stage_bytes) when stats = 1.
#define FWD_BN_PARAMS                                                                                     \
    const float *__restrict__ fbias, int has_fbias, const T *__restrict__ residual, int has_res, int relu, \
        float *__restrict__ part_n, float *__restrict__ part_mean, float *__restrict__ part_m2, int stats
#define FWD_BN_EP FwdBnEp{fbias, has_fbias, residual, has_res, relu, part_n, part_mean, part_m2, stats}

extern "C" __global__ void __launch_bounds__(IG_THREADS, IG_MIN_BLOCKS) conv2d_fwd_implicit_gemm_bn_relu(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ w_krsc, const T* __restrict__ bias,
    int has_bias, T* __restrict__ y, float* __restrict__ ws, int splits, int kt_chunk, int x_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G, FWD_BN_PARAMS) {
    conv2d_fwd_implicit_gemm_impl<IG_BN>(
        x_nhwc, w_krsc, bias, has_bias, y, ws, splits, kt_chunk, x_nchw, N, C, H, W, K, R, S, P, Q, sh, sw,
        ph, pw, dh, dw, G, FWD_BN_EP);
}

extern "C" __global__ void __launch_bounds__(IG_THREADS, IG_MIN_BLOCKS) conv2d_fwd_implicit_gemm_bn_relu_narrow(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ w_krsc, const T* __restrict__ bias,
    int has_bias, T* __restrict__ y, float* __restrict__ ws, int splits, int kt_chunk, int x_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G, FWD_BN_PARAMS) {
    conv2d_fwd_implicit_gemm_impl<IG_BN_NARROW>(
        x_nhwc, w_krsc, bias, has_bias, y, ws, splits, kt_chunk, x_nchw, N, C, H, W, K, R, S, P, Q, sh, sw,
        ph, pw, dh, dw, G, FWD_BN_EP);
}
