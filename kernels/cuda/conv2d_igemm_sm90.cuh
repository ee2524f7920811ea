// Hopper (sm_90a) implicit-GEMM main loop: warpgroup MMA (wgmma.mma_async) from shared memory.
//
// One thread block computes a W90_BM x W90_BN tile (128 x 128) of C = A @ B^T, fp16/bf16 inputs,
// fp32 accumulation, with 256 threads = 2 warpgroups. Warpgroup g owns rows 64g..64g+63 and all
// 128 columns: per BK = 64 slice it issues 4 wgmma.mma_async.m64n128k16 (one per k16 step), A and
// B read by the tensor cores straight from shared memory through 64-bit matrix descriptors.
//
// Each operand is K-major (contiguous along the reduction index: NHWC channels for the forward
// and dX) or MN-major (contiguous along its rows: dW's x and dY channels; wgmma imm-trans 1), like
// the KFAST / !KFAST operands of conv2d_igemm.cuh. An operand is copied by cp.async (W90Loader:
// the launcher guarantees that 8 consecutive elements along the contiguous dimension (16 bytes)
// are contiguous, 16-byte aligned and all valid or all invalid) or, for NCHW activations read in
// place, through registers (W90RegLoader: scalar loads, any alignment).
//
// Shared memory (dynamic, W90_STAGES stages, base rounded up to 1024 bytes in the kernel): stage s
// holds A (128 rows x 64 k) then B (128 rows x 64 k), 16 KiB each, in the PTX ISA's canonical
// 128-byte swizzled layouts (Swizzle<3,4,3> on the address bits, hence the 1024-byte alignment):
//   K-major : the 16-byte chunk c (k 8c..8c+7) of row r at byte r*128 + ((c ^ r % 8) * 16);
//             descriptor SBO = 1024 (8-row groups), LBO unused (16); a k16 step adds 32 B.
//   MN-major: rows 8rc..8rc+7 at k at byte (k/8)*1024 + (rc/8)*8192 + (k%8)*128 +
//             ((rc%8 ^ k%8) * 16); SBO = 1024 (8-k groups), LBO = 8192 (64-row halves); a k16
//             step adds 2048 B.
// Warpgroup 1's A rows start 8192 bytes into the A tile in both layouts.
//
// Pipeline (prefetch distance D = W90_STAGES - 2, every thread both loads and multiplies):
//   prologue: cp.async slices 0..D-1 (16-byte copies, zero-fill for padding / tile edges), one
//             commit group per slice;
//   slice kt: cp.async.wait_group D-1 (slice kt landed) ; fence.proxy.async (generic -> async
//             proxy) ; __syncthreads ; cp.async slice kt+D into the stage of slice kt-2 ;
//             wgmma.fence ; 4 x wgmma.mma_async ; wgmma.commit_group ; wgmma.wait_group 1.
//   The stage refilled at slice kt was read by the wgmmas of slice kt-2, which every warpgroup
//   retired with its wait_group 1 of slice kt-1, before the barrier. A register-staged operand
//   stores slice kt+D (loaded into registers during slice kt-1) where the cp.async would be
//   issued, and loads slice kt+D+1 right after the wgmmas of slice kt are issued; its generic
//   stores reach the async proxy through the fence.proxy.async + barrier of slice kt+1. So at
//   any time one slice is being multiplied, one (the previous) may still be in flight on the
//   tensor cores, and D slices are being copied.
//
// Everything below needs sm_90a (wgmma); it compiles to nothing for other targets, whose kernels
// must not be launched (cupy_backend/conv.py selects this path only on sm_90 devices).
#pragma once
#include "common.cuh"

#if !defined(W90_BM) || !defined(W90_BN) || !defined(W90_BK) || !defined(W90_STAGES) || !defined(W90_THREADS)
#error "W90_BM, W90_BN, W90_BK, W90_STAGES and W90_THREADS are -D defines from cupy_backend/_config.py"
#endif
static_assert(W90_BM == 128 && W90_BN == 128 && W90_BK == 64 && W90_THREADS == 256,
              "two warpgroups of m64n128k16 wgmma over 64-wide (128-byte swizzled) K slices");
