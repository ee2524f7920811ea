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
