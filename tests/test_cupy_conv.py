"""conv2d on the cupy backend (kernels/cuda/conv2d_fwd.cu, conv2d_bwd.cu).

CPU part (runs everywhere): the launchers' pure decisions -- algorithm choice, direct-kernel
shared memory and grid limits, split-K plans, VEC choice vs CUDA_BUILDS, extent checks -- and a
NumPy emulation of the dX implicit GEMM's stride-residue decomposition (the same tap tables the
kernel builds) checked against the reference dX, so the index math is verified without a GPU.

GPU part (@pytest.mark.gpu; conftest skips it without CUDA): forward and backward (dX, dW, db),
both algorithms, many geometries, float32 / float16 / bfloat16, against the NumPy reference in
float64, outputs poisoned with NaN, asserting which kernel ran. One command on a GPU machine:
    python -m pytest -q -m gpu tests/test_cupy_conv.py
"""
import numpy as np
import pytest

from cnngpu import functional as F
from cnngpu.geometry import ConvGeometry
from harness import assert_close, launches, randn, require, rng, round_to

conv = pytest.importorskip("cnngpu.backends.cupy_backend.conv")

# (id, N, C, H, W, K, R, S, stride, padding, dilation, groups, bias)
GEOMETRIES = [
    ("3x2_s2", 2, 3, 9, 7, 5, 3, 2, 2, 1, 1, 1, True),              # R != S, H != W, C=3, odd sizes
    ("c1_s3", 2, 1, 8, 7, 4, 3, 3, 3, 2, 1, 1, True),               # C=1, stride 3, padding 2
    ("same_asym", 1, 3, 7, 6, 4, 2, 4, 1, "same", 1, 1, True),      # 'same', even kernel: extra zero at end
    ("same_s2_d2", 1, 2, 9, 8, 3, 3, 3, 2, "same", 2, 1, False),    # 'same' stride 2 dilation 2
    ("groups2", 2, 4, 6, 7, 6, 3, 3, (2, 1), 1, (1, 2), 2, True),   # groups, stride/dilation pairs
    ("depthwise", 2, 5, 7, 6, 5, 3, 3, 2, 1, 1, 5, True),           # depthwise, stride 2
    ("dw_mult2", 1, 3, 6, 5, 6, 3, 3, 1, 1, 1, 3, False),           # depthwise, channel multiplier 2
    ("1x1", 2, 8, 5, 6, 6, 1, 1, 1, 0, 1, 1, True),                 # 1x1
    ("1x1_s2_g2", 1, 4, 7, 5, 6, 1, 1, 2, 0, 1, 2, True),           # 1x1 stride 2 (classes without taps)
    ("valid_5x5", 1, 3, 6, 6, 2, 5, 5, 1, 0, 1, 1, True),           # kernel nearly covers the input
    ("s3_d2_pad", 1, 2, 11, 10, 3, 3, 2, 3, (2, 1), 2, 1, True),    # stride 3 with dilation 2
]
# larger shapes: several M/N tiles, VEC=8/4 loads (channels % 8 == 0), split-K (N*P*Q >= 4096)
BIG = [
    ("c64_3x3", 2, 64, 12, 11, 72, 3, 3, 1, 1, 1, 1, True),
    ("c16_s2_g2", 4, 32, 17, 15, 48, 3, 3, 2, 1, 1, 2, True),
    ("c24_1x1_split", 8, 24, 24, 23, 40, 1, 1, 1, 0, 1, 1, True),
    ("c8_5x3_d2", 3, 8, 13, 14, 16, 5, 3, 1, "same", (2, 1), 1, False),
    ("dw32_split", 16, 32, 20, 18, 32, 3, 3, 1, 1, 1, 32, True),
]
_IDS = [c[0] for c in GEOMETRIES]
_BIG_IDS = [c[0] for c in BIG]


def _split(case):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups, bias = case
    return (N, C, H, W), (K, C // groups, R, S), dict(stride=stride, padding=padding, dilation=dilation,
                                                       groups=groups), bias


def _geometry(case) -> ConvGeometry:
    xs, ws, opts, _ = _split(case)
    return F.conv2d_geometry(xs, ws, **opts)


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
    assert conv.vec_width("float16", 8, 16) == 8 and conv.vec_width("float16", 8, 12) == 1
    assert conv.vec_width("float32", 4) == 4 and conv.vec_width("bfloat16", 24) == 8
    assert conv.vec_width("float16", 8, ptrs=(256, 4096)) == 8 and conv.vec_width("float16", 8, ptrs=(258,)) == 1
    with pytest.raises(TypeError, match="float64"):
        conv.defines("float64")


