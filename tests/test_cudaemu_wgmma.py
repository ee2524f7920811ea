"""Unit tests of the emulated sm_90a warpgroup MMA (cnngpu.testing.cudaemu): wgmma.mma_async with
A and B from shared-memory matrix descriptors, wgmma.fence / commit_group / wait_group, setp.

Every expectation is a model written from the PTX ISA's definitions, independent of the emulator:
  - matrix descriptor (64 bits): start address >> 4 in bits 0-13, leading-dimension byte offset
    (LBO) >> 4 in bits 16-29, stride-dimension byte offset (SBO) >> 4 in bits 32-45, base offset
    in bits 49-51, swizzle mode in bits 62-63 (0 none, 1 128B, 2 64B, 3 32B);
  - canonical K-major layouts of 16-bit operands, T = 8 elements (16 bytes): no swizzle
    ((8,m),(T,2k)):((1T,SBO),(1,LBO)) -- 8x16-byte core matrices, SBO between 8-row groups, LBO
    between the two k halves; W-byte swizzle (W = 32, 64, 128) Swizzle<log2(W/16),4,3> o
    ((8,m),(T,2k)):((W/2 elements,SBO),(1,T)) -- rows W bytes apart inside an 8-row atom, the
    16-byte chunk bits [4, 4+log2(W/16)) of the address XORed with bits [7, ...);
  - accumulator fragment of m64nNk16 (f32): register i of lane l of warp w of the warpgroup holds
    D[16w + l/4 + 8*((i/2)%2)][8*(i/4) + 2*(l%4) + i%2];
  - D = scale-d * C + (imm-scale-a * A) @ (imm-scale-b * B) with B given as N rows of K (K-major);
  - asynchrony: results are defined only after the wgmma.wait_group that retires their group;
    shared memory read by an op in flight must not change; wgmma.fence before the first
    mma_async that touches the accumulators.
"""
import numpy as np
import pytest

pytest.importorskip("ml_dtypes")
from ml_dtypes import bfloat16  # noqa: E402

from cnngpu.testing import cudaemu  # noqa: E402
from cnngpu.testing.cudaemu import cupy_api as cp  # noqa: E402

SMEM = 24576
NS = (8, 64, 128)
SWIZZLE_WIDTH = {0: 0, 1: 128, 2: 64, 3: 32}   # descriptor mode -> swizzle width in bytes


