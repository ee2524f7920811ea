"""Tier 2 for conv2d on the triton backend: the direct and implicit-GEMM forward kernels and the
dX / dW (split-K) / db backward kernels against the NumPy reference (float64), on torch CPU tensors
under TRITON_INTERPRET=1 (or on a GPU when one is present), over many geometries, layouts and
dtypes. Outputs are poisoned with NaN (conftest), tolerances scale with the reduction length, and
every test asserts which kernel (and which variant) ran. Shapes stay tiny: the interpreter is slow.
"""
import numpy as np
import pytest
import torch

from cnngpu import functional as F
from harness import assert_close, launches, native, randn, require, rng, to_f64

# (id, N, C, H, W, K, R, S, stride, padding, dilation, groups, bias)
GEOMETRIES = [
    ("3x2_s2", 2, 3, 9, 7, 5, 3, 2, 2, 1, 1, 1, True),              # R != S, H != W, C=3, odd sizes
    ("c1_s3", 2, 1, 8, 7, 4, 3, 3, 3, 2, 1, 1, True),               # C=1, stride 3, padding 2
    ("same_asym", 1, 3, 7, 6, 4, 2, 4, 1, "same", 1, 1, True),      # 'same', even kernel: extra zero at end
    ("same_s2_d2", 1, 2, 9, 8, 3, 3, 3, 2, "same", 2, 1, False),    # 'same' stride 2 dilation 2 (asym in W)
    ("groups2", 2, 4, 6, 7, 6, 3, 3, (2, 1), 1, (1, 2), 2, True),   # groups, stride/dilation pairs
    ("depthwise", 2, 5, 7, 6, 5, 3, 3, 2, 1, 1, 5, True),           # depthwise, stride 2
    ("dw_mult2", 1, 3, 6, 5, 6, 3, 3, 1, 1, 1, 3, False),           # depthwise, channel multiplier 2
    ("1x1", 2, 8, 5, 6, 6, 1, 1, 1, 0, 1, 1, True),                 # the 1x1 fast path
    ("1x1_s2_g2", 1, 4, 7, 5, 6, 1, 1, 2, 0, 1, 2, True),           # 1x1 stride 2, groups: not the fast path
    ("valid_5x5", 1, 3, 6, 6, 2, 5, 5, 1, 0, 1, 1, True),           # kernel nearly covers the input
]
_IDS = [g[0] for g in GEOMETRIES]


@pytest.fixture(scope="module")
def tb():
    return require("triton")


def _geom(case):
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups, bias = case
    return (N, C, H, W), (K, C // groups, R, S), dict(stride=stride, padding=padding, dilation=dilation,
                                                       groups=groups), bias


def relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as t (N, C, H, W) in another memory layout, without changing them."""
    if layout == "nchw":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":
        N, C, H, W = t.shape
        big = torch.full((N, 2 * C, H + 1, 2 * W + 1), float("nan"), dtype=t.dtype, device=t.device)
        big[:, ::2, 1:, 1::2] = t
        return big[:, ::2, 1:, 1::2]
    raise ValueError(layout)


def _inputs(case, dtype, seed, layout="nchw"):
    xs, ws, opts, has_bias = _geom(case)
    gen = rng(seed)
    x = randn(gen, xs, dtype)
    w = randn(gen, ws, dtype)
    b = randn(gen, (ws[0],), dtype) if has_bias else None
    tx = relayout(native("triton", x, dtype), layout)
    tw = native("triton", w, dtype)
    tb_ = native("triton", b, dtype) if has_bias else None
    return (x, w, b), (tx, tw, tb_), opts


def _red_fwd(case):
    _, _, C, _, _, _, R, S, _, _, _, groups, _ = case
    return C // groups * R * S


# ------------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", GEOMETRIES, ids=_IDS)
def test_forward_fp32(tb, case, algo):
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, "float32", 1)
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(tb, f"conv2d_fwd_{algo}"):
        y = F.conv2d(tx, tw, tbias, algo=algo, precision="ieee", **opts)
    assert y.dtype == torch.float32
    assert_close(to_f64(y), ref, "float32", _red_fwd(case), what=f"y {algo}")


@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", [GEOMETRIES[i] for i in (0, 3, 5, 7)], ids=[_IDS[i] for i in (0, 3, 5, 7)])
def test_forward_fp16(tb, case, algo):
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, "float16", 2)
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(tb, f"conv2d_fwd_{algo}"):
        y = F.conv2d(tx, tw, tbias, algo=algo, **opts)
    assert y.dtype == torch.float16
    assert_close(to_f64(y), ref, "float16", _red_fwd(case), what=f"y {algo} fp16")


@pytest.mark.parametrize("case", [GEOMETRIES[i] for i in (0, 2, 4, 8)], ids=[_IDS[i] for i in (0, 2, 4, 8)])
def test_forward_taps_variant(tb, case, monkeypatch):
    """The tap-major reduction (used for C/groups >= 16) on small shapes, by lowering the switch."""
    conv = pytest.importorskip("cnngpu.backends.triton_backend.conv")
    monkeypatch.setattr(conv, "FLAT_K_MAX_C", 0)
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, "float32", 3)
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(tb, "conv2d_fwd_implicit_gemm[taps]"):
        y = F.conv2d(tx, tw, tbias, algo="implicit_gemm", **opts)
    assert_close(to_f64(y), ref, "float32", _red_fwd(case), what="y taps")


def test_forward_many_channel_blocks(tb):
    """C/groups = 20 > BLOCK_K (interpreter config): several channel chunks per tap, tap-major path."""
    case = ("c20", 1, 20, 5, 4, 9, 3, 2, 1, 1, 1, 1, True)
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, "float32", 4)
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(tb, "conv2d_fwd_implicit_gemm[taps]"):
        y = F.conv2d(tx, tw, tbias, algo="implicit_gemm", **opts)
    assert_close(to_f64(y), ref, "float32", _red_fwd(case), what="y c20")


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", [GEOMETRIES[i] for i in (0, 5, 7)], ids=[_IDS[i] for i in (0, 5, 7)])
def test_forward_layouts(tb, case, algo, layout):
    """Channels-last and sliced (non-contiguous) x, a transposed-storage weight and a strided bias:
    the kernels take every stride, so the values must match with no copy made."""
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, "float32", 5, layout)
    tw = tw.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)     # same values, other strides
    if tbias is not None:
        tbias = torch.stack([tbias, tbias], 1)[:, 0]                   # stride 2
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(tb, f"conv2d_fwd_{algo}"):
        y = F.conv2d(tx, tw, tbias, algo=algo, **opts)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(to_f64(y), ref, "float32", _red_fwd(case), what=f"y {layout}")


def test_forward_tf32_precision(tb):
    """precision='tf32' reaches the dot (on a GPU: TF32 tensor cores; in the interpreter: fp32)."""
    case = GEOMETRIES[0]
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, "float32", 6)
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(tb, "conv2d_fwd_implicit_gemm"):
        y = F.conv2d(tx, tw, tbias, algo="implicit_gemm", precision="tf32", **opts)
    assert_close(to_f64(y), ref, "tf32", _red_fwd(case), what="y tf32")


@pytest.mark.parametrize("case,expected", [
    (GEOMETRIES[0], "direct"),           # C/g*R*S = 18 but K/g = 5 < 8
    (GEOMETRIES[5], "direct"),           # depthwise
    (("wide", 1, 6, 5, 5, 8, 3, 3, 1, 1, 1, 1, False), "implicit_gemm"),
    (("1x1_small", 1, 8, 4, 4, 8, 1, 1, 1, 0, 1, 1, False), "direct"),   # reduction 8 < 16
])
def test_forward_auto_heuristic(tb, case, expected):
    conv = pytest.importorskip("cnngpu.backends.triton_backend.conv")
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, "float32", 7)
    g = F.conv2d_geometry(tuple(tx.shape), tuple(tw.shape), opts["stride"], opts["padding"],
                          opts["dilation"], opts["groups"])
    assert conv.choose_algo(g) == expected
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(tb, f"conv2d_fwd_{expected}"):
        y = F.conv2d(tx, tw, tbias, **opts)
    assert_close(to_f64(y), ref, "float32", _red_fwd(case), what="y auto")


# ------------------------------------------------------------------------------------------------
# index width
# ------------------------------------------------------------------------------------------------
def test_needs_int64_decision():
    conv = pytest.importorskip("cnngpu.backends.triton_backend.conv")
    L = conv.INT32_LIMIT
    assert conv.max_offset((2, 3, 4, 5), (60, 20, 5, 1)) == 119
    assert conv.max_offset((2, 0, 4), (1, 1, 1)) == 0
    # a contiguous tensor with exactly 2**31 elements reaches offset 2**31 - 1: still int32-safe
    assert not conv.needs_int64([((2, 2 ** 30), (2 ** 30, 1))])
    assert conv.needs_int64([((2, 2 ** 30 + 1), (2 ** 30 + 1, 1))])
    # a small view of a huge buffer (large strides) needs int64 even with few elements
    assert conv.needs_int64([((2, 3, 2, 2), (2 ** 31, 1, 2, 1))])
    # channels-last strides: the largest offset is what counts, not the logical shape order
    n, c, h, w = 64, 256, 512, 256                                   # 2**31 elements
    assert not conv.needs_int64([((n, c, h, w), (c * h * w, 1, w * c, c))])
    assert conv.needs_int64([((n + 1, c, h, w), (c * h * w, 1, w * c, c))])
    # a flattened GEMM extent (N*P*Q) close to the limit needs int64 (tile rounding headroom)
    assert conv.needs_int64([], extents=(L - 1,))
    assert not conv.needs_int64([], extents=(L // 2,))


@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
def test_forward_int64_variant(tb, algo, monkeypatch):
    """The INT64 variant computes the same result (the limit is lowered so a tiny conv takes it)."""
    conv = pytest.importorskip("cnngpu.backends.triton_backend.conv")
    monkeypatch.setattr(conv, "INT32_LIMIT", 64)
    case = GEOMETRIES[4]
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, "float32", 8, "channels_last")
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(tb, f"conv2d_fwd_{algo}[int64]"):
        y = F.conv2d(tx, tw, tbias, algo=algo, **opts)
    assert_close(to_f64(y), ref, "float32", _red_fwd(case), what="y int64")


# ------------------------------------------------------------------------------------------------
# backward: dX (stride-residue implicit GEMM / direct), dW (split-K), db
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def conv_mod():
    return pytest.importorskip("cnngpu.backends.triton_backend.conv")


def _bwd_inputs(case, dtype, seed, layout="nchw"):
    """(numpy float64 dy, x, w), (torch dy, x, w) and the conv options; dy has the layout of x."""
    xs, ws, opts, _ = _geom(case)
    gen = rng(seed)
    x = randn(gen, xs, dtype)
    w = randn(gen, ws, dtype)
    g = F.conv2d_geometry(xs, ws, opts["stride"], opts["padding"], opts["dilation"], opts["groups"])
    dy = randn(gen, (g.N, g.K, g.P, g.Q), dtype)
    t = [relayout(native("triton", a, dtype), layout) for a in (dy, x)] + [native("triton", w, dtype)]
    return (dy, x, w), tuple(t), opts, g


def _check_bwd(got, ref, g, dtype, what):
    dx, dw, db = got
    rdx, rdw, rdb = ref
    npq = g.N * g.P * g.Q
    assert_close(to_f64(dx), rdx, dtype, g.k_per_group * g.R * g.S, what=f"dx {what}")
    assert_close(to_f64(dw), rdw, dtype, npq, what=f"dw {what}")
    assert_close(to_f64(db), rdb, dtype, npq, what=f"db {what}")


@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", GEOMETRIES, ids=_IDS)
def test_backward_fp32(tb, conv_mod, case, algo, monkeypatch):
    monkeypatch.setattr(conv_mod, "BWD_ALGO", algo)
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(case, "float32", 11)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, f"conv2d_bwd_dx_{algo}", f"conv2d_bwd_dw_{algo}", "conv2d_bwd_db"):
        got = F.conv2d_backward(tdy, tx, tw, precision="ieee", **opts)
    assert all(t.dtype == torch.float32 for t in got)
    _check_bwd(got, ref, g, "float32", algo)


@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", [GEOMETRIES[i] for i in (0, 3, 5, 7)], ids=[_IDS[i] for i in (0, 3, 5, 7)])
def test_backward_fp16(tb, conv_mod, case, algo, monkeypatch):
    monkeypatch.setattr(conv_mod, "BWD_ALGO", algo)
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(case, "float16", 12)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, f"conv2d_bwd_dx_{algo}", f"conv2d_bwd_dw_{algo}", "conv2d_bwd_db"):
        got = F.conv2d_backward(tdy, tx, tw, **opts)
    assert all(t.dtype == torch.float16 for t in got)
    _check_bwd(got, ref, g, "float16", f"{algo} fp16")


@pytest.mark.parametrize("case,expected", [
    (GEOMETRIES[0], ("direct", "direct")),              # Cg = 3 < 8; Kg = 5 < 8
    (GEOMETRIES[5], ("direct", "direct")),              # depthwise
    (("wide", 1, 8, 5, 4, 8, 3, 3, 1, 1, 1, 1, True), ("implicit_gemm", "implicit_gemm")),
    (("rgb_stem", 1, 3, 7, 6, 8, 3, 3, 2, 1, 1, 1, True), ("direct", "implicit_gemm")),   # Cg=3, Cg*R*S=27
])
def test_backward_auto_heuristic(tb, conv_mod, case, expected):
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(case, "float32", 13)
    assert conv_mod.choose_bwd_algos(g) == expected
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, f"conv2d_bwd_dx_{expected[0]}", f"conv2d_bwd_dw_{expected[1]}", "conv2d_bwd_db"):
        got = F.conv2d_backward(tdy, tx, tw, **opts)
    _check_bwd(got, ref, g, "float32", "auto")


@pytest.mark.parametrize("case", [GEOMETRIES[i] for i in (0, 3, 4, 8)], ids=[_IDS[i] for i in (0, 3, 4, 8)])
def test_backward_taps_variant(tb, conv_mod, case, monkeypatch):
    """The tap-major reductions (used for K/groups resp. C/groups >= 16) on small shapes."""
    monkeypatch.setattr(conv_mod, "BWD_ALGO", "implicit_gemm")
    monkeypatch.setattr(conv_mod, "FLAT_K_MAX_C", 0)
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(case, "float32", 14)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, "conv2d_bwd_dx_implicit_gemm[taps]", "conv2d_bwd_dw_implicit_gemm[taps]"):
        got = F.conv2d_backward(tdy, tx, tw, **opts)
    _check_bwd(got, ref, g, "float32", "taps")


def test_backward_many_channel_blocks(tb, conv_mod, monkeypatch):
    """K/groups = C/groups = 20 > the interpreter's BLOCK_K / BLOCK_N: several chunks per tap."""
    monkeypatch.setattr(conv_mod, "BWD_ALGO", "implicit_gemm")
    case = ("c20", 1, 20, 5, 4, 20, 3, 2, 2, 1, 1, 1, False)
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(case, "float32", 15)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, "conv2d_bwd_dx_implicit_gemm[taps]", "conv2d_bwd_dw_implicit_gemm[taps]"):
        got = F.conv2d_backward(tdy, tx, tw, **opts)
    _check_bwd(got, ref, g, "float32", "c20")


