// conv2d dW on Hopper: conv2d_bwd.cu's split-K dW implicit GEMM on warpgroup MMA
// (conv2d_igemm_sm90.cuh) with both operands MN-major (wgmma imm-trans 1).
//
// Specialisation (compile-time defines, set by cnngpu/backends/cupy_backend/conv.py):
//   SCALAR_T  f16_t | bf16_t   storage type of x, dy, dw (fp32 accumulation)
//   W90_*     tile constants (cupy_backend/_config.py W90_DEFINES)
// Built with -arch=sm_90a; for any other target the entry point compiles to a trap.
//
//   rows a = (r, s, c) of Cg*R*S (c fastest), cols k of Kg, reduction kidx = (n, p, q),
//   A[a][kidx] = x_nhwc[n][p*sh - ph + r*dh][q*sw - pw + s*dw][g*Cg + c]   (contiguous along a)
//   B[k][kidx] = dy_nhwc[n][p][q][g*Kg + k]                                (contiguous along k)
// C/groups and K/groups multiples of 8, x and dy 16-byte aligned (the launcher checks), so 8
// consecutive rows of one operand at one kidx are one 16-byte copy. Split z covers the slices
// [z * kt_chunk, min((z + 1) * kt_chunk, ceil(N*P*Q / W90_BK))); with splits > 1 each split writes
// its fp32 partial dW to ws[split] and conv2d_bwd_sum_splits (conv2d_bwd.cu) adds them up, else
// dW is written directly. nchw = 1: x and dy contiguous NCHW read in place instead (DwNchwOpA with
// its row state in a shared table, DwNchwOpB: both contiguous along kidx, register-staged scalar
// loads into the K-major layout); no channel-count or alignment condition then.
#include "conv2d_igemm_sm90.cuh"

#if !defined(SCALAR_T)
#error "SCALAR_T is a -D define from cupy_backend/conv.py"
#endif
typedef SCALAR_T T;
typedef unsigned short RAW;

#include "conv2d_bwd_operands.cuh"

// Grid: x = tiles of 128 rows (r, s, c) of Cg*R*S, y = tiles of 128 output channels of the group,
// z = g * splits + split. Block: 256 threads (2 warpgroups); dynamic shared memory W90_SMEM_BYTES.
// ws: (splits, K, Cg, R, S) fp32, used iff splits > 1.
extern "C" __global__ void __launch_bounds__(W90_THREADS) conv2d_bwd_dw_implicit_gemm_sm90(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ dy_nhwc, T* __restrict__ dw,
    float* __restrict__ ws, int splits, int kt_chunk, int nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dwl, int G) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) unsigned char w90_smem[];
    __shared__ DwNchwOpA::RS s_rows[W90_BM];
    const int g = blockIdx.z / splits, split = blockIdx.z - g * splits;
    const int m0 = blockIdx.x * W90_BM, n0 = blockIdx.y * W90_BN;
    const int Cg = C / G, Kg = K / G, RS = R * S, CgRS = Cg * RS, PQ = P * Q, NPQ = N * PQ;
    const int ktiles = ceil_div(NPQ, W90_BK);
    const int kt_begin = split * kt_chunk, kt_end = min(kt_begin + kt_chunk, ktiles);
    float* wsp = splits > 1 ? ws + (long long)split * K * CgRS : nullptr;
    const DwEpilogue ep{dw, wsp, m0, n0, Cg, RS, CgRS, Kg, g};
    if (nchw) {
        const DwNchwOpA an{x_nhwc, m0, Cg, S, CgRS, H, W, C, Q, PQ, NPQ, sh, sw, ph, pw, dh, dwl, g};
        const DwNchwOpB bn{dy_nhwc, n0, Kg, K, PQ, NPQ, g};
        w90_igemm_tile<T, true, true, true, true>(w90_smem, fill_rows<W90_BM>(an, s_rows), bn, ep, kt_begin,
                                                  kt_end);
    } else {
        const DwOpA opa{x_nhwc, m0, Cg, S, CgRS, H, W, C, Q, PQ, NPQ, sh, sw, ph, pw, dh, dwl, g};
        const DwOpB opb{dy_nhwc, n0, Kg, K, NPQ, g};
        w90_igemm_tile<T, false, false, false, false>(w90_smem, opa, opb, ep, kt_begin, kt_end);
    }
#else
    asm volatile("trap;");
#endif
}
