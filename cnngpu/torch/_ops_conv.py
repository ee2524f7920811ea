"""Custom ops ``cnngpu::conv2d`` / ``cnngpu::linear`` and their backward ops (fake kernels, autograd, vmap).

conv2d takes (N, C, H, W) or unbatched (C, H, W) input, as torch; padding travels as
``pad_ints`` (ph, pw) or ``pad_str`` ('same'/'valid'). Outputs keep the input's memory format.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

from .. import functional as F
from .._typing import Padding
from ..geometry import pair
from ._bridge import _native, _tensor, empty, in_format, memory_format, native_weight, pick_backend
from ._oplib import (absent, batched, batched_shape, check_image, no_alias, or_none, register_loop_vmap, unbatched,
                     unbatched_args_vmap)

Tensor = torch.Tensor


def pad_args(padding: Padding) -> Tuple[List[int], str]:
    """torch's padding argument as the ops take it: ([ph, pw], '') or ([], 'same'/'valid')."""
    if isinstance(padding, str):
        return [], padding
    return list(pair(padding, "padding")), ""


def _pad(pad_ints: List[int], pad_str: str) -> Padding:
    return pad_str if pad_str else (pad_ints[0], pad_ints[1])


@torch.library.custom_op("cnngpu::conv2d", mutates_args=())
def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], pad_ints: List[int], pad_str: str,
           dilation: List[int], groups: int, algo: str, precision: str, backend: str) -> Tensor:
    """y = conv2d(x, weight, bias): (N, C, H, W) or (C, H, W) -> (N, K, P, Q) or (K, P, Q)."""
    check_image(x, "conv2d")
    be = pick_backend(x, backend)
    xb, unb = batched(x)
    with native_weight(weight, be) as wn:
        y = F.conv2d(_native(xb, be), wn, _native(bias, be), tuple(stride), _pad(pad_ints, pad_str),
                     tuple(dilation), groups, algo=algo, precision=precision, backend=be)
    out = in_format(_tensor(y, be, x.device, x.dtype), memory_format(x))
    return no_alias(unbatched(out, unb), x, weight, bias)


@conv2d.register_fake
def _(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], pad_ints: List[int], pad_str: str,
      dilation: List[int], groups: int, algo: str, precision: str, backend: str) -> Tensor:
    check_image(x, "conv2d")
    xs, unb = batched_shape(x.shape)
    # geometry of one image: the batch dim stays symbolic (torch.export with a dynamic batch)
    g = F.conv2d_geometry((1,) + xs[1:], tuple(weight.shape), tuple(stride), _pad(pad_ints, pad_str),
                          tuple(dilation), groups)
    return empty(x, (g.K, g.P, g.Q) if unb else (xs[0], g.K, g.P, g.Q), memory_format(x))


