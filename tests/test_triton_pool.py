"""Triton max/avg pooling, forward and backward, vs the NumPy reference (float64 on the same
dtype-rounded inputs). Under TRITON_INTERPRET=1 on CPU tensors; @gpu tests at real sizes."""
import zlib

import numpy as np
import pytest

import cnngpu.functional as F
from harness import assert_close, launches, native, randn, require, rng, to_f64

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
GEOMS = [
    (2, 3, 8, 8, 2, 2, 0, 1, False),
    (2, 3, 7, 9, 2, 2, 0, 1, True),          # odd sizes, H != W, ceil_mode adds a partial window
    (1, 3, 9, 7, 3, 2, 1, 1, False),          # ResNet-stem pattern
    (2, 1, 11, 10, 3, 3, 1, 1, True),         # stride 3, ceil_mode, C = 1
    (1, 5, 6, 7, 3, 1, 1, 1, False),          # stride 1: every pixel in up to 9 windows
    (2, 3, 10, 9, 3, 2, 1, 2, False),         # dilation 2
    (1, 2, 12, 11, 2, 3, 1, 2, True),         # dilation 2, stride 3, ceil_mode
    (1, 3, 5, 9, (2, 3), (1, 2), (1, 0), 1, False),   # R != S, per-axis stride and padding
    (1, 2, 4, 4, 4, 1, 2, 1, True),           # padding = k/2, ceil_mode window starting in padding
]


def _seed(*parts) -> int:
    """A per-case seed that is stable across processes (str hash is randomized)."""
    return zlib.crc32(repr(parts).encode())


def _ids(g):
    return "N{}C{}H{}W{}k{}s{}p{}d{}{}".format(*g[:8], "ceil" if g[8] else "")


@pytest.fixture(scope="module")
def be():
    return require("triton")


def _layouts(x, layout):
    """The same values as a channels-last or a sliced (non-contiguous) tensor."""
    import torch
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":
        big = torch.zeros(x.shape[0], x.shape[1] * 2, x.shape[2], x.shape[3] * 2, dtype=x.dtype, device=x.device)
        big[:, ::2, :, ::2] = x
        return big[:, ::2, :, ::2]
    return x


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("geom", GEOMS, ids=_ids)
def test_max_pool2d_fwd_bwd(be, geom, dtype):
    N, C, H, W, k, s, p, d, ceil = geom
    gen = rng(_seed(geom, dtype))
    x = randn(gen, (N, C, H, W), dtype)
    with launches(be, "max_pool2d_fwd_window_max"):
        y, idx = F.max_pool2d(native("triton", x, dtype), k, s, p, d, ceil, backend="triton")
    yr, ir = F.max_pool2d(x, k, s, p, d, ceil, backend="numpy")
    assert str(y.dtype).endswith(dtype) and str(idx.dtype) == "torch.int64"
    np.testing.assert_array_equal(to_f64(idx), ir)
    np.testing.assert_array_equal(to_f64(y), yr)          # a max of dtype values is exact

    dy = randn(gen, yr.shape, dtype)
    with launches(be, "max_pool2d_bwd_gather"):
        dx = F.max_pool2d_backward(native("triton", dy, dtype), idx, (N, C, H, W), k, s, p, d, ceil,
                                   backend="triton")
    dxr = F.max_pool2d_backward(dy, ir, (N, C, H, W), k, s, p, d, ceil, backend="numpy")
    kk = np.prod(np.broadcast_to(k, 2))
    assert_close(to_f64(dx), dxr, dtype, reduction_len=int(kk), what="max_pool2d dx")


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("geom", [g for g in GEOMS if g[7] == 1], ids=_ids)
def test_avg_pool2d_fwd_bwd(be, geom, dtype, count_include_pad):
    N, C, H, W, k, s, p, _, ceil = geom
    gen = rng(_seed(geom, dtype, count_include_pad))
    x = randn(gen, (N, C, H, W), dtype)
    kk = int(np.prod(np.broadcast_to(k, 2)))
    with launches(be, "avg_pool2d_fwd_window_mean"):
        y = F.avg_pool2d(native("triton", x, dtype), k, s, p, ceil, count_include_pad, backend="triton")
    yr = F.avg_pool2d(x, k, s, p, ceil, count_include_pad, backend="numpy")
    assert_close(to_f64(y), yr, dtype, reduction_len=kk, what="avg_pool2d y")

    dy = randn(gen, yr.shape, dtype)
    with launches(be, "avg_pool2d_bwd_gather"):
        dx = F.avg_pool2d_backward(native("triton", dy, dtype), (N, C, H, W), k, s, p, ceil, count_include_pad,
                                   backend="triton")
    dxr = F.avg_pool2d_backward(dy, (N, C, H, W), k, s, p, ceil, count_include_pad, backend="numpy")
    assert_close(to_f64(dx), dxr, dtype, reduction_len=kk, what="avg_pool2d dx")


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_pool_strided_inputs(be, layout):
    """Channels-last and sliced x / dy / argmax are read through their strides (no copy)."""
    N, C, H, W = 2, 3, 9, 8
    gen = rng(7)
    x = randn(gen, (N, C, H, W), "float32")
    xt = _layouts(native("triton", x, "float32"), layout)
    assert not xt.is_contiguous()
    y, idx = F.max_pool2d(xt, 3, 2, 1, backend="triton")
    yr, ir = F.max_pool2d(x, 3, 2, 1, backend="numpy")
    np.testing.assert_array_equal(to_f64(idx), ir)
    np.testing.assert_array_equal(to_f64(y), yr)
    dy = randn(gen, yr.shape, "float32")
    dyt = _layouts(native("triton", dy, "float32"), layout)
    idxt = _layouts(idx, layout)
    dx = F.max_pool2d_backward(dyt, idxt, (N, C, H, W), 3, 2, 1, backend="triton")
    assert_close(to_f64(dx), F.max_pool2d_backward(dy, ir, (N, C, H, W), 3, 2, 1, backend="numpy"),
                 "float32", 9, what="max dx")
    ya = F.avg_pool2d(xt, 3, 2, 1, backend="triton")
    assert_close(to_f64(ya), F.avg_pool2d(x, 3, 2, 1, backend="numpy"), "float32", 9, what="avg y")
    dxa = F.avg_pool2d_backward(dyt, (N, C, H, W), 3, 2, 1, backend="triton")
    assert_close(to_f64(dxa), F.avg_pool2d_backward(dy, (N, C, H, W), 3, 2, 1, backend="numpy"),
                 "float32", 9, what="avg dx")


