"""Unit tests of the emulated PTX instructions (cnngpu.testing.cudaemu), each against a model
written from the PTX ISA's own definitions: the cvt rounding rules, and the fragment tables of
ldmatrix (lane 8*i + r gives the row address of row r of matrix i; register i of lane l holds
row l/4, columns 2*(l%4), +1 of matrix i, transposed with .trans) and of mma.m16n8k16 with
.f16/.bf16 inputs (groupID = lane >> 2, threadID_in_group = lane % 4; A: row groupID (+8 for
a2,a3,a6,a7 elements), col 2*tig + (i&1) (+8 for i >= 4); B: row 2*tig + (i&1) (+8 for i >= 2),
col groupID; C/D: row groupID (+8 for c2,c3), col 2*tig + (i&1)), and cp.async (a copy of
cp-size bytes, the bytes past src-size zero-filled, completes asynchronously: only
cp.async.wait_group N -- every committed group but the N most recent -- or wait_all guarantees it
landed; the emulator lands it exactly there in the forward schedule and at issue in the reverse one).
"""
import numpy as np
import pytest

pytest.importorskip("ml_dtypes")
from ml_dtypes import bfloat16  # noqa: E402

from cnngpu.testing import cudaemu  # noqa: E402
from cnngpu.testing.cudaemu import cupy_api as cp  # noqa: E402

