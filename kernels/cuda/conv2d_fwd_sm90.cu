// conv2d forward on Hopper: y = conv(x, w) + b as an implicit GEMM on warpgroup MMA
// (conv2d_igemm_sm90.cuh), y (N, K, P, Q) contiguous NCHW.
//
// Specialisation (compile-time defines, set by cnngpu/backends/cupy_backend/conv.py):
//   SCALAR_T  f16_t | bf16_t   storage type of x, w, b, y (fp32 accumulation)
//   W90_*     tile constants (cupy_backend/_config.py W90_DEFINES)
// Built with -arch=sm_90a (NVRTC / nvcc -gencode=arch=compute_90a,code=sm_90a); for any other
// target the entry point compiles to a trap and the launcher never selects it.
//
// Entry point:
//   conv2d_fwd_implicit_gemm_sm90  M = N*P*Q output pixels, N = K/groups channels, reduction
//       R*S*C/groups, bias fused, deterministic split-K (partials summed by conv2d_bwd.cu's
//       conv2d_bwd_sum_splits), on either
//         x_nchw = 0: x in NHWC and w in (K, R, S, C/groups), both contiguous, C/groups a multiple
//                     of 8 and both 16-byte aligned (the launcher checks): cp.async, both K-major;
//         x_nchw = 1: x contiguous NCHW read in place (FwdNchwOpA, register-staged scalar loads
//                     into the MN-major layout: rows run along q) and w as given, (K, C/groups,
//                     R, S) contiguous, C/groups*R*S a multiple of 8, 16-byte aligned: cp.async.
//   conv2d_fwd_implicit_gemm_sm90_bn_relu  the same with the fused block's epilogue
//       (conv2d_fwd_operands.cuh FwdBnEpilogue, as conv2d_fwd.cu's *_bn_relu entries).
// Geometry: output pixel (p, q) reads input (p*sh - ph + r*dh, q*sw - pw + s*dw).
#include "conv2d_igemm_sm90.cuh"

#if !defined(SCALAR_T)
#error "SCALAR_T is a -D define from cupy_backend/conv.py"
#endif
typedef SCALAR_T T;
typedef unsigned short RAW;

#include "conv2d_fwd_operands.cuh"

// Grid: x = tiles of 128 output pixels m = (n, p, q), y = tiles of 128 output channels within the
// group, z = g * splits + split. Block: 256 threads (2 warpgroups, see conv2d_igemm_sm90.cuh);
// dynamic shared memory W90_SMEM_BYTES (the launcher raises the kernel's opt-in limit). Split
// `split` runs the slices [split * kt_chunk, min(+kt_chunk, ceil(Kred / W90_BK))) (possibly none:
// it then writes zeros); with splits > 1 into ws[split] (splits, N, K, P, Q) fp32, else into y.
// EpP: the epilogue's parameters (FwdPlainEp, or the fused block's FwdBnEp).
template <class EpP = FwdPlainEp>
__device__ __forceinline__ void conv2d_fwd_implicit_gemm_sm90_impl(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ w_krsc, const T* __restrict__ bias,
    int has_bias, T* __restrict__ y, float* __restrict__ ws, int splits, int kt_chunk, int x_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G, const EpP& epp = EpP{}) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) unsigned char w90_smem[];
    const int g = blockIdx.z / splits, split = blockIdx.z - g * splits;
    const int m0 = blockIdx.x * W90_BM, n0 = blockIdx.y * W90_BN;
    const int Cg = C / G, Kg = K / G, PQ = P * Q, M = N * PQ, Kred = R * S * Cg;
    const int ktiles = ceil_div(Kred, W90_BK);
    const int kt_begin = min(split * kt_chunk, ktiles), kt_end = min(kt_begin + kt_chunk, ktiles);
    float* wsp = splits > 1 ? ws + (long long)split * N * K * PQ : nullptr;
    const FwdOpB b{w_krsc, n0, Kg, g, Kred};
    const auto ep = epp.make(FwdEpilogue{y, wsp, bias, has_bias && split == 0, m0, n0, M, PQ, K, Kg, g}, split,
                             reinterpret_cast<float*>(w90_smem), W90_BM, W90_BN);
    if (x_nchw) {
        const FwdNchwOpA a{x_nhwc, m0, M, PQ, Q, H, W, C, Cg, R, S, sh, sw, ph, pw, dh, dw, g, Kred};
        w90_igemm_tile<T, false, true, true, false>(w90_smem, a, b, ep, kt_begin, kt_end);
    } else {
        const FwdOpA a{x_nhwc, m0, M, PQ, Q, H, W, C, Cg, S, sh, sw, ph, pw, dh, dw, g, Kred};
        w90_igemm_tile<T, true, true, false, false>(w90_smem, a, b, ep, kt_begin, kt_end);
    }
#else
    asm volatile("trap;");
#endif
}

extern "C" __global__ void __launch_bounds__(W90_THREADS) conv2d_fwd_implicit_gemm_sm90(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ w_krsc, const T* __restrict__ bias,
    int has_bias, T* __restrict__ y, float* __restrict__ ws, int splits, int kt_chunk, int x_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G) {
    conv2d_fwd_implicit_gemm_sm90_impl(x_nhwc, w_krsc, bias, has_bias, y, ws, splits, kt_chunk, x_nchw, N, C, H, W,
                                       K, R, S, P, Q, sh, sw, ph, pw, dh, dw, G);
}

// The fused conv -> BatchNorm -> (+ residual) -> (ReLU) block (FwdBnEpilogue, conv2d_fwd_operands.cuh):
// the plain arguments (has_bias = 0) then the epilogue's; the statistics stage fits the main
// loop's W90_SMEM_BYTES.
extern "C" __global__ void __launch_bounds__(W90_THREADS) conv2d_fwd_implicit_gemm_sm90_bn_relu(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ w_krsc, const T* __restrict__ bias,
    int has_bias, T* __restrict__ y, float* __restrict__ ws, int splits, int kt_chunk, int x_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G,
    const float* __restrict__ fbias, int has_fbias, const T* __restrict__ residual, int has_res, int relu,
    float* __restrict__ part_n, float* __restrict__ part_mean, float* __restrict__ part_m2, int stats) {
    conv2d_fwd_implicit_gemm_sm90_impl(x_nhwc, w_krsc, bias, has_bias, y, ws, splits, kt_chunk, x_nchw, N, C, H, W,
                                       K, R, S, P, Q, sh, sw, ph, pw, dh, dw, G,
                                       FwdBnEp{fbias, has_fbias, residual, has_res, relu, part_n, part_mean,
                                               part_m2, stats});
}
