// The conv2d backward implicit-GEMM pieces shared by the mma.sync (conv2d_bwd.cu) and wgmma
// (conv2d_bwd_dx_sm90.cu, conv2d_bwd_dw_sm90.cu) kernels: dX's residue-class taps and setup, its
// operands (A on NHWC or in-place NCHW dY, B on the weights) and epilogue; dW's operands (on NHWC
// or in-place NCHW x and dY) and epilogue. Each operand is written once: its rstate decodes a row,
// which the wgmma kernels keep in registers and the mma.sync kernels, where a loader asks per
// load, in a shared table (common.cuh's RowCached). Included after the including file's T
// (storage type) and RAW (raw bits) typedefs; needs DX_MAX_TAPS.
#pragma once

struct DxTaps {  // the valid taps of one residue class (built by thread 0 in shared memory)
    int nr, ns;
    int r[DX_MAX_TAPS], dp[DX_MAX_TAPS];  // tap rows and their dy row offsets
    int s[DX_MAX_TAPS], dq[DX_MAX_TAPS];  // tap cols and their dy col offsets
};

struct DxTapIdx {
    int k, tr, ts;
    bool ok;
};

__device__ __forceinline__ DxTapIdx dx_decode(int kidx, int Kred, int Kg, int ns) {
    DxTapIdx d;
    d.ok = kidx < Kred;
    const int kk = d.ok ? kidx : 0;
    const int t = kk / Kg;
    d.k = kk - t * Kg;
    d.tr = t / ns;
    d.ts = t - d.tr * ns;
    return d;
}

// dX's operand A on dY as NHWC (N, P, Q, K) contiguous: rows m = (n, i, j) of the class's
// N*Hc*Wc, reduction kidx = (tap, k); contiguous along k (KFAST). rstate decodes the row: the
// wgmma kernel keeps it in registers, the mma.sync kernel in a shared table (RowCached).
struct DxOpA {
    const RAW* ptr;
    const DxTaps* taps;
    int m0, Mc, HWc, Wc, P, Q, K, Kg, g, Kred;
    struct RS { long long nb; int i, j; };  // nb = n*P*Q*K + g*Kg, -1 past the class's last pixel
    struct KS { int k, dp, dq; bool ok; };
    __device__ __forceinline__ RS rstate(int row) const {
        const int m = m0 + row;
        if (m >= Mc) return RS{-1, 0, 0};
        const int n = m / HWc, ij = m - n * HWc, i = ij / Wc;
        return RS{(long long)n * P * Q * K + (long long)g * Kg, i, ij - i * Wc};
    }
    __device__ __forceinline__ KS kstate(int kidx) const {
        const DxTapIdx d = dx_decode(kidx, Kred, Kg, taps->ns);
        return KS{d.k, d.ok ? taps->dp[d.tr] : 0, d.ok ? taps->dq[d.ts] : 0, d.ok};
    }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        const int p = r.i + k.dp, q = r.j + k.dq;
        if (!k.ok || r.nb < 0 || (unsigned)p >= (unsigned)P || (unsigned)q >= (unsigned)Q) return false;
        off = r.nb + ((long long)p * Q + q) * K + k.k;
        return true;
    }
};

