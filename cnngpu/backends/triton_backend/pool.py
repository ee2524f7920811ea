"""Triton launchers for max/avg pooling (kernels in ``cnngpu.kernels.triton.pool2d``).

Inputs may have any strides (NCHW, channels-last, sliced): the kernels read through strides.
Outputs are freshly allocated contiguous NCHW tensors of the input's dtype; argmax is int64.
"""
import torch
import triton

from cnngpu.kernels.triton import pool2d as K
from cnngpu.kernels.triton._config import for_dtype, launch_kwargs

from ._common import dtype_tag, empty, launched


def _config(dtype):
    return for_dtype(K.POOL_CONFIGS, dtype_tag(dtype))[0]


def _candidates(k: int, s: int, d: int) -> int:
    """How many windows along one axis can cover a given input pixel."""
    return (k - 1) * d // s + 1


def max_pool2d_forward(x, g):
    """x (N, C, H, W) -> (y (N, C, P, Q), argmax int64 (N, C, P, Q), flat h*W+w in the input plane)."""
    y = empty((g.N, g.C, g.P, g.Q), x.dtype, x.device)
    idx = empty((g.N, g.C, g.P, g.Q), torch.int64, x.device)
    total = y.numel()
    cfg = _config(x.dtype)
    K.max_pool2d_fwd_window_max[(triton.cdiv(total, cfg.kwargs["BLOCK"]),)](
        x, y, idx, g.C, g.H, g.W, g.P, g.Q, total, *x.stride(),
        *g.kernel, *g.stride, *g.pad, *g.dilation, **launch_kwargs(cfg))
    launched("max_pool2d_fwd_window_max")
    return y, idx


def max_pool2d_backward(dy, argmax, g):
    """dy, argmax (N, C, P, Q) -> dx (N, C, H, W): each pixel gathers dy of the windows it won."""
    dx = empty((g.N, g.C, g.H, g.W), dy.dtype, dy.device)
    total = dx.numel()
    cfg = _config(dy.dtype)
    nph = _candidates(g.kernel[0], g.stride[0], g.dilation[0])
    npw = _candidates(g.kernel[1], g.stride[1], g.dilation[1])
    K.max_pool2d_bwd_gather[(triton.cdiv(total, cfg.kwargs["BLOCK"]),)](
        dy, argmax, dx, g.C, g.H, g.W, g.P, g.Q, total, *dy.stride(), *argmax.stride(),
        *g.kernel, *g.stride, *g.pad, *g.dilation, nph, npw, **launch_kwargs(cfg))
    launched("max_pool2d_bwd_gather")
    return dx


def avg_pool2d_forward(x, g, count_include_pad=True):
    """x (N, C, H, W) -> y (N, C, P, Q), window sum / divisor (PyTorch's count_include_pad rule)."""
    y = empty((g.N, g.C, g.P, g.Q), x.dtype, x.device)
    total = y.numel()
    cfg = _config(x.dtype)
    K.avg_pool2d_fwd_window_mean[(triton.cdiv(total, cfg.kwargs["BLOCK"]),)](
        x, y, g.C, g.H, g.W, g.P, g.Q, total, *x.stride(), *g.kernel, *g.stride, *g.pad,
        COUNT_INCLUDE_PAD=bool(count_include_pad), **launch_kwargs(cfg))
    launched("avg_pool2d_fwd_window_mean")
    return y


def avg_pool2d_backward(dy, g, count_include_pad=True):
    """dy (N, C, P, Q) -> dx (N, C, H, W): each pixel gathers dy / divisor of the windows holding it."""
    dx = empty((g.N, g.C, g.H, g.W), dy.dtype, dy.device)
    total = dx.numel()
    cfg = _config(dy.dtype)
    nph = _candidates(g.kernel[0], g.stride[0], 1)
    npw = _candidates(g.kernel[1], g.stride[1], 1)
    K.avg_pool2d_bwd_gather[(triton.cdiv(total, cfg.kwargs["BLOCK"]),)](
        dy, dx, g.C, g.H, g.W, g.P, g.Q, total, *dy.stride(), *g.kernel, *g.stride, *g.pad, nph, npw,
        COUNT_INCLUDE_PAD=bool(count_include_pad), **launch_kwargs(cfg))
    launched("avg_pool2d_bwd_gather")
    return dx
