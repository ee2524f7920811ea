"""Custom ops ``cnngpu::batch_norm`` / ``layer_norm`` / ``group_norm`` and their backward ops.

batch_norm takes (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W) input (the kernels see
(N, C) or (N, C, H*W..., 1)); it is functional: the updated running statistics come back as new
tensors (empty when not updated) that the caller copies into its buffers, so autograd,
torch.compile and torch.export see no mutation inside the op. It saves x, the fused ReLU's bool
mask and the statistics, never its output: inplace ops after it (ReLU(inplace=True), a residual
``+=``) keep the backward valid. weight=None with a bias: a weight of ones inside the op, so the
bias gets its gradient.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

from .. import functional as F
from ._bridge import _native, _tensor, _write_back, empty, in_format, memory_format, pick_backend, stats_dtype
from ._oplib import absent, no_alias, or_none, register_loop_vmap

Tensor = torch.Tensor


def _bn_view(t: Tensor) -> Tensor:
    """(N, C, *) as the kernels take it: (N, C) and (N, C, H, W) as they are, else (N, C, L, 1)."""
    if t.dim() in (2, 4):
        return t
    if t.dim() < 2:
        raise ValueError(f"batch_norm: input must be (N, C) or (N, C, *), got shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], t.shape[1], -1, 1)


def _ones_if(weight: Optional[Tensor], want: bool, x: Tensor) -> Optional[Tensor]:
    """weight, or ones of x's channel count when there is none but a bias needs its gradient."""
    if weight is None and want:
        return torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    return weight


@torch.library.custom_op("cnngpu::batch_norm", mutates_args=())
def batch_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
               running_var: Optional[Tensor], training: bool, momentum: float, eps: float, relu: bool,
               backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, invstd, relu_mask, new_running_mean, new_running_var): mean/invstd (C,) float32
    (float64 for float64 x); relu_mask bool x.shape with relu else (0,); the new running stats
    are (0,) unless training with running stats."""
    be = pick_backend(x, backend)
    update = training and running_mean is not None
    rm = None if running_mean is None else (running_mean.clone() if update else running_mean)
    rv = None if running_var is None else (running_var.clone() if update else running_var)
    nrm, nrv = _native(rm, be), _native(rv, be)
    w = _ones_if(weight, bias is not None, x)
    y, mean, invstd = F.batch_norm(_native(_bn_view(x), be), nrm, nrv, _native(w, be), _native(bias, be), training,
                                   momentum, eps, relu=relu, return_stats=True, backend=be)
    if update:
        _write_back(rm, nrm, be)
        _write_back(rv, nrv, be)
    dev, fmt = x.device, memory_format(x)
    yt = in_format(_tensor(y, be, dev, x.dtype).reshape(x.shape), fmt)
    mask = in_format(torch.logical_not(yt.le(0)), fmt) if relu else absent(x, torch.bool)
    sdt = stats_dtype(x)
    return no_alias((yt, _tensor(mean, be, dev, sdt), _tensor(invstd, be, dev, sdt), mask,
                     rm if update else absent(x), rv if update else absent(x)),
                    x, weight, bias, running_mean, running_var)


@batch_norm.register_fake
def _(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
      running_var: Optional[Tensor], training: bool, momentum: float, eps: float, relu: bool, backend: str
      ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    _bn_view(x)
    C, fmt, sdt = x.shape[1], memory_format(x), stats_dtype(x)
    update = training and running_mean is not None
    return (empty(x, x.shape, fmt), empty(x, (C,), dtype=sdt), empty(x, (C,), dtype=sdt),
            empty(x, x.shape, fmt, torch.bool) if relu else absent(x, torch.bool),
            torch.empty_like(running_mean) if update else absent(x),  # type: ignore[arg-type]
            torch.empty_like(running_var) if update else absent(x))  # type: ignore[arg-type]


@torch.library.custom_op("cnngpu::batch_norm_backward", mutates_args=())
def batch_norm_backward(dy: Tensor, x: Tensor, relu_mask: Tensor, weight: Optional[Tensor], mean: Tensor,
                        invstd: Tensor, training: bool, relu: bool, output_mask: List[bool], backend: str
                        ) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias); dweight needs weight, dbias a weight or ones (output_mask[2])."""
    be = pick_backend(x, backend)
    need = [bool(m) for m in output_mask]
    w = _ones_if(weight, need[2], x)
    # the kernels read the ReLU mask from the sign of y: the mask in x's dtype stands in for y
    # (without ReLU y is not read and x fills the slot)
    y = relu_mask.to(x.dtype) if relu else x
    dx, dw, db = F.batch_norm_backward(_native(_bn_view(dy.contiguous()), be), _native(_bn_view(x), be),
                                       _native(_bn_view(y), be), _native(w, be), _native(mean, be),
                                       _native(invstd, be), training=training, relu=relu, backend=be)
    dev = x.device
    pdt = x.dtype if w is None else w.dtype
    return no_alias((in_format(_tensor(dx, be, dev, x.dtype).reshape(x.shape), memory_format(x)),
                     _tensor(dw, be, dev, pdt) if need[1] and weight is not None else absent(x),
                     _tensor(db, be, dev, pdt) if need[2] else absent(x)), dy, x, relu_mask, weight, mean, invstd)