@torch.library.custom_op("cnngpu::conv2d_backward", mutates_args=())
def conv2d_backward(dy: Tensor, x: Tensor, weight: Tensor, stride: List[int], pad_ints: List[int], pad_str: str,
                    dilation: List[int], groups: int, output_mask: List[bool], algo: str, precision: str,
                    backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias); an output not in ``output_mask`` is an empty (0,) tensor."""
    be = pick_backend(x, backend)
    (xb, unb), (dyb, _) = batched(x), batched(dy)
    need = [bool(m) for m in output_mask]
    with native_weight(weight, be) as wn:
        dx, dw, db = F.conv2d_backward(_native(dyb.contiguous(), be), _native(xb, be), wn,
                                       tuple(stride), _pad(pad_ints, pad_str), tuple(dilation), groups,
                                       need_dx=need[0], need_dw=need[1], need_db=need[2], algo=algo,
                                       precision=precision, backend=be)
    dev = x.device
    dxt = in_format(_tensor(dx, be, dev, x.dtype), memory_format(x)) if need[0] else absent(x)
    return no_alias((unbatched(dxt, unb and need[0]),
                     in_format(_tensor(dw, be, dev, weight.dtype)) if need[1] else absent(weight),
                     _tensor(db, be, dev, weight.dtype) if need[2] else absent(weight)), dy, x, weight)


@conv2d_backward.register_fake
def _(dy: Tensor, x: Tensor, weight: Tensor, stride: List[int], pad_ints: List[int], pad_str: str,
      dilation: List[int], groups: int, output_mask: List[bool], algo: str, precision: str, backend: str
      ) -> Tuple[Tensor, Tensor, Tensor]:
    return (empty(x, x.shape, memory_format(x)) if output_mask[0] else absent(x),
            empty(weight, weight.shape) if output_mask[1] else absent(weight),
            empty(weight, (weight.shape[0],)) if output_mask[2] else absent(weight))


def _conv2d_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias = inputs[:3]
    ctx.save_for_backward(x, weight)
    ctx.conf, ctx.has_bias = inputs[3:], bias is not None


def _conv2d_bwd(ctx: Any, dy: Tensor) -> Any:
    x, weight = ctx.saved_tensors
    stride, pad_ints, pad_str, dilation, groups, algo, precision, backend = ctx.conf
    n = ctx.needs_input_grad
    mask = [n[0], n[1], ctx.has_bias and n[2]]
    dx, dw, db = conv2d_backward(dy, x, weight, stride, pad_ints, pad_str, dilation, groups, mask, algo, precision,
                                 backend)
    return (or_none(dx, mask[0]), or_none(dw, mask[1]), or_none(db, mask[2])) + (None,) * 8


conv2d.register_autograd(_conv2d_bwd, setup_context=_conv2d_setup)


def _conv2d_vmap_fast(B: int, args: Tuple[Any, ...]) -> Any:
    """Only x is vmapped: the vmapped dim joins the batch dim (one conv over B*N images)."""
    x, rest = args[0], args[1:]
    if x.dim() == 4:                    # vmapped unbatched images: B is the batch
        return conv2d(x, *rest), 0
    y = conv2d(x.flatten(0, 1), *rest)
    return y.unflatten(0, (B, x.shape[1])), 0


unbatched_args_vmap(conv2d, _conv2d_vmap_fast)
register_loop_vmap(conv2d_backward)


# ----------------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op("cnngpu::linear", mutates_args=())
def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], backend: str) -> Tensor:
    """y = x @ weight.T + bias: x (*, in), weight (out, in) -> (*, out)."""
    be = pick_backend(x, backend)
    y = F.linear(_native(x, be), _native(weight, be), _native(bias, be), backend=be)
    return no_alias(in_format(_tensor(y, be, x.device, x.dtype)), x, weight, bias)


@linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Optional[Tensor], backend: str) -> Tensor:
    if x.dim() < 1 or weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input {tuple(x.shape)} (*, in_features) does not match weight "
                         f"{tuple(weight.shape)} (out_features, in_features)")
    return empty(x, tuple(x.shape[:-1]) + (weight.shape[0],))


@torch.library.custom_op("cnngpu::linear_backward", mutates_args=())
def linear_backward(dy: Tensor, x: Tensor, weight: Tensor, output_mask: List[bool], backend: str
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias); an output not in ``output_mask`` is an empty (0,) tensor."""
    be = pick_backend(x, backend)
    need = [bool(m) for m in output_mask]
    dx, dw, db = F.linear_backward(_native(dy.contiguous(), be), _native(x, be), _native(weight, be),
                                   need_db=need[2], backend=be)
    dev = x.device
    return no_alias((in_format(_tensor(dx, be, dev, x.dtype)) if need[0] else absent(x),
                     in_format(_tensor(dw, be, dev, weight.dtype)) if need[1] else absent(weight),
                     _tensor(db, be, dev, weight.dtype) if need[2] else absent(weight)), dy, x, weight)


@linear_backward.register_fake
def _(dy: Tensor, x: Tensor, weight: Tensor, output_mask: List[bool], backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    return (empty(x, x.shape) if output_mask[0] else absent(x),
            empty(weight, weight.shape) if output_mask[1] else absent(weight),
            empty(weight, (weight.shape[0],)) if output_mask[2] else absent(weight))


def _linear_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias, backend = inputs
    ctx.save_for_backward(x, weight)
    ctx.backend, ctx.has_bias = backend, bias is not None


def _linear_bwd(ctx: Any, dy: Tensor) -> Any:
    x, weight = ctx.saved_tensors
    n = ctx.needs_input_grad
    mask = [n[0], n[1], ctx.has_bias and n[2]]
    dx, dw, db = linear_backward(dy, x, weight, mask, ctx.backend)
    return or_none(dx, mask[0]), or_none(dw, mask[1]), or_none(db, mask[2]), None


linear.register_autograd(_linear_bwd, setup_context=_linear_setup)
unbatched_args_vmap(linear, lambda B, args: (linear(*args), 0))   # (B, *, in) is a valid input
register_loop_vmap(linear_backward)
