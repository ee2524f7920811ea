// Shared implicit-GEMM machinery of the conv2d kernels (conv2d_fwd.cu, conv2d_bwd.cu).
//
// One thread block computes a BM x BN tile (128 x 128, or 128 x 64 for narrow GEMMs: template BN)
// of C = A @ B^T with 256 threads, where
// A (BM rows x Kred) and B (BN rows x Kred) are never materialised: an "operand" functor maps
// (row, reduction index) to a global offset or to an implicit zero (padding, tile edge). The
// reduction runs in BK slices through a ring of IG_STAGES shared-memory stages (dynamic shared
// memory, IG_OPERAND_BYTES per operand and stage, sized by the launcher):
//
//   IG_ASYNC = 1 (16-bit types, at least one operand with 16-byte loads): a ring of IG_STAGES
//     (>= 3) stages; slice k + STAGES - 1 is loaded while slice k is multiplied; one cp.async
//     group and one __syncthreads per slice. Per operand (TileLoader::ASYNC): 16-byte vectors go
//     global -> shared by cp.async.cg (src-size 0 zero-fills padding and tile edges), issued
//     before the math; an operand with scalar loads (e.g. NCHW activations read in place) is
//     register-staged inside the ring: fetched into registers before the math of slice k and
//     stored into its stage (the one slice k - 1 left, free since this slice's barrier) after it,
//     STAGES - 2 barriers before it is read (the mixed mode of the NCHW forward / dX / dW).
//   IG_ASYNC = 0 (fp32, or scalar 16-bit loads on both operands): two stages; slice k+1 is staged
//     in registers while slice k is multiplied (one __syncthreads per slice).
//
//   T = f16_t / bf16_t : BK = 32, tensor cores: mma.sync.m16n8k16 (fp32 accumulate), fragments
//                        loaded with ldmatrix (.trans for row-contiguous operands) and double
//                        buffered in registers (the k16 step ks+1 is loaded while ks multiplies).
//                        8 warps as 2 (M) x 4 (N), each warp a 64 x 32 tile = 4 x 4 mma tiles
//                        (BN = 64: 4 x 2 warps of 32 x 32).
//   T = float          : BK = 16, exact fp32 FMA; each thread an 8 x (BN / 16) micro-tile
//                        (rows tm + 16 i, cols tn + 16 j with tm = tid % 16, tn = tid / 16);
//                        with IG_TF32 (precision='tf32') mma.sync.m16n8k8 .tf32 instead, operands
//                        rounded by cvt.rna.tf32.f32 as they are read from shared memory, the
//                        16-bit path's warp layout.
//
// Operand load mapping (template KFAST):
//   KFAST = true : the operand is contiguous along the reduction index (e.g. NHWC channels).
//                  A thread loads NV consecutive k of one row; smem for mma is [row][BK + PAD].
//   KFAST = false: the operand is contiguous along its rows (e.g. dY's channels in dW).
//                  A thread loads NV consecutive rows at ITERS consecutive k (the warp's lanes
//                  share each k: coalesced along the rows); smem for mma is [BK][ROWS + PAD].
//   The fp32 path always keeps smem as [BK][ROWS + PAD].
// The PAD (8 halves / 4 floats) makes the row stride 16 bytes more than a multiple of 128 (or of
// 32 words): the 8 row addresses of each ldmatrix phase fall in 8 different 4-bank groups (no bank
// conflicts), and every 16-byte vector stays 16-byte aligned for cp.async.
// NV (1, or 8 halves / 4 floats = 16 bytes; per operand: VEC_A, VEC_B) is chosen by the launcher,
// which guarantees that the NV elements of one load are contiguous, 16-byte aligned and either all
// valid or all invalid.
//
// Operand functor interface (Op):
//   typedef ... RS;  RS rstate(int row) const;     // per-row state (row is tile-local)
//   typedef ... KS;  KS kstate(int kidx) const;    // per-reduction-index state (kidx is global)
//   KS knext(const KS& ks, int kidx) const;         // !KFAST operands: the state of kidx, given
//                                                   // ks = the state of kidx - 1 (an increment)
//   bool offset(const RS&, const KS&, long long& off) const;   // false -> zero
//   const RAW* ptr;                                 // base pointer (raw bits)
#pragma once
#include "common.cuh"

