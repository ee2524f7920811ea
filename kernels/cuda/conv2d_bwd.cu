// conv2d backward: dX, dW and db of y = conv(x, w) + b (y, dy: (N, K, P, Q)).
//
// Specialisation (compile-time defines, set by cnngpu/backends/cupy_backend/conv.py):
//   SCALAR_T  float | f16_t | bf16_t   storage type of dy, x, w and of dx, dw, db (fp32 accumulation)
//   VEC_A, VEC_B  1, or 16 bytes / sizeof(SCALAR_T): elements per global load of the implicit
//             GEMMs' operand A (dX: dy; dW: x) and B (dX: w; dW: dy) (launcher, conv.operand_vecs:
//             NHWC dX when K/groups is a multiple of it, NHWC dW when both C/groups and K/groups
//             are; NCHW activations read in place: dy / x as A only for 1x1, stride-1, unpadded
//             convs with H*W a multiple of it, dX's w when K/groups is, dW's dy when P*Q is --
//             for fp16 / bf16 a scalar A with a 16-byte B is the mixed cp.async ring)
//
// Entry points (grid mapping in the comment above each):
//   conv2d_bwd_dx_implicit_gemm   dX[n,h,w][c] = sum_{r,s,k} dY[n,p,q][k] * W[k][c][r][s] as an
//                                 implicit GEMM per stride-residue class (no zero-inserted dY),
//                                 optional deterministic split-K
//   conv2d_bwd_dx_direct          one thread per dx element, gather over (r, s, k)  (tiny channels)
//   conv2d_bwd_dw_implicit_gemm   dW[k][(r,s,c)] = sum_{n,p,q} dY[n,p,q][k] * x[n,h,w][c], split-K
//   conv2d_bwd_dw_direct          one block per weight element (and split), block reduction
//   conv2d_bwd_db                 one block per output channel (and split), block reduction
//   conv2d_bwd_sum_splits         out[i] = sum_s ws[s][i] in a fixed order (deterministic split-K;
//                                 also finishes the forward's split-K)
// Geometry: output pixel (p, q) reads input (p*sh - ph + r*dh, q*sw - pw + s*dw) with ph, pw the
// begin paddings; the end padding is implied by P, Q. Offsets into tensors are 64-bit; the flat
// GEMM extents (N*H*W, N*P*Q, C/groups*R*S) are int and checked to fit by the launcher.
#include "conv2d_igemm.cuh"

// DX_MAX_TAPS: R, S limit of the dX implicit GEMM's per-class tap tables; RED_THREADS: block size
// of the reduction kernels (dw_direct, db, sum_splits); DIRECT_THREADS: block of the direct dX.
// -D defines from cupy_backend/_config.py CONV_DEFINES.
#if !defined(DX_MAX_TAPS) || !defined(RED_THREADS) || !defined(DIRECT_THREADS)
#error "DX_MAX_TAPS, RED_THREADS and DIRECT_THREADS are -D defines from cupy_backend/_config.py CONV_DEFINES"
#endif
static_assert(RED_THREADS % 32 == 0 && RED_THREADS <= 1024, "block reductions work on whole warps");

// ================================================================================================
// dX implicit GEMM.
//
// Stride-residue classes: input row h = a + sh*i (0 <= a < sh) receives contributions only from
// the taps r with (a + ph - r*dh) divisible by sh, each from dy row p = i + (a + ph - r*dh) / sh.
// So the pixels of one class (a, b) form a dense GEMM:
//   rows m = (n, i, j) of N * Hc * Wc (Hc = ceil((H - a) / sh), Wc likewise),
//   cols c of C/groups, reduction kidx = (tap t = tr * ns + ts, k) over nr * ns * K/groups,
//   A[m][kidx] = dy_nhwc[n][i + dp[tr]][j + dq[ts]][g*Kg + k]  (zero outside 0 <= p < P, 0 <= q < Q)
//   B[c][kidx] = w_grsck[g][r[tr]][s[ts]][c][k]                 (weights as (G, R, S, Cg, Kg))
// Both operands are contiguous along k (KFAST). A class with no valid tap gets dx = 0.
// ================================================================================================
#include "conv2d_bwd_operands.cuh"

