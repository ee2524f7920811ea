"""Tier 1 for conv2d: the NumPy reference against torch CPU (an independent oracle) in float64,
float64 central finite differences for every gradient, and the float32/float16 paths against
float64. Everything goes through ``cnngpu.functional`` so the validating front end runs too."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnngpu import functional as F
from harness import assert_close, check_backward, launches, randn, relayout, require, rng

# (N, C, H, W, K, R, S, stride, padding, dilation, groups, bias)
GEOMETRIES = [
    (2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, True),                 # plain 3x3, H != W
    (1, 1, 5, 9, 2, 3, 1, 1, 0, 1, 1, False),                # C=1, R != S, no bias
    (2, 3, 9, 8, 5, 3, 2, 2, (1, 0), 1, 1, True),            # stride 2, pair padding
    (1, 5, 11, 7, 3, 2, 3, 3, 2, 1, 1, True),                # stride 3, odd C
    (2, 4, 8, 9, 6, 3, 3, (2, 1), 1, (2, 1), 2, True),       # stride (2,1), dilation pair, groups, K != C
    (2, 6, 7, 7, 6, 3, 3, 1, 1, 1, 6, True),                 # depthwise
    (1, 6, 6, 5, 12, 3, 3, 2, 1, 1, 6, False),               # depthwise, channel multiplier 2
    (2, 3, 6, 7, 5, 1, 1, 1, 0, 1, 1, True),                 # 1x1
    (1, 4, 9, 7, 6, 1, 1, 2, 0, 1, 2, True),                 # 1x1 stride 2, groups
    (2, 3, 8, 7, 4, 4, 2, 1, "same", 1, 1, True),            # 'same', even kernel (extra zero at end)
    (1, 3, 9, 10, 4, 3, 4, 2, "same", 1, 1, True),           # 'same' with stride 2
    (2, 3, 10, 9, 2, 3, 3, (1, 3), "same", (2, 1), 1, True),  # 'same', stride (1,3), dilation
    (1, 3, 9, 9, 4, 3, 3, 1, "same", 2, 1, False),           # 'same', dilation 2
    (2, 9, 7, 5, 3, 2, 2, 1, (0, 1), (1, 2), 3, True),       # groups=3 with one output per group
    (1, 3, 5, 5, 2, 5, 5, 1, 0, 1, 1, True),                 # kernel covers the input: 1x1 output
    (1, 2, 4, 6, 3, 3, 3, 2, 2, 2, 1, True),                 # padding 2, dilation 2, stride 2
    (2, 3, 7, 6, 4, 3, 3, 1, "valid", 1, 1, True),           # 'valid'
    (1, 2, 7, 7, 3, 3, 3, (2,), (1,), (2,), 1, True),        # torch's 1-tuples (one value for both dims)
]
LAYOUTS = ["nchw", "channels_last", "sliced"]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_conv(x, w, b, stride, padding, dilation, groups):
    """Oracle: torch conv2d; 'same' with stride > 1 (which torch refuses) as explicit asymmetric
    F.pad (TensorFlow's rule: output ceil(H/stride), the odd zero at the bottom/right) + conv."""
    s, d = _pair(stride), _pair(dilation)
    if padding == "same" and s != (1, 1):
        pads = []
        for size, k, st, dl in ((x.shape[3], w.shape[3], s[1], d[1]), (x.shape[2], w.shape[2], s[0], d[0])):
            out = math.ceil(size / st)
            total = max((out - 1) * st + dl * (k - 1) + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        y = TF.conv2d(TF.pad(x, pads), w, b, stride=s, padding=0, dilation=d, groups=groups)
        assert y.shape[2:] == (math.ceil(x.shape[2] / s[0]), math.ceil(x.shape[3] / s[1]))
        return y
    return TF.conv2d(x, w, b, stride=s, padding=padding, dilation=d, groups=groups)


def _make(geom, seed, dtype="float64"):
    N, C, H, W, K, R, S, stride, padding, dilation, groups, bias = geom
    gen = rng(seed)
    x = randn(gen, (N, C, H, W), dtype)
    w = randn(gen, (K, C // groups, R, S), dtype, scale=1.0 / math.sqrt(C // groups * R * S))
    b = randn(gen, (K,), dtype) if bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, w, b, kw


def _fresh(out, *inputs):
    for a in inputs:
        if a is not None:
            assert not np.shares_memory(out, a), "output aliases an input"


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: "x".join(map(str, g[:7])) + f"-s{g[7]}-p{g[8]}-d{g[9]}-g{g[10]}")
def test_conv2d_matches_torch(geom, layout):
    be = require("numpy")
    x, w, b, kw = _make(geom, seed=sum(geom[:7]))
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True) if b is not None else None
    yt = torch_conv(xt, wt, bt, kw["stride"], kw["padding"], kw["dilation"], kw["groups"])
    dy = randn(rng(7), tuple(yt.shape))
    yt.backward(torch.tensor(dy))

    xn, wn, dyn = relayout(x, layout), relayout(w, layout), relayout(dy, layout)
    x_before, w_before = xn.copy(), wn.copy()
    with launches(be, "conv2d_fwd_im2col_gemm"):
        y = F.conv2d(xn, wn, b, **kw)
    Cg, R, S = w.shape[1:]
    assert y.dtype == np.float64 and y.flags.c_contiguous
    _fresh(y, xn, wn, b)
    assert_close(y, yt.detach().numpy(), "float64", Cg * R * S, "y")

    with launches(be, "conv2d_bwd_dx_col2im", "conv2d_bwd_dw_im2col_gemm", "conv2d_bwd_db"):
        dx, dw, db = F.conv2d_backward(dyn, xn, wn, **kw)
    N, K, P, Q = dy.shape
    assert_close(dx, xt.grad.numpy(), "float64", K // kw["groups"] * R * S, "dx")
    assert_close(dw, wt.grad.numpy(), "float64", N * P * Q, "dw")
    if b is not None:
        assert_close(db, bt.grad.numpy(), "float64", N * P * Q, "db")
    else:
        assert_close(db, dy.sum(axis=(0, 2, 3)), "float64", N * P * Q, "db (no bias)")
    for out in (dx, dw, db):
        assert out.dtype == np.float64 and out.flags.c_contiguous
        _fresh(out, xn, wn, dyn)
    np.testing.assert_array_equal(xn, x_before)
    np.testing.assert_array_equal(wn, w_before)


def test_conv2d_backward_need_flags():
    be = require("numpy")
    x, w, b, kw = _make(GEOMETRIES[4], seed=3)
    y = F.conv2d(x, w, b, **kw)
    dy = randn(rng(4), y.shape)
    full = F.conv2d_backward(dy, x, w, **kw)
    for mask in [(True, False, False), (False, True, False), (False, False, True), (False, True, True)]:
        before = be.LAUNCHES.copy()
        got = F.conv2d_backward(dy, x, w, need_dx=mask[0], need_dw=mask[1], need_db=mask[2], **kw)
        ran = [be.LAUNCHES[k] - before[k] for k in ("conv2d_bwd_dx_col2im", "conv2d_bwd_dw_im2col_gemm",
                                                     "conv2d_bwd_db")]
        assert ran == [int(m) for m in mask]
        for want, g, ref in zip(mask, got, full):
            if want:
                np.testing.assert_array_equal(g, ref)
            else:
                assert g is None


# ---------------------------------------------------------------------------------------------
# float64 central finite differences by torch.autograd.gradcheck (conv is linear in each argument,
# so the quotient is exact up to rounding; eps is large to keep cancellation small)
# ---------------------------------------------------------------------------------------------
FD_GEOMETRIES = [
    (1, 4, 5, 6, 4, 3, 2, 2, 1, 1, 2, True),
    (2, 2, 5, 4, 3, 2, 3, (2, 1), "same", (1, 2), 1, True),
    (1, 3, 6, 5, 3, 3, 3, 1, 2, 2, 3, True),
]


@pytest.mark.parametrize("geom", FD_GEOMETRIES, ids=str)
def test_conv2d_backward_finite_differences(geom):
    require("numpy")
    x, w, b, kw = _make(geom, seed=11)
    check_backward(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda dy, x, w, b: F.conv2d_backward(dy, x, w, **kw),
                   [x, w, b], ["dx", "dw", "db"], eps=1e-2, rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# float32 and float16 against float64 on the same (rounded) inputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("geom", [GEOMETRIES[2], GEOMETRIES[4], GEOMETRIES[6], GEOMETRIES[11]], ids=str)
def test_conv2d_low_precision_vs_float64(geom, dtype):
    require("numpy")
    x, w, b, kw = _make(geom, seed=5, dtype=dtype)
    y64 = F.conv2d(x, w, b, **kw)
    dy = randn(rng(6), y64.shape, dtype)
    grads64 = F.conv2d_backward(dy, x, w, **kw)
    cast = (lambda a: None if a is None else a.astype(dtype))
    y = F.conv2d(cast(x), cast(w), cast(b), **kw)
    grads = F.conv2d_backward(cast(dy), cast(x), cast(w), **kw)
    N, K, P, Q = y64.shape
    Cg, R, S = w.shape[1:]
    assert y.dtype == np.dtype(dtype) and all(g.dtype == np.dtype(dtype) for g in grads)
    assert_close(y, y64, dtype, Cg * R * S, "y")
    assert_close(grads[0], grads64[0], dtype, K // kw["groups"] * R * S, "dx")
    assert_close(grads[1], grads64[1], dtype, N * P * Q, "dw")
    assert_close(grads[2], grads64[2], dtype, N * P * Q, "db")