// Tile constants come from the launcher (-D, cnngpu/backends/cupy_backend/_config.py CONV_DEFINES
// and igemm_spec), the one place they are written; the warp layout below is fixed to them.
#if !defined(IG_THREADS) || !defined(IG_BM) || !defined(IG_BN)
#error "IG_THREADS, IG_BM and IG_BN are -D defines from cupy_backend/_config.py CONV_DEFINES"
#endif
#if !defined(IG_BK) || !defined(IG_PAD) || !defined(IG_ASYNC) || !defined(IG_STAGES) || !defined(IG_OPERAND_BYTES) \
    || !defined(IG_TF32) || !defined(IG_MIN_BLOCKS)
#error "IG_BK, IG_PAD, IG_ASYNC, IG_STAGES, IG_OPERAND_BYTES, IG_TF32, IG_MIN_BLOCKS: -D defines from _config.igemm_spec"
#endif
#ifndef IG_BN_NARROW
#error "IG_BN_NARROW is a -D define from cupy_backend/_config.py CONV_DEFINES"
#endif
static_assert(IG_THREADS == 256 && IG_BM == 128 && IG_BN == 128 && IG_BN_NARROW == 64,
              "the mma / FFMA warp layouts are 8 warps of 64 x 32 (BN = 128) or 32 x 32 (BN = 64) outputs");
static_assert(IG_ASYNC ? IG_STAGES >= 3 : IG_STAGES == 2, "cp.async pipelines keep >= 3 stages, the register path 2");
static_assert(IG_OPERAND_BYTES % 16 == 0, "stages must keep 16-byte alignment");

template <typename T>
struct IgemmCfg;
// MMA: 16-bit tensor-core path (ldmatrix + m16n8k16); TF32: fp32 through m16n8k8 .tf32 (the
// IG_TF32 specialisation, precision='tf32'); TC: either (the tensor-core warp layout).
template <>
struct IgemmCfg<float> {
    static constexpr bool MMA = false, TF32 = IG_TF32 != 0, TC = TF32;
    typedef float raw;
};
template <>
struct IgemmCfg<f16_t> {
    static constexpr bool MMA = true, TF32 = false, TC = true;
    typedef unsigned short raw;
};
template <>
struct IgemmCfg<bf16_t> {
    static constexpr bool MMA = true, TF32 = false, TC = true;
    typedef unsigned short raw;
};
constexpr int IG_KSTEPS = IG_BK / 16;  // mma k16 steps per slice
static_assert(IG_BK % 16 == 0, "BK is a multiple of the mma K step (and of the FFMA unroll)");

template <typename R, int V>
struct alignas(sizeof(R) * V) RVec {
    R v[V];
};

template <typename R, int V>
__device__ __forceinline__ void zero_vec(RVec<R, V>& x) {
#pragma unroll
    for (int e = 0; e < V; ++e) x.v[e] = R(0);
}

// Shared-memory tile of one operand and stage; row stride and layout as described above.
template <typename T, int ROWS, bool KFAST>
struct SmemLayout {
    typedef typename IgemmCfg<T>::raw R;
    static constexpr int BK = IG_BK;
    static constexpr bool ROW_MAJOR_K = IgemmCfg<T>::MMA && KFAST;  // [row][k]
    static constexpr int LD = ROW_MAJOR_K ? (BK + IG_PAD) : (ROWS + IG_PAD);
    static constexpr int SIZE = ROW_MAJOR_K ? ROWS * LD : BK * LD;  // elements per stage
    static_assert(SIZE * (int)sizeof(R) <= IG_OPERAND_BYTES, "IG_OPERAND_BYTES (launcher) too small for the layout");
    __device__ static __forceinline__ int idx(int row, int k) {
        return ROW_MAJOR_K ? row * LD + k : k * LD + row;
    }
};