@batch_norm_backward.register_fake
def _(dy: Tensor, x: Tensor, relu_mask: Tensor, weight: Optional[Tensor], mean: Tensor, invstd: Tensor,
      training: bool, relu: bool, output_mask: List[bool], backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    C, pdt = x.shape[1], x.dtype if weight is None else weight.dtype
    return (empty(x, x.shape, memory_format(x)),
            empty(x, (C,), dtype=pdt) if output_mask[1] and weight is not None else absent(x),
            empty(x, (C,), dtype=pdt) if output_mask[2] else absent(x))


def _bn_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias, _rm, _rv, training, _momentum, _eps, relu, backend = inputs
    _y, mean, invstd, mask = output[:4]
    ctx.save_for_backward(x, mask, weight, mean, invstd)   # not y: inplace ops after BN stay valid
    ctx.conf, ctx.has_bias = (training, relu), bias is not None
    ctx.backend = backend


def _bn_bwd(ctx: Any, dy: Tensor, *_unused: Any) -> Any:
    x, mask, weight, mean, invstd = ctx.saved_tensors
    n = ctx.needs_input_grad
    om = [n[0], weight is not None and n[1], ctx.has_bias and n[2]]
    dx, dw, db = batch_norm_backward(dy, x, mask, weight, mean, invstd, *ctx.conf, om, ctx.backend)
    return (or_none(dx, om[0]), or_none(dw, om[1]), or_none(db, om[2])) + (None,) * 7


batch_norm.register_autograd(_bn_bwd, setup_context=_bn_setup)


# ----------------------------------------------------------------------------------------------
# layer_norm, group_norm: (y, mean, rstd); weight=None with a bias as batch_norm
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op("cnngpu::layer_norm", mutates_args=())
def layer_norm(x: Tensor, normalized_shape: List[int], weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
               backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd) over the trailing ``normalized_shape`` dims; mean/rstd (M,), M the leading numel."""
    be = pick_backend(x, backend)
    w = weight if weight is not None or bias is None else torch.ones_like(bias)
    y, mean, rstd = F.layer_norm(_native(x, be), tuple(normalized_shape), _native(w, be), _native(bias, be), eps,
                                 return_stats=True, backend=be)
    dev, sdt = x.device, stats_dtype(x)
    return no_alias((in_format(_tensor(y, be, dev, x.dtype)), _tensor(mean, be, dev, sdt), _tensor(rstd, be, dev, sdt)),
                    x, weight, bias)


@layer_norm.register_fake
def _(x: Tensor, normalized_shape: List[int], weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
      backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    k = len(normalized_shape)
    if k == 0 or k > x.dim() or list(x.shape[x.dim() - k:]) != list(normalized_shape):
        raise ValueError(f"normalized_shape {tuple(normalized_shape)} must be the trailing dims of input, got "
                         f"input shape {tuple(x.shape)}")
    M = 1
    for d in x.shape[:x.dim() - k]:
        M *= d
    sdt = stats_dtype(x)
    return empty(x, x.shape), empty(x, (M,), dtype=sdt), empty(x, (M,), dtype=sdt)


@torch.library.custom_op("cnngpu::layer_norm_backward", mutates_args=())
def layer_norm_backward(dy: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor,
                        normalized_shape: List[int], output_mask: List[bool], backend: str
                        ) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias) of layer_norm."""
    be = pick_backend(x, backend)
    need = [bool(m) for m in output_mask]
    w = weight if weight is not None or not need[2] else x.new_ones(tuple(normalized_shape))
    dx, dw, db = F.layer_norm_backward(_native(dy.contiguous(), be), _native(x, be), _native(w, be),
                                       _native(mean, be), _native(rstd, be), len(normalized_shape), backend=be)
    dev = x.device
    pdt = x.dtype if w is None else w.dtype
    return no_alias((in_format(_tensor(dx, be, dev, x.dtype)),
                     in_format(_tensor(dw, be, dev, pdt)) if need[1] and weight is not None else absent(x),
                     in_format(_tensor(db, be, dev, pdt)) if need[2] else absent(x)), dy, x, weight, mean, rstd)


@layer_norm_backward.register_fake
def _(dy: Tensor, x: Tensor, weight: Optional[Tensor], mean: Tensor, rstd: Tensor, normalized_shape: List[int],
      output_mask: List[bool], backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    pdt = x.dtype if weight is None else weight.dtype
    return (empty(x, x.shape),
            empty(x, normalized_shape, dtype=pdt) if output_mask[1] and weight is not None else absent(x),
            empty(x, normalized_shape, dtype=pdt) if output_mask[2] else absent(x))


def _ln_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, normalized_shape, weight, bias, _eps, backend = inputs
    ctx.save_for_backward(x, weight, output[1], output[2])
    ctx.ns, ctx.backend, ctx.has_bias = normalized_shape, backend, bias is not None


def _ln_bwd(ctx: Any, dy: Tensor, *_unused: Any) -> Any:
    x, weight, mean, rstd = ctx.saved_tensors
    n = ctx.needs_input_grad
    om = [n[0], weight is not None and n[2], ctx.has_bias and n[3]]
    dx, dw, db = layer_norm_backward(dy, x, weight, mean, rstd, ctx.ns, om, ctx.backend)
    return or_none(dx, om[0]), None, or_none(dw, om[1]), or_none(db, om[2]), None, None


layer_norm.register_autograd(_ln_bwd, setup_context=_ln_setup)


@torch.library.custom_op("cnngpu::group_norm", mutates_args=())
def group_norm(x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
               backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd): x (N, C, *) normalized per (n, group); mean/rstd (N, num_groups)."""
    be = pick_backend(x, backend)
    y, mean, rstd = F.group_norm(_native(x, be), num_groups, _native(_ones_if(weight, bias is not None, x), be),
                                 _native(bias, be), eps, return_stats=True, backend=be)
    dev, sdt = x.device, stats_dtype(x)
    return no_alias((in_format(_tensor(y, be, dev, x.dtype), memory_format(x)),
                     in_format(_tensor(mean, be, dev, sdt).reshape(x.shape[0], num_groups)),
                     in_format(_tensor(rstd, be, dev, sdt).reshape(x.shape[0], num_groups))), x, weight, bias)


@group_norm.register_fake
def _(x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float, backend: str
      ) -> Tuple[Tensor, Tensor, Tensor]:
    if x.dim() < 2 or num_groups < 1 or x.shape[1] % num_groups:
        raise ValueError(f"group_norm: num_groups={num_groups} must divide C of input (N, C, *), got shape "
                         f"{tuple(x.shape)}")
    sdt = stats_dtype(x)
    N = x.shape[0]
    return empty(x, x.shape, memory_format(x)), empty(x, (N, num_groups), dtype=sdt), \
        empty(x, (N, num_groups), dtype=sdt)


@torch.library.custom_op("cnngpu::group_norm_backward", mutates_args=())
def group_norm_backward(dy: Tensor, x: Tensor, num_groups: int, weight: Optional[Tensor], mean: Tensor, rstd: Tensor,
                        output_mask: List[bool], backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias) of group_norm."""
    be = pick_backend(x, backend)
    need = [bool(m) for m in output_mask]
    w = _ones_if(weight, need[2], x)
    dx, dw, db = F.group_norm_backward(_native(dy.contiguous(), be), _native(x, be), num_groups, _native(w, be),
                                       _native(mean, be), _native(rstd, be), backend=be)
    dev = x.device
    pdt = x.dtype if w is None else w.dtype
    return no_alias((in_format(_tensor(dx, be, dev, x.dtype), memory_format(x)),
                     _tensor(dw, be, dev, pdt) if need[1] and weight is not None else absent(x),
                     _tensor(db, be, dev, pdt) if need[2] else absent(x)), dy, x, weight, mean, rstd)


@group_norm_backward.register_fake
def _(dy: Tensor, x: Tensor, num_groups: int, weight: Optional[Tensor], mean: Tensor, rstd: Tensor,
      output_mask: List[bool], backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    C, pdt = x.shape[1], x.dtype if weight is None else weight.dtype
    return (empty(x, x.shape, memory_format(x)),
            empty(x, (C,), dtype=pdt) if output_mask[1] and weight is not None else absent(x),
            empty(x, (C,), dtype=pdt) if output_mask[2] else absent(x))


def _gn_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, num_groups, weight, bias, _eps, backend = inputs
    ctx.save_for_backward(x, weight, output[1], output[2])
    ctx.num_groups, ctx.backend, ctx.has_bias = num_groups, backend, bias is not None


def _gn_bwd(ctx: Any, dy: Tensor, *_unused: Any) -> Any:
    x, weight, mean, rstd = ctx.saved_tensors
    n = ctx.needs_input_grad
    om = [n[0], weight is not None and n[2], ctx.has_bias and n[3]]
    dx, dw, db = group_norm_backward(dy, x, ctx.num_groups, weight, mean, rstd, om, ctx.backend)
    return or_none(dx, om[0]), None, or_none(dw, om[1]), or_none(db, om[2]), None, None


group_norm.register_autograd(_gn_bwd, setup_context=_gn_setup)

# ----------------------------------------------------------------------------------------------
# instance_norm with the input's statistics: group_norm with one group per channel, plus torch's
# running-statistics update (functional, as batch_norm's); its backward is group_norm_backward
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op("cnngpu::instance_norm", mutates_args=())
def instance_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                  running_var: Optional[Tensor], momentum: float, eps: float, backend: str
                  ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, rstd, new_running_mean, new_running_var): x (N, C, *) normalized per (n, c);
    mean/rstd (N, C); the new running stats (torch's: the per-instance mean and unbiased variance
    averaged over N; unchanged for N = 0) are (0,) unless running stats are given."""
    _check_instance(x)
    C = int(x.shape[1])
    y, mean, rstd = group_norm(x, C, weight, bias, eps, backend)
    rm, rv = absent(x), absent(x)
    if running_mean is not None and running_var is not None:
        rm, rv = running_mean.clone(), running_var.clone()
    if running_mean is not None and running_var is not None and x.shape[0] > 0:
        dims = tuple(range(2, x.dim()))
        xf = x.detach().float() if x.dtype in (torch.float16, torch.bfloat16) else x.detach()
        rm = running_mean * (1 - momentum) + momentum * xf.mean(dims).mean(0).to(running_mean.dtype)
        rv = running_var * (1 - momentum) + momentum * xf.var(dims, unbiased=True).mean(0).to(running_var.dtype)
    return no_alias((y, mean, rstd, rm, rv), x, weight, bias, running_mean, running_var)


def _check_instance(x: Tensor) -> None:
    if x.dim() < 3:
        raise ValueError(f"instance_norm takes input (N, C, *) with spatial dims, got shape {tuple(x.shape)}")


@instance_norm.register_fake
def _(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
      running_var: Optional[Tensor], momentum: float, eps: float, backend: str
      ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    _check_instance(x)
    N, C, sdt = x.shape[0], x.shape[1], stats_dtype(x)
    update = running_mean is not None and running_var is not None
    return (empty(x, x.shape, memory_format(x)), empty(x, (N, C), dtype=sdt), empty(x, (N, C), dtype=sdt),
            torch.empty_like(running_mean) if update else absent(x),  # type: ignore[arg-type]
            torch.empty_like(running_var) if update else absent(x))  # type: ignore[arg-type]


def _in_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias, _rm, _rv, _momentum, _eps, backend = inputs
    ctx.save_for_backward(x, weight, output[1], output[2])
    ctx.backend, ctx.has_bias = backend, bias is not None


def _in_bwd(ctx: Any, dy: Tensor, *_unused: Any) -> Any:
    x, weight, mean, rstd = ctx.saved_tensors
    n = ctx.needs_input_grad
    om = [n[0], weight is not None and n[1], ctx.has_bias and n[2]]
    dx, dw, db = group_norm_backward(dy, x, x.shape[1], weight, mean, rstd, om, ctx.backend)
    return (or_none(dx, om[0]), or_none(dw, om[1]), or_none(db, om[2])) + (None,) * 5


instance_norm.register_autograd(_in_bwd, setup_context=_in_setup)

for _op in (batch_norm, batch_norm_backward, layer_norm, layer_norm_backward, group_norm, group_norm_backward,
            instance_norm):
    register_loop_vmap(_op)