SRC = r'''
extern "C" __global__ void cvt_f16(const float* x, unsigned short* h, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { unsigned short b; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(b) : "f"(x[i])); h[i] = b; }
}
extern "C" __global__ void cvt_bf16(const float* x, unsigned short* h, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { unsigned short b; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(x[i])); h[i] = b; }
}
extern "C" __global__ void cvt_f32(const unsigned short* h, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h[i])); y[i] = f; }
}
__device__ unsigned saddr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
// four 8x8 b16 matrices m[i][r][c] = src[i*64 + r*8 + c]; lane 8i+r supplies row r of matrix i,
// stored at rows permuted by `perm` inside shared memory (rows need not be contiguous)
template <bool TRANS>
__device__ void ldsm(const unsigned short* src, const int* perm, unsigned* out) {
    __shared__ __align__(16) unsigned short s[32 * 8];
    for (int i = threadIdx.x; i < 256; i += 32) s[i] = src[(perm[i / 8]) * 8 + i % 8];
    __syncthreads();
    const int lane = threadIdx.x;
    int slot = 0;
    for (int k = 0; k < 32; ++k) if (perm[k] == lane) slot = k;
    unsigned r0, r1, r2, r3;
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(saddr(s + slot * 8)));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(saddr(s + slot * 8)));
    out[lane * 4 + 0] = r0; out[lane * 4 + 1] = r1; out[lane * 4 + 2] = r2; out[lane * 4 + 3] = r3;
}
extern "C" __global__ void ldsm_x4(const unsigned short* src, const int* perm, unsigned* out) { ldsm<false>(src, perm, out); }
extern "C" __global__ void ldsm_x4_trans(const unsigned short* src, const int* perm, unsigned* out) { ldsm<true>(src, perm, out); }
// fragments given per lane: a[lane*4+i], b[lane*2+i], c[lane*4+i] -> d[lane*4+i]
extern "C" __global__ void mma_f16(const unsigned* a, const unsigned* b, const float* c, float* d) {
    const int l = threadIdx.x;
    float acc[4] = {c[l * 4], c[l * 4 + 1], c[l * 4 + 2], c[l * 4 + 3]};
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(a[l * 4]), "r"(a[l * 4 + 1]), "r"(a[l * 4 + 2]), "r"(a[l * 4 + 3]), "r"(b[l * 2]), "r"(b[l * 2 + 1]));
    for (int i = 0; i < 4; ++i) d[l * 4 + i] = acc[i];
}
extern "C" __global__ void mma_bf16(const unsigned* a, const unsigned* b, const float* c, float* d) {
    const int l = threadIdx.x;
    float acc[4] = {c[l * 4], c[l * 4 + 1], c[l * 4 + 2], c[l * 4 + 3]};
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(a[l * 4]), "r"(a[l * 4 + 1]), "r"(a[l * 4 + 2]), "r"(a[l * 4 + 3]), "r"(b[l * 2]), "r"(b[l * 2 + 1]));
    for (int i = 0; i < 4; ++i) d[l * 4 + i] = acc[i];
}
// cp.async: thread t copies N bytes src[t*N..] -> smem (src-size srcsz[t], zero fill), waits, and
// the block writes the whole shared buffer (untouched bytes stay 0xFF) to out
template <int N, int FORM>
__device__ void cpa(const unsigned char* src, const unsigned* srcsz, unsigned char* out) {
    __shared__ __align__(16) unsigned char s[64 * 16];
    const int t = threadIdx.x;
    const unsigned d = saddr(s + t * N);
    const unsigned char* g = src + t * N;
    if (FORM == 0)
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" :: "r"(d), "l"(g), "n"(N), "r"(srcsz[t]));
    else if (FORM == 1)
        asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;" :: "r"(d), "l"(g), "r"(srcsz[t]));
    else
        asm volatile("cp.async.ca.shared::cta.global [%0], [%1], %2;" :: "r"(d), "l"(g), "n"(N));
    asm volatile("cp.async.commit_group;" ::);
    asm volatile("cp.async.wait_group 0;" ::);
    __syncthreads();
    for (int i = t; i < 64 * 16; i += 64) out[i] = s[i];
}
extern "C" __global__ void cpa_ca4(const unsigned char* a, const unsigned* z, unsigned char* o) {
    cpa<4, 0>(a, z, o); }
extern "C" __global__ void cpa_ca8(const unsigned char* a, const unsigned* z, unsigned char* o) {
    cpa<8, 0>(a, z, o); }
extern "C" __global__ void cpa_ca16(const unsigned char* a, const unsigned* z, unsigned char* o) {
    cpa<16, 0>(a, z, o); }
extern "C" __global__ void cpa_cg16(const unsigned char* a, const unsigned* z, unsigned char* o) {
    cpa<16, 1>(a, z, o); }
extern "C" __global__ void cpa_full8(const unsigned char* a, const unsigned* z, unsigned char* o) {
    cpa<8, 2>(a, z, o); }
// groups: one thread copies src[g] -> slot g in three groups, snapshots the slots after
// wait_group 2, wait_group 1 and wait_all (snap[k*3 + g])
extern "C" __global__ void cpa_groups(const unsigned* src, unsigned* snap) {
    __shared__ __align__(16) unsigned s[4];
    for (int gi = 0; gi < 3; ++gi) {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(saddr(s + gi)), "l"(src + gi));
        asm volatile("cp.async.commit_group;" ::);
    }
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(saddr(s + 3)), "l"(src + 3));  // not committed
    asm volatile("cp.async.wait_group %0;" :: "n"(2));
    for (int gi = 0; gi < 4; ++gi) snap[gi] = s[gi];
    asm volatile("cp.async.wait_group 1;" ::);
    for (int gi = 0; gi < 4; ++gi) snap[4 + gi] = s[gi];
    asm volatile("cp.async.wait_group 0;" ::);
    for (int gi = 0; gi < 4; ++gi) snap[8 + gi] = s[gi];
    asm volatile("cp.async.wait_all;" ::);
    for (int gi = 0; gi < 4; ++gi) snap[12 + gi] = s[gi];
}
// a pipeline bug: thread t copies x[t] into slot t, the block synchronises but nobody waited for
// the copies, then thread t reads slot (t + 1) % 64; the wait comes only at the end
extern "C" __global__ void cpa_missing_wait(const float* x, float* y) {
    __shared__ __align__(16) float s[64];
    const int t = threadIdx.x;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(saddr(s + t)), "l"(x + t));
    asm volatile("cp.async.commit_group;" ::);
    __syncthreads();
    y[t] = s[(t + 1) % 64];
    asm volatile("cp.async.wait_all;" ::);
}
extern "C" __global__ void cpa_no_wait(const float* x, float* y) {
    __shared__ __align__(16) float s[64];
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(saddr(s + threadIdx.x)), "l"(x + threadIdx.x));
    asm volatile("cp.async.commit_group;" ::);
    y[threadIdx.x] = 0.0f;
}
extern "C" __global__ void cpa_bad(const float* x, float* y, int kind) {
    __shared__ __align__(16) float s[64];
    if (kind == 0)       // .cg copies 16 bytes only
        asm volatile("cp.async.cg.shared.global [%0], [%1], 8;" :: "r"(saddr(s)), "l"(x));
    else if (kind == 1)  // misaligned global source
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" :: "r"(saddr(s)), "l"(x + 1));
    else if (kind == 2)  // src-size above cp-size
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" :: "r"(saddr(s)), "l"(x), "r"(8));
    else                 // destination past the shared variable
        asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" :: "r"(saddr(s + 64 + 64)), "l"(x));
    asm volatile("cp.async.wait_all;" ::);
    y[0] = s[0];
}
extern "C" __global__ void cvt_tf32(const float* x, unsigned* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { unsigned b; asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(b) : "f"(x[i])); y[i] = b; }
}
// tf32 fragments given per lane: a[lane*4+i], b[lane*2+i], c[lane*4+i] -> d[lane*4+i]
extern "C" __global__ void mma_tf32(const unsigned* a, const unsigned* b, const float* c, float* d) {
    const int l = threadIdx.x;
    float acc[4] = {c[l * 4], c[l * 4 + 1], c[l * 4 + 2], c[l * 4 + 3]};
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(a[l * 4]), "r"(a[l * 4 + 1]), "r"(a[l * 4 + 2]), "r"(a[l * 4 + 3]), "r"(b[l * 2]), "r"(b[l * 2 + 1]));
    for (int i = 0; i < 4; ++i) d[l * 4 + i] = acc[i];
}
extern "C" __global__ void unknown_insn(float* y) {
    float v = 1.0f;
    asm("sin.approx.f32 %0, %0;" : "+f"(v));
    y[0] = v;
}
extern "C" __global__ void wrong_width(const float* x, unsigned* y) {
    unsigned b = 0;
    asm("cvt.rn.f16.f32 %0, %1;" : "=r"(b) : "f"(x[0]));
    y[0] = b;
}
'''


