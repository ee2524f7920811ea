// The conv2d backward implicit-GEMM pieces shared by the mma.sync (conv2d_bwd.cu) and wgmma
// (conv2d_bwd_dx_sm90.cu, conv2d_bwd_dw_sm90.cu) kernels: dX's residue-class taps, its weight
// operand B and epilogue; dW's dY operand B and epilogue. Included after the including file's T
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

struct DwOpB {  // dy (N, P, Q, K) contiguous
    const RAW* ptr;
    int n0, Kg, K, NPQ, g;
    struct RS { int koff; bool ok; };
    struct KS { long long pix; bool ok; };
    __device__ __forceinline__ RS rstate(int row) const { return RS{g * Kg + n0 + row, n0 + row < Kg}; }
    __device__ __forceinline__ KS kstate(int kidx) const { return KS{(long long)kidx * K, kidx < NPQ}; }
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