def test_split_k_decision(conv_mod):
    # few output tiles and a long reduction: many splits, each a multiple of the granule long
    split, length = conv_mod.split_k(64 * 56 * 56, 4, num_sms=132)
    assert split > 1 and length % conv_mod.SPLIT_GRANULE == 0
    assert (split - 1) * length < 64 * 56 * 56 <= split * length
    assert split <= conv_mod.MAX_SPLIT
    # enough output tiles to fill the GPU, or a short reduction: no split
    assert conv_mod.split_k(64 * 56 * 56, 10_000, num_sms=132)[0] == 1
    assert conv_mod.split_k(1000, 1, num_sms=132)[0] == 1
    # never an empty split
    for rows in (2049, 4097, 10_000, 123_457):
        s, n = conv_mod.split_k(rows, 1, num_sms=132)
        assert (s - 1) * n < rows <= s * n


@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_backward_split_k(tb, conv_mod, algo, dtype, monkeypatch):
    """dW and db with the N*P*Q reduction split several ways (fp32 workspace + ordered sum)."""
    monkeypatch.setattr(conv_mod, "BWD_ALGO", algo)
    monkeypatch.setattr(conv_mod, "SPLIT_MIN_LEN", 16)
    monkeypatch.setattr(conv_mod, "SPLIT_GRANULE", 16)
    case = ("split", 2, 4, 9, 8, 6, 3, 3, 1, 1, 1, 2, True)        # N*P*Q = 144 -> 9 splits of 16
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(case, dtype, 16)
    split, _ = conv_mod.split_k(g.N * g.P * g.Q, 1)
    assert split == 9
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, f"conv2d_bwd_dw_{algo}[split=9]", "conv2d_bwd_db[split=9]", "conv2d_bwd_sum_splits"):
        got = F.conv2d_backward(tdy, tx, tw, **opts)
    _check_bwd(got, ref, g, dtype, f"split {algo}")
    # deterministic: the ordered split sum gives bit-identical results on a second run
    again = F.conv2d_backward(tdy, tx, tw, need_dx=False, **opts)
    assert torch.equal(again[1], got[1]) and torch.equal(again[2], got[2])


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", [GEOMETRIES[i] for i in (0, 4, 5)], ids=[_IDS[i] for i in (0, 4, 5)])
def test_backward_layouts(tb, conv_mod, case, algo, layout, monkeypatch):
    """Channels-last / sliced x and dy, weight with permuted storage: no copies, same values."""
    monkeypatch.setattr(conv_mod, "BWD_ALGO", algo)
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(case, "float32", 17, layout)
    tw = tw.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, f"conv2d_bwd_dx_{algo}", f"conv2d_bwd_dw_{algo}"):
        got = F.conv2d_backward(tdy, tx, tw, **opts)
    if layout == "channels_last":
        assert got[0].is_contiguous(memory_format=torch.channels_last)
    _check_bwd(got, ref, g, "float32", layout)