// One residue class (a, b) of a dX tile: thread 0 builds its taps (input row h = a + sh*i gets
// tap r iff sh divides a + ph - r*dh, from dy row p = i + (a + ph - r*dh) / sh; columns alike),
// the block writes s_out[row] = n*C*H*W + (a + i*sh)*W + (b + j*sw) (-1 past the class's Mc
// pixels) for the tile's ROWS rows, then a barrier (every thread of the block must call it).
__device__ __forceinline__ void dx_class_setup(DxTaps& taps, long long* s_out, int rows, int a, int b, int m0,
                                               int Mc, int HWc, int Wc, int C, int H, int W, int R, int S, int sh,
                                               int sw, int ph, int pw, int dh, int dw) {
    if (threadIdx.x == 0) {
        int nr = 0, ns = 0;
        for (int r = 0; r < R; ++r) {
            const int t = a + ph - r * dh;  // may be negative; C's % and / are exact when sh | t
            if (t % sh == 0) {
                taps.r[nr] = r;
                taps.dp[nr] = t / sh;
                ++nr;
            }
        }
        for (int s = 0; s < S; ++s) {
            const int t = b + pw - s * dw;
            if (t % sw == 0) {
                taps.s[ns] = s;
                taps.dq[ns] = t / sw;
                ++ns;
            }
        }
        taps.nr = nr;
        taps.ns = ns > 0 ? ns : 1;  // ns is a divisor in dx_decode; Kred = 0 when either is 0
        if (ns == 0) taps.nr = 0;
    }
    for (int row = threadIdx.x; row < rows; row += blockDim.x) {
        const int m = m0 + row;
        if (m < Mc) {
            const int n = m / HWc, ij = m - n * HWc, i = ij / Wc, j = ij - i * Wc;
            s_out[row] = (long long)n * C * H * W + (long long)(a + i * sh) * W + (b + j * sw);
        } else {
            s_out[row] = -1;
        }
    }
    __syncthreads();
}

struct DxOpB {  // W as (G, R, S, Cg, Kg) contiguous
    const RAW* ptr;
    const DxTaps* taps;
    int n0, g, R, S, Cg, Kg, Kred;
    struct RS { int c; bool ok; };
    struct KS { long long base; bool ok; };  // base = ((g*R + r)*S + s) * Cg * Kg + k
    __device__ __forceinline__ RS rstate(int row) const { return RS{n0 + row, n0 + row < Cg}; }
    __device__ __forceinline__ KS kstate(int kidx) const {
        const DxTapIdx d = dx_decode(kidx, Kred, Kg, taps->ns);
        KS k;
        k.ok = d.ok;
        const int r = d.ok ? taps->r[d.tr] : 0, s = d.ok ? taps->s[d.ts] : 0;
        k.base = (long long)((g * R + r) * S + s) * Cg * Kg + d.k;
        return k;
    }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        if (!(r.ok && k.ok)) return false;
        off = k.base + (long long)r.c * Kg;
        return true;
    }
};

struct DxEpilogue {  // dx (N, C, H, W) contiguous, or the split's fp32 slice of ws
    T* dx;
    float* ws;               // nullptr: write dx
    const long long* s_out;  // per tile row: n*C*H*W + h*W + w, or -1
    long long HW;
    int n0, Cg, g;
    __device__ __forceinline__ void store(int row, int col, float v) const {
        const int c = n0 + col;
        const long long o = s_out[row];
        if (o < 0 || c >= Cg) return;
        const long long i = o + (long long)(g * Cg + c) * HW;
        if (ws)
            ws[i] = v;
        else
            dx[i] = from_float<T>(v);
    }
};

// dW's operand A on x as NHWC (N, H, W, C) contiguous: rows a = (r, s, c) of Cg*R*S (c fastest),
// reduction kidx = (n, p, q); A[a][kidx] = x_nhwc[n][p*sh - ph + r*dh][q*sw - pw + s*dw][g*Cg + c],
// contiguous along rows (!KFAST / MN-major); rstate names the first row of a 16-byte vector.
struct DwOpA {
    const RAW* ptr;
    int m0, Cg, S, CgRS, H, W, C, Q, PQ, NPQ, sh, sw, ph, pw, dh, dw, g;
    struct RS { int coff, rr, ss; bool ok; };
    struct KS { long long nbase; int hp, wq; bool ok; };
    __device__ __forceinline__ RS rstate(int row) const {
        const int a = m0 + row, rs = a / Cg, c = a - rs * Cg, r = rs / S, s = rs - r * S;
        return RS{g * Cg + c, r * dh - ph, s * dw - pw, a < CgRS};
    }
    __device__ __forceinline__ KS kstate(int kidx) const {
        KS k;
        k.ok = kidx < NPQ;
        const int kk = k.ok ? kidx : 0;
        const int n = kk / PQ, pq = kk - n * PQ, p = pq / Q, q = pq - p * Q;
        k.nbase = (long long)n * H * W * C;
        k.hp = p * sh;
        k.wq = q * sw;
        return k;
    }
    __device__ __forceinline__ KS knext(const KS&, int kidx) const { return kstate(kidx); }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        const int h = k.hp + r.rr, w = k.wq + r.ss;
        if (!(r.ok && k.ok) || (unsigned)h >= (unsigned)H || (unsigned)w >= (unsigned)W) return false;
        off = k.nbase + ((long long)h * W + w) * C + r.coff;
        return true;
    }
};