// Grid: x = tiles of 128 pixels of one residue class (ceil(N * ceil(H/sh) * ceil(W/sw) / 128),
// blocks past the class's own pixel count exit), y = tiles of 128 (or 64, _narrow) input channels
// of the group,
// z = (g * (sh * sw) + a * sw + b) * splits + split (group, residue class, split). Block: 256
// threads, dynamic shared memory igemm_smem_bytes (conv2d_igemm.cuh). Split `split` runs the
// BK-slices [split * kt_chunk, +kt_chunk) of its class's reduction (possibly none: it then writes
// zeros); with splits > 1 into ws[split] (splits, N, C, H, W) fp32, summed in order by
// conv2d_bwd_sum_splits, else into dx. dy_nchw = 1 (launcher, conv_policy.gemm_activation_layout):
// dy_nhwc is dy itself, contiguous NCHW, read in place by DxNchwOpA (no copy), any geometry.
template <int BN>
__device__ __forceinline__ void conv2d_bwd_dx_implicit_gemm_impl(
    const RAW* __restrict__ dy_nhwc, const RAW* __restrict__ w_grsck, T* __restrict__ dx,
    float* __restrict__ ws, int splits, int kt_chunk, int dy_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G) {
    __shared__ long long s_out[IG_BM];
    __shared__ DxOpA::RS s_rows[IG_BM];  // NHWC dy: the tile's row states (RowCached)
    __shared__ DxTaps taps;
    const int classes = sh * sw;
    const int gc = blockIdx.z / splits, split = blockIdx.z - gc * splits;
    const int g = gc / classes, cls = gc - g * classes;
    const int a = cls / sw, b = cls - a * sw;
    const int Hc = a < H ? (H - a + sh - 1) / sh : 0;
    const int Wc = b < W ? (W - b + sw - 1) / sw : 0;
    const int HWc = Hc * Wc, Mc = N * HWc;
    const int m0 = blockIdx.x * IG_BM, n0 = blockIdx.y * BN;
    if (m0 >= Mc) return;  // uniform over the block
    const int Cg = C / G, Kg = K / G;
    dx_class_setup(taps, s_out, IG_BM, a, b, m0, Mc, HWc, Wc, C, H, W, R, S, sh, sw, ph, pw, dh, dw);
    const int Kred = taps.nr * taps.ns * Kg;
    const DxOpB opb{w_grsck, &taps, n0, g, R, S, Cg, Kg, Kred};
    const int ktiles = ceil_div(Kred, IG_BK);
    const int kt_begin = min(split * kt_chunk, ktiles), kt_end = min(kt_begin + kt_chunk, ktiles);
    float* wsp = splits > 1 ? ws + (long long)split * N * C * H * W : nullptr;
    const DxEpilogue ep{dx, wsp, s_out, (long long)H * W, n0, Cg, g};
    if (dy_nchw) {
        const DxNchwOpA an{dy_nhwc, &taps, m0, Mc, HWc, Wc, P, Q, K, Kg, g, Kred};
        igemm_tile<T, BN, VEC_A, VEC_B, false, true>(an, opb, ep, kt_begin, kt_end);
    } else {
        const DxOpA opa{dy_nhwc, &taps, m0, Mc, HWc, Wc, P, Q, K, Kg, g, Kred};
        igemm_tile<T, BN, VEC_A, VEC_B, true, true>(fill_rows<IG_BM>(opa, s_rows), opb, ep, kt_begin, kt_end);
    }
}

extern "C" __global__ void __launch_bounds__(IG_THREADS, IG_MIN_BLOCKS) conv2d_bwd_dx_implicit_gemm(
    const RAW* __restrict__ dy_nhwc, const RAW* __restrict__ w_grsck, T* __restrict__ dx,
    float* __restrict__ ws, int splits, int kt_chunk, int dy_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G) {
    conv2d_bwd_dx_implicit_gemm_impl<IG_BN>(
        dy_nhwc, w_grsck, dx, ws, splits, kt_chunk, dy_nchw, N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw, dh,
        dw, G);
}