def test_backward_tf32_precision(tb, conv_mod, monkeypatch):
    monkeypatch.setattr(conv_mod, "BWD_ALGO", "implicit_gemm")
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(GEOMETRIES[4], "float32", 18)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, "conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dw_implicit_gemm"):
        got = F.conv2d_backward(tdy, tx, tw, precision="tf32", **opts)
    _check_bwd(got, ref, g, "tf32", "tf32")


@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
def test_backward_int64_variant(tb, conv_mod, algo, monkeypatch):
    """The INT64 variants (and the int64 split sum) give the same gradients (lowered limit)."""
    monkeypatch.setattr(conv_mod, "BWD_ALGO", algo)
    monkeypatch.setattr(conv_mod, "INT32_LIMIT", 64)
    monkeypatch.setattr(conv_mod, "SPLIT_MIN_LEN", 8)
    monkeypatch.setattr(conv_mod, "SPLIT_GRANULE", 8)
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(GEOMETRIES[4], "float32", 19, "channels_last")
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, f"conv2d_bwd_dx_{algo}[int64]", f"conv2d_bwd_dw_{algo}[int64]", "conv2d_bwd_db[int64]",
                  "conv2d_bwd_sum_splits[int64]"):
        got = F.conv2d_backward(tdy, tx, tw, **opts)
    _check_bwd(got, ref, g, "float32", "int64")