// ---- inline PTX (no headers) -------------------------------------------------------------------
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global -> shared, asynchronously; ok = false writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :: "r"(smem_addr(smem)), "l"(gmem), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }

// Global -> shared memory for one operand tile (ROWS x BK): through registers (fetch + store) or
// by cp.async (issue).
template <typename T, int ROWS, int NV, bool KFAST, class Op>
struct TileLoader {
    typedef typename IgemmCfg<T>::raw R;
    typedef SmemLayout<T, ROWS, KFAST> L;
    static constexpr int BK = IG_BK;
    // KFAST: LPR loads per row, a pass covers RSTEP rows
    static constexpr int LPR = BK / NV;
    static constexpr int RSTEP = IG_THREADS / LPR;
    // !KFAST: RPV row vectors; the threads of one row vector take KSTEP runs of ITERS consecutive
    // reduction indices (decoded once by kstate, then advanced by knext)
    static constexpr int RPV = ROWS / NV;
    static constexpr int KSTEP = IG_THREADS / RPV;
    static constexpr int ITERS = KFAST ? ROWS / RSTEP : BK / KSTEP;
    static_assert(KFAST ? (BK % NV == 0 && IG_THREADS % LPR == 0 && ROWS % RSTEP == 0)
                        : (ROWS % NV == 0 && IG_THREADS % RPV == 0 && BK % KSTEP == 0),
                  "tile mapping does not divide evenly");

    // cp.async (16-byte vectors of a 16-bit type, the ring pipeline), else register-staged
    static constexpr bool ASYNC = IgemmCfg<T>::MMA && NV * (int)sizeof(R) == 16;
    static_assert(!ASYNC || IG_ASYNC, "16-byte 16-bit operands take the cp.async ring (IG_ASYNC, launcher)");

    RVec<R, (ASYNC ? 1 : NV)> regs[ASYNC ? 1 : ITERS];  // the register path's staging
    typename Op::RS fixed_row;  // !KFAST: the thread's row vector never changes

    __device__ __forceinline__ void init(const Op& op) {
        if (!KFAST) fixed_row = op.rstate((threadIdx.x % RPV) * NV);
    }

    // The ring pipeline (IG_ASYNC): put() loads slice k0 into stage smem at once (prologue);
    // begin() starts it (cp.async issue, or the register fetch) before the math and finish()
    // completes it (the register store) after the math.
    __device__ __forceinline__ void put(const Op& op, int k0, R* smem) {
        begin(op, k0, smem);
        finish(smem);
    }
    __device__ __forceinline__ void begin(const Op& op, int k0, R* smem) {
        if constexpr (ASYNC)
            issue(op, k0, smem);
        else
            fetch(op, k0);
    }
    __device__ __forceinline__ void finish(R* smem) const {
        if constexpr (!ASYNC) store(smem);
    }

    // cp.async of the slice starting at reduction index k0 into one stage (ASYNC only).
    __device__ __forceinline__ void issue(const Op& op, int k0, R* smem) const {
        static_assert(NV * sizeof(R) == 16 && L::ROW_MAJOR_K == KFAST, "cp.async moves 16-byte vectors");
        const int t = threadIdx.x;
        if constexpr (KFAST) {
            const int lrow = t / LPR, lk = (t % LPR) * NV;
            const typename Op::KS ks = op.kstate(k0 + lk);
#pragma unroll
            for (int i = 0; i < ITERS; ++i) {
                const int row = lrow + i * RSTEP;
                long long off = 0;
                const bool ok = op.offset(op.rstate(row), ks, off);
                cp_async16(smem + L::idx(row, lk), op.ptr + (ok ? off : 0), ok);
            }
        } else {
            const int row = (t % RPV) * NV, lk0 = (t / RPV) * ITERS;
            typename Op::KS ks = op.kstate(k0 + lk0);
#pragma unroll
            for (int i = 0; i < ITERS; ++i) {
                if (i > 0) ks = op.knext(ks, k0 + lk0 + i);
                long long off = 0;
                const bool ok = op.offset(fixed_row, ks, off);
                cp_async16(smem + L::idx(row, lk0 + i), op.ptr + (ok ? off : 0), ok);
            }
        }
    }

