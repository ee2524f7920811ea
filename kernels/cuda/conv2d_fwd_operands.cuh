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