// The same with 64-column tiles (IG_BN_NARROW), for GEMMs with at most 64 columns per group.
extern "C" __global__ void __launch_bounds__(IG_THREADS, IG_MIN_BLOCKS) conv2d_bwd_dx_implicit_gemm_narrow(
    const RAW* __restrict__ dy_nhwc, const RAW* __restrict__ w_grsck, T* __restrict__ dx,
    float* __restrict__ ws, int splits, int kt_chunk, int dy_nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G) {
    conv2d_bwd_dx_implicit_gemm_impl<IG_BN_NARROW>(
        dy_nhwc, w_grsck, dx, ws, splits, kt_chunk, dy_nchw, N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw, dh,
        dw, G);
}

// ================================================================================================
// dX direct (for few channels per group, e.g. depthwise): one thread per dx element (n, c, h, w),
// summing over the taps (r, s) that reach it and the group's Kg output channels.
// Grid: 1-D, grid-stride loop over the N*C*H*W elements (64-bit index). Block: 256 threads.
// dy: any strides (elements); w: (K, Cg, R, S) contiguous; dx: (N, C, H, W) contiguous.
// ================================================================================================
extern "C" __global__ void __launch_bounds__(DIRECT_THREADS) conv2d_bwd_dx_direct(
    const T* __restrict__ dy, long long sdn, long long sdk, long long sdp, long long sdq,
    const T* __restrict__ w, T* __restrict__ dx,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dw, int G) {
    const int Cg = C / G, Kg = K / G;
    const long long total = (long long)N * C * H * W;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long rest = e;
        const int wx = (int)(rest % W);
        rest /= W;
        const int h = (int)(rest % H);
        rest /= H;
        const int c = (int)(rest % C);
        const int n = (int)(rest / C);
        const int g = c / Cg, cl = c - g * Cg;
        const T* dyn = dy + (long long)n * sdn + (long long)g * Kg * sdk;
        const T* wc = w + ((long long)g * Kg * Cg + cl) * R * S;
        float acc = 0.0f;
        for (int r = 0; r < R; ++r) {
            const int tp = h + ph - r * dh;
            if (tp < 0) break;  // decreases with r
            if (tp % sh != 0) continue;
            const int p = tp / sh;
            if (p >= P) continue;
            for (int s = 0; s < S; ++s) {
                const int tq = wx + pw - s * dw;
                if (tq < 0) break;
                if (tq % sw != 0) continue;
                const int q = tq / sw;
                if (q >= Q) continue;
                const T* d = dyn + (long long)p * sdp + (long long)q * sdq;
                const T* wk = wc + r * S + s;
                for (int k = 0; k < Kg; ++k)
                    acc = fmaf(load_float(d + (long long)k * sdk), load_float(wk + (long long)k * Cg * R * S), acc);
            }
        }
        dx[e] = from_float<T>(acc);
    }
}