static_assert(W90_STAGES >= 3, "one stage multiplied, one in flight, at least one being copied");

#define W90_ROW_BYTES (W90_BK * 2)                       // 128: one swizzle row
#define W90_A_BYTES (W90_BM * W90_ROW_BYTES)             // 16 KiB
#define W90_B_BYTES (W90_BN * W90_ROW_BYTES)             // 16 KiB
#define W90_STAGE_BYTES (W90_A_BYTES + W90_B_BYTES)
#define W90_SMEM_BYTES (W90_STAGES * W90_STAGE_BYTES + 1024)  // + alignment slack

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ unsigned w90_saddr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16-byte global -> shared copy; src_bytes 0 writes 16 zero bytes (the source is not read).
__device__ __forceinline__ void w90_cp16(unsigned dst, const void* src, unsigned src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" : : "r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ void w90_cp_commit() { asm volatile("cp.async.commit_group;" : : : "memory"); }

template <int N>
__device__ __forceinline__ void w90_cp_wait() { asm volatile("cp.async.wait_group %0;" : : "n"(N) : "memory"); }

__device__ __forceinline__ void w90_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" : : : "memory"); }

// 128-byte swizzle (mode 1, bits 62-63), SBO = 1024 (bits 32-45, >> 4): K-major -- 8-row groups
// of 128-byte rows, LBO unused (16); MN-major -- k groups of 8 rows of 64 elements, LBO = 8192
// (bits 16-29, >> 4) between the two 64-element halves of the 128 rows.
template <bool KMAJOR>
__device__ __forceinline__ unsigned long long w90_desc(unsigned saddr) {
    const unsigned long long lbo = KMAJOR ? 16 : 8192;
    return (unsigned long long)((saddr & 0x3FFFF) >> 4) | ((lbo >> 4) << 16) | ((unsigned long long)(1024 >> 4) << 32) |
           (1ull << 62);
}

// Accumulators of one thread: rows 64g + 16*(warp%4) + lane/4 (+8), 128 columns in 16 n8 blocks.
struct W90Acc {
    float c[64];
};

// D[64 x 128] += A[64 x 16] @ B[128 x 16]^T; accumulator register i of lane l of warp w of the
// warpgroup: row 16w + l/4 + 8*((i/2)%2), column 8*(i/4) + 2*(l%4) + i%2 (PTX ISA wgmma D layout).
template <typename T, int TA, int TB>
__device__ __forceinline__ void w90_wgmma(W90Acc& a, unsigned long long da, unsigned long long db);

template <int TA, int TB>  // imm-trans-a / -b: 0 K-major, 1 MN-major
__device__ __forceinline__ void w90_wgmma_f16(W90Acc& a, unsigned long long da, unsigned long long db) {
    // the 64 accumulators spelled out: the operand list must be literal (cudaemu translates it)
    const int scale_d = 1;  // D = A @ B + D (the accumulators start at zero)
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %66, 0; "
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, "
                 "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, "
                 "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, "
                 "%59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %67, %68; }"
                 : "+f"(a.c[0]), "+f"(a.c[1]), "+f"(a.c[2]), "+f"(a.c[3]), "+f"(a.c[4]), "+f"(a.c[5]), "+f"(a.c[6]),
                   "+f"(a.c[7]), "+f"(a.c[8]), "+f"(a.c[9]), "+f"(a.c[10]), "+f"(a.c[11]), "+f"(a.c[12]),
                   "+f"(a.c[13]), "+f"(a.c[14]), "+f"(a.c[15]), "+f"(a.c[16]), "+f"(a.c[17]), "+f"(a.c[18]),
                   "+f"(a.c[19]), "+f"(a.c[20]), "+f"(a.c[21]), "+f"(a.c[22]), "+f"(a.c[23]), "+f"(a.c[24]),
                   "+f"(a.c[25]), "+f"(a.c[26]), "+f"(a.c[27]), "+f"(a.c[28]), "+f"(a.c[29]), "+f"(a.c[30]),
                   "+f"(a.c[31]), "+f"(a.c[32]), "+f"(a.c[33]), "+f"(a.c[34]), "+f"(a.c[35]), "+f"(a.c[36]),
                   "+f"(a.c[37]), "+f"(a.c[38]), "+f"(a.c[39]), "+f"(a.c[40]), "+f"(a.c[41]), "+f"(a.c[42]),
                   "+f"(a.c[43]), "+f"(a.c[44]), "+f"(a.c[45]), "+f"(a.c[46]), "+f"(a.c[47]), "+f"(a.c[48]),
                   "+f"(a.c[49]), "+f"(a.c[50]), "+f"(a.c[51]), "+f"(a.c[52]), "+f"(a.c[53]), "+f"(a.c[54]),
                   "+f"(a.c[55]), "+f"(a.c[56]), "+f"(a.c[57]), "+f"(a.c[58]), "+f"(a.c[59]), "+f"(a.c[60]),
                   "+f"(a.c[61]), "+f"(a.c[62]), "+f"(a.c[63])
                 : "l"(da), "l"(db), "r"(scale_d), "n"(TA), "n"(TB));
}

