"""Custom ops ``cnngpu::max_pool2d`` / ``cnngpu::avg_pool2d`` and their backward ops.

Inputs (N, C, H, W) or unbatched (C, H, W), as torch; outputs (and max_pool2d's int64 indices,
the flat h * W + w argmax) keep the input's memory format. The backward ops take the input's
shape, not the input: nothing but the indices is saved.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

from .. import functional as F
from ._bridge import _native, _tensor, empty, in_format, memory_format, pick_backend
from ._oplib import batched, batched_shape, check_image, no_alias, register_loop_vmap, unbatched

Tensor = torch.Tensor


def _out_shape(x_shape: Any, kernel_size: List[int], stride: List[int], padding: List[int], dilation: List[int],
               ceil_mode: bool) -> Tuple[int, ...]:
    xs, unb = batched_shape(x_shape)
    # geometry of one image: the batch dim stays symbolic (torch.export with a dynamic batch)
    g = F.pool2d_geometry((1,) + xs[1:], tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation),
                          ceil_mode)
    return (g.C, g.P, g.Q) if unb else (xs[0], g.C, g.P, g.Q)


@torch.library.custom_op("cnngpu::max_pool2d", mutates_args=())
def max_pool2d(x: Tensor, kernel_size: List[int], stride: List[int], padding: List[int], dilation: List[int],
               ceil_mode: bool, backend: str) -> Tuple[Tensor, Tensor]:
    """(y, indices): max over each window; indices int64 flat h * W + w of the winner."""
    check_image(x, "max_pool2d")
    be = pick_backend(x, backend)
    xb, unb = batched(x)
    y, idx = F.max_pool2d(_native(xb, be), tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation),
                          ceil_mode, True, backend=be)
    fmt = memory_format(x)
    yt = in_format(_tensor(y, be, x.device, x.dtype), fmt)
    it = in_format(_tensor(idx, be, x.device), fmt)
    return no_alias((unbatched(yt, unb), unbatched(it, unb)), x)


@max_pool2d.register_fake
def _(x: Tensor, kernel_size: List[int], stride: List[int], padding: List[int], dilation: List[int],
      ceil_mode: bool, backend: str) -> Tuple[Tensor, Tensor]:
    check_image(x, "max_pool2d")
    shape, fmt = _out_shape(x.shape, kernel_size, stride, padding, dilation, ceil_mode), memory_format(x)
    return empty(x, shape, fmt), empty(x, shape, fmt, torch.int64)


def _grad_source(t: Tensor, be: str) -> Tensor:
    """dy / indices as the backend's backward reads them: triton reads any strides and runs its
    channel-run gathers on channels-last ones (keep that format), the others get NCHW."""
    return t.contiguous(memory_format=memory_format(t)) if be == "triton" else t.contiguous()


@torch.library.custom_op("cnngpu::max_pool2d_backward", mutates_args=())
def max_pool2d_backward(dy: Tensor, indices: Tensor, x_shape: List[int], kernel_size: List[int], stride: List[int],
                        padding: List[int], dilation: List[int], ceil_mode: bool, backend: str) -> Tensor:
    """dx (x_shape, dy's memory format): dy scattered to the window winners."""
    be = pick_backend(dy, backend)
    (dyb, unb), (ib, _) = batched(dy), batched(indices)
    xs, _ = batched_shape(x_shape)
    dx = F.max_pool2d_backward(_native(_grad_source(dyb, be), be), _native(_grad_source(ib, be), be), xs,
                               tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), ceil_mode,
                               backend=be)
    out = in_format(_tensor(dx, be, dy.device, dy.dtype), memory_format(dy))
    return no_alias(unbatched(out, unb), dy, indices)


@max_pool2d_backward.register_fake
def _(dy: Tensor, indices: Tensor, x_shape: List[int], kernel_size: List[int], stride: List[int],
      padding: List[int], dilation: List[int], ceil_mode: bool, backend: str) -> Tensor:
    return empty(dy, x_shape, memory_format(dy))


def _max_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x = inputs[0]
    ctx.save_for_backward(output[1])
    ctx.x_shape, ctx.conf = list(x.shape), inputs[1:]


def _max_bwd(ctx: Any, dy: Tensor, _dindices: Any) -> Any:
    (indices,) = ctx.saved_tensors
    return (max_pool2d_backward(dy, indices, ctx.x_shape, *ctx.conf),) + (None,) * 6


max_pool2d.register_autograd(_max_bwd, setup_context=_max_setup)


@torch.library.custom_op("cnngpu::avg_pool2d", mutates_args=())
def avg_pool2d(x: Tensor, kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
               count_include_pad: bool, divisor_override: Optional[int], backend: str) -> Tensor:
    """y: the mean over each window (torch's count_include_pad / divisor_override rules)."""
    check_image(x, "avg_pool2d")
    be = pick_backend(x, backend)
    xb, unb = batched(x)
    y = F.avg_pool2d(_native(xb, be), tuple(kernel_size), tuple(stride), tuple(padding), ceil_mode,
                     count_include_pad, divisor_override, backend=be)
    out = in_format(_tensor(y, be, x.device, x.dtype), memory_format(x))
    return no_alias(unbatched(out, unb), x)


@avg_pool2d.register_fake
def _(x: Tensor, kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
      count_include_pad: bool, divisor_override: Optional[int], backend: str) -> Tensor:
    check_image(x, "avg_pool2d")
    return empty(x, _out_shape(x.shape, kernel_size, stride, padding, [1, 1], ceil_mode), memory_format(x))


@torch.library.custom_op("cnngpu::avg_pool2d_backward", mutates_args=())
def avg_pool2d_backward(dy: Tensor, x_shape: List[int], kernel_size: List[int], stride: List[int],
                        padding: List[int], ceil_mode: bool, count_include_pad: bool,
                        divisor_override: Optional[int], backend: str) -> Tensor:
    """dx (x_shape, dy's memory format): each pixel gathers dy / divisor of its windows."""
    be = pick_backend(dy, backend)
    dyb, unb = batched(dy)
    xs, _ = batched_shape(x_shape)
    dx = F.avg_pool2d_backward(_native(_grad_source(dyb, be), be), xs, tuple(kernel_size), tuple(stride),
                               tuple(padding), ceil_mode, count_include_pad, divisor_override, backend=be)
    out = in_format(_tensor(dx, be, dy.device, dy.dtype), memory_format(dy))
    return no_alias(unbatched(out, unb), dy)


@avg_pool2d_backward.register_fake
def _(dy: Tensor, x_shape: List[int], kernel_size: List[int], stride: List[int], padding: List[int],
      ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int], backend: str) -> Tensor:
    return empty(dy, x_shape, memory_format(dy))


def _avg_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    ctx.x_shape, ctx.conf = list(inputs[0].shape), inputs[1:]


def _avg_bwd(ctx: Any, dy: Tensor) -> Any:
    return (avg_pool2d_backward(dy, ctx.x_shape, *ctx.conf),) + (None,) * 7


avg_pool2d.register_autograd(_avg_bwd, setup_context=_avg_setup)

for _op in (max_pool2d, max_pool2d_backward, avg_pool2d, avg_pool2d_backward):
    register_loop_vmap(_op)
