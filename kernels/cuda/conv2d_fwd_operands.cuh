// The conv2d forward implicit-GEMM operands and epilogue, shared by the mma.sync (conv2d_fwd.cu)
// and wgmma (conv2d_fwd_sm90.cu) kernels. Included after the including file's T (storage type)
// and RAW (its raw bits) typedefs.
#pragma once

// Operand A of x as NHWC (N, H, W, C) contiguous: rows m = (n, p, q) of N*P*Q, reduction
// kidx = (r*S + s)*Cg + c; A[m][kidx] = x_nhwc[n][p*sh - ph + r*dh][q*sw - pw + s*dw][g*Cg + c]
// (zero outside the image), contiguous along kidx (KFAST). rstate decodes the row: the wgmma
// kernel keeps it in registers, the mma.sync kernel in a shared table (RowCached).
struct FwdOpA {
    const RAW* ptr;
    int m0, M, PQ, Q, H, W, C, Cg, S, sh, sw, ph, pw, dh, dw, g, Kred;
    struct RS { long long nb; int h0, w0; };  // nb = n*H*W*C + g*Cg, -1 past the last pixel
    struct KS { int c, rr, ss; bool ok; };
    __device__ __forceinline__ RS rstate(int row) const {
        const int m = m0 + row;
        if (m >= M) return RS{-1, 0, 0};
        const int n = m / PQ, pq = m - n * PQ, p = pq / Q, q = pq - p * Q;
        return RS{(long long)n * H * W * C + (long long)g * Cg, p * sh - ph, q * sw - pw};
    }
    __device__ __forceinline__ KS kstate(int kidx) const {
        KS k;
        k.ok = kidx < Kred;
        const int rs = kidx / Cg, r = rs / S;
        k.c = kidx - rs * Cg;
        k.rr = r * dh;
        k.ss = (rs - r * S) * dw;
        return k;
    }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        const int h = r.h0 + k.rr, w = r.w0 + k.ss;
        if (!k.ok || r.nb < 0 || (unsigned)h >= (unsigned)H || (unsigned)w >= (unsigned)W) return false;
        off = r.nb + ((long long)h * W + w) * C + k.c;
        return true;
    }
};

// Operand B: B[k][kidx] = w[g*Kg + k][kidx] (contiguous along kidx), w as (K, R, S, C/groups) for
// FwdOpA's reduction order or as (K, C/groups, R, S) for FwdNchwOpA's.

struct FwdOpB {
    const RAW* ptr;
    int n0, Kg, g, Kred;
    struct RS { long long base; bool ok; };
    struct KS { int kidx; bool ok; };
    __device__ __forceinline__ RS rstate(int row) const {
        const int k = n0 + row;
        return RS{(long long)(g * Kg + k) * Kred, k < Kg};
    }
    __device__ __forceinline__ KS kstate(int kidx) const { return KS{kidx, kidx < Kred}; }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        if (!(r.ok && k.ok)) return false;
        off = r.base + k.kidx;
        return true;
    }
};

struct FwdEpilogue {  // y (N, K, P, Q) contiguous, or the split's fp32 slice of ws (bias in split 0)
    T* y;
    float* ws;  // nullptr: write y
    const T* bias;
    int has_bias, m0, n0, M, PQ, K, Kg, g;
    __device__ __forceinline__ void store(int row, int col, float v) const {
        const int m = m0 + row, k = n0 + col;
        if (m >= M || k >= Kg) return;
        const int kg = g * Kg + k, n = m / PQ, pq = m - n * PQ;
        if (has_bias) v += load_float(bias + kg);
        const long long o = ((long long)n * K + kg) * PQ + pq;
        if (ws)
            ws[o] = v;
        else
            y[o] = from_float<T>(v);
    }
};

