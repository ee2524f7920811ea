"""Custom ops ``cnngpu::relu`` / ``cnngpu::cross_entropy`` and their backward ops.

relu saves its output (as torch's); ``relu(x, inplace=True)`` is this op followed by ``x.copy_``
(see cnngpu.torch.functional.relu). cross_entropy saves the softmax probabilities it computed
(and the logits when a probability target requires grad).
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


def _lift(x: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    """Unbatched logits (C,) (target () or (C,)) as a batch of one: (1, C) and (1,) or (1, C)."""
    if x.dim() != 1:
        return x, target
    return x.unsqueeze(0), target.unsqueeze(0)


@torch.library.custom_op("cnngpu::cross_entropy", mutates_args=())
def cross_entropy(x: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, reduction: str,
                  label_smoothing: float, backend: str) -> Tuple[Tensor, Tensor]:
    """(loss, probs): torch's cross_entropy (x's dtype; () unless reduction='none'), probs the
    softmax over the class dim (x's shape), what the backward needs."""
    be = pick_backend(x, backend)
    xb, tb = _lift(x, target)
    loss, probs = F.cross_entropy(_native(xb, be), _native(tb, be), _native(weight, be), None, ignore_index, None,
                                  reduction, label_smoothing, return_probs=True, backend=be)
    dev = x.device
    lt = _tensor(loss, be, dev, x.dtype).reshape(_loss_shape(x, target, reduction))
    pt = _tensor(probs, be, dev, x.dtype).reshape(x.shape)
    return no_alias((in_format(lt), in_format(pt)), x, target, weight)


@cross_entropy.register_fake
def _(x: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, reduction: str,
      label_smoothing: float, backend: str) -> Tuple[Tensor, Tensor]:
    return empty(x, _loss_shape(x, target, reduction)), empty(x, x.shape)


@torch.library.custom_op("cnngpu::cross_entropy_backward", mutates_args=())
def cross_entropy_backward(dloss: Tensor, probs: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
                           reduction: str, label_smoothing: float, backend: str) -> Tensor:
    """d loss / d x from the saved probs (x's shape and dtype)."""
    be = pick_backend(probs, backend)
    pb, tb = _lift(probs, target)
    dl = _native(dloss.reshape(pb.shape[:1] + pb.shape[2:]).contiguous(), be) if reduction == "none" else float(dloss)
    dx = F.cross_entropy_backward(_native(pb, be), _native(tb, be), dl, _native(weight, be), ignore_index,
                                  reduction, label_smoothing, backend=be)
    dxt = _tensor(dx, be, probs.device, probs.dtype).reshape(probs.shape)
    return no_alias(in_format(dxt), dloss, probs, target, weight)


@cross_entropy_backward.register_fake
def _(dloss: Tensor, probs: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int, reduction: str,
      label_smoothing: float, backend: str) -> Tensor:
    return empty(probs, probs.shape)


def _xent_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, target, weight = inputs[:3]
    ctx.target_grad = target.dtype.is_floating_point and target.requires_grad
    ctx.save_for_backward(output[1], target, weight, x if ctx.target_grad else None)
    ctx.conf = inputs[3:]


def _probability_target_grad(dloss: Tensor, x: Tensor, weight: Optional[Tensor], reduction: str,
                             label_smoothing: float) -> Tensor:
    """d loss / d target for class-probability targets: loss_n = -sum_c w_c t'_nc log p_nc with
    t' = (1 - ls) t + ls / C, so the gradient is -(1 - ls) w_c log p_nc, times dloss_n ('none'),
    dloss ('sum') or dloss / (numel / C) ('mean', torch's divisor for probability targets). Torch
    ops on the saved logits (a rarely used gradient; the op itself gives d loss / d x)."""
    cdim = 1 if x.dim() >= 2 else 0
    g = torch.log_softmax(x, dim=cdim) * (label_smoothing - 1.0)
    if weight is not None:
        g = g * weight.reshape([-1] + [1] * (x.dim() - cdim - 1))
    if reduction == "none":
        return g * dloss.unsqueeze(cdim)
    scale = dloss / (x.numel() // x.shape[cdim]) if reduction == "mean" else dloss
    return g * scale


def _xent_bwd(ctx: Any, dloss: Tensor, _dprobs: Any) -> Any:
    probs, target, weight, x = ctx.saved_tensors
    dx = cross_entropy_backward(dloss, probs, target, weight, *ctx.conf) if ctx.needs_input_grad[0] else None
    dt = None
    if ctx.target_grad and ctx.needs_input_grad[1]:
        _ignore, reduction, label_smoothing, _be = ctx.conf
        dt = _probability_target_grad(dloss, x.detach(), weight, reduction, label_smoothing)
    return (dx, dt) + (None,) * 5


cross_entropy.register_autograd(_xent_bwd, setup_context=_xent_setup)
register_loop_vmap(cross_entropy)
register_loop_vmap(cross_entropy_backward)