struct DwOpB {  // dy (N, P, Q, K) contiguous
    const RAW* ptr;
    int n0, Kg, K, NPQ, g;
    struct RS { int koff; bool ok; };
    struct KS { long long pix; bool ok; };
    __device__ __forceinline__ RS rstate(int row) const { return RS{g * Kg + n0 + row, n0 + row < Kg}; }
    __device__ __forceinline__ KS kstate(int kidx) const { return KS{(long long)kidx * K, kidx < NPQ}; }
    __device__ __forceinline__ KS knext(const KS&, int kidx) const { return kstate(kidx); }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        if (!(r.ok && k.ok)) return false;
        off = k.pix + r.koff;
        return true;
    }
};

struct DwEpilogue {  // dw (K, Cg, R, S) contiguous, or the split's fp32 slice of ws
    T* dw;
    float* ws;  // nullptr: write dw
    int m0, n0, Cg, RS, CgRS, Kg, g;
    __device__ __forceinline__ void store(int row, int col, float v) const {
        const int a = m0 + row, k = n0 + col;
        if (a >= CgRS || k >= Kg) return;
        const int rs = a / Cg, c = a - rs * Cg;
        const long long o = ((long long)(g * Kg + k) * Cg + c) * RS + rs;
        if (ws)
            ws[o] = v;
        else
            dw[o] = from_float<T>(v);
    }
};

// ---- activations read in place, contiguous NCHW (no NHWC copy), any geometry --------------------
// dX's operand A on dy (N, K, P, Q): rows m = (n, i, j) of the residue class's N*Hc*Wc, reduction
// kidx = (tap, k) as in the NHWC case (operand B is DxOpB unchanged):
//   A[m][kidx] = dy[n][g*Kg + k][i + dp[tr]][j + dq[ts]]   (zero outside 0 <= p < P, 0 <= q < Q)
// Consecutive rows are consecutive j, i.e. consecutive q: contiguous along rows (KFAST = false, a
// warp's loads at one kidx coalesce). 16-byte vectors of rows only for 1x1, stride-1, unpadded
// convs with H*W a multiple of the vector (launcher); row state in registers, the reduction
// state decoded once per run of consecutive kidx (kstate) and then advanced (knext: k, then the
// tap); 64-bit offsets.
struct DxNchwOpA {
    const RAW* ptr;
    const DxTaps* taps;
    int m0, Mc, HWc, Wc, P, Q, K, Kg, g, Kred;
    struct RS { long long base; int i, j; };      // base = (n*K + g*Kg)*P*Q, -1 past the class's last pixel
    struct KS { long long koff; int k, tr, ts, dp, dq; bool ok; };
    __device__ __forceinline__ RS rstate(int row) const {
        const int m = m0 + row;
        if (m >= Mc) return RS{-1, 0, 0};
        const int n = m / HWc, ij = m - n * HWc, i = ij / Wc;
        return RS{((long long)n * K + (long long)g * Kg) * P * Q, i, ij - i * Wc};
    }
    __device__ __forceinline__ KS kstate(int kidx) const {
        const DxTapIdx d = dx_decode(kidx, Kred, Kg, taps->ns);
        return KS{(long long)d.k * P * Q, d.k, d.tr, d.ts, d.ok ? taps->dp[d.tr] : 0, d.ok ? taps->dq[d.ts] : 0, d.ok};
    }
    __device__ __forceinline__ KS knext(const KS& prev, int kidx) const {
        KS k = prev;
        k.ok = kidx < Kred;
        k.koff += (long long)P * Q;
        if (++k.k == Kg) {
            k.k = 0;
            k.koff = 0;
            if (++k.ts == taps->ns) {
                k.ts = 0;
                ++k.tr;
            }
            k.dp = k.ok ? taps->dp[k.tr] : 0;
            k.dq = k.ok ? taps->dq[k.ts] : 0;
        }
        return k;
    }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        const int p = r.i + k.dp, q = r.j + k.dq;
        if (!k.ok || r.base < 0 || (unsigned)p >= (unsigned)P || (unsigned)q >= (unsigned)Q) return false;
        off = r.base + k.koff + (long long)p * Q + q;
        return true;
    }
};