def test_backward_partial_requests(tb, conv_mod):
    """need_dx / need_dw / need_db = False return None and launch nothing for that gradient."""
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(GEOMETRIES[0], "float32", 20)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    before = {k: tb.LAUNCHES[k] for k in ("conv2d_bwd_dx_direct", "conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_db")}
    dx, dw, db = F.conv2d_backward(tdy, tx, tw, need_dx=False, need_db=False, **opts)
    assert dx is None and db is None
    assert all(tb.LAUNCHES[k] == v for k, v in before.items())
    assert_close(to_f64(dw), ref[1], "float32", g.N * g.P * g.Q, what="dw only")


@pytest.mark.parametrize("hw,R,stride,pad,dil", [
    ((9, 8), (3, 2), (2, 3), ((1, 1), (0, 2)), (1, 1)),
    ((7, 11), (3, 3), (2, 2), ((2, 2), (1, 1)), (2, 3)),
    ((10, 5), (5, 1), (3, 1), ((4, 3), (0, 0)), (2, 1)),
    ((4, 4), (2, 2), (4, 3), ((0, 0), (0, 0)), (3, 2)),    # stride > some sizes: empty classes
])
def test_residue_classes_cover_exactly_the_taps(conv_mod, hw, R, stride, pad, dil):
    """The dX residue-class table yields, for every input pixel, exactly the (tap, output) pairs of
    the definition h = p*stride - pad + r*dil with 0 <= p < P (checked by enumeration per axis)."""
    from cnngpu.geometry import ConvGeometry, conv_output_size
    H, W = hw
    P = conv_output_size(H, R[0], stride[0], pad[0][0], dil[0], pad_end=pad[0][1])
    Q = conv_output_size(W, R[1], stride[1], pad[1][0], dil[1], pad_end=pad[1][1])
    g = ConvGeometry(1, 1, H, W, 1, R[0], R[1], P, Q, stride, (pad[0][0], pad[1][0]), (pad[0][1], pad[1][1]), dil, 1)
    rows, (r_step, s_step, dp_r, dq_s) = conv_mod.residue_classes(g)
    assert len(rows) == stride[0] * stride[1]
    got_h, got_w = {}, {}
    for a, b, hc, wc, r0, nr, p0, s0, ns, q0 in rows:
        for i in range(hc):
            got_h[a + stride[0] * i] = {(r0 + t * r_step, i + p0 - t * dp_r) for t in range(nr)
                                        if 0 <= i + p0 - t * dp_r < P}
        for j in range(wc):
            got_w[b + stride[1] * j] = {(s0 + t * s_step, j + q0 - t * dq_s) for t in range(ns)
                                        if 0 <= j + q0 - t * dq_s < Q}
    for size, taps, out, st, pb, d, got in ((H, R[0], P, stride[0], pad[0][0], dil[0], got_h),
                                             (W, R[1], Q, stride[1], pad[1][0], dil[1], got_w)):
        want = {h: {(r, p) for r in range(taps) for p in range(out) if p * st - pb + r * d == h}
                for h in range(size)}
        assert got == want
        assert all(r < taps for pairs in got.values() for r, _ in pairs)


