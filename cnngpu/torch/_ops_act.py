"""Custom ops ``cnngpu::relu`` / ``cnngpu::cross_entropy`` and their backward ops.

relu saves its output (as torch's); ``relu(x, inplace=True)`` is this op followed by ``x.copy_``
(see cnngpu.torch.functional.relu). cross_entropy saves the softmax probabilities it computed.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from .. import functional as F
from ._bridge import _native, _tensor, empty, in_format, memory_format, pick_backend
from ._oplib import no_alias, register_loop_vmap, unbatched_args_vmap

Tensor = torch.Tensor


@torch.library.custom_op("cnngpu::relu", mutates_args=())
def relu(x: Tensor, backend: str) -> Tensor:
    """max(x, 0) elementwise (NaN stays NaN), any shape; keeps x's memory format."""
    be = pick_backend(x, backend)
    return no_alias(in_format(_tensor(F.relu(_native(x, be), backend=be), be, x.device, x.dtype), memory_format(x)), x)


@relu.register_fake
def _(x: Tensor, backend: str) -> Tensor:
    return empty(x, x.shape, memory_format(x))


@torch.library.custom_op("cnngpu::relu_backward", mutates_args=())
def relu_backward(dy: Tensor, y: Tensor, backend: str) -> Tensor:
    """dy where y > 0 or y is NaN, else 0 (torch's threshold_backward); y's memory format."""
    be = pick_backend(y, backend)
    dx = F.relu_backward(_native(dy.contiguous(), be), _native(y.contiguous(), be), backend=be)
    return no_alias(in_format(_tensor(dx, be, y.device, dy.dtype), memory_format(y)), dy, y)


@relu_backward.register_fake
def _(dy: Tensor, y: Tensor, backend: str) -> Tensor:
    return empty(dy, y.shape, memory_format(y))


def _relu_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(output)             # as torch's relu: the output gives the mask
    ctx.backend = inputs[1]


def _relu_bwd(ctx: Any, dy: Tensor) -> Any:
    (y,) = ctx.saved_tensors
    return relu_backward(dy, y, ctx.backend), None


relu.register_autograd(_relu_bwd, setup_context=_relu_setup)
unbatched_args_vmap(relu, lambda B, args: (relu(*args), 0))                    # elementwise
unbatched_args_vmap(relu_backward, lambda B, args: (relu_backward(*args), 0), batched_only=(0, 1))


# ----------------------------------------------------------------------------------------------
# cross_entropy
# ----------------------------------------------------------------------------------------------
def _loss_shape(x: Tensor, target: Tensor, reduction: str) -> Tuple[int, ...]:
    if reduction != "none":
        return ()
    if not target.dtype.is_floating_point:                 # class indices: one loss per index
        return tuple(target.shape)
    return (tuple(x.shape[:1]) + tuple(x.shape[2:])) if x.dim() >= 2 else ()


@torch.library.custom_op("cnngpu::cross_entropy", mutates_args=())
def cross_entropy(x: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, reduction: str,
                  label_smoothing: float, backend: str) -> Tuple[Tensor, Tensor]:
    """(loss, probs): torch's cross_entropy (x's dtype; () unless reduction='none'), probs the
    softmax over the class dim (x's shape), what the backward needs."""
    be = pick_backend(x, backend)
    loss, probs = F.cross_entropy(_native(x, be), _native(target, be), _native(weight, be), None, ignore_index, None,
                                  reduction, label_smoothing, return_probs=True, backend=be)
    dev = x.device
    lt = _tensor(loss, be, dev, x.dtype).reshape(_loss_shape(x, target, reduction))
    return no_alias((in_format(lt), in_format(_tensor(probs, be, dev, x.dtype))), x, target, weight)


@cross_entropy.register_fake
def _(x: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, reduction: str,
      label_smoothing: float, backend: str) -> Tuple[Tensor, Tensor]:
    return empty(x, _loss_shape(x, target, reduction)), empty(x, x.shape)


@torch.library.custom_op("cnngpu::cross_entropy_backward", mutates_args=())
def cross_entropy_backward(dloss: Tensor, probs: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
                           reduction: str, label_smoothing: float, backend: str) -> Tensor:
    """d loss / d x from the saved probs (x's shape and dtype)."""
    be = pick_backend(probs, backend)
    dl = _native(dloss.contiguous(), be) if reduction == "none" else float(dloss)
    dx = F.cross_entropy_backward(_native(probs, be), _native(target, be), dl, _native(weight, be), ignore_index,
                                  reduction, label_smoothing, backend=be)
    return no_alias(in_format(_tensor(dx, be, probs.device, probs.dtype)), dloss, probs, target, weight)


@cross_entropy_backward.register_fake
def _(dloss: Tensor, probs: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, reduction: str,
      label_smoothing: float, backend: str) -> Tensor:
    return empty(probs, probs.shape)


def _xent_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    _x, target, weight = inputs[:3]
    ctx.save_for_backward(output[1], target, weight)
    ctx.conf = inputs[3:]


def _xent_bwd(ctx: Any, dloss: Tensor, _dprobs: Any) -> Any:
    probs, target, weight = ctx.saved_tensors
    return (cross_entropy_backward(dloss, probs, target, weight, *ctx.conf),) + (None,) * 6


cross_entropy.register_autograd(_xent_bwd, setup_context=_xent_setup)
register_loop_vmap(cross_entropy)
register_loop_vmap(cross_entropy_backward)
