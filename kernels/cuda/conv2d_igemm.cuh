// Shared implicit-GEMM machinery of the conv2d kernels (conv2d_fwd.cu, conv2d_bwd.cu).
//
// One thread block computes a BM x BN tile (128 x 64) of C = A @ B^T with 256 threads, where
// A (BM rows x Kred) and B (BN rows x Kred) are never materialised: an "operand" functor maps
// (row, reduction index) to a global offset or to an implicit zero (padding, tile edge). The
// reduction runs in BK slices through double-buffered shared memory (global loads of slice k+1
// are staged in registers while slice k is multiplied; one __syncthreads per slice).
//
//   T = f16_t / bf16_t : BK = 32, tensor cores: mma.sync.m16n8k16 (fp32 accumulate), fragments
//                        loaded with ldmatrix (.trans for row-contiguous operands). 8 warps as
//                        4 (M) x 2 (N), each warp a 32 x 32 tile = 2 x 4 mma tiles.
//   T = float          : BK = 16, exact fp32 FMA; each thread an 8 x 4 micro-tile
//                        (rows tm + 16 i, cols tn + 16 j with tm = tid % 16, tn = tid / 16).
//
// Operand load mapping (template KFAST):
//   KFAST = true : the operand is contiguous along the reduction index (e.g. NHWC channels).
//                  A thread loads NV consecutive k of one row; smem for mma is [row][BK + 8].
//   KFAST = false: the operand is contiguous along its rows (e.g. dY's channels in dW).
//                  A thread loads NV consecutive rows at one k; smem for mma is [BK][ROWS + 8].
//   The fp32 path always keeps smem as [BK][ROWS + 4].
// NV (1, or 8 halves / 4 floats = 16 bytes) is chosen by the launcher, which guarantees that the
// NV elements of one load are contiguous, 16-byte aligned and either all valid or all invalid.
//
// Operand functor interface (Op):
//   typedef ... RS;  RS rstate(int row) const;     // per-row state (row is tile-local)
//   typedef ... KS;  KS kstate(int kidx) const;    // per-reduction-index state (kidx is global)
//   bool offset(const RS&, const KS&, long long& off) const;   // false -> zero
//   const RAW* ptr;                                 // base pointer (raw bits)
#pragma once
#include "common.cuh"

// Tile constants come from the launcher (-D, cnngpu/backends/cupy_backend/_config.py CONV_DEFINES),
// the one place they are written; the warp layout below is fixed to them.
#if !defined(IG_THREADS) || !defined(IG_BM) || !defined(IG_BN)
#error "IG_THREADS, IG_BM and IG_BN are -D defines from cupy_backend/_config.py CONV_DEFINES"
#endif
static_assert(IG_THREADS == 256 && IG_BM == 128 && IG_BN == 64,
              "the mma / FFMA warp layout is 8 warps of 32 x 32 outputs on a 128 x 64 tile");

template <typename T>
struct IgemmCfg;
template <>
struct IgemmCfg<float> {
    static constexpr int BK = 16;
    static constexpr bool MMA = false;
    typedef float raw;
};
template <>
struct IgemmCfg<f16_t> {
    static constexpr int BK = 32;
    static constexpr bool MMA = true;
    typedef unsigned short raw;
};
template <>
struct IgemmCfg<bf16_t> {
    static constexpr int BK = 32;
    static constexpr bool MMA = true;
    typedef unsigned short raw;
};

template <typename R, int V>
struct alignas(sizeof(R) * V) RVec {
    R v[V];
};

template <typename R, int V>
__device__ __forceinline__ void zero_vec(RVec<R, V>& x) {
#pragma unroll
    for (int e = 0; e < V; ++e) x.v[e] = R(0);
}

// Shared-memory tile of one operand; row stride and layout as described above.
template <typename T, int ROWS, bool KFAST>
struct SmemLayout {
    typedef typename IgemmCfg<T>::raw R;
    static constexpr int BK = IgemmCfg<T>::BK;
    static constexpr bool ROW_MAJOR_K = IgemmCfg<T>::MMA && KFAST;  // [row][k]
    static constexpr int LD = ROW_MAJOR_K ? (BK + 8) : (ROWS + (IgemmCfg<T>::MMA ? 8 : 4));
    static constexpr int SIZE = ROW_MAJOR_K ? ROWS * LD : BK * LD;  // elements per buffer
    __device__ static __forceinline__ int idx(int row, int k) {
        return ROW_MAJOR_K ? row * LD + k : k * LD + row;
    }
};