// ================================================================================================
// dW implicit GEMM with split-K over the N*P*Q reduction.
//   rows a = (r, s, c) of Cg*R*S (c fastest), cols k of Kg, reduction kidx = (n, p, q),
//   A[a][kidx] = x_nhwc[n][p*sh - ph + r*dh][q*sw - pw + s*dw][g*Cg + c]   (contiguous along a)
//   B[k][kidx] = dy_nhwc[n][p][q][g*Kg + k]                                (contiguous along k)
// Both operands are contiguous along their rows (KFAST = false). Split z covers the BK-slices
// [z * kt_chunk, min((z + 1) * kt_chunk, ceil(N*P*Q / BK))); with splits > 1 each split writes its
// fp32 partial dW to ws[split] and conv2d_bwd_sum_splits adds them up, else dW is written directly.
// ================================================================================================
// Grid: x = tiles of 128 rows (r, s, c) of Cg*R*S, y = tiles of 128 (or 64, _narrow) output
// channels of the group,
// z = g * splits + split. Block: 256 threads, dynamic shared memory igemm_smem_bytes.
// ws: (splits, K, Cg, R, S) fp32, used iff splits > 1. nchw = 1 (launcher,
// conv_policy.gemm_activation_layout): x_nhwc and dy_nhwc are x and dy themselves, contiguous
// NCHW, read in place by DwNchwOpA (row state in a shared table) and DwNchwOpB, any geometry.
template <int BN>
__device__ __forceinline__ void conv2d_bwd_dw_implicit_gemm_impl(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ dy_nhwc, T* __restrict__ dw,
    float* __restrict__ ws, int splits, int kt_chunk, int nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dwl, int G) {
    __shared__ DwNchwOpA::RS s_rows[IG_BM];
    const int g = blockIdx.z / splits, split = blockIdx.z - g * splits;
    const int m0 = blockIdx.x * IG_BM, n0 = blockIdx.y * BN;
    const int Cg = C / G, Kg = K / G, RS = R * S, CgRS = Cg * RS, PQ = P * Q, NPQ = N * PQ;
    const int ktiles = ceil_div(NPQ, IG_BK);
    const int kt_begin = split * kt_chunk, kt_end = min(kt_begin + kt_chunk, ktiles);
    float* wsp = splits > 1 ? ws + (long long)split * K * CgRS : nullptr;
    const DwEpilogue ep{dw, wsp, m0, n0, Cg, RS, CgRS, Kg, g};
    if (nchw) {
        const DwNchwOpA an{x_nhwc, m0, Cg, S, CgRS, H, W, C, Q, PQ, NPQ, sh, sw, ph, pw, dh, dwl, g};
        const DwNchwOpB bn{dy_nhwc, n0, Kg, K, PQ, NPQ, g};
        igemm_tile<T, BN, VEC_A, VEC_B, true, true>(fill_rows<IG_BM>(an, s_rows), bn, ep, kt_begin, kt_end);
    } else {
        const DwOpA opa{x_nhwc, m0, Cg, S, CgRS, H, W, C, Q, PQ, NPQ, sh, sw, ph, pw, dh, dwl, g};
        const DwOpB opb{dy_nhwc, n0, Kg, K, NPQ, g};
        igemm_tile<T, BN, VEC_A, VEC_B, false, false>(opa, opb, ep, kt_begin, kt_end);
    }
}

extern "C" __global__ void __launch_bounds__(IG_THREADS, IG_MIN_BLOCKS) conv2d_bwd_dw_implicit_gemm(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ dy_nhwc, T* __restrict__ dw,
    float* __restrict__ ws, int splits, int kt_chunk, int nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dwl, int G) {
    conv2d_bwd_dw_implicit_gemm_impl<IG_BN>(
        x_nhwc, dy_nhwc, dw, ws, splits, kt_chunk, nchw, N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw, dh,
        dwl, G);
}

// The same with 64-column tiles (IG_BN_NARROW), for GEMMs with at most 64 columns per group.
extern "C" __global__ void __launch_bounds__(IG_THREADS, IG_MIN_BLOCKS) conv2d_bwd_dw_implicit_gemm_narrow(
    const RAW* __restrict__ x_nhwc, const RAW* __restrict__ dy_nhwc, T* __restrict__ dw,
    float* __restrict__ ws, int splits, int kt_chunk, int nchw,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dwl, int G) {
    conv2d_bwd_dw_implicit_gemm_impl<IG_BN_NARROW>(
        x_nhwc, dy_nhwc, dw, ws, splits, kt_chunk, nchw, N, C, H, W, K, R, S, P, Q, sh, sw, ph, pw, dh,
        dwl, G);
}