@pytest.mark.parametrize("case", GEOMETRIES + BIG, ids=_IDS + _BIG_IDS)
def test_algo_choice_and_grids(case):
    g = _geometry(case)
    algo = conv.choose_algo(g)
    small = g.c_per_group * g.R * g.S < 16 or g.k_per_group < 8
    assert algo == ("direct" if small else "implicit_gemm")
    plan = conv.direct_fwd_plan(g)
    assert plan is not None
    entry, kb, grid, smem = plan
    assert entry == f"conv2d_fwd_direct_{kb}ch" and kb == (4 if g.k_per_group >= 4 else 1)
    assert grid[0] * 16 * 16 >= g.P * g.Q and grid[1] == g.groups * -(-g.k_per_group // kb) and grid[2] == g.N
    assert smem <= 48 * 1024
    gx, gy, gz = conv.fwd_igemm_grid(g)
    assert gx * 128 >= g.N * g.P * g.Q > (gx - 1) * 128 and gy * 64 >= g.k_per_group and gz == g.groups
    dxg = conv.dx_igemm_grid(g)
    assert dxg[2] == g.groups * g.stride[0] * g.stride[1] and dxg[1] * 64 >= g.c_per_group
    biggest = max(g.N * hc * wc for _, _, hc, wc, _, _ in conv.dx_residue_classes(g))
    assert dxg[0] * 128 >= biggest > (dxg[0] - 1) * 128
    dx_algo, dw_algo = conv.choose_bwd_algos(g)
    assert dx_algo == ("direct" if (g.c_per_group < 8 or g.k_per_group * g.R * g.S < 16) else "implicit_gemm")
    assert dw_algo == ("direct" if (g.k_per_group < 8 or g.c_per_group * g.R * g.S < 16) else "implicit_gemm")


def test_direct_forward_falls_back_when_its_tile_does_not_fit():
    g = F.conv2d_geometry((1, 1, 400, 400), (1, 1, 9, 9), stride=8, dilation=4)
    assert conv.direct_fwd_plan(g) is None          # (15*8 + 33)^2 floats > 48 KiB
    assert conv.choose_algo(g) == "implicit_gemm"   # even though C*R*S... would pick direct otherwise
    g2 = F.conv2d_geometry((1, 1, 40, 40), (1, 1, 3, 3))
    assert conv.choose_algo(g2) == "direct"


def test_dx_igemm_limits():
    g = F.conv2d_geometry((1, 8, 40, 40), (8, 8, 33, 1))
    assert conv.dx_igemm_grid(g) is None
    assert conv.choose_bwd_algos(g)[0] == "direct"
    g = F.conv2d_geometry((1, 8, 40, 40), (8, 8, 32, 1))
    assert conv.dx_igemm_grid(g) is not None


def test_bwd_algo_override(monkeypatch):
    g = F.conv2d_geometry((1, 16, 8, 8), (16, 16, 3, 3), padding=1)
    assert conv.choose_bwd_algos(g) == ("implicit_gemm", "implicit_gemm")
    monkeypatch.setattr(conv, "BWD_ALGO", "direct")
    assert conv.choose_bwd_algos(g) == ("direct", "direct")


@pytest.mark.parametrize("length,blocks,sms,granule,numel", [
    (1, 1, 132, 1, 1), (100, 4, 132, 16, 10), (4096, 1, 132, 256, 9), (10 ** 6, 1, 132, 32, 100),
    (10 ** 6, 10 ** 4, 132, 32, 10), (123457, 3, 108, 256, 7), (2 ** 30, 1, 132, 256, 2 ** 24),
])
def test_split_reduction(length, blocks, sms, granule, numel):
    splits, chunk = conv.split_reduction(length, blocks, sms, granule=granule, out_numel=numel)
    assert 1 <= splits <= conv.MAX_SPLIT
    assert chunk % granule == 0
    assert splits * chunk >= length > (splits - 1) * chunk       # covers, and no split is empty
    if splits > 1:
        assert chunk >= conv.SPLIT_MIN_LEN and splits * numel * 4 <= conv.WS_MAX_BYTES
    if length >= 2 * conv.SPLIT_MIN_LEN * 2 and blocks == 1 and numel * 4 * 4 <= conv.WS_MAX_BYTES:
        assert splits > 1                                          # few blocks + long reduction: split


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
    assert grid[2] == g.groups * splits and grid[2] <= conv.GRID_YZ_MAX
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
    g = ConvGeometry(N=2 ** 16, C=1, H=2 ** 8, W=2 ** 8, K=1, R=1, S=1, P=2 ** 8, Q=2 ** 8, stride=(1, 1),
                     pad=(0, 0), pad_end=(0, 0), dilation=(1, 1), groups=1)
    with pytest.raises(ValueError, match="N\\*P\\*Q"):
        conv.check_extents(g)
    conv.check_extents(_geometry(GEOMETRIES[0]))
    with pytest.raises(ValueError, match="32-bit"):
        conv._i32(2 ** 31)


# ================================================================================================
# CPU: NumPy emulation of the dX implicit GEMM's residue-class decomposition
# ================================================================================================
def _dx_by_classes(dy, w, g: ConvGeometry):
    """dX computed exactly as conv2d_bwd_dx_implicit_gemm maps it: per residue class (a, b), rows
    (n, i, j), reduction over the class's taps and Kg, zero where p, q fall outside dy."""
    G, Kg, Cg = g.groups, g.k_per_group, g.c_per_group
    sh, sw = g.stride
    dx = np.full((g.N, g.C, g.H, g.W), np.nan)
    dyg = dy.reshape(g.N, G, Kg, g.P, g.Q)
    wg = w.reshape(G, Kg, Cg, g.R, g.S)
    for a, b, hc, wc, rtaps, staps in conv.dx_residue_classes(g):
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
    xs, ws, opts, _ = _split(case)
    g = _geometry(case)
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
    xs, ws, opts, _ = _split(case)
    g = _geometry(case)
    gen = rng(12)
    x = randn(gen, xs)
    w = randn(gen, ws)
    dy = randn(gen, (g.N, g.K, g.P, g.Q))
    _, ref, _ = F.conv2d_backward(dy, x, w, backend="numpy", need_dx=False, need_db=False, **opts)
    splits, got = _dw_by_igemm_mapping(x, dy, g, dtype)
    assert (splits > 1) == case[0].startswith("split")
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_dx_classes_without_taps():
    # 1x1 stride 2: only class (0, 0) has a tap; the others are all-zero rows of dX
    g = F.conv2d_geometry((1, 2, 5, 5), (2, 2, 1, 1), stride=2)
    cls = conv.dx_residue_classes(g)
    assert [(a, b) for a, b, _, _, rt, st in cls if rt and st] == [(0, 0)]


# ================================================================================================
# GPU parity
# ================================================================================================
@pytest.fixture(scope="module")
def cb():
    return require("cupy")


def _dev(a, dtype):
    """float64 NumPy -> cupy array of ``dtype`` (bfloat16 built from its bit pattern)."""
    import cupy
    if dtype == "bfloat16":
        bits = (round_to(a, "bfloat16").astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return cupy.asarray(bits).view(cupy.dtype("bfloat16"))
    return cupy.asarray(np.asarray(a, dtype=dtype))


def _host(y):
    """cupy array (any float dtype, bfloat16 included) -> float64 NumPy."""
    import cupy
    if y.dtype.name == "bfloat16":
        bits = cupy.asnumpy(cupy.ascontiguousarray(y).view(cupy.uint16)).astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64)
    return cupy.asnumpy(y).astype(np.float64)


def _inputs(case, dtype, seed):
    xs, ws, opts, has_bias = _split(case)
    g = _geometry(case)
    gen = rng(seed)
    x, w = randn(gen, xs, dtype), randn(gen, ws, dtype)
    b = randn(gen, (ws[0],), dtype) if has_bias else None
    dy = randn(gen, (g.N, g.K, g.P, g.Q), dtype)
    return g, opts, (x, w, b, dy)


def _check_forward(cb, case, dtype, algo, seed=1, layout=None):
    g, opts, (x, w, b, _) = _inputs(case, dtype, seed)
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    dx_, dw_ = _dev(x, dtype), _dev(w, dtype)
    if layout is not None:
        dx_ = layout(dx_)
    db_ = _dev(b, dtype) if b is not None else None
    with launches(cb, f"conv2d_fwd_{algo}"):
        y = F.conv2d(dx_, dw_, db_, algo=algo, **opts)
    assert y.dtype.name == dtype and y.shape == (g.N, g.K, g.P, g.Q) and y.flags.c_contiguous
    assert_close(_host(y), ref, dtype, g.c_per_group * g.R * g.S, what=f"y {algo} {dtype}")


def _check_backward(cb, case, dtype, algo, monkeypatch, seed=2, layout=None):
    g, opts, (x, w, _, dy) = _inputs(case, dtype, seed)
    rdx, rdw, rdb = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    monkeypatch.setattr(conv, "BWD_ALGO", algo)
    dx_algo, dw_algo = conv.choose_bwd_algos(g)
    ddy, dxx, dww = _dev(dy, dtype), _dev(x, dtype), _dev(w, dtype)
    if layout is not None:
        ddy, dxx = layout(ddy), layout(dxx)
    with launches(cb, f"conv2d_bwd_dx_{dx_algo}", f"conv2d_bwd_dw_{dw_algo}", "conv2d_bwd_db"):
        gx, gw, gb = F.conv2d_backward(ddy, dxx, dww, **opts)
    for got, shape in ((gx, x.shape), (gw, w.shape), (gb, (g.K,))):
        assert got.dtype.name == dtype and got.shape == shape
    npq = g.N * g.P * g.Q
    assert_close(_host(gx), rdx, dtype, g.k_per_group * g.R * g.S, what=f"dx {dx_algo} {dtype}")
    assert_close(_host(gw), rdw, dtype, npq, what=f"dw {dw_algo} {dtype}")
    assert_close(_host(gb), rdb, dtype, npq, what=f"db {dtype}")
    return dx_algo, dw_algo


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", GEOMETRIES + BIG, ids=_IDS + _BIG_IDS)
def test_gpu_forward_fp32(cb, case, algo):
    _check_forward(cb, case, "float32", algo)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", GEOMETRIES[::2] + BIG, ids=_IDS[::2] + _BIG_IDS)
def test_gpu_forward_half(cb, case, algo, dtype):
    _check_forward(cb, case, dtype, algo, seed=3)


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", GEOMETRIES + BIG, ids=_IDS + _BIG_IDS)
def test_gpu_backward_fp32(cb, case, algo, monkeypatch):
    assert _check_backward(cb, case, "float32", algo, monkeypatch) == (algo, algo)  # forced algo ran


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", GEOMETRIES[1::2] + BIG, ids=_IDS[1::2] + _BIG_IDS)
def test_gpu_backward_half(cb, case, algo, dtype, monkeypatch):
    _check_backward(cb, case, dtype, algo, monkeypatch, seed=4)


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
def test_gpu_strided_and_channels_last_inputs(cb, algo, monkeypatch):
    import cupy

    def channels_last(a):
        return cupy.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    def sliced(a):
        n, c, h, w = a.shape
        big = cupy.zeros((n, 2 * c, h + 1, 2 * w + 1), dtype=a.dtype)
        big[:, ::2, 1:, 1::2] = a
        return big[:, ::2, 1:, 1::2]

    for layout in (channels_last, sliced):
        _check_forward(cb, BIG[0], "float32", algo, layout=layout)
        _check_backward(cb, GEOMETRIES[4], "float32", algo, monkeypatch, layout=layout)


@pytest.mark.gpu
def test_gpu_split_k_runs(cb, monkeypatch):
    """N*P*Q large next to the output tiles: dW and db must take the split-K + sum path."""
    case = ("split", 16, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, True)
    with launches(cb, "conv2d_bwd_sum_splits"):
        _check_backward(cb, case, "float32", "implicit_gemm", monkeypatch)
    with launches(cb, "conv2d_bwd_sum_splits"):
        _check_backward(cb, case, "bfloat16", "direct", monkeypatch)


@pytest.mark.gpu
def test_gpu_deterministic(cb, monkeypatch):
    g, opts, (x, w, _, dy) = _inputs(BIG[2], "float32", 5)
    outs = [F.conv2d_backward(_dev(dy, "float32"), _dev(x, "float32"), _dev(w, "float32"), **opts)
            for _ in range(2)]
    for a, b in zip(*outs):
        assert np.array_equal(_host(a), _host(b))


@pytest.mark.gpu
def test_gpu_torch_tensor_via_dlpack(cb):
    torch = pytest.importorskip("torch")
    g, opts, (x, w, b, _) = _inputs(GEOMETRIES[4], "float32", 6)
    tx = torch.from_numpy(x.astype(np.float32)).cuda()
    tw = torch.from_numpy(w.astype(np.float32)).cuda()
    cx, cw = cb.asarray(tx), cb.asarray(tw)              # zero-copy DLPack
    assert cx.data.ptr == tx.data_ptr()
    with launches(cb, "conv2d_fwd_implicit_gemm"):
        y = F.conv2d(cx, cw, None, algo="implicit_gemm", **opts)
    ref = F.conv2d(x, w, None, backend="numpy", **opts)
    assert_close(_host(y), ref, "float32", g.c_per_group * g.R * g.S, what="y from torch tensors")
    ty = torch.from_dlpack(y)
    assert ty.device.type == "cuda" and tuple(ty.shape) == y.shape


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
            assert shared_mem <= 48 * 1024
            calls.append((entry, dict(defines), grid, args))
        return kern

    monkeypatch.setattr(_module, "get_function", get_function)
    monkeypatch.setattr(conv, "_cupy", lambda: _FakeCupy)
    monkeypatch.setattr(conv, "num_sms", lambda: 132)
    monkeypatch.setattr(conv, "empty", lambda shape, dtype: _FakeArr(np.full(shape, np.nan, dtype=dtype)))
    return calls


def _fake_inputs(case, dtype):
    g = _geometry(case)
    npdt = np.dtype(dtype) if dtype != "bfloat16" else __import__("ml_dtypes").bfloat16
    mk = lambda shape: _FakeArr(np.zeros(shape, dtype=npdt))  # noqa: E731
    return g, mk((g.N, g.C, g.H, g.W)), mk((g.K, g.c_per_group, g.R, g.S)), mk((g.K,)), mk((g.N, g.K, g.P, g.Q))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", GEOMETRIES + BIG, ids=_IDS + _BIG_IDS)
def test_dry_run_launch_arguments(dry, case, dtype, monkeypatch):
    g, x, w, b, dy = _fake_inputs(case, dtype)
    for algo in ("direct", "implicit_gemm"):
        y = conv.conv2d_forward(x, w, b, g, algo=algo)
        assert y.shape == (g.N, g.K, g.P, g.Q) and y.dtype == x.dtype
        monkeypatch.setattr(conv, "BWD_ALGO", algo)
        gx, gw, gb = conv.conv2d_backward(dy, x, w, g)
        assert (gx.shape, gw.shape, gb.shape) == (x.shape, w.shape, (g.K,))
        assert gx.dtype == gw.dtype == gb.dtype == x.dtype
    entries = [c[0] for c in dry]
    assert "conv2d_fwd_implicit_gemm" in entries and any(e.startswith("conv2d_fwd_direct_") for e in entries)
    assert {"conv2d_bwd_dx_direct", "conv2d_bwd_dw_direct", "conv2d_bwd_dw_implicit_gemm",
            "conv2d_bwd_db"} <= set(entries)
    builds = {(f, tuple(sorted(d.items()))) for f, _, d in conv.CUDA_BUILDS}
    for entry, defs, grid, _ in dry:
        fname = conv.FWD_FILE if entry.startswith("conv2d_fwd") else conv.BWD_FILE
        assert (fname, tuple(sorted(defs.items()))) in builds, f"{entry} launched with unlisted {defs}"
        assert defs["SCALAR_T"] == conv.SCALAR_T[dtype]


def test_dry_run_split_k_and_vec(dry):
    case = ("split", 16, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1, True)
    g, x, w, b, dy = _fake_inputs(case, "float16")
    conv.conv2d_backward(dy, x, w, g)
    by = {c[0]: c for c in dry}
    _, defs, grid, args = by["conv2d_bwd_dw_implicit_gemm"]
    assert defs["VEC"] == 8                                   # C/groups = K/groups = 16
    splits = int(args[4])
    assert splits > 1 and grid[2] == splits                   # 16*32*32 = 16384 terms, one tile
    assert "conv2d_bwd_sum_splits" in by
    assert by["conv2d_bwd_dx_implicit_gemm"][1]["VEC"] == 8