    __device__ __forceinline__ void fetch(const Op& op, int k0) {
        const int t = threadIdx.x;
        if constexpr (KFAST) {
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
            const int lk0 = (t / RPV) * ITERS;
            typename Op::KS ks = op.kstate(k0 + lk0);
#pragma unroll
            for (int i = 0; i < ITERS; ++i) {
                if (i > 0) ks = op.knext(ks, k0 + lk0 + i);
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
        if constexpr (KFAST) {
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
            const int row = (t % RPV) * NV, lk0 = (t / RPV) * ITERS;
#pragma unroll
            for (int i = 0; i < ITERS; ++i)  // [k][row] layout: the NV rows are contiguous
                *reinterpret_cast<RVec<R, NV>*>(smem + L::idx(row, lk0 + i)) = regs[i];
        }
    }
};

// ---- tensor-core helpers -----------------------------------------------------------------------
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

// Warp layout of a 128 x BN tile: WN = BN / 32 warps along N, 8 / WN along M; each warp owns
// WTM = 128 / (8 / WN) rows (64 or 32 = MI m16 tiles) and 32 columns (4 n8 tiles).
template <int BN>
struct WarpTile {
    static constexpr int WN = BN / 32, WM = (IG_THREADS / 32) / WN, WTM = IG_BM / WM, MI = WTM / 16;
    static constexpr int ACC = IG_BM * BN / IG_THREADS;  // accumulators per thread (both paths)
    static_assert(WN * WM == IG_THREADS / 32 && MI * 16 == WTM && ACC == MI * 16, "warp layout");
};

// Accumulators of one thread.
template <int BN>
struct IgemmAcc {
    float c[WarpTile<BN>::ACC];
};

// The A / B fragments of one k16 step of a warp's WTM x 32 tile.
template <int BN>
struct MmaFrags {
    unsigned a[WarpTile<BN>::MI][4];
    unsigned b[4][2];
};

// Warp (wm, wn) = (warp % WM, warp / WM) owns rows wm*WTM..+WTM and cols wn*32..+32.
template <typename T, int BN, bool AKF, bool BKF>
__device__ __forceinline__ void load_frags(const typename IgemmCfg<T>::raw* As, const typename IgemmCfg<T>::raw* Bs,
                                           int ks, MmaFrags<BN>& f) {
    typedef SmemLayout<T, IG_BM, AKF> LA;
    typedef SmemLayout<T, BN, BKF> LB;
    typedef WarpTile<BN> WT;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp % WT::WM, wn = warp / WT::WM;
    const int j = lane >> 3;
#pragma unroll
    for (int mi = 0; mi < WT::MI; ++mi) {
        int row, k;
        if (AKF) {  // [row][k]: matrices (rows 0-7|8-15) x (k 0-7|8-15), row-major
            row = wm * WT::WTM + mi * 16 + (lane & 15);
            k = ks + (lane >> 4) * 8;
        } else {    // [k][row]: transposed load
            row = wm * WT::WTM + mi * 16 + 8 * (j & 1);
            k = ks + (lane & 7) + 8 * (j >> 1);
        }
        ldsm_x4<!AKF>(f.a[mi], As + LA::idx(row, k));
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
        f.b[2 * np][0] = r[0];
        f.b[2 * np][1] = r[1];
        f.b[2 * np + 1][0] = r[2];
        f.b[2 * np + 1][1] = r[3];
    }
}

// One BK slice on the tensor cores; acc.c[(mi*4 + ni)*4 + e] is the m16n8 fragment element e of
// tile (mi, ni). The fragments of k step ks+1 are loaded before the mma of step ks are issued.
template <typename T, int BN, bool AKF, bool BKF>
__device__ __forceinline__ void mma_slice(const typename IgemmCfg<T>::raw* As,
                                          const typename IgemmCfg<T>::raw* Bs, IgemmAcc<BN>& acc) {
    MmaFrags<BN> f[2];
    load_frags<T, BN, AKF, BKF>(As, Bs, 0, f[0]);
#pragma unroll
    for (int s = 0; s < IG_KSTEPS; ++s) {
        if (s + 1 < IG_KSTEPS) load_frags<T, BN, AKF, BKF>(As, Bs, (s + 1) * 16, f[(s + 1) & 1]);
#pragma unroll
        for (int mi = 0; mi < WarpTile<BN>::MI; ++mi)
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
                float(&c)[4] = *reinterpret_cast<float(*)[4]>(&acc.c[(mi * 4 + ni) * 4]);
                mma_16816<T>(c, f[s & 1].a[mi], f[s & 1].b[ni][0], f[s & 1].b[ni][1]);
            }
    }
}

// One BK slice with fp32 FMA: acc.c[i * NJ + j] += sum_k A[tm + 16 i][k] * B[tn + 16 j][k]
// (8 x NJ micro-tile, NJ = BN / 16).
template <int BN, int LDA, int LDB>
__device__ __forceinline__ void fma_slice(const float* As, const float* Bs, IgemmAcc<BN>& acc) {
    constexpr int NJ = BN / 16;
    const int tm = threadIdx.x & 15, tn = threadIdx.x >> 4;
#pragma unroll
    for (int k = 0; k < IG_BK; ++k) {
        float a[8], b[NJ];
#pragma unroll
        for (int i = 0; i < 8; ++i) a[i] = As[k * LDA + tm + 16 * i];
#pragma unroll
        for (int jj = 0; jj < NJ; ++jj) b[jj] = Bs[k * LDB + tn + 16 * jj];
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int jj = 0; jj < NJ; ++jj) acc.c[i * NJ + jj] = fmaf(a[i], b[jj], acc.c[i * NJ + jj]);
    }
}