// Global -> registers -> shared memory for one operand tile (ROWS x BK).
template <typename T, int ROWS, int NV, bool KFAST, class Op>
struct TileLoader {
    typedef typename IgemmCfg<T>::raw R;
    typedef SmemLayout<T, ROWS, KFAST> L;
    static constexpr int BK = IgemmCfg<T>::BK;
    // KFAST: LPR loads per row, a pass covers RSTEP rows
    static constexpr int LPR = BK / NV;
    static constexpr int RSTEP = IG_THREADS / LPR;
    // !KFAST: RPV row vectors, a pass covers KSTEP reduction indices
    static constexpr int RPV = ROWS / NV;
    static constexpr int KSTEP = IG_THREADS / RPV;
    static constexpr int ITERS = KFAST ? ROWS / RSTEP : BK / KSTEP;
    static_assert(KFAST ? (BK % NV == 0 && IG_THREADS % LPR == 0 && ROWS % RSTEP == 0)
                        : (ROWS % NV == 0 && IG_THREADS % RPV == 0 && BK % KSTEP == 0),
                  "tile mapping does not divide evenly");

    RVec<R, NV> regs[ITERS];
    typename Op::RS fixed_row;  // !KFAST: the thread's row vector never changes

    __device__ __forceinline__ void init(const Op& op) {
        if (!KFAST) fixed_row = op.rstate((threadIdx.x % RPV) * NV);
    }

    __device__ __forceinline__ void fetch(const Op& op, int k0) {
        const int t = threadIdx.x;
        if (KFAST) {
            const int lrow = t / LPR, lk = (t % LPR) * NV;
            const typename Op::KS ks = op.kstate(k0 + lk);
#pragma unroll
            for (int i = 0; i < ITERS; ++i) {
                const typename Op::RS rs = op.rstate(lrow + i * RSTEP);
                long long off;
                if (op.offset(rs, ks, off))
                    regs[i] = *reinterpret_cast<const RVec<R, NV>*>(op.ptr + off);
                else
                    zero_vec(regs[i]);
            }
        } else {
            const int lk0 = t / RPV;
#pragma unroll
            for (int i = 0; i < ITERS; ++i) {
                const typename Op::KS ks = op.kstate(k0 + lk0 + i * KSTEP);
                long long off;
                if (op.offset(fixed_row, ks, off))
                    regs[i] = *reinterpret_cast<const RVec<R, NV>*>(op.ptr + off);
                else
                    zero_vec(regs[i]);
            }
        }
    }

    __device__ __forceinline__ void store(R* smem) const {
        const int t = threadIdx.x;
        if (KFAST) {
            const int lrow = t / LPR, lk = (t % LPR) * NV;
#pragma unroll
            for (int i = 0; i < ITERS; ++i) {
                const int row = lrow + i * RSTEP;
                if (L::ROW_MAJOR_K) {
                    *reinterpret_cast<RVec<R, NV>*>(smem + L::idx(row, lk)) = regs[i];
                } else {
#pragma unroll
                    for (int e = 0; e < NV; ++e) smem[L::idx(row, lk + e)] = regs[i].v[e];
                }
            }
        } else {
            const int row = (t % RPV) * NV, lk0 = t / RPV;
#pragma unroll
            for (int i = 0; i < ITERS; ++i)  // [k][row] layout: the NV rows are contiguous
                *reinterpret_cast<RVec<R, NV>*>(smem + L::idx(row, lk0 + i * KSTEP)) = regs[i];
        }
    }
};

// ---- tensor-core helpers (inline PTX, no headers) ----------------------------------------------
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

template <bool TRANS>
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) {
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);

template <>
__device__ __forceinline__ void mma_16816<f16_t>(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<bf16_t>(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Accumulators of one thread: 32 floats in both paths.
struct IgemmAcc {
    float c[32];
};

// One BK slice on the tensor cores. Warp (wm, wn) = (warp % 4, warp / 4) owns rows wm*32..+32
// and cols wn*32..+32; acc.c[(mi*4 + ni)*4 + e] is the m16n8 fragment element e of tile (mi, ni).
template <typename T, bool AKF, bool BKF>
__device__ __forceinline__ void mma_slice(const typename IgemmCfg<T>::raw* As,
                                          const typename IgemmCfg<T>::raw* Bs, IgemmAcc& acc) {
    typedef SmemLayout<T, IG_BM, AKF> LA;
    typedef SmemLayout<T, IG_BN, BKF> LB;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp & 3, wn = warp >> 2;
    const int j = lane >> 3;
#pragma unroll
    for (int ks = 0; ks < IgemmCfg<T>::BK; ks += 16) {
        unsigned a[2][4], b[4][2];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
            int row, k;
            if (AKF) {  // [row][k]: matrices (rows 0-7|8-15) x (k 0-7|8-15), row-major
                row = wm * 32 + mi * 16 + (lane & 15);
                k = ks + (lane >> 4) * 8;
            } else {    // [k][row]: transposed load
                row = wm * 32 + mi * 16 + 8 * (j & 1);
                k = ks + (lane & 7) + 8 * (j >> 1);
            }
            ldsm_x4<!AKF>(a[mi], As + LA::idx(row, k));
        }
#pragma unroll
        for (int np = 0; np < 2; ++np) {
            int n, k;
            if (BKF) {  // [n][k]
                n = wn * 32 + np * 16 + (lane & 7) + 8 * (j >> 1);
                k = ks + 8 * (j & 1);
            } else {    // [k][n]
                n = wn * 32 + np * 16 + 8 * (j >> 1);
                k = ks + (lane & 7) + 8 * (j & 1);
            }
            unsigned r[4];
            ldsm_x4<!BKF>(r, Bs + LB::idx(n, k));
            b[2 * np][0] = r[0];
            b[2 * np][1] = r[1];
            b[2 * np + 1][0] = r[2];
            b[2 * np + 1][1] = r[3];
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
                float(&c)[4] = *reinterpret_cast<float(*)[4]>(&acc.c[(mi * 4 + ni) * 4]);
                mma_16816<T>(c, a[mi], b[ni][0], b[ni][1]);
            }
    }
}

// One BK slice with fp32 FMA: acc.c[i * 4 + j] += sum_k A[tm + 16 i][k] * B[tn + 16 j][k].
template <int LDA, int LDB>
__device__ __forceinline__ void fma_slice(const float* As, const float* Bs, IgemmAcc& acc) {
    const int tm = threadIdx.x & 15, tn = threadIdx.x >> 4;
#pragma unroll
    for (int k = 0; k < IgemmCfg<float>::BK; ++k) {
        float a[8], b[4];
#pragma unroll
        for (int i = 0; i < 8; ++i) a[i] = As[k * LDA + tm + 16 * i];
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) b[jj] = Bs[k * LDB + tn + 16 * jj];
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) acc.c[i * 4 + jj] = fmaf(a[i], b[jj], acc.c[i * 4 + jj]);
    }
}

