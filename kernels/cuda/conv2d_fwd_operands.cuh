// The conv2d forward implicit-GEMM operand B (weights) and epilogue, shared by the mma.sync
// (conv2d_fwd.cu) and wgmma (conv2d_fwd_sm90.cu) kernels. Included after the including file's
// T (storage type) and RAW (its raw bits) typedefs.
// B[k][kidx] = w_krsc[g*Kg + k][kidx] (contiguous along kidx).
#pragma once

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