def _wgmma_asm(n: int, ty: str, scale_a: int = 1, trans=(0, 0)) -> str:
    regs = ",".join(f"%{i}" for i in range(n // 2))
    return (f'"{{ .reg .pred p; setp.ne.b32 p, %{n // 2 + 2}, 0; '
            f'wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} {{{regs}}}, %{n // 2}, %{n // 2 + 1}, p, '
            f'{scale_a}, 1, {trans[0]}, {trans[1]}; }}"')


def _kernel(name: str, n: int, ty: str, scale_a: int = 1, body: str = "standard", trans=(0, 0)) -> str:
    outs = ", ".join(f'"+f"(acc[{i}])' for i in range(n // 2))
    mma = (f"asm volatile({_wgmma_asm(n, ty, scale_a, trans)} : {outs} : \"l\"(da), \"l\"(db), \"r\"(scale_d));")
    mma2 = (f"asm volatile({_wgmma_asm(n, ty, scale_a, trans)} : {outs} : \"l\"(da2), \"l\"(db2), \"r\"(one));")
    fence = 'asm volatile("wgmma.fence.sync.aligned;" : : : "memory");'
    commit = 'asm volatile("wgmma.commit_group.sync.aligned;" : : : "memory");'
    wait0 = 'asm volatile("wgmma.wait_group.sync.aligned 0;" : : : "memory");'
    steps = {
        # one mma_async (or two chained on one accumulator: k slices 0 and 1) and a full wait
        "standard": f"{fence} {mma} {commit} {wait0}",
        "chained": f"{fence} {mma} {mma2} {commit} {wait0}",
        # reads the accumulator before the wait (-> NaN), then waits
        "early_read": f"{fence} {mma} {commit} peek[t] = acc[0]; {wait0}",
        "no_wait": f"{fence} {mma} {commit}",
        "no_fence": f"{mma} {commit} {wait0}",
        "smem_write": f"{fence} {mma} {commit} if (t == 0) s[0] ^= 1; {wait0}",
        # two groups, wait_group 1 retires the first only
        "two_groups": f"{fence} {mma} {commit} {mma2} {commit} "
                      'asm volatile("wgmma.wait_group.sync.aligned 1;" : : : "memory"); peek[t] = acc[0]; '
                      f"{wait0}",
    }[body]
    return f'''
extern "C" __global__ void {name}(const unsigned char* img, unsigned long long da_rel, unsigned long long db_rel,
                                  unsigned long long da2_rel, unsigned long long db2_rel, const float* c,
                                  int scale_d, float* d, float* peek) {{
    __shared__ __align__(1024) unsigned char s[{SMEM}];
    const int t = threadIdx.x;
    for (int i = t; i < {SMEM}; i += blockDim.x) s[i] = img[i];
    __syncthreads();
    const unsigned long long base = (saddr(s) >> 4) & 0x3FFF;  // descriptor start-address units
    const unsigned long long da = da_rel + base, db = db_rel + base, da2 = da2_rel + base, db2 = db2_rel + base;
    const int one = 1;
    float acc[{n // 2}];
    for (int i = 0; i < {n // 2}; ++i) acc[i] = c[t * {n // 2} + i];
    {steps}
    for (int i = 0; i < {n // 2}; ++i) d[t * {n // 2} + i] = acc[i];
}}
'''


HEADER = r'''
__device__ unsigned saddr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
'''

TYPES = {"f16": np.float16, "bf16": bfloat16}
BODIES = ("chained", "early_read", "no_wait", "no_fence", "smem_write", "two_groups")


def _source() -> str:
    parts = [HEADER]
    for ty in TYPES:
        for n in NS:
            parts.append(_kernel(f"wg_{ty}_n{n}", n, ty))
        parts.append(_kernel(f"wg_{ty}_n8_nega", 8, ty, scale_a=-1))
        for n in (64, 128):
            parts.append(_kernel(f"wg_{ty}_n{n}_tt", n, ty, trans=(1, 1)))
        parts.append(_kernel(f"wg_{ty}_n64_tk", 64, ty, trans=(1, 0)))
    for body in BODIES:
        parts.append(_kernel(f"wg_{body}", 8, "f16", body=body))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def mod():
    return cudaemu.RawModule(code=_source(), options=("--std=c++17", "-arch=sm_90a"))


# ---- the model (PTX ISA) ------------------------------------------------------------------------
def desc(start: int, lbo: int, sbo: int, mode: int) -> int:
    """Matrix descriptor with addresses relative to the kernel's 1024-aligned buffer."""
    assert start % 16 == 0 and lbo % 16 == 0 and sbo % 16 == 0
    return ((start >> 4) & 0x3FFF) | (((lbo >> 4) & 0x3FFF) << 16) | (((sbo >> 4) & 0x3FFF) << 32) | (mode << 62)


def elem_offset(row: int, k: int, start: int, lbo: int, sbo: int, mode: int, mn_major: bool = False) -> int:
    """Byte offset of element (row, k) (2-byte elements, T = 8 per 16 bytes) of an operand in the
    ISA's canonical layouts. K-major: none ((8,m),(T,2k)):((1T,SBO),(1,LBO)), W-byte swizzle
    ((8,m),(T,2k)):((W/2,SBO),(1,T)); MN-major: none ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)),
    W-byte swizzle ((T,W/16,m),(8,k)):((1,T,LBO),(W/2,SBO)) (strides in elements but SBO/LBO)."""
    width = SWIZZLE_WIDTH[mode]
    if mn_major:
        if width == 0:
            return start + (row % 8) * 2 + (row // 8) * sbo + (k % 8) * 16 + (k // 8) * lbo
        c = width // 16
        a = start + (row % 8) * 2 + ((row // 8) % c) * 16 + (row // (8 * c)) * lbo + (k % 8) * width + (k // 8) * sbo
    elif width == 0:
        return start + (row // 8) * sbo + (2 * k // 16) * lbo + (row % 8) * 16 + (2 * k) % 16
    else:
        a = start + (row // 8) * sbo + (row % 8) * width + 2 * k
    bits = {128: 3, 64: 2, 32: 1}[width]
    return a ^ (((a >> 7) & ((1 << bits) - 1)) << 4)


def place(img: np.ndarray, mat_bits: np.ndarray, start: int, lbo: int, sbo: int, mode: int,
          mn_major: bool = False) -> None:
    rows, kk = mat_bits.shape
    for r in range(rows):
        for k in range(kk):
            o = elem_offset(r, k, start, lbo, sbo, mode, mn_major)
            img[o:o + 2] = np.frombuffer(mat_bits[r, k].tobytes(), np.uint8)


def fragment_to_matrix(frag: np.ndarray, n: int) -> np.ndarray:
    """(128 threads, n/2 registers) -> D (64, n) by the ISA's accumulator table."""
    D = np.full((64, n), np.nan, np.float64)
    for t in range(128):
        w, lane = t // 32, t % 32
        for i in range(n // 2):
            r = 16 * w + lane // 4 + 8 * ((i // 2) % 2)
            c = 8 * (i // 4) + 2 * (lane % 4) + i % 2
            assert np.isnan(D[r, c])
            D[r, c] = frag[t, i]
    assert not np.isnan(D).any()
    return D


def matrix_to_fragment(C: np.ndarray) -> np.ndarray:
    n = C.shape[1]
    frag = np.zeros((128, n // 2), np.float32)
    for t in range(128):
        w, lane = t // 32, t % 32
        for i in range(n // 2):
            frag[t, i] = C[16 * w + lane // 4 + 8 * ((i // 2) % 2), 8 * (i // 4) + 2 * (lane % 4) + i % 2]
    return frag


LAYOUTS = {  # name: (mode, (lbo, sbo) of A, (lbo, sbo) of B as functions of rows)
    "none_kmajor": (0, 128, 256),      # core matrices: k halves adjacent, 8-row groups 256 B apart
    "none_rowgroups": (0, 2048, 128),  # the k halves far apart (LBO), row groups adjacent
    "sw32": (3, 0, 256),               # dense 32-byte rows: SBO = 8 * 32
    "sw64": (2, 0, 512),
    "sw128": (1, 0, 1024),
}


def _setup(rng, n, dt, layout, kwidth=16, kshift=0):
    """Image with A (64 x kwidth) at offset 0 and B (n x kwidth) at 8192, per `layout`; the
    descriptors select k columns [kshift, kshift + 16)."""
    mode, lbo, sbo = LAYOUTS[layout]
    if not SWIZZLE_WIDTH[mode] and kwidth > 16:  # every 8-element k chunk of a row group its own core matrix
        sbo = max(sbo, lbo * kwidth // 8)
    A = rng.standard_normal((64, kwidth)).astype(dt)
    B = rng.standard_normal((n, kwidth)).astype(dt)
    img = np.zeros(SMEM, np.uint8)
    place(img, A.view(np.uint16), 0, lbo, sbo, mode)
    place(img, B.view(np.uint16), 8192, lbo, sbo, mode)
    if SWIZZLE_WIDTH[mode]:
        sh = 2 * kshift               # inside the swizzle atom: advance the start address
    else:
        sh = (2 * kshift // 16) * lbo  # next core-matrix column
    da = desc(0 + sh, lbo, sbo, mode)
    db = desc(8192 + sh, lbo, sbo, mode)
    return A, B, img, da, db


def _run(mod, name, img, da, db, C, scale_d, da2=0, db2=0):
    n = C.shape[1]
    d = cp.empty((128 * (n // 2),), np.float32)
    peek = cp.empty((128,), np.float32)
    mod.get_function(name)((1,), (128,), (cp.asarray(img), np.uint64(da), np.uint64(db), np.uint64(da2),
                                          np.uint64(db2), cp.asarray(matrix_to_fragment(C).reshape(-1)),
                                          np.int32(scale_d), d, peek))
    return fragment_to_matrix(cp.asnumpy(d).reshape(128, n // 2), n), cp.asnumpy(peek)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("ty", list(TYPES))
@pytest.mark.parametrize("n", NS)
def test_wgmma_layouts_and_fragments(mod, ty, n, layout):
    rng = np.random.default_rng(n + len(layout))
    dt = TYPES[ty]
    A, B, img, da, db = _setup(rng, n, dt, layout)
    C = rng.standard_normal((64, n)).astype(np.float32)
    D, _ = _run(mod, f"wg_{ty}_n{n}", img, da, db, C, 1)
    want = C.astype(np.float64) + A.astype(np.float64) @ B.astype(np.float64).T
    np.testing.assert_allclose(D, want, rtol=1e-6, atol=1e-6)
    D0, _ = _run(mod, f"wg_{ty}_n{n}", img, da, db, C, 0)   # scale-d = 0: C ignored
    np.testing.assert_allclose(D0, A.astype(np.float64) @ B.astype(np.float64).T, rtol=1e-6, atol=1e-6)


def _mn_strides(rows: int, mode: int):
    """(LBO, SBO) of a dense MN-major operand: swizzled -- MN atoms of W/2 elements LBO = 8 * W
    apart, k groups of 8 after all atoms; none -- 8-element MN groups 128 B apart, k groups after."""
    w = SWIZZLE_WIDTH[mode]
    if w == 0:
        return 128 * (-(-rows // 8)), 128
    atoms = -(-rows // (w // 2))
    return 8 * w, 8 * w * atoms


@pytest.mark.parametrize("mode", [0, 3, 2, 1])
@pytest.mark.parametrize("ty", list(TYPES))
@pytest.mark.parametrize("n, trans", [(64, (1, 1)), (128, (1, 1)), (64, (1, 0))])
def test_wgmma_mn_major_operands(mod, ty, n, trans, mode):
    """imm-trans-a/b = 1: the operand is MN-major (contiguous along M resp. N)."""
    rng = np.random.default_rng(n + mode)
    dt = TYPES[ty]
    A = rng.standard_normal((64, 16)).astype(dt)
    B = rng.standard_normal((n, 16)).astype(dt)
    img = np.zeros(SMEM, np.uint8)
    la, sa = _mn_strides(64, mode)
    place(img, A.view(np.uint16), 0, la, sa, mode, mn_major=True)
    if trans[1]:
        lb, sb = _mn_strides(n, mode)
        place(img, B.view(np.uint16), 8192, lb, sb, mode, mn_major=True)
    else:
        _, lb, sb = LAYOUTS[{0: "none_kmajor", 1: "sw128", 2: "sw64", 3: "sw32"}[mode]]
        place(img, B.view(np.uint16), 8192, lb, sb, mode)
    C = rng.standard_normal((64, n)).astype(np.float32)
    name = f"wg_{ty}_n{n}_{'tt' if trans[1] else 'tk'}"
    D, _ = _run(mod, name, img, desc(0, la, sa, mode), desc(8192, lb, sb, mode), C, 1)
    np.testing.assert_allclose(D, C + A.astype(np.float64) @ B.astype(np.float64).T, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["sw64", "sw128", "none_kmajor"])
def test_wgmma_start_address_inside_the_swizzle_atom(mod, layout):
    """Columns k 16..31 of 32-wide rows: the descriptor's start address advanced by 32 bytes (the
    swizzle applies to the resulting address bits, as the hardware does)."""
    rng = np.random.default_rng(7)
    A, B, img, da, db = _setup(rng, 64, np.float16, layout, kwidth=32, kshift=16)
    C = np.zeros((64, 64), np.float32)
    D, _ = _run(mod, "wg_f16_n64", img, da, db, C, 1)
    want = A[:, 16:].astype(np.float64) @ B[:, 16:].astype(np.float64).T
    np.testing.assert_allclose(D, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ty", list(TYPES))
def test_wgmma_imm_scale_a_negates(mod, ty):
    rng = np.random.default_rng(3)
    A, B, img, da, db = _setup(rng, 8, TYPES[ty], "sw64")
    C = rng.standard_normal((64, 8)).astype(np.float32)
    D, _ = _run(mod, f"wg_{ty}_n8_nega", img, da, db, C, 1)
    np.testing.assert_allclose(D, C - A.astype(np.float64) @ B.astype(np.float64).T, rtol=1e-6, atol=1e-6)


def test_wgmma_chained_on_one_accumulator(mod):
    """Two mma_async on the same registers in one group (k slices 0 and 1): the second accumulates
    onto the first's result although neither was waited for in between."""
    rng = np.random.default_rng(4)
    A, B, img, _, _ = _setup(rng, 8, np.float16, "sw64", kwidth=32)
    da, db = desc(0, 0, 512, 2), desc(8192, 0, 512, 2)
    da2, db2 = desc(32, 0, 512, 2), desc(8192 + 32, 0, 512, 2)
    C = rng.standard_normal((64, 8)).astype(np.float32)
    D, _ = _run(mod, "wg_chained", img, da, db, C, 1, da2, db2)
    want = C + A.astype(np.float64) @ B.astype(np.float64).T
    np.testing.assert_allclose(D, want, rtol=1e-6, atol=1e-6)


def test_wgmma_results_undefined_until_wait(mod):
    rng = np.random.default_rng(5)
    A, B, img, da, db = _setup(rng, 8, np.float16, "sw64")
    C = rng.standard_normal((64, 8)).astype(np.float32)
    D, peek = _run(mod, "wg_early_read", img, da, db, C, 1)
    assert np.isnan(peek).all()          # read before wgmma.wait_group: poisoned
    np.testing.assert_allclose(D, C + A.astype(np.float64) @ B.astype(np.float64).T, rtol=1e-6, atol=1e-6)


def test_wgmma_wait_group_n_leaves_the_newest_groups(mod):
    rng = np.random.default_rng(6)
    A, B, img, da, db = _setup(rng, 8, np.float16, "sw64", kwidth=32)
    da, db = desc(0, 0, 512, 2), desc(8192, 0, 512, 2)
    da2, db2 = desc(32, 0, 512, 2), desc(8192 + 32, 0, 512, 2)
    C = rng.standard_normal((64, 8)).astype(np.float32)
    D, peek = _run(mod, "wg_two_groups", img, da, db, C, 1, da2, db2)
    # after wait_group 1 the second group (same registers) is still in flight: still undefined
    assert np.isnan(peek).all()
    np.testing.assert_allclose(D, C + A.astype(np.float64) @ B.astype(np.float64).T, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("body, message", [
    ("no_wait", r"still in flight \(a missing wgmma\.wait_group"),
    ("no_fence", r"without a wgmma\.fence"),
    ("smem_write", r"modified before the wgmma\.wait_group"),
])
def test_wgmma_misuse_is_detected(mod, body, message):
    rng = np.random.default_rng(8)
    _, _, img, da, db = _setup(rng, 8, np.float16, "sw64")
    C = np.zeros((64, 8), np.float32)
    with pytest.raises(cudaemu.CudaEmuError, match=message):
        _run(mod, f"wg_{body}", img, da, db, C, 1)


def test_wgmma_needs_a_whole_warpgroup(mod):
    rng = np.random.default_rng(9)
    _, _, img, da, db = _setup(rng, 8, np.float16, "sw64")
    d = cp.empty((64 * 4,), np.float32)
    with pytest.raises(cudaemu.CudaEmuError, match="does not fill"):
        mod.get_function("wg_f16_n8")((1,), (64,), (cp.asarray(img), np.uint64(da), np.uint64(db), np.uint64(0),
                                                    np.uint64(0), cp.zeros((512,), np.float32), np.int32(1), d,
                                                    cp.empty((128,), np.float32)))