template <int TA, int TB>  // imm-trans-a / -b: 0 K-major, 1 MN-major
__device__ __forceinline__ void w90_wgmma_bf16(W90Acc& a, unsigned long long da, unsigned long long db) {
    // the 64 accumulators spelled out: the operand list must be literal (cudaemu translates it)
    const int scale_d = 1;  // D = A @ B + D (the accumulators start at zero)
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %66, 0; "
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, "
                 "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, "
                 "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, "
                 "%59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %67, %68; }"
                 : "+f"(a.c[0]), "+f"(a.c[1]), "+f"(a.c[2]), "+f"(a.c[3]), "+f"(a.c[4]), "+f"(a.c[5]), "+f"(a.c[6]),
                   "+f"(a.c[7]), "+f"(a.c[8]), "+f"(a.c[9]), "+f"(a.c[10]), "+f"(a.c[11]), "+f"(a.c[12]),
                   "+f"(a.c[13]), "+f"(a.c[14]), "+f"(a.c[15]), "+f"(a.c[16]), "+f"(a.c[17]), "+f"(a.c[18]),
                   "+f"(a.c[19]), "+f"(a.c[20]), "+f"(a.c[21]), "+f"(a.c[22]), "+f"(a.c[23]), "+f"(a.c[24]),
                   "+f"(a.c[25]), "+f"(a.c[26]), "+f"(a.c[27]), "+f"(a.c[28]), "+f"(a.c[29]), "+f"(a.c[30]),
                   "+f"(a.c[31]), "+f"(a.c[32]), "+f"(a.c[33]), "+f"(a.c[34]), "+f"(a.c[35]), "+f"(a.c[36]),
                   "+f"(a.c[37]), "+f"(a.c[38]), "+f"(a.c[39]), "+f"(a.c[40]), "+f"(a.c[41]), "+f"(a.c[42]),
                   "+f"(a.c[43]), "+f"(a.c[44]), "+f"(a.c[45]), "+f"(a.c[46]), "+f"(a.c[47]), "+f"(a.c[48]),
                   "+f"(a.c[49]), "+f"(a.c[50]), "+f"(a.c[51]), "+f"(a.c[52]), "+f"(a.c[53]), "+f"(a.c[54]),
                   "+f"(a.c[55]), "+f"(a.c[56]), "+f"(a.c[57]), "+f"(a.c[58]), "+f"(a.c[59]), "+f"(a.c[60]),
                   "+f"(a.c[61]), "+f"(a.c[62]), "+f"(a.c[63])
                 : "l"(da), "l"(db), "r"(scale_d), "n"(TA), "n"(TB));
}

// Pins the accumulator registers at this point of the instruction stream (the compiler may not
// move their reads or writes across it), as CUTLASS's warpgroup_fence_operand.
__device__ __forceinline__ void w90_fence_operands(W90Acc& a) {
#pragma unroll
    for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(a.c[i]) : : "memory");
}

template <typename T, int TA, int TB>
__device__ __forceinline__ void w90_wgmma(W90Acc& a, unsigned long long da, unsigned long long db) {
    if constexpr (is_same_t<T, f16_t>::value)
        w90_wgmma_f16<TA, TB>(a, da, db);
    else
        w90_wgmma_bf16<TA, TB>(a, da, db);
}