// ================================================================================================
// dW direct (few channels per group): one block per (weight element, split).
// Grid: x = weight element e = ((k*Cg + c)*R + r)*S + s of K*Cg*R*S, y = split; block 256 threads
// sum dy[n][k][p][q] * x[n][g*Cg+c][h][w] over the split's range [split*chunk, +chunk) of the
// flat (n, p, q) index, then a block reduction (fixed order: deterministic). splits == 1 writes
// dw (K, Cg, R, S) contiguous, else ws[split][e] in fp32. dy and x: any strides (elements).
// ================================================================================================
extern "C" __global__ void __launch_bounds__(RED_THREADS) conv2d_bwd_dw_direct(
    const T* __restrict__ dy, long long sdn, long long sdk, long long sdp, long long sdq,
    const T* __restrict__ x, long long sxn, long long sxc, long long sxh, long long sxw,
    T* __restrict__ dw, float* __restrict__ ws, int splits, long long chunk,
    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
    int sh, int sw, int ph, int pw, int dh, int dwl, int G) {
    __shared__ float scratch[32];
    const int Cg = C / G, Kg = K / G;
    const int e = blockIdx.x, split = blockIdx.y;
    const int s = e % S, r = (e / S) % R, c = (e / (R * S)) % Cg, k = e / (R * S * Cg);
    const int gc = (k / Kg) * Cg + c;
    const long long PQ = (long long)P * Q, NPQ = (long long)N * PQ;
    const long long begin = split * chunk, end = min(begin + chunk, NPQ);
    const int roff = r * dh - ph, soff = s * dwl - pw;
    float acc = 0.0f;
    for (long long i = begin + threadIdx.x; i < end; i += RED_THREADS) {
        const int n = (int)(i / PQ), pq = (int)(i - n * PQ), p = pq / Q, q = pq - p * Q;
        const int h = p * sh + roff, w = q * sw + soff;
        if ((unsigned)h >= (unsigned)H || (unsigned)w >= (unsigned)W) continue;
        acc = fmaf(load_float(dy + n * sdn + k * sdk + p * sdp + q * sdq),
                   load_float(x + n * sxn + gc * sxc + h * sxh + w * sxw), acc);
    }
    acc = block_reduce_sum(acc, scratch);
    if (threadIdx.x == 0) {
        if (splits > 1)
            ws[(long long)split * K * Cg * R * S + e] = acc;
        else
            dw[e] = from_float<T>(acc);
    }
}

// ================================================================================================
// db: one block per (output channel k, split); sums dy[n][k][p][q] over the split's range of the
// flat (n, p, q) index with a block reduction. Grid: x = K, y = split; block 256 threads.
// splits == 1 writes db (K,), else ws[split][k] in fp32. dy: any strides (elements).
// ================================================================================================
extern "C" __global__ void __launch_bounds__(RED_THREADS) conv2d_bwd_db(
    const T* __restrict__ dy, long long sdn, long long sdk, long long sdp, long long sdq,
    T* __restrict__ db, float* __restrict__ ws, int splits, long long chunk, int N, int K, int P, int Q) {
    __shared__ float scratch[32];
    const int k = blockIdx.x, split = blockIdx.y;
    const long long PQ = (long long)P * Q, NPQ = (long long)N * PQ;
    const long long begin = split * chunk, end = min(begin + chunk, NPQ);
    float acc = 0.0f;
    for (long long i = begin + threadIdx.x; i < end; i += RED_THREADS) {
        const int n = (int)(i / PQ), pq = (int)(i - n * PQ), p = pq / Q, q = pq - p * Q;
        acc += load_float(dy + n * sdn + k * sdk + p * sdp + q * sdq);
    }
    acc = block_reduce_sum(acc, scratch);
    if (threadIdx.x == 0) {
        if (splits > 1)
            ws[(long long)split * K + k] = acc;
        else
            db[k] = from_float<T>(acc);
    }
}

// ================================================================================================
// Deterministic split-K finish: out[i] = sum over s = 0..splits-1 (in order) of ws[s * numel + i].
// Grid: 1-D, grid-stride loop over numel (64-bit). Block: 256 threads.
// ================================================================================================
extern "C" __global__ void __launch_bounds__(RED_THREADS) conv2d_bwd_sum_splits(
    const float* __restrict__ ws, int splits, long long numel, T* __restrict__ out) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < numel;
         i += (long long)gridDim.x * blockDim.x) {
        out[i] = from_float<T>(sum_splits_at(ws, splits, numel, i));
    }
}
