"""Unit tests of the emulated PTX instructions (cnngpu.testing.cudaemu), each against a model
written from the PTX ISA's own definitions: the cvt rounding rules, and the fragment tables of
ldmatrix (lane 8*i + r gives the row address of row r of matrix i; register i of lane l holds
row l/4, columns 2*(l%4), +1 of matrix i, transposed with .trans) and of mma.m16n8k16 with
.f16/.bf16 inputs (groupID = lane >> 2, threadID_in_group = lane % 4; A: row groupID (+8 for
a2,a3,a6,a7 elements), col 2*tig + (i&1) (+8 for i >= 4); B: row 2*tig + (i&1) (+8 for i >= 2),
col groupID; C/D: row groupID (+8 for c2,c3), col 2*tig + (i&1)).
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