__device__ __forceinline__ void w90_wgmma_fence(W90Acc& a) {
    w90_fence_operands(a);
    asm volatile("wgmma.fence.sync.aligned;" : : : "memory");
}
__device__ __forceinline__ void w90_wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" : : : "memory"); }
template <int N>
__device__ __forceinline__ void w90_wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" : : "n"(N) : "memory"); }

// Global -> shared copies of one operand tile (128 rows x 64 k) for one K slice, 16 bytes each.
//   KMAJOR: a chunk is k 8c..8c+7 of one row; thread t copies chunk t % 8 of rows t/8 + 32 i,
//           i < 4, to byte row*128 + ((c ^ row % 8) * 16) (Swizzle<3,4,3> of row*128 + 16c).
//   MN-major (the operand contiguous along its rows): a chunk is rows 8rc..8rc+7 at one k;
//           thread t copies row chunk rc = t % 16 at k = t/16 + 16 i, i < 4, to byte
//           (k/8)*1024 + (rc/8)*8192 + (k%8)*128 + ((rc%8 ^ k%8) * 16) (the ISA's MN-major
//           canonical layout ((T,8,2),(8,8)):((1,T,LBO=8192),(8T,SBO=1024)), same swizzle).
template <class Op, bool KMAJOR>
struct W90Loader {
    static constexpr int ITERS = 128 * 8 / W90_THREADS;  // 4
    static constexpr int NRS = KMAJOR ? ITERS : 1;
    typename Op::RS rs[NRS];

    __device__ __forceinline__ void init(const Op& op) {
        if (KMAJOR) {
#pragma unroll
            for (int i = 0; i < NRS; ++i) rs[i] = op.rstate((int)threadIdx.x / 8 + 32 * i);
        } else {
            rs[0] = op.rstate(8 * ((int)threadIdx.x % 16));
        }
    }

    __device__ __forceinline__ void fetch(const Op&, int) {}  // cp.async needs no register staging

    __device__ __forceinline__ void issue(const Op& op, unsigned tile, unsigned char*, int k0) const {
        if (KMAJOR) {
            const int c = threadIdx.x % 8;
            const typename Op::KS ks = op.kstate(k0 + 8 * c);
#pragma unroll
            for (int i = 0; i < ITERS; ++i) {
                const int row = (int)threadIdx.x / 8 + 32 * i;
                long long off = 0;
                const bool ok = op.offset(rs[i % NRS], ks, off);
                const unsigned dst = tile + (unsigned)row * W90_ROW_BYTES + (unsigned)((c ^ (row & 7)) * 16);
                w90_cp16(dst, ok ? (const void*)(op.ptr + off) : (const void*)op.ptr, ok ? 16u : 0u);
            }
        } else {
            const int rc = threadIdx.x % 16;
#pragma unroll
            for (int i = 0; i < ITERS; ++i) {
                const int k = (int)threadIdx.x / 16 + 16 * i;
                const typename Op::KS ks = op.kstate(k0 + k);
                long long off = 0;
                const bool ok = op.offset(rs[0], ks, off);
                const unsigned dst = tile + (unsigned)((k >> 3) * 1024 + (rc >> 3) * 8192 + (k & 7) * 128 +
                                                       (((rc & 7) ^ (k & 7)) * 16));
                w90_cp16(dst, ok ? (const void*)(op.ptr + off) : (const void*)op.ptr, ok ? 16u : 0u);
            }
        }
    }
};

// Byte offset of element (row, k) of a 128 x 64 operand tile in the layouts above.
template <bool KMAJOR>
__device__ __forceinline__ unsigned w90_elem(int row, int k) {
    if (KMAJOR) return (unsigned)(row * W90_ROW_BYTES + (((k >> 3) ^ (row & 7)) * 16) + (k & 7) * 2);
    return (unsigned)((k >> 3) * 1024 + (row >> 6) * 8192 + (k & 7) * 128 + ((((row >> 3) & 7) ^ (k & 7)) * 16) +
                      (row & 7) * 2);
}