// Tile-local (row, col) of accumulator element idx of this thread.
template <typename T>
__device__ __forceinline__ void acc_coord(int idx, int& row, int& col) {
    if constexpr (IgemmCfg<T>::MMA) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        const int tile = idx >> 2, e = idx & 3, mi = tile >> 2, ni = tile & 3;
        row = (warp & 3) * 32 + mi * 16 + (lane >> 2) + 8 * (e >> 1);
        col = (warp >> 2) * 32 + ni * 8 + 2 * (lane & 3) + (e & 1);
    } else {
        row = (threadIdx.x & 15) + 16 * (idx >> 2);
        col = (threadIdx.x >> 4) + 16 * (idx & 3);
    }
}

// The main loop: reduction slices [kt_begin, kt_end) of BK, then ep.store(row, col, value) for
// every element of the tile (tile-local coordinates; the epilogue checks bounds).
// Every thread of the block must call this (it synchronises).
template <typename T, int NV, bool AKF, bool BKF, class OpA, class OpB, class Ep>
__device__ __forceinline__ void igemm_tile(const OpA& opA, const OpB& opB, const Ep& ep,
                                           int kt_begin, int kt_end) {
    typedef typename IgemmCfg<T>::raw R;
    typedef SmemLayout<T, IG_BM, AKF> LA;
    typedef SmemLayout<T, IG_BN, BKF> LB;
    constexpr int BK = IgemmCfg<T>::BK;
    __shared__ __align__(16) R As[2][LA::SIZE];
    __shared__ __align__(16) R Bs[2][LB::SIZE];

    TileLoader<T, IG_BM, NV, AKF, OpA> la;
    TileLoader<T, IG_BN, NV, BKF, OpB> lb;
    la.init(opA);
    lb.init(opB);

    IgemmAcc acc;
#pragma unroll
    for (int i = 0; i < 32; ++i) acc.c[i] = 0.0f;

    if (kt_begin < kt_end) {
        la.fetch(opA, kt_begin * BK);
        lb.fetch(opB, kt_begin * BK);
        la.store(As[0]);
        lb.store(Bs[0]);
        __syncthreads();
        for (int kt = kt_begin; kt < kt_end; ++kt) {
            const int cur = (kt - kt_begin) & 1;
            const bool more = kt + 1 < kt_end;
            if (more) {  // issue the next slice's global loads before the math
                la.fetch(opA, (kt + 1) * BK);
                lb.fetch(opB, (kt + 1) * BK);
            }
            if constexpr (IgemmCfg<T>::MMA)
                mma_slice<T, AKF, BKF>(As[cur], Bs[cur], acc);
            else
                fma_slice<LA::LD, LB::LD>(reinterpret_cast<const float*>(As[cur]),
                                          reinterpret_cast<const float*>(Bs[cur]), acc);
            if (more) {  // the other buffer was last read before the previous barrier
                la.store(As[cur ^ 1]);
                lb.store(Bs[cur ^ 1]);
            }
            __syncthreads();
        }
    }
#pragma unroll
    for (int i = 0; i < 32; ++i) {
        int row, col;
        acc_coord<T>(i, row, col);
        ep.store(row, col, acc.c[i]);
    }
}

// The specialisation of the conv file that includes this header: SCALAR_T (storage type) and VEC
// (elements per global load of the implicit GEMMs), -D defines from the launcher (conv.defines).
#if !defined(SCALAR_T) || !defined(VEC)
#error "SCALAR_T and VEC are -D defines from cupy_backend/conv.py defines()"
#endif
typedef SCALAR_T T;
typedef IgemmCfg<T>::raw RAW;