// Operand A of x read in place, contiguous NCHW (no NHWC copy), for any geometry: rows
// m = (n, p, q) of N*P*Q, reduction kidx = (c*R + r)*S + s over Cg*R*S -- the weights' own
// (K, C/groups, R, S) order, so operand B is FwdOpB on w itself (no re-layout either):
//   A[m][kidx] = x[n][g*Cg + c][p*sh - ph + r*dh][q*sw - pw + s*dw]   (zero outside the image)
// Consecutive rows are consecutive q, i.e. input columns sw apart: contiguous along rows (KFAST =
// false; a warp's 32 rows at one kidx are one coalesced run when sw == 1). Rows of one 16-byte
// vector are contiguous only for 1x1, stride-1, unpadded convs with H*W a multiple of the vector
// (the launcher's rule for NV > 1); everything else loads scalars. Row state is decoded once per
// thread (KFAST = false keeps it in registers), the reduction state once per run of consecutive
// kidx (kstate) and then advanced (knext: s, then r, then c). Offsets are 64-bit.
struct FwdNchwOpA {
    const RAW* ptr;
    int m0, M, PQ, Q, H, W, C, Cg, R, S, sh, sw, ph, pw, dh, dw, g, Kred;
    struct RS { long long base; int h0, w0; };    // base = (n*C + g*Cg)*H*W, -1 past the last pixel
    struct KS { long long coff; int rr, ss; bool ok; };
    __device__ __forceinline__ RS rstate(int row) const {
        const int m = m0 + row;
        if (m >= M) return RS{-1, 0, 0};
        const int n = m / PQ, pq = m - n * PQ, p = pq / Q, q = pq - p * Q;
        return RS{((long long)n * C + (long long)g * Cg) * H * W, p * sh - ph, q * sw - pw};
    }
    __device__ __forceinline__ KS kstate(int kidx) const {
        const bool ok = kidx < Kred;
        const int kk = ok ? kidx : 0, c = kk / (R * S), rs = kk - c * (R * S), r = rs / S;
        return KS{(long long)c * H * W, r * dh, (rs - r * S) * dw, ok};
    }
    __device__ __forceinline__ KS knext(const KS& prev, int kidx) const {
        KS k = prev;
        k.ok = kidx < Kred;
        k.ss += dw;
        if (k.ss == S * dw) {
            k.ss = 0;
            k.rr += dh;
            if (k.rr == R * dh) {
                k.rr = 0;
                k.coff += (long long)H * W;
            }
        }
        return k;
    }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        const int h = r.h0 + k.rr, w = r.w0 + k.ss;
        if (!k.ok || r.base < 0 || (unsigned)h >= (unsigned)H || (unsigned)w >= (unsigned)W) return false;
        off = r.base + k.coff + (long long)h * W + w;
        return true;
    }
};

// The plain forward: the epilogue above as the kernel built it (the default of the impl templates).
struct FwdPlainEp {
    __device__ __forceinline__ FwdEpilogue make(const FwdEpilogue& e, int, float*, int, int) const { return e; }
};

// ------------------------------------------------------------------------------------------------
// Fused conv -> BatchNorm -> (+ residual) -> (ReLU) epilogue of the *_bn_relu entry points
// (cupy_backend/fused.py; definition: the NumPy reference numpy_backend/fused.py). v = the fp32
// accumulator + bias[kg] (fp32; split 0 only under split-K), then by mode:
//   split-K (ws set)   ws[o] = v; conv_bn_relu.cu finishes the sum (eval: + residual, ReLU;
//                      training: y and the statistics partials)
//   stats = 0 (eval)   out[o] = relu(v + residual[o]) (bias = the BN-folded conv bias; has_res and
//                      relu switch the add and the ReLU; NaN passes the ReLU)
//   stats = 1 (train)  y[o] = v, and per (M tile, channel) the tile's count, mean and M2 of the fp32
//                      values (two passes over the tile staged in shared memory: exact mean, then
//                      squared deviations, each a warp shuffle sum) into part_*[kg * gridDim.x +
//                      blockIdx.x] -- batch_norm.cu's partial layout (channel-major, one partial per
//                      M tile), merged by its batch_norm_fwd_finalize_stats (Chan).
// The stage (training) is the kernel's dynamic shared memory, reused after the main loop:
// tile_n columns of tile_m + FUSED_STAGE_PAD floats (the launcher sizes it: _config.py
// fused_stage_bytes). Column-major: a warp's stores of an mma / wgmma accumulator fragment (8
// rows x 4 column pairs) hit 32 different banks, and each column's rows are contiguous for the
// reduction (warp w takes columns w, w + 8, ..., lane l rows l, l + 32, ...).
#if !defined(FUSED_STAGE_PAD)
#error "FUSED_STAGE_PAD is a -D define from cupy_backend/_config.py (CONV_DEFINES, W90_DEFINES)"
#endif