# ------------------------------------------------------------------------------------------------
# bfloat16: GPU only (the interpreter's tl.dot on bf16 operands gives wrong results)
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", [GEOMETRIES[i] for i in (0, 4, 5, 7)], ids=[_IDS[i] for i in (0, 4, 5, 7)])
def test_bf16_forward_backward_gpu(tb, conv_mod, case, algo, monkeypatch):
    """bf16 operands with fp32 accumulation, forward and backward (GPU only: Triton's interpreter
    computes tl.dot on bfloat16 operands wrongly, so the CPU run cannot judge these kernels)."""
    monkeypatch.setattr(conv_mod, "BWD_ALGO", algo)
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, "bfloat16", 21)
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(tb, f"conv2d_fwd_{algo}"):
        y = F.conv2d(tx, tw, tbias, algo=algo, **opts)
    assert y.dtype == torch.bfloat16
    assert_close(to_f64(y), ref, "bfloat16", _red_fwd(case), what=f"y {algo} bf16")
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(case, "bfloat16", 22)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    with launches(tb, f"conv2d_bwd_dx_{algo}", f"conv2d_bwd_dw_{algo}", "conv2d_bwd_db"):
        got = F.conv2d_backward(tdy, tx, tw, **opts)
    _check_bwd(got, ref, g, "bfloat16", f"{algo} bf16")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_real_size_gpu(tb, dtype):
    """A ResNet-like 3x3 layer at a real size (auto algorithms, split-K active) on the GPU."""
    case = ("resnet3x3", 8, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1, True)
    (x, w, b), (tx, tw, tbias), opts = _inputs(case, dtype, 23, "channels_last")
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    y = F.conv2d(tx, tw, tbias, **opts)
    assert_close(to_f64(y), ref, dtype, _red_fwd(case), what="y real")
    (dy, x, w), (tdy, tx, tw), opts, g = _bwd_inputs(case, dtype, 24, "channels_last")
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    _check_bwd(F.conv2d_backward(tdy, tx, tw, **opts), ref, g, dtype, "real size")