@pytest.fixture(scope="module")
def mod():
    return cudaemu.RawModule(code=SRC, options=("--std=c++17",))


def _run(mod, name, n, *args):
    mod.get_function(name)(((n + 127) // 128,), (128,), args)


# ---- cvt ----------------------------------------------------------------------------------------
def _special_floats():
    f16_max, f16_tiny = 65504.0, 2.0 ** -24
    vals = [0.0, -0.0, 1.0, -1.0, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11, f16_max, 65519.99, 65520.0, -65520.0, 1e30,
            f16_tiny, f16_tiny / 2, f16_tiny * 1.5, f16_tiny * 2.5, 2.0 ** -14, 2.0 ** -14 * (1 - 2 ** -11),
            np.inf, -np.inf, 3.4e38, 1e-45, 2.0 ** -126, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8]
    rng = np.random.default_rng(0)
    rand = rng.standard_normal(2000) * np.exp2(rng.integers(-30, 20, 2000))
    bits = rng.integers(0, 2 ** 32, 2000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([np.array(vals, np.float32), rand.astype(np.float32), bits[np.isfinite(bits)]])


@pytest.mark.parametrize("kind", ["f16", "bf16"])
def test_cvt_rn_to_16bit(mod, kind):
    """cvt.rn.{f16,bf16}.f32: round to nearest even, overflow to infinity, subnormals, NaN ->
    canonical NaN 0x7fff."""
    x = np.concatenate([_special_floats(), np.array([np.nan, -np.nan], np.float32)])
    h = cp.empty(x.shape, np.uint16)
    _run(mod, f"cvt_{kind}", x.size, cp.asarray(x), h, np.int32(x.size))
    got = cp.asnumpy(h)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16 if kind == "f16" else bfloat16).view(np.uint16).copy()
    nan = np.isnan(x)
    want[nan] = 0x7FFF
    np.testing.assert_array_equal(got, want)


def test_cvt_f16_to_f32_exhaustive(mod):
    h = np.arange(65536, dtype=np.uint16)
    y = cp.empty((65536,), np.float32)
    _run(mod, "cvt_f32", 65536, cp.asarray(h), y, np.int32(65536))
    got, want = cp.asnumpy(y), h.view(np.float16).astype(np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(want)], want[~np.isnan(want)])


# ---- ldmatrix -----------------------------------------------------------------------------------
def _ldmatrix_model(m, trans):
    """(32, 4) uint32 registers per the ISA: register i of lane l = matrix i, row l//4, cols
    2*(l%4), 2*(l%4)+1 (low half first); .trans reads the transposed matrix."""
    out = np.zeros((32, 4), np.uint32)
    for lane in range(32):
        r, c = lane // 4, 2 * (lane % 4)
        for i in range(4):
            mt = m[i].T if trans else m[i]
            out[lane, i] = int(mt[r, c]) | (int(mt[r, c + 1]) << 16)
    return out


@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_x4(mod, trans):
    rng = np.random.default_rng(1)
    src = rng.integers(0, 2 ** 16, (4, 8, 8), dtype=np.uint16)  # four 8x8 matrices
    perm = rng.permutation(32).astype(np.int32)                    # row lane k lives in smem slot k'
    out = cp.empty((32 * 4,), np.uint32)
    mod.get_function("ldsm_x4_trans" if trans else "ldsm_x4")((1,), (32,), (cp.asarray(src.reshape(-1)),
                                                                           cp.asarray(perm), out))
    np.testing.assert_array_equal(cp.asnumpy(out).reshape(32, 4), _ldmatrix_model(src, trans))


# ---- mma.m16n8k16 -------------------------------------------------------------------------------
def _pack(lo, hi):
    return (lo.astype(np.uint32) | (hi.astype(np.uint32) << 16)).astype(np.uint32)


def _fragments(A, B, C, dt):
    """Distribute A (16x16), B (16x8), C (16x8) over the 32 lanes per the ISA's fragment tables."""
    ab, bb = A.astype(dt).view(np.uint16), B.astype(dt).view(np.uint16)
    a = np.zeros((32, 4), np.uint32)
    b = np.zeros((32, 2), np.uint32)
    c = np.zeros((32, 4), np.float32)
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        ae = [ab[g + (8 if i in (2, 3, 6, 7) else 0), 2 * t + (i & 1) + (8 if i >= 4 else 0)] for i in range(8)]
        a[lane] = [_pack(ae[2 * r], ae[2 * r + 1]) for r in range(4)]
        be = [bb[2 * t + (i & 1) + (8 if i >= 2 else 0), g] for i in range(4)]
        b[lane] = [_pack(be[0], be[1]), _pack(be[2], be[3])]
        c[lane] = [C[g + (8 if i >= 2 else 0), 2 * t + (i & 1)] for i in range(4)]
    return a, b, c


@pytest.mark.parametrize("kind", ["f16", "bf16"])
def test_mma_m16n8k16(mod, kind):
    dt = np.float16 if kind == "f16" else bfloat16
    rng = np.random.default_rng(2)
    A = rng.standard_normal((16, 16)).astype(dt).astype(np.float64)
    B = rng.standard_normal((16, 8)).astype(dt).astype(np.float64)
    C = rng.standard_normal((16, 8)).astype(np.float32)
    a, b, c = _fragments(A, B, C, dt)
    d = cp.empty((32 * 4,), np.float32)
    mod.get_function(f"mma_{kind}")((1,), (32,), (cp.asarray(a.reshape(-1)), cp.asarray(b.reshape(-1)),
                                                   cp.asarray(c.reshape(-1)), d))
    D = A @ B + C
    got = cp.asnumpy(d).reshape(32, 4)
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        want = [D[g + (8 if i >= 2 else 0), 2 * t + (i & 1)] for i in range(4)]
        np.testing.assert_allclose(got[lane], want, rtol=1e-6, atol=1e-6)


def test_mma_fragment_model_is_a_bijection():
    """The test's own tables place each of the 256 A, 128 B and 128 C elements exactly once."""
    seen_a, seen_b, seen_c = set(), set(), set()
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        seen_a |= {(g + (8 if i in (2, 3, 6, 7) else 0), 2 * t + (i & 1) + (8 if i >= 4 else 0)) for i in range(8)}
        seen_b |= {(2 * t + (i & 1) + (8 if i >= 2 else 0), g) for i in range(4)}
        seen_c |= {(g + (8 if i >= 2 else 0), 2 * t + (i & 1)) for i in range(4)}
    assert len(seen_a) == 256 and len(seen_b) == 128 and len(seen_c) == 128


# ---- failures -------------------------------------------------------------------------------------
def test_unknown_instruction_fails_with_its_text(mod):
    with pytest.raises(cudaemu.CudaEmuError, match=r"sin\.approx\.f32 %0, %0.*not emulated|not emulated.*sin\.approx"):
        mod.get_function("unknown_insn")((1,), (1,), (cp.empty((1,), np.float32),))


def test_operand_width_mismatch_fails(mod):
    with pytest.raises(cudaemu.CudaEmuError, match="constraint r .32-bit.*writes 2 bytes"):
        mod.get_function("wrong_width")((1,), (1,), (cp.asarray(np.ones(1, np.float32)), cp.empty((1,), np.uint32)))


# ---- tf32 ---------------------------------------------------------------------------------------
def _tf32_rna(x):
    """cvt.rna.tf32.f32 per the ISA: round to 10 mantissa bits, ties away from zero, as a .b32 with
    the low 13 bits zero (NaN -> 0x7fffffff, +-inf kept, overflow to inf)."""
    b = x.view(np.uint32).astype(np.uint64)
    out = ((b + 0x1000) & 0xFFFFE000).astype(np.uint32)
    inf = np.isinf(x)
    out[inf] = x[inf].view(np.uint32)
    out[np.isnan(x)] = 0x7FFFFFFF
    return out


def test_cvt_rna_tf32(mod):
    x = np.concatenate([_special_floats(), np.array([np.nan, 1 + 2 ** -11, -(1 + 2 ** -11), 1 + 3 * 2 ** -11,
                                                     np.finfo(np.float32).max], np.float32)])
    y = cp.empty(x.shape, np.uint32)
    _run(mod, "cvt_tf32", x.size, cp.asarray(x), y, np.int32(x.size))
    got = cp.asnumpy(y)
    np.testing.assert_array_equal(got, _tf32_rna(x))
    # ties go away from zero: 1 + 2^-11 is halfway between 1 and 1 + 2^-10
    assert got[-4].view(np.float32) == 1 + 2 ** -10 and got[-3].view(np.float32) == -(1 + 2 ** -10)
    assert got[-1].view(np.float32) == np.inf


def test_mma_m16n8k8_tf32(mod):
    """The m16n8k8 .tf32 fragment tables: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
    b0 (k = t, n = g), b1 (k = t+4, n = g); C/D as m16n8k16. Operands are tf32 bit patterns; the
    low 13 bits of a register are not part of the operand (given nonzero here, they are ignored)."""
    rng = np.random.default_rng(4)
    A32 = rng.standard_normal((16, 8)).astype(np.float32)
    B32 = rng.standard_normal((8, 8)).astype(np.float32)
    C = rng.standard_normal((16, 8)).astype(np.float32)
    Ab, Bb = _tf32_rna(A32), _tf32_rna(B32)
    noise = rng.integers(0, 2 ** 13, (32, 6), dtype=np.uint32)
    a = np.zeros((32, 4), np.uint32)
    b = np.zeros((32, 2), np.uint32)
    c = np.zeros((32, 4), np.float32)
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        a[lane] = [Ab[g, t], Ab[g + 8, t], Ab[g, t + 4], Ab[g + 8, t + 4]] | noise[lane, :4]
        b[lane] = [Bb[t, g], Bb[t + 4, g]] | noise[lane, 4:]
        c[lane] = [C[g + (8 if i >= 2 else 0), 2 * t + (i & 1)] for i in range(4)]
    d = cp.empty((32 * 4,), np.float32)
    mod.get_function("mma_tf32")((1,), (32,), (cp.asarray(a.reshape(-1)), cp.asarray(b.reshape(-1)),
                                             cp.asarray(c.reshape(-1)), d))
    D = Ab.view(np.float32).astype(np.float64) @ Bb.view(np.float32).astype(np.float64) + C
    got = cp.asnumpy(d).reshape(32, 4)
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        want = [D[g + (8 if i >= 2 else 0), 2 * t + (i & 1)] for i in range(4)]
        np.testing.assert_allclose(got[lane], want, rtol=1e-6, atol=1e-6)
    seen_a = {(g + 8 * (i & 1), t + 4 * (i >> 1)) for g in range(8) for t in range(4) for i in range(4)}
    seen_b = {(t + 4 * i, g) for g in range(8) for t in range(4) for i in range(2)}
    assert len(seen_a) == 128 and len(seen_b) == 64         # the tables are bijections


# ---- cp.async -----------------------------------------------------------------------------------
def _cpa_model(src, srcsz, n):
    """The shared buffer after every thread t copied n bytes of src[t*n:] with src-size srcsz[t]
    (bytes past it zero-filled); the rest keeps the 0xFF the emulator fills shared memory with."""
    out = np.full(64 * 16, 0xFF, np.uint8)
    for t in range(64):
        chunk = np.zeros(n, np.uint8)
        chunk[:srcsz[t]] = src[t * n:t * n + srcsz[t]]
        out[t * n:(t + 1) * n] = chunk
    return out


@pytest.mark.parametrize("order", ["forward", "reverse"])
@pytest.mark.parametrize("name,n,zfill", [("cpa_ca4", 4, True), ("cpa_ca8", 8, True), ("cpa_ca16", 16, True),
                                           ("cpa_cg16", 16, True), ("cpa_full8", 8, False)])
def test_cp_async_copy_and_zero_fill(mod, name, n, zfill, order):
    """cp.async.{ca,cg}.shared.global copies cp-size bytes; with src-size s < cp-size the last
    cp-size - s bytes are zero-filled (s = 0 reads nothing)."""
    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, 64 * 16, dtype=np.uint8)
    srcsz = rng.integers(0, n + 1, 64).astype(np.uint32) if zfill else np.full(64, n, np.uint32)
    srcsz[:3] = [0, n, n // 2]
    if not zfill:
        srcsz[:] = n
    out = cp.empty((64 * 16,), np.uint8)
    with cudaemu.schedule(order):
        mod.get_function(name)((1,), (64,), (cp.asarray(src), cp.asarray(srcsz), out))
    np.testing.assert_array_equal(cp.asnumpy(out), _cpa_model(src, srcsz, n))


def test_cp_async_wait_group_completes_all_but_the_n_newest():
    """Three committed groups and one uncommitted copy: wait_group 2 guarantees group 0 only,
    wait_group 1 groups 0-1, wait_group 0 every committed group, wait_all also the uncommitted
    copy. The forward schedule lands a copy exactly when a wait requires it (the latest point the
    ISA allows), so a read before that sees the old shared contents."""
    m = cudaemu.RawModule(code=SRC, options=("--std=c++17",))
    src = np.array([11, 22, 33, 44], np.uint32)
    snap = cp.empty((16,), np.uint32)
    m.get_function("cpa_groups")((1,), (1,), (cp.asarray(src), snap))
    old = 0xFFFFFFFF
    want = [[11, old, old, old], [11, 22, old, old], [11, 22, 33, old], [11, 22, 33, 44]]
    np.testing.assert_array_equal(cp.asnumpy(snap).reshape(4, 4), np.array(want, np.uint32))


def test_cp_async_missing_wait_is_detected(mod):
    """Reading shared memory that cp.async is still filling: the forward schedule reads the old
    contents (NaN), the reverse one (copies land at issue) the new, so the parity run in both
    orders catches the missing cp.async.wait_group."""
    x = np.arange(64, dtype=np.float32) + 1
    outs = {}
    for order in ("forward", "reverse"):
        y = cp.empty((64,), np.float32)
        with cudaemu.schedule(order):
            mod.get_function("cpa_missing_wait")((1,), (64,), (cp.asarray(x), y))
        outs[order] = cp.asnumpy(y)
    assert np.isnan(outs["forward"][:63]).all()  # thread 63 runs after thread 0 finished its wait_all
    np.testing.assert_array_equal(outs["reverse"], np.roll(x, -1))


def test_cp_async_exit_without_wait_fails(mod):
    with pytest.raises(cudaemu.CudaEmuError, match="never waited for"):
        mod.get_function("cpa_no_wait")((1,), (64,), (cp.asarray(np.ones(64, np.float32)), cp.empty((64,), np.float32)))


@pytest.mark.parametrize("kind,msg", [(0, "cp-size 8 is not allowed with .cg"), (1, "not 8-byte aligned"),
                                      (2, "src-size 8 exceeds cp-size 4"), (3, "outside the block's shared memory")])
def test_cp_async_misuse_fails(mod, kind, msg):
    x = cp.asarray(np.ones(64, np.float32))
    with pytest.raises(cudaemu.CudaEmuError, match=msg):
        mod.get_function("cpa_bad")((1,), (1,), (x, cp.empty((1,), np.float32), np.int32(kind)))
