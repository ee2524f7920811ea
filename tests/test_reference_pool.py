"""Tier 1 for pooling: the NumPy reference against torch CPU (values and argmax indices exactly,
gradients through autograd) in float64, float64 central finite differences, and the float32/float16
paths against float64. Everything goes through ``cnngpu.functional``."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnngpu import functional as F
from harness import assert_close, check_backward, launches, randn, require, rng
from test_reference_conv import relayout

# (N, C, H, W, kernel, stride, padding, dilation)
MAX_GEOMETRIES = [
    (2, 3, 8, 8, 2, None, 0, 1),
    (2, 3, 9, 7, 3, 2, 1, 1),
    (1, 1, 10, 11, (3, 2), (2, 1), (1, 0), 1),
    (2, 5, 9, 9, 3, 3, 1, 2),
    (1, 3, 7, 8, (2, 3), (3, 2), (1, 1), (2, 1)),
    (1, 2, 5, 6, 1, 2, 0, 1),
    (2, 3, 6, 6, 4, 3, 2, 1),
    (1, 2, 11, 5, 3, (2, 3), 0, (1, 2)),
    (1, 3, 8, 10, (3, 5), 2, (1, 2), 1),
    (1, 2, 7, 7, (3,), (), (1,), (2,)),  # torch's short forms: 1-tuples repeat, stride () = kernel_size
]
# (N, C, H, W, kernel, stride, padding)
AVG_GEOMETRIES = [
    (2, 3, 8, 8, 2, None, 0),
    (2, 3, 8, 7, 3, 2, 1),          # ceil_mode: last window crosses H + pad (clipped divisor)
    (1, 1, 8, 9, 3, 2, 0),          # ceil_mode: last window reaches past the input, no padding
    (1, 3, 10, 11, (3, 2), (2, 1), (1, 0)),
    (2, 5, 9, 9, 3, 3, 1),
    (1, 2, 7, 8, (2, 4), (3, 2), (1, 2)),
    (1, 2, 5, 6, 1, 2, 0),
    (2, 3, 6, 6, 4, 3, 2),
    (1, 2, 7, 7, (3,), (), (1,)),      # torch's short forms: 1-tuples repeat, stride () = kernel_size
]
LAYOUTS = ["nchw", "channels_last", "sliced"]


def _ids(g):
    return "x".join(map(str, g[:4])) + "-" + "-".join(map(str, g[4:]))


def _distinct(gen, shape):
    """Random values with gaps >= 0.05 between any two (no ties, safe for finite differences)."""
    n = int(np.prod(shape))
    return (gen.permutation(n).reshape(shape) * 0.05 - n * 0.025).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# max_pool2d
# ---------------------------------------------------------------------------------------------
def torch_max_pool(x, dy, kernel, stride, padding, dilation, ceil_mode):
    xt = torch.tensor(x, requires_grad=True)
    y, idx = TF.max_pool2d(xt, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), idx.numpy(), xt.grad.numpy()


def _pool_out_shape(x, kernel, stride, padding, dilation, ceil_mode):
    return tuple(TF.max_pool2d(torch.tensor(x), kernel, stride, padding, dilation, ceil_mode).shape)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("geom", MAX_GEOMETRIES, ids=_ids)
def test_max_pool2d_matches_torch(geom, ceil_mode, layout):
    be = require("numpy")
    N, C, H, W, k, s, p, d = geom
    gen = rng(sum(geom[:4]))
    x = randn(gen, (N, C, H, W), "float64")
    out = _pool_out_shape(x, k, s, p, d, ceil_mode)
    dy = randn(gen, out, "float64")
    y_t, idx_t, dx_t = torch_max_pool(x, dy, k, s, p, d, ceil_mode)

    xn = relayout(x, layout)
    x_before = xn.copy()
    with launches(be, "max_pool2d_fwd"):
        y, idx = F.max_pool2d(xn, k, s, p, d, ceil_mode, return_indices=True)
    assert y.dtype == np.float64 and idx.dtype == np.int64 and y.flags.c_contiguous
    assert not np.shares_memory(y, xn)
    np.testing.assert_array_equal(y, y_t)
    np.testing.assert_array_equal(idx, idx_t)

    with launches(be, "max_pool2d_bwd_scatter"):
        dx = F.max_pool2d_backward(relayout(dy, layout), idx, x.shape, k, s, p, d, ceil_mode)
    assert dx.shape == x.shape and dx.dtype == np.float64
    assert_close(dx, dx_t, "float64", 4, "dx")
    np.testing.assert_array_equal(xn, x_before)


@pytest.mark.parametrize("case", ["ties", "all_minus_inf", "nan"])
def test_max_pool2d_special_values_match_torch(case):
    """Ties (first maximum in row-major window order), windows whose real pixels are all -inf next to
    padding (padding never wins), and NaN (propagates; PyTorch's scan keeps the last NaN)."""
    require("numpy")
    gen = rng(1)
    x = gen.integers(-2, 3, size=(2, 3, 9, 8)).astype(np.float64)     # many ties
    if case == "all_minus_inf":
        x[:, :, :4, :] = -np.inf
    if case == "nan":
        x[gen.random(x.shape) < 0.15] = np.nan
    for k, s, p, d, ceil_mode in [(3, 2, 1, 1, True), (2, 1, 1, 1, False), (3, (1, 2), (1, 0), 2, False)]:
        y_t, idx_t = TF.max_pool2d(torch.tensor(x), k, s, p, d, ceil_mode, return_indices=True)
        y, idx = F.max_pool2d(x, k, s, p, d, ceil_mode, return_indices=True)
        np.testing.assert_array_equal(y, y_t.numpy())
        np.testing.assert_array_equal(idx, idx_t.numpy(), err_msg=f"{case} k={k} s={s} p={p} d={d}")


@pytest.mark.parametrize("geom", [MAX_GEOMETRIES[1], MAX_GEOMETRIES[3], MAX_GEOMETRIES[4]], ids=_ids)
def test_max_pool2d_backward_finite_differences(geom):
    require("numpy")
    N, C, H, W, k, s, p, d = geom
    gen = rng(2)
    x = _distinct(gen, (N, C, H, W))

    def backward(dy, x):
        idx = F.max_pool2d(x, k, s, p, d, True, return_indices=True)[1]
        return (F.max_pool2d_backward(dy, idx, x.shape, k, s, p, d, True),)

    check_backward(lambda x: F.max_pool2d(x, k, s, p, d, True), backward, [x], ["dx"], eps=1e-3, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_max_pool2d_low_precision_vs_float64(dtype):
    require("numpy")
    gen = rng(3)
    x = randn(gen, (2, 3, 9, 10), dtype)
    y64, idx64 = F.max_pool2d(x, 3, 2, 1, 1, True, return_indices=True)
    dy = randn(gen, y64.shape, dtype)
    dx64 = F.max_pool2d_backward(dy, idx64, x.shape, 3, 2, 1, 1, True)
    y, idx = F.max_pool2d(x.astype(dtype), 3, 2, 1, 1, True, return_indices=True)
    dx = F.max_pool2d_backward(dy.astype(dtype), idx, x.shape, 3, 2, 1, 1, True)
    assert y.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, y64)              # a max of exactly representable values
    np.testing.assert_array_equal(idx, idx64)
    assert_close(dx, dx64, dtype, 4, "dx")             # a pixel sums dy of at most 4 windows here


# ---------------------------------------------------------------------------------------------
# avg_pool2d
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("geom", AVG_GEOMETRIES, ids=_ids)
def test_avg_pool2d_matches_torch(geom, ceil_mode, count_include_pad, layout):
    be = require("numpy")
    N, C, H, W, k, s, p = geom
    gen = rng(sum(geom[:4]))
    x = randn(gen, (N, C, H, W), "float64")
    xt = torch.tensor(x, requires_grad=True)
    yt = TF.avg_pool2d(xt, k, s, p, ceil_mode, count_include_pad)
    dy = randn(gen, tuple(yt.shape), "float64")
    yt.backward(torch.tensor(dy))

    xn = relayout(x, layout)
    with launches(be, "avg_pool2d_fwd"):
        y = F.avg_pool2d(xn, k, s, p, ceil_mode, count_include_pad)
    assert y.dtype == np.float64 and y.flags.c_contiguous and not np.shares_memory(y, xn)
    kk = int(np.prod(k if isinstance(k, tuple) else (k, k)))
    assert_close(y, yt.detach().numpy(), "float64", kk, "y")
    with launches(be, "avg_pool2d_bwd"):
        dx = F.avg_pool2d_backward(relayout(dy, layout), x.shape, k, s, p, ceil_mode, count_include_pad)
    assert dx.dtype == np.float64 and dx.flags.c_contiguous
    assert_close(dx, xt.grad.numpy(), "float64", kk, "dx")


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("geom", [AVG_GEOMETRIES[1], AVG_GEOMETRIES[2], AVG_GEOMETRIES[5]], ids=_ids)
def test_avg_pool2d_backward_finite_differences(geom, count_include_pad):
    require("numpy")
    N, C, H, W, k, s, p = geom
    gen = rng(4)
    x = randn(gen, (N, C, H, W))
    check_backward(lambda x: F.avg_pool2d(x, k, s, p, True, count_include_pad),
                   lambda dy, x: (F.avg_pool2d_backward(dy, x.shape, k, s, p, True, count_include_pad),),
                   [x], ["dx"], eps=1e-2, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_avg_pool2d_low_precision_vs_float64(dtype):
    require("numpy")
    gen = rng(5)
    x = randn(gen, (2, 3, 9, 10), dtype)
    for cip in (True, False):
        y64 = F.avg_pool2d(x, 3, 2, 1, True, cip)
        dy = randn(gen, y64.shape, dtype)
        dx64 = F.avg_pool2d_backward(dy, x.shape, 3, 2, 1, True, cip)
        y = F.avg_pool2d(x.astype(dtype), 3, 2, 1, True, cip)
        dx = F.avg_pool2d_backward(dy.astype(dtype), x.shape, 3, 2, 1, True, cip)
        assert y.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
        assert_close(y, y64, dtype, 9, "y")
        assert_close(dx, dx64, dtype, 9, "dx")