def test_backward_config_pruning():
    """The GPU autotune tables drop tiles far larger than the dX / dW GEMM (at least one stays)."""
    kb = pytest.importorskip("cnngpu.kernels.triton.conv2d_bwd")
    geo = dict(N=1, C=8, H=7, W=7, K=8, R=3, S=3, stride_h=2, stride_w=2, groups=1)
    # dX: ~16 rows, 8 channels -> only the 64 x 64 tile; dW: 8 x 8 (taps) -> 64 x 64 only
    assert {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kb._prune_dx(kb.DX_GEMM_CONFIGS, geo)} == {(64, 64)}
    assert {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kb._prune_dw(kb.DW_GEMM_CONFIGS, geo)} == {(64, 64)}
    # dW FLAT_N: 8*9 = 72 columns admit BLOCK_N = 128
    flat = kb._prune_dw(kb.DW_GEMM_CONFIGS, geo, FLAT_N=True)
    assert {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in flat} == {(64, 128), (64, 64)}
    big = dict(geo, N=32, H=56, W=56, C=256, K=256)
    assert kb._prune_dx(kb.DX_GEMM_CONFIGS, big) == kb.DX_GEMM_CONFIGS
    assert kb._prune_dw(kb.DW_GEMM_CONFIGS, big) == kb.DW_GEMM_CONFIGS


def test_backward_algo_decision_many_groups(conv_mod):
    """More groups than CUDA's grid axis 1 allows: 'auto' takes the direct kernels for dX and dW."""
    from cnngpu.geometry import ConvGeometry
    n = conv_mod._GRID_YZ_MAX + 1
    many = ConvGeometry(1, 16 * n, 4, 4, 16 * n, 3, 3, 4, 4, (1, 1), (1, 1), (1, 1), (1, 1), n)
    assert conv_mod.choose_bwd_algos(many) == ("direct", "direct")
    few = ConvGeometry(1, 16 * 4, 4, 4, 16 * 4, 3, 3, 4, 4, (1, 1), (1, 1), (1, 1), (1, 1), 4)
    assert conv_mod.choose_bwd_algos(few) == ("implicit_gemm", "implicit_gemm")