def test_max_pool2d_ties_nan_and_neg_inf(be):
    """Ties: first max in row-major window order; NaN propagates (last NaN); all -inf: first real pixel."""
    x = np.array([[1.0, 1.0, 0.0, 2.0],
                  [1.0, 0.0, 2.0, 2.0],
                  [-np.inf, -np.inf, np.nan, 0.0],
                  [-np.inf, -np.inf, 5.0, np.nan]]).reshape(1, 1, 4, 4)
    for k, s, p in ((2, 2, 0), (3, 1, 1), (2, 1, 1)):
        y, idx = F.max_pool2d(native("triton", x, "float32"), k, s, p, backend="triton")
        yr, ir = F.max_pool2d(x, k, s, p, backend="numpy")
        np.testing.assert_array_equal(to_f64(idx), ir)
        np.testing.assert_array_equal(to_f64(y), yr)


# ------------------------------------------------------------------------------------------------
# real sizes on a GPU
# ------------------------------------------------------------------------------------------------
GPU_GEOMS = [
    (32, 64, 112, 112, 3, 2, 1, 1, False),    # ResNet-50 stem max pool
    (64, 6, 28, 28, 2, 2, 0, 1, False),       # LeNet
    (16, 128, 57, 55, 3, 2, 1, 2, True),      # dilated, ceil_mode, odd sizes
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("geom", GPU_GEOMS, ids=_ids)
def test_pool_gpu_real_sizes(be, geom, dtype):
    N, C, H, W, k, s, p, d, ceil = geom
    gen = rng(11)
    x = randn(gen, (N, C, H, W), dtype)
    y, idx = F.max_pool2d(native("triton", x, dtype), k, s, p, d, ceil, backend="triton")
    yr, ir = F.max_pool2d(x, k, s, p, d, ceil, backend="numpy")
    np.testing.assert_array_equal(to_f64(idx), ir)
    np.testing.assert_array_equal(to_f64(y), yr)
    dy = randn(gen, yr.shape, dtype)
    dx = F.max_pool2d_backward(native("triton", dy, dtype), idx, (N, C, H, W), k, s, p, d, ceil, backend="triton")
    assert_close(to_f64(dx), F.max_pool2d_backward(dy, ir, (N, C, H, W), k, s, p, d, ceil, backend="numpy"),
                 dtype, k * k, what="max dx")
    if d == 1:
        ya = F.avg_pool2d(native("triton", x, dtype), k, s, p, ceil, False, backend="triton")
        assert_close(to_f64(ya), F.avg_pool2d(x, k, s, p, ceil, False, backend="numpy"), dtype, k * k, what="avg y")
        dxa = F.avg_pool2d_backward(native("triton", dy, dtype), (N, C, H, W), k, s, p, ceil, False, backend="triton")
        assert_close(to_f64(dxa), F.avg_pool2d_backward(dy, (N, C, H, W), k, s, p, ceil, False, backend="numpy"),
                     dtype, k * k, what="avg dx")
