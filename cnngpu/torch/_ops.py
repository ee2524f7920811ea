"""torch.library custom ops (used while torch.compile traces; eager calls use the autograd Functions).

conv2d and batch_norm are registered as opaque ops with fake (shape) functions and autograd, so
dynamo/AOTAutograd trace them without reading the numpy/triton code (fullgraph=True works).
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch

from .. import functional as F
from .._typing import Padding
from ..geometry import pair
from ._bridge import _grad, _native, _tensor, _write_back


def _pad_args(padding: Padding) -> Tuple[List[int], str]:
    if isinstance(padding, str):
        return [], padding
    return list(pair(padding, "padding")), ""


def _pad_value(pad_ints: List[int], pad_str: str) -> Padding:
    return pad_str if pad_str else (pad_ints[0], pad_ints[1])


@torch.library.custom_op("cnngpu::conv2d", mutates_args=())
def _conv2d_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: List[int],
               pad_ints: List[int], pad_str: str, dilation: List[int], groups: int, algo: str, precision: str,
               backend: str) -> torch.Tensor:
    y = F.conv2d(_native(x, backend, "input"), _native(weight, backend), _native(bias, backend), tuple(stride),
                 _pad_value(pad_ints, pad_str), tuple(dilation), groups, algo=algo, precision=precision,
                 backend=backend)
    out = _tensor(y, backend, x.device)
    assert out is not None
    return out


@_conv2d_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: List[int], pad_ints: List[int],
      pad_str: str, dilation: List[int], groups: int, algo: str, precision: str, backend: str) -> torch.Tensor:
    g = F.conv2d_geometry(tuple(x.shape), tuple(weight.shape), tuple(stride), _pad_value(pad_ints, pad_str),
                          tuple(dilation), groups)
    return x.new_empty((g.N, g.K, g.P, g.Q))


@torch.library.custom_op("cnngpu::conv2d_backward", mutates_args=())
def _conv2d_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: List[int],
                        pad_ints: List[int], pad_str: str, dilation: List[int], groups: int, precision: str,
                        backend: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, db = F.conv2d_backward(_grad(dy, backend), _native(x, backend), _native(weight, backend), tuple(stride),
                                   _pad_value(pad_ints, pad_str), tuple(dilation), groups, need_dx=True,
                                   need_dw=True, need_db=True, precision=precision, backend=backend)
    dev = x.device
    return _tensor(dx, backend, dev), _tensor(dw, backend, dev), _tensor(db, backend, dev)  # type: ignore[return-value]


@_conv2d_backward_op.register_fake
def _(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: List[int], pad_ints: List[int], pad_str: str,
      dilation: List[int], groups: int, precision: str, backend: str
      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(weight), weight.new_empty((weight.shape[0],))


def _conv2d_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias, stride, pad_ints, pad_str, dilation, groups, _algo, precision, backend = inputs
    ctx.save_for_backward(x, weight)
    ctx.conf = (stride, pad_ints, pad_str, dilation, groups, precision, backend)
    ctx.has_bias = bias is not None


def _conv2d_bwd(ctx: Any, dy: torch.Tensor) -> Any:
    x, weight = ctx.saved_tensors
    dx, dw, db = _conv2d_backward_op(dy, x, weight, *ctx.conf)
    return (dx, dw, db if ctx.has_bias else None) + (None,) * 8


_conv2d_op.register_autograd(_conv2d_bwd, setup_context=_conv2d_setup)


# Functional (autograd needs it): the running statistics come back as new tensors (empty when not
# given), which the caller copies into its buffers.
@torch.library.custom_op("cnngpu::batch_norm", mutates_args=())
def _batch_norm_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor], training: bool,
                   momentum: float, eps: float, relu: bool, backend: str
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    running_mean = None if running_mean is None else running_mean.clone()
    running_var = None if running_var is None else running_var.clone()
    rm, rv = _native(running_mean, backend), _native(running_var, backend)
    y, mean, invstd = F.batch_norm(_native(x, backend, "input"), rm, rv, _native(weight, backend),
                                   _native(bias, backend), training, momentum, eps, relu=relu, return_stats=True,
                                   backend=backend)
    if training:
        _write_back(running_mean, rm, backend)
        _write_back(running_var, rv, backend)
    dev = x.device
    yt = _tensor(y, backend, dev)
    assert yt is not None
    mask = torch.logical_not(yt.le(0)) if relu else torch.empty(0, dtype=torch.bool, device=dev)
    return (yt, _tensor(mean, backend, dev), _tensor(invstd, backend, dev), mask,  # type: ignore[return-value]
            x.new_empty((0,)) if running_mean is None else running_mean,
            x.new_empty((0,)) if running_var is None else running_var)


@_batch_norm_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], running_mean: Optional[torch.Tensor],
      running_var: Optional[torch.Tensor], training: bool, momentum: float, eps: float, relu: bool, backend: str
      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    C = x.shape[1]
    sdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    mask = torch.empty(x.shape if relu else (0,), dtype=torch.bool, device=x.device)
    rm = x.new_empty((0,)) if running_mean is None else torch.empty_like(running_mean)
    rv = x.new_empty((0,)) if running_var is None else torch.empty_like(running_var)
    return torch.empty_like(x), x.new_empty((C,), dtype=sdt), x.new_empty((C,), dtype=sdt), mask, rm, rv


@torch.library.custom_op("cnngpu::batch_norm_backward", mutates_args=())
def _batch_norm_backward_op(dy: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                            mean: torch.Tensor, invstd: torch.Tensor, training: bool, relu: bool, backend: str
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y = mask.to(x.dtype) if relu else x
    dx, dw, db = F.batch_norm_backward(_grad(dy, backend), _native(x, backend), _native(y, backend),
                                       _native(weight, backend), _native(mean, backend), _native(invstd, backend),
                                       training=training, relu=relu, backend=backend)
    dev = x.device
    return _tensor(dx, backend, dev), _tensor(dw, backend, dev), _tensor(db, backend, dev)  # type: ignore[return-value]


@_batch_norm_backward_op.register_fake
def _(dy: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
      invstd: torch.Tensor, training: bool, relu: bool, backend: str
      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(weight)


def _batch_norm_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias, _rm, _rv, training, _momentum, _eps, relu, backend = inputs
    _y, mean, invstd, mask, _rm_new, _rv_new = output
    ctx.save_for_backward(x, mask, weight, mean, invstd)   # not y: inplace ops after BN stay valid
    ctx.conf = (training, relu, backend)
    ctx.has_bias = bias is not None


def _batch_norm_bwd(ctx: Any, dy: torch.Tensor, *_unused: Any) -> Any:
    x, mask, weight, mean, invstd = ctx.saved_tensors
    dx, dw, db = _batch_norm_backward_op(dy, x, mask, weight, mean, invstd, *ctx.conf)
    return (dx, dw, db if ctx.has_bias else None) + (None,) * 7


_batch_norm_op.register_autograd(_batch_norm_bwd, setup_context=_batch_norm_setup)


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())