// Register-staged loads of one operand tile (128 rows x 64 k) for operands that 16-byte copies
// cannot read (NCHW activations in place: padding and strides leave rows unaligned): fetch() loads
// the slice's 32 elements per thread into registers (scalar, zero where op.offset says so),
// issue() stores them into the stage in the layout above (generic stores; the main loop's
// fence.proxy.async + barrier make them visible to wgmma). Lanes run along the operand's
// contiguous dimension, so a warp's loads coalesce and its shared stores are conflict-free:
//   KMAJOR (contiguous along k): thread t loads k = t % 64 of rows t / 64 + 4 i (one kstate per
//           slice, the row state per element: a cheap or RowCached rstate);
//   MN-major (contiguous along rows): thread t loads row t % 128 (row state once, in registers)
//           at k = 32 (t / 128) + i (kstate once per slice, then knext increments).
template <class Op, bool KMAJOR>
struct W90RegLoader {
    static constexpr int ITEMS = 128 * W90_BK / W90_THREADS;  // 32
    unsigned short v[ITEMS];
    typename Op::RS rs;  // MN-major: the thread's row

    __device__ __forceinline__ void init(const Op& op) {
        if (!KMAJOR) rs = op.rstate((int)threadIdx.x % 128);
    }

    __device__ __forceinline__ void fetch(const Op& op, int k0) {
        const unsigned short* src = reinterpret_cast<const unsigned short*>(op.ptr);
        if constexpr (KMAJOR) {
            const typename Op::KS ks = op.kstate(k0 + (int)threadIdx.x % 64);
#pragma unroll
            for (int i = 0; i < ITEMS; ++i) {
                long long off = 0;
                v[i] = op.offset(op.rstate((int)threadIdx.x / 64 + 4 * i), ks, off) ? src[off] : (unsigned short)0;
            }
        } else {
            const int kb = k0 + ITEMS * ((int)threadIdx.x / 128);
            typename Op::KS ks = op.kstate(kb);
#pragma unroll
            for (int i = 0; i < ITEMS; ++i) {
                if (i > 0) ks = op.knext(ks, kb + i);
                long long off = 0;
                v[i] = op.offset(rs, ks, off) ? src[off] : (unsigned short)0;
            }
        }
    }

    __device__ __forceinline__ void issue(const Op&, unsigned, unsigned char* tp, int) const {
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
            const int row = KMAJOR ? (int)threadIdx.x / 64 + 4 * i : (int)threadIdx.x % 128;
            const int k = KMAJOR ? (int)threadIdx.x % 64 : ITEMS * ((int)threadIdx.x / 128) + i;
            *reinterpret_cast<unsigned short*>(tp + w90_elem<KMAJOR>(row, k)) = v[i];
        }
    }
};

// The loader of an operand: cp.async 16-byte copies, or (REG) register-staged scalar loads.
template <class Op, bool KMAJOR, bool REG>
struct W90LoaderOf {
    typedef W90Loader<Op, KMAJOR> type;
};
template <class Op, bool KMAJOR>
struct W90LoaderOf<Op, KMAJOR, true> {
    typedef W90RegLoader<Op, KMAJOR> type;
};