struct FwdBnEpilogue {
    static constexpr bool TILE_PHASE = true;
    FwdEpilogue e;  // y, ws, m0, n0, M, PQ, K, Kg, g (its T bias is not used)
    const float* bias;
    const T* residual;
    float *part_n, *part_mean, *part_m2, *stage;
    int add_bias, has_res, relu, stats, tile_m, tile_n;

    __device__ __forceinline__ void tile_begin() const {
        if (stats) __syncthreads();  // the main loop's last shared-memory reads are done
    }
    __device__ __forceinline__ void store(int row, int col, float v) const {
        const int m = e.m0 + row, k = e.n0 + col;
        if (m >= e.M || k >= e.Kg) return;
        const int kg = e.g * e.Kg + k, n = m / e.PQ, pq = m - n * e.PQ;
        if (add_bias) v += bias[kg];
        const long long o = ((long long)n * e.K + kg) * e.PQ + pq;
        if (e.ws) {
            e.ws[o] = v;
            return;
        }
        if (stats) stage[col * (tile_m + FUSED_STAGE_PAD) + row] = v;
        if (has_res) v += load_float(residual + o);
        if (relu && v < 0.0f) v = 0.0f;
        e.y[o] = from_float<T>(v);
    }
    __device__ __forceinline__ void tile_end() const {
        if (!stats) return;
        __syncthreads();
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
        const int rows = min(tile_m, e.M - e.m0), cols = min(tile_n, e.Kg - e.n0);
        const float inv = 1.0f / (float)rows;
        for (int col = warp; col < cols; col += warps) {
            const float* s = stage + col * (tile_m + FUSED_STAGE_PAD);
            float sum = 0.0f;
            for (int r = lane; r < rows; r += 32) sum += s[r];
            const float mean = warp_reduce_sum(sum) * inv;
            float m2 = 0.0f;
            for (int r = lane; r < rows; r += 32) {
                const float d = s[r] - mean;
                m2 += d * d;
            }
            m2 = warp_reduce_sum(m2);
            if (lane == 0) {
                const long long i = (long long)(e.g * e.Kg + e.n0 + col) * gridDim.x + blockIdx.x;
                part_n[i] = (float)rows;
                part_mean[i] = mean;
                part_m2[i] = m2;
            }
        }
    }
};

// The fused entry points' extra arguments; make() wraps the impl's plain epilogue (split: the
// block's split-K index; stage: the dynamic shared memory; tile_m x tile_n: the block's tile).
struct FwdBnEp {
    const float* bias;
    int has_bias;
    const T* residual;
    int has_res, relu;
    float *part_n, *part_mean, *part_m2;
    int stats;
    __device__ __forceinline__ FwdBnEpilogue make(const FwdEpilogue& e, int split, float* stage, int tile_m,
                                                  int tile_n) const {
        return FwdBnEpilogue{e, bias, residual, part_n, part_mean, part_m2, stage,
                             has_bias && split == 0, has_res, relu, stats && !e.ws, tile_m, tile_n};
    }
};
