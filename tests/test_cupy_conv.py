"""The cupy backend's conv2d launch side on the CPU (kernels/cuda/conv2d_fwd.cu, conv2d_bwd.cu);
the parity of its kernels with the NumPy reference is tests/test_conv_parity.py (shared with triton).

Here: the launchers' own plans -- direct-kernel shared memory and grid limits, implicit-GEMM grids,
split-K plans, VEC choice vs CUDA_BUILDS -- a NumPy emulation of the dX implicit GEMM's
stride-residue decomposition and of the dW split-K mapping checked against the reference, and a dry
run of every launch against the kernels' PTX parameter lists.
"""
import numpy as np
import pytest

from cnngpu import functional as F
from cnngpu.backends import conv_policy
from cnngpu.backends.limits import GRID_YZ_MAX
from cnngpu.geometry import ConvGeometry
from conv_cases import BIG, GEOMETRIES, geometry, ids, split
from harness import randn, rng

conv = pytest.importorskip("cnngpu.backends.cupy_backend.conv")
conv_weights = pytest.importorskip("cnngpu.backends.cupy_backend.conv_weights")
_IDS, _BIG_IDS = ids(GEOMETRIES), ids(BIG)


# ================================================================================================
# CPU: launch decisions
# ================================================================================================
def test_cuda_builds_cover_every_specialisation_the_launcher_picks():
    builds = {(f, tuple(sorted(d.items()))) for f, _, d in conv.CUDA_BUILDS}
    for dt in ("float32", "float16", "bfloat16"):
        for counts in ((1,), (3,), (8,), (16,), (8, 12), (64, 64), (4,)):
            v = conv.vec_width(dt, *counts)
            assert v in (1, conv.max_vec(dt))
            for f in (conv.FWD_FILE, conv.BWD_FILE):
                assert (f, tuple(sorted(conv.defines(dt, v).items()))) in builds
                for va in (1, conv.max_vec(dt)):   # per-operand widths (operand_vecs)
                    assert (f, tuple(sorted(conv.defines(dt, conv.operand_vecs(dt, va, v)).items()))) in builds
    assert conv.vec_width("float16", 8, 16) == 8 and conv.vec_width("float16", 8, 12) == 1
    assert conv.vec_width("float32", 4) == 4 and conv.vec_width("bfloat16", 24) == 8
    assert conv.vec_width("float16", 8, ptrs=(256, 4096)) == 8 and conv.vec_width("float16", 8, ptrs=(258,)) == 1
    with pytest.raises(TypeError, match="float64"):
        conv.defines("float64")
    # fp16 / bf16: a scalar A with a 16-byte B is the mixed ring, a 16-byte A with a scalar B falls
    # back to scalars; float32 has one width for both
    assert conv.operand_vecs("float16", 1, 8) == (1, 8) and conv.operand_vecs("bfloat16", 8, 1) == (1, 1)
    assert conv.operand_vecs("float32", 1, 4) == (1, 1) and conv.operand_vecs("float32", 4, 4) == (4, 4)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_igemm_specialisations(dtype):
    """16-bit types with 16-byte loads run the cp.async pipeline with >= 3 stages, the others the
    2-stage register path; a stage holds either operand layout; shared memory per block stays
    within what sm_80 / sm_90 give (opt-in above 48 KiB; <= 99 KiB keeps sm_86/89 too)."""
    v = conv.max_vec(dtype)
    for vec in (1, v, (1, v)):
        d = conv.defines(dtype, vec)
        asyn = dtype != "float32" and vec != 1          # the mixed (1, 8) ring too
        assert d["IG_ASYNC"] == int(asyn) and (d["IG_STAGES"] >= 3 if asyn else d["IG_STAGES"] == 2)
        assert d["IG_MIN_BLOCKS"] == (2 if asyn and vec == v else 1)   # register-staged: no 128-register cap
        rows, bk, pad, item = 128, d["IG_BK"], d["IG_PAD"], 4 if dtype == "float32" else 2
        assert d["IG_OPERAND_BYTES"] >= (max(rows * (bk + pad), bk * (rows + pad)) if item == 2
                                         else bk * (rows + pad)) * item
        assert d["IG_OPERAND_BYTES"] % 16 == 0 and (pad * item) % 16 == 0   # cp.async / ldmatrix alignment
        assert conv.igemm_smem(dtype, vec) == d["IG_STAGES"] * 2 * d["IG_OPERAND_BYTES"] <= 96 * 1024
    assert conv.igemm_bn(64) == 64 and conv.igemm_bn(65) == 128 and conv.igemm_bn(1) == 64