// The main loop: reduction slices [kt_begin, kt_end) of W90_BK, then ep.store(row, col, value)
// for every element of the tile (tile-local coordinates; the epilogue checks bounds), between
// ep.tile_begin() and ep.tile_end() for epilogues with a block-wide phase (EpTilePhase). AK / BK:
// operand A / B is K-major (else MN-major); AREG / BREG: loaded through registers (W90RegLoader:
// slice kt + D is fetched while slice kt - 1's wgmma runs, stored at the top of the next
// iteration, before the fence and barrier that precede its wgmma) instead of by cp.async. Every
// thread of the block must call it (it synchronises). smem: the kernel's dynamic shared memory.
template <typename T, bool AK, bool BK, bool AREG, bool BREG, class OpA, class OpB, class Ep>
__device__ __forceinline__ void w90_igemm_tile(unsigned char* smem, const OpA& opA, const OpB& opB, const Ep& ep,
                                               int kt_begin, int kt_end) {
    constexpr int D = W90_STAGES - 2;
    const unsigned raw = w90_saddr(smem);
    const unsigned base = (raw + 1023u) & ~1023u;
    unsigned char* const gbase = smem + (base - raw);  // the same bytes, as a generic pointer
    const int wg = threadIdx.x / 128;
    typename W90LoaderOf<OpA, AK, AREG>::type la;
    typename W90LoaderOf<OpB, BK, BREG>::type lb;
    const int nk = kt_end > kt_begin ? kt_end - kt_begin : 0;
    la.init(opA);
    lb.init(opB);
    W90Acc acc;
#pragma unroll
    for (int i = 0; i < 64; ++i) acc.c[i] = 0.0f;

#pragma unroll
    for (int s = 0; s < D; ++s) {
        if (s < nk) {
            const unsigned st = (unsigned)s * W90_STAGE_BYTES;
            la.fetch(opA, (kt_begin + s) * W90_BK);
            lb.fetch(opB, (kt_begin + s) * W90_BK);
            la.issue(opA, base + st, gbase + st, (kt_begin + s) * W90_BK);
            lb.issue(opB, base + st + W90_A_BYTES, gbase + st + W90_A_BYTES, (kt_begin + s) * W90_BK);
        }
        w90_cp_commit();  // one group per slice, empty past the end: the wait count stays uniform
    }
    if (D < nk) {  // register-staged operands: slice D in flight into registers
        la.fetch(opA, (kt_begin + D) * W90_BK);
        lb.fetch(opB, (kt_begin + D) * W90_BK);
    }
    for (int kt = 0; kt < nk; ++kt) {  // local slice index; global slice kt_begin + kt
        w90_cp_wait<D - 1>();
        w90_fence_proxy_async();
        __syncthreads();
        const int kn = kt + D;
        if (kn < nk) {
            const unsigned st = (unsigned)(kn % W90_STAGES) * W90_STAGE_BYTES;
            la.issue(opA, base + st, gbase + st, (kt_begin + kn) * W90_BK);
            lb.issue(opB, base + st + W90_A_BYTES, gbase + st + W90_A_BYTES, (kt_begin + kn) * W90_BK);
        }
        w90_cp_commit();
        const unsigned st = base + (unsigned)(kt % W90_STAGES) * W90_STAGE_BYTES;
        // warpgroup wg's 64 rows of A start 8192 bytes in (both layouts); a k16 step advances the
        // start by 32 bytes inside the 128-byte rows (K-major) or by two 8-k groups (MN-major)
        const unsigned a_tile = st + (unsigned)wg * 8192u, b_tile = st + W90_A_BYTES;
        w90_wgmma_fence(acc);
#pragma unroll
        for (int k16 = 0; k16 < W90_BK / 16; ++k16)
            w90_wgmma<T, AK ? 0 : 1, BK ? 0 : 1>(acc, w90_desc<AK>(a_tile + (AK ? 32u : 2048u) * k16),
                                                 w90_desc<BK>(b_tile + (BK ? 32u : 2048u) * k16));
        w90_wgmma_commit();
        if (kn + 1 < nk) {  // register-staged operands: the next slice's loads overlap the wgmma
            la.fetch(opA, (kt_begin + kn + 1) * W90_BK);
            lb.fetch(opB, (kt_begin + kn + 1) * W90_BK);
        }
        w90_wgmma_wait<1>();
        w90_fence_operands(acc);
    }
    w90_wgmma_wait<0>();
    w90_fence_operands(acc);
    w90_cp_wait<0>();  // only empty groups can remain; keeps every thread's copies retired

    const int lane = threadIdx.x & 31, wq = (threadIdx.x >> 5) & 3;
    if constexpr (EpTilePhase<Ep>::value) ep.tile_begin();
#pragma unroll
    for (int i = 0; i < 64; ++i) {
        const int row = 64 * wg + 16 * wq + (lane >> 2) + 8 * ((i >> 1) & 1);
        const int col = 8 * (i >> 2) + 2 * (lane & 3) + (i & 1);
        ep.store(row, col, acc.c[i]);
    }
    if constexpr (EpTilePhase<Ep>::value) ep.tile_end();
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL
