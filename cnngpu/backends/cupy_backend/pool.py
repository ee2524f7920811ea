"""CuPy launchers for max/avg pooling (CUDA C in kernels/cuda/pool2d.cu).

Inputs of any strides are made C-contiguous NCHW first (a copy only for channels-last or sliced
arrays); outputs are fresh contiguous NCHW arrays of the input's dtype, argmax int64 (flat
h*W + w in the input plane). Both backward passes are gathers, one thread per input pixel that
visits only the windows able to contain it: no atomics, deterministic sums.
"""
from __future__ import annotations

from ._cupy import cupy

from ...geometry import PoolGeometry
from ._common import empty
from ._config import BLOCK, SCALAR_T, elementwise_grid, scalar_define
from ._launch import contiguous, dtype_of, i32, i64, run

_FILE = "pool2d.cu"
_ENTRIES = ["max_pool2d_fwd_window_argmax", "max_pool2d_bwd_gather_argmax",
            "avg_pool2d_fwd_window_mean", "avg_pool2d_bwd_gather_windows"]
CUDA_BUILDS = [(_FILE, list(_ENTRIES), scalar_define(dt)) for dt in SCALAR_T]


def _plane_fits(g: PoolGeometry) -> None:
    # in-plane indices (h*W + w, p*Q + q) are 32-bit in the kernels; planes are addressed in 64 bits
    if g.H * g.W >= 2 ** 31 or g.P * g.Q >= 2 ** 31:
        raise ValueError(f"pool2d: an image plane of {g.H}x{g.W} is too large for the cupy kernels")


def _window_args(g: PoolGeometry, dilation: bool = True):
    args = [i32(g.H), i32(g.W), i32(g.P), i32(g.Q), i32(g.kernel[0]), i32(g.kernel[1]),
            i32(g.stride[0]), i32(g.stride[1]), i32(g.pad[0]), i32(g.pad[1])]
    if dilation:
        args += [i32(g.dilation[0]), i32(g.dilation[1])]
    return args


def max_pool2d_forward(x, g: PoolGeometry):
    """x (N, C, H, W) -> (y (N, C, P, Q) of x's dtype, argmax (N, C, P, Q) int64, h*W + w)."""
    _plane_fits(g)
    x = contiguous(x)
    y = empty((g.N, g.C, g.P, g.Q), x.dtype)
    argmax = empty((g.N, g.C, g.P, g.Q), cupy.int64)
    total = y.size
    run(_FILE, "max_pool2d_fwd_window_argmax", dtype_of(x), elementwise_grid(total), (BLOCK,),
        [x, y, argmax, i64(total)] + _window_args(g))
    return y, argmax


def max_pool2d_backward(dy, argmax, g: PoolGeometry):
    """dy, argmax (N, C, P, Q) -> dx (N, C, H, W): each pixel sums dy of the windows it won."""
    _plane_fits(g)
    dy = contiguous(dy)
    argmax = cupy.ascontiguousarray(argmax, dtype=cupy.int64)
    dx = empty((g.N, g.C, g.H, g.W), dy.dtype)
    total = dx.size
    run(_FILE, "max_pool2d_bwd_gather_argmax", dtype_of(dy), elementwise_grid(total), (BLOCK,),
        [dy, argmax, dx, i64(total)] + _window_args(g))
    return dx


def avg_pool2d_forward(x, g: PoolGeometry, count_include_pad: bool = True):
    """x (N, C, H, W) -> y (N, C, P, Q): window sum / divisor (PyTorch's count_include_pad rule)."""
    _plane_fits(g)
    x = contiguous(x)
    y = empty((g.N, g.C, g.P, g.Q), x.dtype)
    total = y.size
    run(_FILE, "avg_pool2d_fwd_window_mean", dtype_of(x), elementwise_grid(total), (BLOCK,),
        [x, y, i64(total)] + _window_args(g, dilation=False) + [i32(bool(count_include_pad))])
    return y


def avg_pool2d_backward(dy, g: PoolGeometry, count_include_pad: bool = True):
    """dy (N, C, P, Q) -> dx (N, C, H, W): each pixel gathers dy / divisor of the windows holding it."""
    _plane_fits(g)
    dy = contiguous(dy)
    dx = empty((g.N, g.C, g.H, g.W), dy.dtype)
    total = dx.size
    run(_FILE, "avg_pool2d_bwd_gather_windows", dtype_of(dy), elementwise_grid(total), (BLOCK,),
        [dy, dx, i64(total)] + _window_args(g, dilation=False) + [i32(bool(count_include_pad))])
    return dx
