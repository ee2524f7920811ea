// conv2d dX on Hopper: the stride-residue implicit GEMM of conv2d_bwd.cu's
// conv2d_bwd_dx_implicit_gemm on warpgroup MMA (conv2d_igemm_sm90.cuh). dx (N, C, H, W) contiguous.
//
// Specialisation (compile-time defines, set by cnngpu/backends/cupy_backend/conv.py):
//   SCALAR_T     f16_t | bf16_t   storage type of dy, w, dx (fp32 accumulation)
//   W90_*        tile constants (cupy_backend/_config.py W90_DEFINES)
//   DX_MAX_TAPS  R, S limit of the tap tables (cupy_backend/_config.py)
// Built with -arch=sm_90a; for any other target the entry point compiles to a trap.
//
// Residue classes (see conv2d_bwd.cu): input pixel h = a + sh*i receives from the taps r with
// (a + ph - r*dh) divisible by sh, each from dy row p = i + (a + ph - r*dh) / sh. One class (a, b)
// is a dense GEMM: rows m = (n, i, j) of N * Hc * Wc, cols c of C/groups, reduction
// kidx = (tap t = tr * ns + ts, k) over nr * ns * K/groups,
//   A[m][kidx] = dy_nhwc[n][i + dp[tr]][j + dq[ts]][g*Kg + k]  (zero outside 0 <= p < P, 0 <= q < Q)
//   B[c][kidx] = w_grsck[g][r[tr]][s[ts]][c][k]                 (weights as (G, R, S, Cg, Kg))
// Both K-major, K/groups a multiple of 8 and both 16-byte aligned (the launcher checks), loaded by
// cp.async -- or, with dy_nchw = 1, A from dy contiguous NCHW read in place (DxNchwOpA,
// register-staged scalar loads into the MN-major layout: rows run along q).
#include "conv2d_igemm_sm90.cuh"

#if !defined(SCALAR_T) || !defined(DX_MAX_TAPS)
#error "SCALAR_T and DX_MAX_TAPS are -D defines from cupy_backend/conv.py and _config.py"
#endif
typedef SCALAR_T T;
typedef unsigned short RAW;

#include "conv2d_bwd_operands.cuh"

// Grid: x = tiles of 128 pixels of one residue class (ceil(N * ceil(H/sh) * ceil(W/sw) / 128),
// blocks past the class's own pixel count exit), y = tiles of 128 input channels of the group,
// z = (g * (sh * sw) + a * sw + b) * splits + split (group, residue class, split). Block: 256
// threads (2 warpgroups); dynamic shared memory W90_SMEM_BYTES (the launcher raises the kernel's
// opt-in limit). Split `split` runs the slices [split * kt_chunk, +kt_chunk) of its class's
// reduction (possibly none: it then writes zeros); with splits > 1 into ws[split] (splits, N, C,
// H, W) fp32, summed in order by conv2d_bwd_sum_splits, else into dx.
extern "C" __global__ void __launch_bounds__(W90_THREADS) conv2d_bwd_dx_implicit_gemm_sm90(
    const RAW* __restrict__ dy_nhwc, const RAW* __restrict__ w_grsck, T* __restrict__ dx,
    float* __restrict__ ws, int splits, int kt_chunk, int dy_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) unsigned char w90_smem[];
    __shared__ long long s_out[W90_BM];
    __shared__ DxTaps taps;
    const int classes = sh * sw;
    const int gc = blockIdx.z / splits, split = blockIdx.z - gc * splits;
    const int g = gc / classes, cls = gc - g * classes;
    const int a = cls / sw, b = cls - a * sw;
    const int Hc = a < H ? (H - a + sh - 1) / sh : 0;
    const int Wc = b < W ? (W - b + sw - 1) / sw : 0;
    const int HWc = Hc * Wc, Mc = N * HWc;
    const int m0 = blockIdx.x * W90_BM, n0 = blockIdx.y * W90_BN;
    if (m0 >= Mc) return;  // uniform over the block
    const int Cg = C / G, Kg = K / G;
    dx_class_setup(taps, s_out, W90_BM, a, b, m0, Mc, HWc, Wc, C, H, W, R, S, sh, sw, ph, pw, dh, dw);
    const int Kred = taps.nr * taps.ns * Kg;
    const DxOpB opb{w_grsck, &taps, n0, g, R, S, Cg, Kg, Kred};
    const int ktiles = ceil_div(Kred, W90_BK);
    const int kt_begin = min(split * kt_chunk, ktiles), kt_end = min(kt_begin + kt_chunk, ktiles);
    float* wsp = splits > 1 ? ws + (long long)split * N * C * H * W : nullptr;
    const DxEpilogue ep{dx, wsp, s_out, (long long)H * W, n0, Cg, g};
    if (dy_nchw) {
        const DxNchwOpA opa{dy_nhwc, &taps, m0, Mc, HWc, Wc, P, Q, K, Kg, g, Kred};
        w90_igemm_tile<T, false, true, true, false>(w90_smem, opa, opb, ep, kt_begin, kt_end);
    } else {
        const DxOpA opa{dy_nhwc, &taps, m0, Mc, HWc, Wc, P, Q, K, Kg, g, Kred};
        w90_igemm_tile<T, true, true, false, false>(w90_smem, opa, opb, ep, kt_begin, kt_end);
    }
#else
    asm volatile("trap;");
#endif
}