// ---- tf32 tensor cores (fp32 data, precision='tf32') ------------------------------------------
__device__ __forceinline__ unsigned to_tf32(float v) {  // round to nearest, ties away (cvt.rna)
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

__device__ __forceinline__ void mma_1688_tf32(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The m16n8k8 fragments of one k8 step, read straight from the k-major fp32 stages (A(row, k) =
// As[k * LDA + row]): a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4); b0 (k = t, n = g),
// b1 (k = t+4, n = g), g = lane / 4, t = lane % 4. With LD = rows + 8 the 32 lanes of each read hit
// 32 different banks (t * 8 + g).
template <int BN, int LDA, int LDB>
__device__ __forceinline__ void load_tf32_frags(const float* As, const float* Bs, int ks, MmaFrags<BN>& f) {
    typedef WarpTile<BN> WT;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp % WT::WM, wn = warp / WT::WM, g = lane >> 2, t = lane & 3;
    const float* a0 = As + (ks + t) * LDA + wm * WT::WTM + g;
    const float* a1 = a0 + 4 * LDA;
#pragma unroll
    for (int mi = 0; mi < WT::MI; ++mi) {
        f.a[mi][0] = to_tf32(a0[mi * 16]);
        f.a[mi][1] = to_tf32(a0[mi * 16 + 8]);
        f.a[mi][2] = to_tf32(a1[mi * 16]);
        f.a[mi][3] = to_tf32(a1[mi * 16 + 8]);
    }
    const float* b0 = Bs + (ks + t) * LDB + wn * 32 + g;
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
        f.b[ni][0] = to_tf32(b0[ni * 8]);
        f.b[ni][1] = to_tf32(b0[ni * 8 + 4 * LDB]);
    }
}

// One BK slice of fp32 data on the tf32 tensor cores; the accumulator layout is mma_slice's. One
// fragment buffer and a rolled k8 loop (the fp32 register-staged loads already hold the next
// slice: more fragments in flight spill the dW kernel at 128 registers).
template <int BN, int LDA, int LDB>
__device__ __forceinline__ void tf32_slice(const float* As, const float* Bs, IgemmAcc<BN>& acc) {
#pragma unroll 1
    for (int s = 0; s < IG_BK / 8; ++s) {
        MmaFrags<BN> f;
        load_tf32_frags<BN, LDA, LDB>(As, Bs, s * 8, f);
#pragma unroll
        for (int mi = 0; mi < WarpTile<BN>::MI; ++mi)
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
                float(&c)[4] = *reinterpret_cast<float(*)[4]>(&acc.c[(mi * 4 + ni) * 4]);
                mma_1688_tf32(c, f.a[mi], f.b[ni][0], f.b[ni][1]);
            }
    }
}

// Tile-local (row, col) of accumulator element idx of this thread.
template <typename T, int BN>
__device__ __forceinline__ void acc_coord(int idx, int& row, int& col) {
    if constexpr (IgemmCfg<T>::TC) {
        typedef WarpTile<BN> WT;
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        const int tile = idx >> 2, e = idx & 3, mi = tile >> 2, ni = tile & 3;
        row = (warp % WT::WM) * WT::WTM + mi * 16 + (lane >> 2) + 8 * (e >> 1);
        col = (warp / WT::WM) * 32 + ni * 8 + 2 * (lane & 3) + (e & 1);
    } else {
        constexpr int NJ = BN / 16;
        row = (threadIdx.x & 15) + 16 * (idx / NJ);
        col = (threadIdx.x >> 4) + 16 * (idx % NJ);
    }
}

template <typename T, int BN, bool AKF, bool BKF>
__device__ __forceinline__ void slice_math(const typename IgemmCfg<T>::raw* As, const typename IgemmCfg<T>::raw* Bs,
                                           IgemmAcc<BN>& acc) {
    constexpr int LDA = SmemLayout<T, IG_BM, AKF>::LD, LDB = SmemLayout<T, BN, BKF>::LD;
    if constexpr (IgemmCfg<T>::MMA)
        mma_slice<T, BN, AKF, BKF>(As, Bs, acc);
    else if constexpr (IgemmCfg<T>::TF32)
        tf32_slice<BN, LDA, LDB>(reinterpret_cast<const float*>(As), reinterpret_cast<const float*>(Bs), acc);
    else
        fma_slice<BN, LDA, LDB>(reinterpret_cast<const float*>(As), reinterpret_cast<const float*>(Bs), acc);
}

// The main loop: reduction slices [kt_begin, kt_end) of BK, then ep.store(row, col, value) for
// every element of the tile (tile-local coordinates; the epilogue checks bounds), between
// ep.tile_begin() and ep.tile_end() for epilogues with a block-wide phase (EpTilePhase). Shared memory:
// the launch's dynamic shared memory, IG_STAGES stages of (A, B) of IG_OPERAND_BYTES each.
// Every thread of the block must call this (it synchronises).
template <typename T, int BN, int NVA, int NVB, bool AKF, bool BKF, class OpA, class OpB, class Ep>
__device__ __forceinline__ void igemm_tile(const OpA& opA, const OpB& opB, const Ep& ep,
                                           int kt_begin, int kt_end) {
    typedef typename IgemmCfg<T>::raw R;
    constexpr int BK = IG_BK;
    constexpr int OPE = IG_OPERAND_BYTES / (int)sizeof(R);  // elements per operand and stage
    extern __shared__ __align__(16) unsigned char ig_smem[];
    R* const smem = reinterpret_cast<R*>(ig_smem);

    typedef TileLoader<T, IG_BM, NVA, AKF, OpA> LA;
    typedef TileLoader<T, BN, NVB, BKF, OpB> LB;
    static_assert((LA::ASYNC || LB::ASYNC) == (IG_ASYNC != 0),
                  "IG_ASYNC (launcher, igemm_spec) is set iff an operand is copied by cp.async");
    LA la;
    LB lb;
    la.init(opA);
    lb.init(opB);

    constexpr int ACC = WarpTile<BN>::ACC;
    IgemmAcc<BN> acc;
#pragma unroll
    for (int i = 0; i < ACC; ++i) acc.c[i] = 0.0f;

    const int nk = kt_end - kt_begin;
    if constexpr (IG_ASYNC) {
        static_assert(IgemmCfg<T>::MMA, "the cp.async pipeline feeds the tensor-core path");
#pragma unroll
        for (int s = 0; s < IG_STAGES - 1; ++s) {  // prologue: STAGES - 1 slices in flight
            if (s < nk) {
                la.put(opA, (kt_begin + s) * BK, smem + s * 2 * OPE);
                lb.put(opB, (kt_begin + s) * BK, smem + s * 2 * OPE + OPE);
            }
            cp_async_commit();
        }
        for (int i = 0; i < nk; ++i) {
            cp_async_wait<IG_STAGES - 2>();  // this thread's copies of slice i landed ...
            __syncthreads();                 // ... everybody's, and slice i-1's stage is free
            const int nxt = i + IG_STAGES - 1;
            R* st = smem + (nxt % IG_STAGES) * 2 * OPE;
            if (nxt < nk) {  // cp.async issued / register loads in flight during the math
                la.begin(opA, (kt_begin + nxt) * BK, st);
                lb.begin(opB, (kt_begin + nxt) * BK, st + OPE);
            }
            cp_async_commit();
            const R* cur = smem + (i % IG_STAGES) * 2 * OPE;
            slice_math<T, BN, AKF, BKF>(cur, cur + OPE, acc);
            if (nxt < nk) {  // register-staged operands: into slice i-1's stage, read STAGES-1 slices on
                la.finish(st);
                lb.finish(st + OPE);
            }
        }
        cp_async_wait<0>();  // only empty groups are left
    } else {
        if (nk > 0) {
            la.fetch(opA, kt_begin * BK);
            lb.fetch(opB, kt_begin * BK);
            la.store(smem);
            lb.store(smem + OPE);
            __syncthreads();
            for (int i = 0; i < nk; ++i) {
                R* cur = smem + (i & 1) * 2 * OPE;
                R* other = smem + ((i & 1) ^ 1) * 2 * OPE;
                const bool more = i + 1 < nk;
                if (more) {  // issue the next slice's global loads before the math
                    la.fetch(opA, (kt_begin + i + 1) * BK);
                    lb.fetch(opB, (kt_begin + i + 1) * BK);
                }
                slice_math<T, BN, AKF, BKF>(cur, cur + OPE, acc);
                if (more) {  // the other buffer was last read before the previous barrier
                    la.store(other);
                    lb.store(other + OPE);
                }
                __syncthreads();
            }
        }
    }
    if constexpr (EpTilePhase<Ep>::value) ep.tile_begin();
#pragma unroll
    for (int i = 0; i < ACC; ++i) {
        int row, col;
        acc_coord<T, BN>(i, row, col);
        ep.store(row, col, acc.c[i]);
    }
    if constexpr (EpTilePhase<Ep>::value) ep.tile_end();
}

// The specialisation of the conv file that includes this header: SCALAR_T (storage type), VEC_A
// and VEC_B (elements per global load of the implicit GEMMs' operands A and B), -D defines from
// the launcher (conv.defines).
#if !defined(SCALAR_T) || !defined(VEC_A) || !defined(VEC_B)
#error "SCALAR_T, VEC_A and VEC_B are -D defines from cupy_backend/conv.py defines()"
#endif
typedef SCALAR_T T;
typedef IgemmCfg<T>::raw RAW;