// dW's operands on x (N, C, H, W) and dy (N, K, P, Q): rows a = (r, s, c) of Cg*R*S (c fastest, as
// DwEpilogue stores them) resp. k of Kg, reduction kidx = (n, p, q) of N*P*Q:
//   A[a][kidx] = x[n][g*Cg + c][p*sh - ph + r*dh][q*sw - pw + s*dw]   (zero outside the image)
//   B[k][kidx] = dy[n][g*Kg + k][p][q]
// Consecutive kidx are consecutive q: both contiguous along the reduction (KFAST = true; x's run
// has stride sw, dy's is dense). 16-byte vectors of kidx only for 1x1, stride-1, unpadded convs
// with P*Q a multiple of the vector (launcher). 64-bit offsets.
struct DwNchwOpA {
    const RAW* ptr;
    int m0, Cg, S, CgRS, H, W, C, Q, PQ, NPQ, sh, sw, ph, pw, dh, dw, g;
    struct RS { long long coff; int rr, ss; };    // coff = (g*Cg + c)*H*W, -1 past the last row
    struct KS { long long nbase; int hp, wq; bool ok; };
    __device__ __forceinline__ RS rstate(int row) const {
        const int a = m0 + row;
        if (a >= CgRS) return RS{-1, 0, 0};
        const int rs = a / Cg, c = a - rs * Cg, r = rs / S, s = rs - r * S;
        return RS{(long long)(g * Cg + c) * H * W, r * dh - ph, s * dw - pw};
    }
    __device__ __forceinline__ KS kstate(int kidx) const {
        const bool ok = kidx < NPQ;
        const int kk = ok ? kidx : 0, n = kk / PQ, pq = kk - n * PQ, p = pq / Q, q = pq - p * Q;
        return KS{(long long)n * C * H * W, p * sh, q * sw, ok};
    }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        const int h = k.hp + r.rr, w = k.wq + r.ss;
        if (!k.ok || r.coff < 0 || (unsigned)h >= (unsigned)H || (unsigned)w >= (unsigned)W) return false;
        off = k.nbase + r.coff + (long long)h * W + w;
        return true;
    }
};

struct DwNchwOpB {
    const RAW* ptr;
    int n0, Kg, K, PQ, NPQ, g;
    struct RS { long long koff; bool ok; };       // (g*Kg + k)*P*Q
    struct KS { long long pix; bool ok; };        // n*K*P*Q + p*Q + q
    __device__ __forceinline__ RS rstate(int row) const {
        const int k = n0 + row;
        return RS{(long long)(g * Kg + k) * PQ, k < Kg};
    }
    __device__ __forceinline__ KS kstate(int kidx) const {
        const bool ok = kidx < NPQ;
        const int kk = ok ? kidx : 0, n = kk / PQ;
        return KS{(long long)n * K * PQ + (kk - n * PQ), ok};
    }
    __device__ __forceinline__ bool offset(const RS& r, const KS& k, long long& off) const {
        if (!(r.ok && k.ok)) return false;
        off = k.pix + r.koff;
        return true;
    }
};