@pytest.mark.parametrize("shape", [((32, 512, 7, 7), (512, 512, 3, 3)), ((32, 256, 14, 14), (256, 256, 3, 3)),
                                   ((32, 64, 56, 56), (64, 64, 3, 3)), ((1, 72, 6, 6), (72, 72, 3, 3)),
                                   ((2, 4, 5, 5), (8, 2, 1, 1))])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_fwd_dx_split_k_plans(shape, dtype):
    """Forward and dX split their K loop (conv_policy.gemm_split_k) only when the output tiles fill
    under two waves of SMs; the splits cover every K step, none is empty for the longest class."""
    xs, ws = shape
    g = F.conv2d_geometry(xs, ws, padding=ws[2] // 2, groups=xs[1] // ws[1])
    b = conv.bk(dtype)
    grid, splits, kt = conv.fwd_igemm_plan(g, dtype, 132)
    base = conv.fwd_igemm_grid(g)
    steps = -(-g.c_per_group * g.R * g.S // b)
    assert grid[:2] == base[:2] and grid[2] == base[2] * splits <= GRID_YZ_MAX
    assert splits * kt >= steps > (splits - 1) * kt
    tiles = base[0] * base[1] * base[2]
    assert (splits > 1) <= (tiles < 2 * 132)
    if tiles >= 2 * 132:
        assert splits == 1
    grid, splits, kt = conv.dx_igemm_plan(g, dtype, 132)
    base = conv.dx_igemm_grid(g)
    taps = max(r[5] * r[8] for r in conv_policy.residue_classes(g)[0])
    steps = -(-taps * g.k_per_group // b)
    assert grid[2] == base[2] * splits and splits * kt >= steps > (splits - 1) * kt
    if xs == (32, 512, 7, 7):                  # ResNet-50's 7x7 layer: 13 x 4 tiles on 132 SMs
        assert splits > 1


@pytest.mark.parametrize("case", GEOMETRIES + BIG, ids=_IDS + _BIG_IDS)
def test_plans_and_grids(case):
    g = geometry(case)
    plan = conv.direct_fwd_plan(g)
    assert plan is not None
    entry, kb, grid, smem = plan
    assert entry == f"conv2d_fwd_direct_{kb}ch" and kb == (4 if g.k_per_group >= 4 else 1)
    assert grid[0] * 16 * 16 >= g.P * g.Q and grid[1] == g.groups * -(-g.k_per_group // kb) and grid[2] == g.N
    assert smem <= 48 * 1024
    gx, gy, gz = conv.fwd_igemm_grid(g)
    bn = conv.igemm_bn(g.k_per_group)
    assert gx * 128 >= g.N * g.P * g.Q > (gx - 1) * 128 and gy * bn >= g.k_per_group > (gy - 1) * bn
    assert gz == g.groups
    dxg = conv.dx_igemm_grid(g)
    bn = conv.igemm_bn(g.c_per_group)
    assert dxg[2] == g.groups * g.stride[0] * g.stride[1] and dxg[1] * bn >= g.c_per_group > (dxg[1] - 1) * bn
    biggest = max(g.N * r[2] * r[3] for r in conv_policy.residue_classes(g)[0])
    assert dxg[0] * 128 >= biggest > (dxg[0] - 1) * 128


def test_direct_forward_falls_back_when_its_tile_does_not_fit():
    g = F.conv2d_geometry((1, 1, 400, 400), (1, 1, 9, 9), stride=8, dilation=4)
    assert conv.direct_fwd_plan(g) is None          # (15*8 + 33)^2 floats > 48 KiB
    assert conv_policy.choose_algo(g, direct_fits=False) == "implicit_gemm"   # the launcher's fallback
    assert conv.direct_fwd_plan(F.conv2d_geometry((1, 1, 40, 40), (1, 1, 3, 3))) is not None


def test_dx_igemm_limits():
    g = F.conv2d_geometry((1, 8, 40, 40), (8, 8, 33, 1))
    assert conv.dx_igemm_grid(g) is None            # the launcher then takes the direct dX (dry run below)
    g = F.conv2d_geometry((1, 8, 40, 40), (8, 8, 32, 1))
    assert conv.dx_igemm_grid(g) is not None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [((32, 64, 56, 56), (64, 64, 3, 3)), ((1, 3, 224, 224), (64, 3, 7, 7)),
                                   ((8, 512, 7, 7), (512, 512, 3, 3)), ((2, 64, 9, 9), (64, 2, 3, 3))])
def test_dw_plans_cover_the_reduction(dtype, shape):
    xs, ws = shape
    g = F.conv2d_geometry(xs, ws, padding=1, groups=xs[1] // ws[1])
    npq = g.N * g.P * g.Q
    grid, splits, kt = conv.dw_igemm_plan(g, dtype, 132)
    b = conv.bk(dtype)
    ktiles = -(-npq // b)
    assert grid[2] == g.groups * splits and grid[2] <= GRID_YZ_MAX
    assert splits * kt >= ktiles > (splits - 1) * kt
    grid, splits, chunk = conv.dw_direct_plan(g, 132)
    assert grid == (g.K * g.c_per_group * g.R * g.S, splits, 1) and splits * chunk >= npq > (splits - 1) * chunk
    grid, splits, chunk = conv.db_plan(g, 132)
    assert grid == (g.K, splits, 1) and splits * chunk >= npq > (splits - 1) * chunk
    if g.K == 64 and npq > 10 ** 5:
        assert splits > 1


def test_flat_grid_and_extents():
    assert conv.flat_grid(1) == (1, 1, 1) and conv.flat_grid(257) == (2, 1, 1)
    assert conv.flat_grid(10 ** 12)[0] == conv.FLAT_GRID_MAX
    with pytest.raises(ValueError, match="32-bit"):
        conv.i32(2 ** 31)


# ================================================================================================
# CPU: NumPy emulation of the dX implicit GEMM's residue-class decomposition
# ================================================================================================
def _kernel_tap_tables(g: ConvGeometry):
    """The classes as conv2d_bwd_dx_implicit_gemm builds its tap tables (by the modulo test, not
    from conv_policy's rows): (a, b, Hc, Wc, [(r, dp)], [(s, dq)]) -- pixels h = a + sh*i (i < Hc)
    receive from taps r at dy row p = i + dp (when 0 <= p < P), likewise s / q."""
    sh, sw = g.stride
    out = []
    for a in range(sh):
        for b in range(sw):
            hc = -(-(g.H - a) // sh) if a < g.H else 0
            wc = -(-(g.W - b) // sw) if b < g.W else 0
            rt = [(r, (a + g.pad[0] - r * g.dilation[0]) // sh) for r in range(g.R)
                  if (a + g.pad[0] - r * g.dilation[0]) % sh == 0]
            st = [(s, (b + g.pad[1] - s * g.dilation[1]) // sw) for s in range(g.S)
                  if (b + g.pad[1] - s * g.dilation[1]) % sw == 0]
            out.append((a, b, hc, wc, rt, st))
    return out


def _dx_by_classes(dy, w, g: ConvGeometry):
    """dX computed exactly as conv2d_bwd_dx_implicit_gemm maps it: per residue class (a, b), rows
    (n, i, j), reduction over the class's taps and Kg, zero where p, q fall outside dy."""
    G, Kg, Cg = g.groups, g.k_per_group, g.c_per_group
    sh, sw = g.stride
    dx = np.full((g.N, g.C, g.H, g.W), np.nan)
    dyg = dy.reshape(g.N, G, Kg, g.P, g.Q)
    wg = w.reshape(G, Kg, Cg, g.R, g.S)
    for a, b, hc, wc, rtaps, staps in _kernel_tap_tables(g):
        acc = np.zeros((g.N, G, Cg, hc, wc))
        i = np.arange(hc)[:, None]
        j = np.arange(wc)[None, :]
        for r, dp in rtaps:          # loops over the (small) tap window only
            for s, dq in staps:
                p, q = i + dp, j + dq
                ok = (p >= 0) & (p < g.P) & (q >= 0) & (q < g.Q)
                vals = dyg[:, :, :, np.clip(p, 0, g.P - 1), np.clip(q, 0, g.Q - 1)] * ok   # (N, G, Kg, hc, wc)
                acc += np.einsum("ngkij,gkc->ngcij", vals, wg[:, :, :, r, s])
        block = dx[:, :, a::sh, b::sw]
        assert block.shape[2:] == (hc, wc)
        assert np.all(np.isnan(block)), "residue classes overlap"
        dx[:, :, a::sh, b::sw] = acc.reshape(g.N, g.C, hc, wc)
    assert not np.any(np.isnan(dx)), "residue classes do not cover every pixel"
    return dx


@pytest.mark.parametrize("case", GEOMETRIES + BIG[:2] + [BIG[3]], ids=_IDS + _BIG_IDS[:2] + [_BIG_IDS[3]])
def test_dx_residue_decomposition_matches_reference(case):
    xs, ws, opts, _ = split(case)
    g = geometry(case)
    gen = rng(11)
    x = randn(gen, xs)
    w = randn(gen, ws)
    dy = randn(gen, (g.N, g.K, g.P, g.Q))
    ref, _, _ = F.conv2d_backward(dy, x, w, backend="numpy", need_dw=False, need_db=False, **opts)
    got = _dx_by_classes(dy, w, g)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def _dw_by_igemm_mapping(x, dy, g: ConvGeometry, dtype: str):
    """dW computed as conv2d_bwd_dw_implicit_gemm maps it: rows a = (r, s, c), reduction over the
    flat (n, p, q) index of NHWC x / dy, split into the launcher's kt_chunk ranges, each split's
    tile stored at the epilogue's dW offset in its own workspace slice, slices summed in order."""
    _, splits, kt = conv.dw_igemm_plan(g, dtype, 132)
    bk = conv.bk(dtype)
    G, Cg, Kg, RS = g.groups, g.c_per_group, g.k_per_group, g.R * g.S
    sh, sw = g.stride
    PQ, NPQ = g.P * g.Q, g.N * g.P * g.Q
    x_nhwc = x.transpose(0, 2, 3, 1).ravel()
    dy_nhwc = dy.transpose(0, 2, 3, 1).ravel()
    a = np.arange(Cg * RS)
    rs, c = a // Cg, a % Cg
    r, s = rs // g.S, rs % g.S
    kidx = np.arange(NPQ)
    n, pq = kidx // PQ, kidx % PQ
    p, q = pq // g.Q, pq % g.Q
    k = np.arange(Kg)
    ws = np.full((splits, g.K * Cg * RS), np.nan)
    for gi in range(G):
        h = p[None, :] * sh + (r * g.dilation[0] - g.pad[0])[:, None]
        w_ = q[None, :] * sw + (s * g.dilation[1] - g.pad[1])[:, None]
        ok = (h >= 0) & (h < g.H) & (w_ >= 0) & (w_ < g.W)
        off = n[None, :] * g.H * g.W * g.C + (h * g.W + w_) * g.C + (gi * Cg + c)[:, None]
        A = np.where(ok, x_nhwc[np.where(ok, off, 0)], 0.0)                # (Cg*RS, NPQ)
        B = dy_nhwc[kidx[None, :] * g.K + gi * Kg + k[:, None]]             # (Kg, NPQ)
        o = ((gi * Kg + k[None, :]) * Cg + c[:, None]) * RS + rs[:, None]   # (Cg*RS, Kg)
        for sp in range(splits):
            lo, hi = sp * kt * bk, min((sp + 1) * kt * bk, NPQ)
            assert lo < hi, "empty split"
            ws[sp, o] = A[:, lo:hi] @ B[:, lo:hi].T
    assert not np.any(np.isnan(ws)), "a workspace element was not written"
    return splits, ws.sum(axis=0).reshape(g.K, Cg, g.R, g.S)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", [
    ("split_3x3", 16, 4, 32, 30, 6, 3, 3, 1, 1, 1, 1, True),
    ("split_g2_s2_d2", 20, 6, 33, 31, 4, 3, 2, 2, (2, 1), (2, 1), 2, True),
    ("nosplit", 1, 3, 9, 7, 5, 3, 2, 2, 1, 1, 1, True),
], ids=["split_3x3", "split_g2_s2_d2", "nosplit"])
def test_dw_split_k_mapping_matches_reference(case, dtype):
    xs, ws, opts, _ = split(case)
    g = geometry(case)
    gen = rng(12)
    x = randn(gen, xs)
    w = randn(gen, ws)
    dy = randn(gen, (g.N, g.K, g.P, g.Q))
    _, ref, _ = F.conv2d_backward(dy, x, w, backend="numpy", need_dx=False, need_db=False, **opts)
    splits, got = _dw_by_igemm_mapping(x, dy, g, dtype)
    assert (splits > 1) == case[0].startswith("split")
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


# ================================================================================================
# CPU: dry run of the launchers against the kernels' real parameter lists
# ================================================================================================
# The launchers run with NumPy-backed stand-ins for cupy arrays and a fake kernel that checks the
# argument list against the entry point's .param list in nvcc's PTX (u64: pointer or long long,
# u32: int) and the grid against CUDA's limits. Catches argument order/count/type slips and bad
# grids before any GPU sees the code; the values computed are not checked here (GPU tests do).
class _FakeArr:
    def __init__(self, a, ptr=1 << 20):
        self.a, self._ptr = a, ptr

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)
    strides = property(lambda self: self.a.strides)
    itemsize = property(lambda self: self.a.itemsize)
    size = property(lambda self: self.a.size)
    data = property(lambda self: type("D", (), {"ptr": self._ptr})())
    flags = property(lambda self: type("F", (), {"c_contiguous": self.a.flags.c_contiguous})())

    def view(self, dtype):
        return _FakeArr(self.a.view(dtype), self._ptr)

    def transpose(self, *axes):
        return _FakeArr(self.a.transpose(*axes), self._ptr)

    def reshape(self, *shape):
        return _FakeArr(self.a.reshape(*shape), self._ptr)


class _FakeCupy:
    uint16 = np.uint16

    @staticmethod
    def ascontiguousarray(a):
        return _FakeArr(np.ascontiguousarray(a.a), 1 << 21)


@pytest.fixture(scope="module")
def ptx_params():
    import re
    import shutil
    import subprocess
    import tempfile
    nvcc = shutil.which("nvcc") or "/usr/local/bin/nvcc"
    if not shutil.which(nvcc):
        pytest.skip("nvcc not found (needed for the kernels' PTX parameter lists)")
    from cnngpu.backends.cupy_backend import _module
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fname in (conv.FWD_FILE, conv.BWD_FILE):
            path = f"{tmp}/k.ptx"
            subprocess.run([nvcc, "-ptx", "-arch=sm_80", *_module.compile_options(conv.defines("float16", 8)),
                            "-o", path, f"{_module.CUDA_DIR}/{fname}"], check=True, capture_output=True)
            text = open(path).read()
            for m in re.finditer(r"\.entry (\w+)\(([^)]*)\)", text):
                out[m.group(1)] = [int(b) for b in re.findall(r"\.param \.[usb](\d+)", m.group(2))]
    return out


@pytest.fixture
def dry(monkeypatch, ptx_params):
    from cnngpu.backends.cupy_backend import _module
    calls = []

    def get_function(fname, entry, defines):
        assert entry in ptx_params, f"{entry} is not an entry point of {fname}"

        def kern(grid, block, args, shared_mem=0):
            bits = []
            for v in args:
                if isinstance(v, _FakeArr):
                    bits.append(64)
                elif isinstance(v, np.int64):
                    bits.append(64)
                elif isinstance(v, np.int32):
                    bits.append(32)
                else:
                    raise AssertionError(f"{entry}: argument of type {type(v).__name__}")
            assert bits == ptx_params[entry], f"{entry}: passed {bits}, kernel takes {ptx_params[entry]}"
            assert len(grid) == 3 or len(grid) == 1, grid
            assert 1 <= grid[0] < 2 ** 31 and all(1 <= v <= 65535 for v in grid[1:]), f"{entry}: grid {grid}"
            assert block in ((256,), (128,)), block
            if "implicit_gemm" in entry:   # tables + stages may pass 48 KiB: always opted in
                assert getattr(kern, "max_dynamic_shared_size_bytes", 0) >= shared_mem > 0, entry
            assert shared_mem <= 48 * 1024 or getattr(kern, "max_dynamic_shared_size_bytes", 0) >= shared_mem, \
                f"{entry}: {shared_mem} bytes of dynamic shared memory without the opt-in attribute"
            assert shared_mem <= 99 * 1024, f"{entry}: {shared_mem} bytes of shared memory (sm_86/89 allow 99 KiB)"
            calls.append((entry, dict(defines), grid, args))
        return kern

    monkeypatch.setattr(_module, "get_function", get_function)
    monkeypatch.setattr(conv, "cupy", _FakeCupy)
    monkeypatch.setattr(conv_weights, "cupy", _FakeCupy)          # the weight layouts' copies
    monkeypatch.setattr(conv, "sm_count", lambda: 132)
    monkeypatch.setattr(conv, "empty", lambda shape, dtype: _FakeArr(np.full(shape, np.nan, dtype=dtype)))
    return calls


def _fake_inputs(case, dtype):
    g = geometry(case)
    npdt = np.dtype(dtype) if dtype != "bfloat16" else __import__("ml_dtypes").bfloat16
    mk = lambda shape: _FakeArr(np.zeros(shape, dtype=npdt))  # noqa: E731
    return g, mk((g.N, g.C, g.H, g.W)), mk((g.K, g.c_per_group, g.R, g.S)), mk((g.K,)), mk((g.N, g.K, g.P, g.Q))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", GEOMETRIES + BIG, ids=_IDS + _BIG_IDS)
def test_dry_run_launch_arguments(dry, case, dtype):
    g, x, w, b, dy = _fake_inputs(case, dtype)
    for algo in ("direct", "implicit_gemm"):
        y = conv.conv2d_forward(x, w, b, g, algo=algo)
        assert y.shape == (g.N, g.K, g.P, g.Q) and y.dtype == x.dtype
        gx, gw, gb = conv.conv2d_backward(dy, x, w, g, algo=algo)
        assert (gx.shape, gw.shape, gb.shape) == (x.shape, w.shape, (g.K,))
        assert gx.dtype == gw.dtype == gb.dtype == x.dtype
    entries = [c[0] for c in dry]
    assert conv.igemm_entry("conv2d_fwd_implicit_gemm", g.k_per_group) in entries
    assert any(e.startswith("conv2d_fwd_direct_") for e in entries)
    dw_entry = conv.igemm_entry("conv2d_bwd_dw_implicit_gemm", g.k_per_group)
    assert {"conv2d_bwd_dx_direct", "conv2d_bwd_dw_direct", dw_entry, "conv2d_bwd_db"} <= set(entries)
    for entry, defs, _, args in dry:
        if "implicit_gemm" in entry:      # the tile width follows the columns per group
            cols = g.c_per_group if entry.startswith("conv2d_bwd_dx") else g.k_per_group
            assert entry.endswith("_narrow") == (cols <= conv.IG_BN_NARROW)
    builds = {(f, tuple(sorted(d.items()))) for f, _, d in conv.CUDA_BUILDS}
    for entry, defs, grid, _ in dry:
        fname = conv.FWD_FILE if entry.startswith("conv2d_fwd") else conv.BWD_FILE
        assert (fname, tuple(sorted(defs.items()))) in builds, f"{entry} launched with unlisted {defs}"
        assert defs["SCALAR_T"] == conv.SCALAR_T[dtype]


def _channels_last(a: _FakeArr) -> _FakeArr:
    """The same values stored channels-last (a view of an (N, H, W, C) contiguous array)."""
    return _FakeArr(np.ascontiguousarray(a.a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), a._ptr)


def test_dry_run_split_k_and_vec(dry):
    """Channels-last activations: the NHWC kernels with 16-byte loads (cp.async), no copy."""
    case = ("split", 16, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, True)
    g, x, w, b, dy = _fake_inputs(case, "float16")
    x, dy = _channels_last(x), _channels_last(dy)
    conv.conv2d_backward(dy, x, w, g)
    by = {c[0]: c for c in dry}
    _, defs, grid, args = by["conv2d_bwd_dw_implicit_gemm_narrow"]
    assert defs["VEC_A"] == defs["VEC_B"] == 8                # C/groups = K/groups = 16
    splits = int(args[4])
    assert splits > 1 and grid[2] == splits                   # 16*32*32 = 16384 terms, one tile
    assert "conv2d_bwd_sum_splits" in by
    assert by["conv2d_bwd_dx_implicit_gemm_narrow"][1]["VEC_A"] == 8
    assert defs["IG_ASYNC"] == 1 and defs["IG_STAGES"] >= 3   # 16-byte loads of fp16: the cp.async pipeline


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_dry_run_1x1_reads_nchw_in_place(dry, dtype):
    """A 1x1 stride-1 unpadded conv on C-contiguous NCHW arrays: every implicit GEMM gets x / dy
    themselves (the nchw flag set, no NHWC copy), with 16-byte vectors when H*W allows them."""
    case = ("p1x1", 2, 16, 4, 6, 24, 1, 1, 1, 0, 1, 1, True)     # H*W = 24: a multiple of 8 and of 4
    g, x, w, b, dy = _fake_inputs(case, dtype)
    conv.conv2d_forward(x, w, b, g, algo="implicit_gemm")
    conv.conv2d_backward(dy, x, w, g, algo="implicit_gemm")
    by = {c[0].replace("_narrow", ""): c for c in dry}
    fwd, dxk, dwk = (by[f"conv2d_{p}_implicit_gemm"] for p in ("fwd", "bwd_dx", "bwd_dw"))
    assert int(fwd[3][8]) == 1 and fwd[3][0].data.ptr == x.data.ptr           # x itself, not a copy (ptr 1 << 21)
    assert dxk[3][0].data.ptr == dy.data.ptr and dwk[3][0].data.ptr == x.data.ptr and dwk[3][1].data.ptr == dy.data.ptr
    assert int(dxk[3][6]) == 1 and int(dwk[3][6]) == 1
    for k in (fwd, dxk, dwk):
        assert k[1]["VEC_A"] == k[1]["VEC_B"] == conv.max_vec(dtype)
    assert conv.nchw_vectors(g) and not conv.nchw_vectors(geometry(GEOMETRIES[0]))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_dry_run_nchw_in_place_any_geometry(dry, dtype, monkeypatch):
    """A padded, strided 3x3 conv on C-contiguous NCHW arrays: every implicit GEMM reads x / dy in
    place (nchw flag, scalar loads: VEC_A = 1; the weights (C*R*S = 144, K = 24) by 16-byte loads:
    fp16 the mixed cp.async ring, fp32 scalars), the forward takes w itself (reduction (c, r, s)), no
    conv2d_input_relayout. Channels-last arrays: the NHWC path (flag 0), no copy either. With the
    policy switch (conv_policy.RELAYOUT_ENV) NCHW activations are copied, and that is recorded."""
    from cnngpu.backends.cupy_backend import LAUNCHES
    case = ("p3x3", 2, 16, 5, 7, 24, 3, 3, 2, 1, 1, 1, True)
    g, x, w, b, dy = _fake_inputs(case, dtype)
    before = LAUNCHES["conv2d_input_relayout"]
    conv.conv2d_forward(x, w, b, g, algo="implicit_gemm")
    conv.conv2d_backward(dy, x, w, g, algo="implicit_gemm")
    by = {c[0].replace("_narrow", ""): c for c in dry}
    fwd, dxk, dwk = (by[f"conv2d_{p}_implicit_gemm"] for p in ("fwd", "bwd_dx", "bwd_dw"))
    assert int(fwd[3][8]) == int(dxk[3][6]) == int(dwk[3][6]) == 1
    assert fwd[3][0].data.ptr == x.data.ptr and fwd[3][1].a.shape == w.shape          # w as given
    assert dxk[3][0].data.ptr == dy.data.ptr and dwk[3][0].data.ptr == x.data.ptr and dwk[3][1].data.ptr == dy.data.ptr
    half = dtype == "float16"
    assert fwd[1]["VEC_A"] == dxk[1]["VEC_A"] == dwk[1]["VEC_A"] == 1
    assert fwd[1]["VEC_B"] == dxk[1]["VEC_B"] == (8 if half else 1) and fwd[1]["IG_ASYNC"] == dxk[1]["IG_ASYNC"] == half
    assert dwk[1]["VEC_B"] == 1                                       # P*Q = 3*4 = 12: scalar dy
    assert LAUNCHES["conv2d_input_relayout"] == before
    for layout, relayout in (("channels_last", False), ("forced", True)):
        dry.clear()
        xs, dys = (x, dy) if layout == "forced" else (_channels_last(x), _channels_last(dy))
        if layout == "forced":
            monkeypatch.setenv(conv_policy.RELAYOUT_ENV, "1")
        conv.conv2d_forward(xs, w, b, g, algo="implicit_gemm")
        conv.conv2d_backward(dys, xs, w, g, algo="implicit_gemm")
        by = {c[0].replace("_narrow", ""): c for c in dry}
        fwd, dxk, dwk = (by[f"conv2d_{p}_implicit_gemm"] for p in ("fwd", "bwd_dx", "bwd_dw"))
        assert int(fwd[3][8]) == int(dxk[3][6]) == int(dwk[3][6]) == 0
        assert fwd[3][1].a.shape == (g.K, g.R, g.S, g.c_per_group)                     # w re-laid (r, s, c)
        assert (LAUNCHES["conv2d_input_relayout"] > before) == relayout, layout
        before = LAUNCHES["conv2d_input_relayout"]
