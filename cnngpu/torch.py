"""torch interop: our kernels as ``torch.autograd.Function``s and ``torch.nn.Module``s.

    import cnngpu.torch as ct
    net = torch.nn.Sequential(ct.Conv2d(1, 6, 5, padding=2), ct.BatchNorm2d(6, relu=True),
                              ct.MaxPool2d(2), ...)          # parameters are torch nn.Parameters
    loss = torch.nn.functional.cross_entropy(net(x), y); loss.backward(); opt.step()

Which backend runs (``backend=None``):
- CUDA tensors: the triton backend directly on the tensors (else cupy, when triton is missing);
- CPU tensors: the numpy backend, zero-copy through ``Tensor.numpy()`` (float16/32/64; so
  ``torch.autograd.gradcheck`` in float64 works on any machine).
``backend='cupy'`` on CUDA tensors goes through DLPack (zero-copy both ways); ``backend='triton'``
on CPU tensors runs Triton's interpreter (``TRITON_INTERPRET=1``, a verification tool);
``backend='numpy'`` on CUDA tensors copies to the host and back.

Every wrapper computes forward and backward with ``cnngpu.functional`` (argument validation
included); double backward is not supported. BatchNorm running statistics are module buffers,
updated in place by the kernels (copied back on the numpy-on-CUDA path). The modules subclass
torch's (``Conv2d`` is an ``nn.Conv2d``, ``BatchNorm2d`` an ``nn.BatchNorm2d``, ...), so parameter
names, buffers, initialisation and ``isinstance`` checks are torch's; ``convert(model)`` swaps a
torch.nn model's supported modules for these in place and reports what it swapped and left.
While ``torch.compile`` traces, conv2d and batch_norm run as ``torch.library`` custom ops
(``cnngpu::conv2d``, ``cnngpu::batch_norm`` and their backward ops).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import backends as _backends
from . import functional as F
from ._typing import IntOrPair, Padding
from .geometry import pair

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm", "group_norm", "instance_norm",
           "linear", "relu", "cross_entropy", "Linear", "ReLU", "CrossEntropyLoss", "InstanceNorm2d",
           "Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "LayerNorm", "GroupNorm", "pick_backend",
           "convert", "ConvertReport"]


# ----------------------------------------------------------------------------------------------
# backend choice and tensor <-> native array
# ----------------------------------------------------------------------------------------------
def pick_backend(x: torch.Tensor, backend: Optional[str] = None) -> str:
    """The backend that runs an op on tensor ``x`` (see the module docstring); checks it can."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__module__}.{type(x).__name__}")
    if backend is None:
        if x.device.type == "cpu":
            return "numpy"
        if x.device.type != "cuda":
            raise ValueError(f"cnngpu.torch runs on CPU or CUDA tensors, got device {x.device}")
        for name in ("triton", "cupy"):
            if _backends.is_available(name):
                return name
        raise _backends.BackendUnavailableError(
            f"CUDA tensor given but neither GPU backend can run: triton: {_backends._why_unavailable('triton')}; "
            f"cupy: {_backends._why_unavailable('cupy')}")
    be = _backends.get_backend(backend)  # ValueError (unknown) / BackendUnavailableError (why)
    if backend == "cupy" and x.device.type != "cuda":
        raise ValueError(f"backend 'cupy' needs CUDA tensors, got a tensor on {x.device}")
    if backend == "triton":
        dev = be.device()
        if x.device.type != dev.type:
            raise ValueError(f"backend 'triton' runs on {dev.type} tensors here, got a tensor on {x.device}")
    if backend == "numpy" and x.dtype == torch.bfloat16:
        raise TypeError(f"input has dtype bfloat16 (shape {tuple(x.shape)}), but backend 'numpy' has no bfloat16; "
                        f"use float16/float32/float64 or a GPU backend")
    return backend


def _native(t: Optional[torch.Tensor], backend: str, name: str = "a tensor argument") -> Any:
    """torch tensor -> the backend's array (zero-copy except numpy-backend on CUDA tensors)."""
    if t is None:
        return None
    t = t.detach()
    if backend == "triton":
        return t
    if backend == "cupy":
        from .backends.cupy_backend._cupy import cupy
        return cupy.from_dlpack(t)
    if t.dtype == torch.bfloat16:
        raise TypeError(f"{name} has dtype bfloat16 (shape {tuple(t.shape)}), but backend 'numpy' has no "
                        f"bfloat16; use float16/float32/float64 or a GPU backend")
    return t.cpu().numpy()


def _tensor(a: Any, backend: str, device: torch.device) -> Optional[torch.Tensor]:
    """Backend array -> torch tensor on ``device`` (zero-copy where the device allows)."""
    if a is None:
        return None
    if backend == "triton":
        return a
    if backend == "cupy":
        return torch.from_dlpack(a)
    a = np.asarray(a)
    if not a.flags.writeable or any(s < 0 for s in a.strides):
        a = np.array(a)  # torch.from_numpy needs a writable, non-negative-stride array
    return torch.from_numpy(a).to(device)


def _write_back(buf: Optional[torch.Tensor], native: Any, backend: str) -> None:
    """After a kernel updated ``native`` in place: make sure ``buf`` sees it (numpy on CUDA copies)."""
    if buf is not None and backend == "numpy" and buf.device.type != "cpu":
        buf.copy_(torch.from_numpy(np.asarray(native)))


def _affine_weight(weight: Optional[torch.Tensor], bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The norms' weight as the kernels see it: ones when only a bias is given, so the backward
    computes the bias gradient (the kernels return dweight/dbias only when weight is given)."""
    if weight is None and bias is not None:
        return torch.ones_like(bias.detach())
    return weight


def _keep_format(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` in ``x``'s memory format: channels_last in, channels_last out (as torch)."""
    if (x.dim() == 4 and y.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)):
        return y.contiguous(memory_format=torch.channels_last)
    return y


def _grad(dy: torch.Tensor, backend: str) -> Any:
    return _native(dy.contiguous(), backend)


# ----------------------------------------------------------------------------------------------
# autograd Functions (forward + backward on our kernels)
# ----------------------------------------------------------------------------------------------
class _Conv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any,
                algo: Any, precision: Any, backend: Any) -> Any:
        ctx.conf = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, backend=backend)
        ctx.precision, ctx.has_bias = precision, bias is not None
        ctx.save_for_backward(x, weight)
        y = F.conv2d(_native(x, backend, "input"), _native(weight, backend), _native(bias, backend), algo=algo,
                     precision=precision, **ctx.conf)
        return _tensor(y, backend, x.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any) -> Any:
        x, weight = ctx.saved_tensors
        be = ctx.conf["backend"]
        need = ctx.needs_input_grad
        dx, dw, db = F.conv2d_backward(_grad(dy, be), _native(x, be), _native(weight, be), need_dx=need[0],
                                       need_dw=need[1], need_db=ctx.has_bias and need[2], precision=ctx.precision,
                                       **ctx.conf)
        return (_tensor(dx, be, x.device) if need[0] else None, _tensor(dw, be, x.device) if need[1] else None,
                _tensor(db, be, x.device) if ctx.has_bias and need[2] else None) + (None,) * 7


class _MaxPool2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any,
                backend: Any) -> Any:
        ctx.conf = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.backend, ctx.x_shape = backend, tuple(x.shape)
        k, s, p, d, c = ctx.conf
        y, argmax = F.max_pool2d(_native(x, backend, "input"), k, s, p, d, c, True, backend=backend)
        argmax = _tensor(argmax, backend, x.device)
        ctx.save_for_backward(argmax)
        ctx.mark_non_differentiable(argmax)
        return _tensor(y, backend, x.device), argmax

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any, _dargmax: Any) -> Any:
        (argmax,) = ctx.saved_tensors
        be = ctx.backend
        dx = F.max_pool2d_backward(_grad(dy, be), _native(argmax, be), ctx.x_shape, *ctx.conf, backend=be)
        return (_tensor(dx, be, dy.device),) + (None,) * 6


class _AvgPool2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any, count_include_pad: Any,
                divisor_override: Any, backend: Any) -> Any:
        ctx.conf = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        ctx.backend, ctx.x_shape = backend, tuple(x.shape)
        y = F.avg_pool2d(_native(x, backend, "input"), *ctx.conf, backend=backend)
        return _tensor(y, backend, x.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any) -> Any:
        be = ctx.backend
        dx = F.avg_pool2d_backward(_grad(dy, be), ctx.x_shape, *ctx.conf, backend=be)
        return (_tensor(dx, be, dy.device),) + (None,) * 7


class _BatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, training: Any,
                momentum: Any, eps: Any, relu: Any, backend: Any) -> Any:
        weight = _affine_weight(weight, bias)
        rm, rv = _native(running_mean, backend), _native(running_var, backend)
        y, mean, invstd = F.batch_norm(_native(x, backend, "input"), rm, rv, _native(weight, backend), _native(bias, backend),
                                       training, momentum, eps, relu=relu, return_stats=True, backend=backend)
        if training:
            _write_back(running_mean, rm, backend)
            _write_back(running_var, rv, backend)
        y = _tensor(y, backend, x.device)
        assert y is not None
        # The output is NOT saved: inplace ops after it (ReLU(inplace=True), ``out += identity``) must
        # not invalidate the backward. With the fused ReLU only its pass mask is kept, as bool
        # (``not y <= 0``: NaN passes dy, as torch's relu backward).
        mask = torch.logical_not(y.le(0)) if relu else None
        ctx.save_for_backward(x, mask, weight, _tensor(mean, backend, x.device), _tensor(invstd, backend, x.device))
        ctx.training, ctx.relu, ctx.backend, ctx.has_bias = training, relu, backend, bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any) -> Any:
        x, mask, weight, mean, invstd = ctx.saved_tensors
        be = ctx.backend
        # The kernels read the ReLU mask from the sign of y: 1/0 in x's dtype stands in for y
        # (without ReLU y is not read, x fills the slot).
        y = mask.to(x.dtype) if ctx.relu else x
        dx, dw, db = F.batch_norm_backward(_grad(dy, be), _native(x, be), _native(y, be), _native(weight, be),
                                           _native(mean, be), _native(invstd, be), training=ctx.training,
                                           relu=ctx.relu, backend=be)
        dev, need = x.device, ctx.needs_input_grad
        return (_tensor(dx, be, dev), _tensor(dw, be, dev) if need[1] else None,
                _tensor(db, be, dev) if ctx.has_bias and need[2] else None) + (None,) * 7


class _LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, normalized_shape: Any, weight: Any, bias: Any, eps: Any, backend: Any) -> Any:
        weight = _affine_weight(weight, bias)
        y, mean, rstd = F.layer_norm(_native(x, backend, "input"), normalized_shape, _native(weight, backend),
                                     _native(bias, backend), eps, return_stats=True, backend=backend)
        dev = x.device
        ctx.save_for_backward(x, weight, _tensor(mean, backend, dev), _tensor(rstd, backend, dev))
        ctx.ndim, ctx.backend, ctx.has_bias = len(normalized_shape), backend, bias is not None
        return _tensor(y, backend, dev)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any) -> Any:
        x, weight, mean, rstd = ctx.saved_tensors
        be, dev = ctx.backend, x.device
        dx, dw, db = F.layer_norm_backward(_grad(dy, be), _native(x, be), _native(weight, be), _native(mean, be),
                                           _native(rstd, be), ctx.ndim, backend=be)
        need = ctx.needs_input_grad
        return (_tensor(dx, be, dev), None, _tensor(dw, be, dev) if need[2] else None,
                _tensor(db, be, dev) if ctx.has_bias and need[3] else None, None, None)


class _GroupNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, num_groups: Any, weight: Any, bias: Any, eps: Any, backend: Any) -> Any:
        weight = _affine_weight(weight, bias)
        y, mean, rstd = F.group_norm(_native(x, backend, "input"), num_groups, _native(weight, backend),
                                     _native(bias, backend), eps, return_stats=True, backend=backend)
        dev = x.device
        ctx.save_for_backward(x, weight, _tensor(mean, backend, dev), _tensor(rstd, backend, dev))
        ctx.num_groups, ctx.backend, ctx.has_bias = num_groups, backend, bias is not None
        return _tensor(y, backend, dev)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any) -> Any:
        x, weight, mean, rstd = ctx.saved_tensors
        be, dev = ctx.backend, x.device
        dx, dw, db = F.group_norm_backward(_grad(dy, be), _native(x, be), ctx.num_groups, _native(weight, be),
                                           _native(mean, be), _native(rstd, be), backend=be)
        need = ctx.needs_input_grad
        return (_tensor(dx, be, dev), None, _tensor(dw, be, dev) if need[2] else None,
                _tensor(db, be, dev) if ctx.has_bias and need[3] else None, None, None)


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, backend: Any) -> Any:
        y = F.linear(_native(x, backend, "input"), _native(weight, backend), _native(bias, backend), backend=backend)
        ctx.save_for_backward(x, weight)
        ctx.backend, ctx.has_bias = backend, bias is not None
        return _tensor(y, backend, x.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any) -> Any:
        x, weight = ctx.saved_tensors
        be, dev, need = ctx.backend, x.device, ctx.needs_input_grad
        dx, dw, db = F.linear_backward(_grad(dy, be), _native(x, be), _native(weight, be),
                                       need_db=ctx.has_bias and need[2], backend=be)
        return (_tensor(dx, be, dev) if need[0] else None, _tensor(dw, be, dev) if need[1] else None,
                _tensor(db, be, dev) if ctx.has_bias and need[2] else None, None)


class _ReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, inplace: Any, backend: Any) -> Any:
        y = _tensor(F.relu(_native(x, backend, "input"), backend=backend), backend, x.device)
        assert y is not None
        if inplace:                     # torch's relu_: the result is written into x
            x.copy_(y)
            ctx.mark_dirty(x)
            y = x
        ctx.save_for_backward(y)        # as torch's relu: the output gives the mask
        ctx.backend = backend
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any) -> Any:
        (y,) = ctx.saved_tensors
        be = ctx.backend
        return _tensor(F.relu_backward(_grad(dy, be), _native(y.contiguous(), be), backend=be), be, y.device), None, None


class _CrossEntropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, target: Any, weight: Any, ignore_index: Any, reduction: Any, label_smoothing: Any,
                backend: Any) -> Any:
        nt, nw = _native(target, backend, "target"), _native(weight, backend)
        loss, probs = F.cross_entropy(_native(x, backend, "input"), nt, nw, None, ignore_index, None, reduction,
                                      label_smoothing, return_probs=True, backend=backend)
        probs_t = _tensor(probs, backend, x.device)
        ctx.save_for_backward(probs_t, target, weight)
        ctx.conf = (ignore_index, reduction, label_smoothing)
        ctx.backend = backend
        if backend == "numpy" or not isinstance(loss, torch.Tensor):
            loss = torch.as_tensor(np.asarray(loss) if backend != "cupy" else loss.get(), device=x.device)
        loss = loss.to(x.dtype)
        return loss if reduction == "none" else loss.reshape(())

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dloss: Any) -> Any:
        probs, target, weight = ctx.saved_tensors
        ignore_index, reduction, label_smoothing = ctx.conf
        be = ctx.backend
        dl = _grad(dloss, be) if reduction == "none" else float(dloss)
        dx = F.cross_entropy_backward(_native(probs, be), _native(target, be), dl, _native(weight, be), ignore_index,
                                      reduction, label_smoothing, backend=be)
        return (_tensor(dx, be, probs.device),) + (None,) * 6


# ----------------------------------------------------------------------------------------------
# torch.library custom ops (used while torch.compile traces; eager calls use the Functions above)
# ----------------------------------------------------------------------------------------------
# conv2d and batch_norm are registered as opaque ops with fake (shape) functions and autograd, so
# dynamo/AOTAutograd trace them without reading the numpy/triton code (fullgraph=True works).
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


# ----------------------------------------------------------------------------------------------
# functional API on torch tensors (argument order as in torch.nn.functional)
# ----------------------------------------------------------------------------------------------
def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride: IntOrPair = 1,
           padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1, *, algo: str = "auto",
           precision: str = "ieee", backend: Optional[str] = None) -> torch.Tensor:
    """torch.nn.functional.conv2d on our kernels. x (N, C, H, W), weight (K, C/groups, R, S),
    bias (K,) -> (N, K, P, Q). padding: int, pair, 'same' or 'valid'."""
    be = pick_backend(x, backend)
    if isinstance(padding, str) and padding == "same" and pair(stride, "stride") != (1, 1):
        raise ValueError(f"padding='same' is not supported for strided convolutions (stride={stride!r}), as in "
                         f"torch; cnngpu.functional.conv2d offers it as an extension (TensorFlow's rule)")
    if _compiling():   # torch.compile: the registered op (opaque to dynamo, fake shapes, autograd)
        pad_ints, pad_str = _pad_args(padding)
        y = _conv2d_op(x, weight, bias, list(pair(stride, "stride")), pad_ints, pad_str,
                       list(pair(dilation, "dilation")), groups, algo, precision, be)
        return _keep_format(x, y)
    return _keep_format(x, _Conv2dFn.apply(x, weight, bias, stride, padding, dilation, groups, algo, precision, be))


def max_pool2d(x: torch.Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               dilation: IntOrPair = 1, ceil_mode: bool = False, return_indices: bool = False, *,
               backend: Optional[str] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Max pooling (N, C, H, W) -> (N, C, P, Q); with return_indices also the flat h*W+w argmax."""
    be = pick_backend(x, backend)
    y, argmax = _MaxPool2dFn.apply(x, kernel_size, stride, padding, dilation, ceil_mode, be)
    y, argmax = _keep_format(x, y), _keep_format(x, argmax)
    return (y, argmax) if return_indices else y


def avg_pool2d(x: torch.Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Optional[int] = None, *,
               backend: Optional[str] = None) -> torch.Tensor:
    """Average pooling (N, C, H, W) -> (N, C, P, Q) (torch semantics)."""
    be = pick_backend(x, backend)
    return _keep_format(x, _AvgPool2dFn.apply(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                              divisor_override, be))


def batch_norm(x: torch.Tensor, running_mean: Optional[torch.Tensor] = None, running_var: Optional[torch.Tensor] = None,
               weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, relu: bool = False, backend: Optional[str] = None
               ) -> torch.Tensor:
    """torch.nn.functional.batch_norm (+ fused ReLU with ``relu=True``); x (N, C, H, W) or (N, C).
    Training updates running_mean/var in place when given."""
    be = pick_backend(x, backend)
    if _compiling():   # torch.compile: the registered op (opaque to dynamo, fake shapes, autograd)
        w = _affine_weight(weight, bias)
        if w is None:
            w = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
        out = _batch_norm_op(x, w, bias, running_mean, running_var, bool(training), float(momentum), float(eps),
                             bool(relu), be)
        if training and running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.copy_(out[4])
                running_var.copy_(out[5])
        return _keep_format(x, out[0])
    return _keep_format(x, _BatchNormFn.apply(x, weight, bias, running_mean, running_var, bool(training), momentum,
                                              eps, relu, be))


def layer_norm(x: torch.Tensor, normalized_shape: Union[int, Sequence[int]], weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None, eps: float = 1e-5, *, backend: Optional[str] = None
               ) -> torch.Tensor:
    """LayerNorm over the trailing dims ``normalized_shape`` (int or tuple)."""
    be = pick_backend(x, backend)
    ns = F._normalized_shape(normalized_shape)
    return _LayerNormFn.apply(x, ns, weight, bias, eps, be)


def group_norm(x: torch.Tensor, num_groups: int, weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None, eps: float = 1e-5, *, backend: Optional[str] = None
               ) -> torch.Tensor:
    """GroupNorm: x (N, C, *) normalized over (C/num_groups, *) per sample and group."""
    be = pick_backend(x, backend)
    return _keep_format(x, _GroupNormFn.apply(x, num_groups, weight, bias, eps, be))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
           backend: Optional[str] = None) -> torch.Tensor:
    """torch.nn.functional.linear: x (*, in) @ weight.T (out, in) + bias (out,)."""
    be = pick_backend(x, backend)
    return _LinearFn.apply(x, weight, bias, be)


def relu(x: torch.Tensor, inplace: bool = False, *, backend: Optional[str] = None) -> torch.Tensor:
    """torch.nn.functional.relu (``inplace=True`` writes into x, as torch's relu_)."""
    be = pick_backend(x, backend)
    return _keep_format(x, _ReLUFn.apply(x, bool(inplace), be))


def cross_entropy(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                  size_average: Optional[bool] = None, ignore_index: int = -100, reduce: Optional[bool] = None,
                  reduction: str = "mean", label_smoothing: float = 0.0, *, backend: Optional[str] = None
                  ) -> torch.Tensor:
    """torch.nn.functional.cross_entropy (logits x (N, C), class indices or probabilities target)."""
    be = pick_backend(x, backend)
    if size_average is not None or reduce is not None:   # torch's legacy arguments
        from torch.nn import _reduction
        reduction = _reduction.legacy_get_string(size_average, reduce)
    return _CrossEntropyFn.apply(x, target, weight, ignore_index, reduction, label_smoothing, be)


def instance_norm(x: torch.Tensor, running_mean: Optional[torch.Tensor] = None,
                  running_var: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
                  bias: Optional[torch.Tensor] = None, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5, *, backend: Optional[str] = None) -> torch.Tensor:
    """torch.nn.functional.instance_norm on x (N, C, H, W): with the input's statistics it is
    group_norm with one group per channel (running stats, when given, updated as torch does:
    the per-instance mean and unbiased variance averaged over N); else the running stats (batch_norm
    in eval mode)."""
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError("instance_norm with use_input_stats=False needs running_mean and running_var")
        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps, backend=backend)
    if x.dim() != 4:
        raise ValueError(f"instance_norm takes input (N, C, H, W), got shape {tuple(x.shape)}")
    y = group_norm(x, int(x.shape[1]), weight, bias, eps, backend=backend)
    if running_mean is not None and running_var is not None and x.shape[0] > 0:
        with torch.no_grad():
            xd = x.detach()
            running_mean.mul_(1 - momentum).add_(momentum * xd.mean((2, 3)).mean(0).to(running_mean.dtype))
            running_var.mul_(1 - momentum).add_(momentum * xd.var((2, 3), unbiased=True).mean(0).to(running_var.dtype))
    return y


# ----------------------------------------------------------------------------------------------
# nn.Modules (torch's parameter names, buffers and initialisation)
# ----------------------------------------------------------------------------------------------
class Conv2d(nn.Conv2d):
    """torch.nn.Conv2d on our conv kernels: a subclass (isinstance checks, init loops, state_dict
    names and initialisation are torch's). padding_mode must be 'zeros'."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None, *, algo: str = "auto", precision: str = "ieee",
                 backend: Optional[str] = None) -> None:
        _check_padding_mode(padding_mode)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,  # type: ignore[arg-type]
                         groups, bias, padding_mode, device, dtype)  # type: ignore[arg-type]
        self.algo, self.precision, self.backend = algo, precision, backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_padding_mode(self.padding_mode)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                      algo=self.algo, precision=self.precision, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


def _check_padding_mode(padding_mode: Any) -> None:
    if padding_mode != "zeros":
        raise ValueError(f"padding_mode={padding_mode!r} is not supported by cnngpu.torch.Conv2d: only 'zeros' "
                         f"(pad the input with torch.nn.functional.pad first, or keep torch.nn.Conv2d)")


class MaxPool2d(nn.MaxPool2d):
    """torch.nn.MaxPool2d on our kernels (a subclass; stride defaults to kernel_size)."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 dilation: IntOrPair = 1, return_indices: bool = False, ceil_mode: bool = False, *,
                 backend: Optional[str] = None) -> None:
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)  # type: ignore[arg-type]
        self.backend = backend

    def forward(self, x: torch.Tensor) -> Any:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                          self.return_indices, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


class AvgPool2d(nn.AvgPool2d):
    """torch.nn.AvgPool2d on our kernels (a subclass; divisor_override included)."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Optional[int] = None, *,
                 backend: Optional[str] = None) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad,  # type: ignore[arg-type]
                         divisor_override)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                          self.divisor_override, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


class BatchNorm2d(nn.BatchNorm2d):
    """torch.nn.BatchNorm2d (a subclass, so a ``_BatchNorm``) with an optional fused ReLU (``relu=True``):
    torch's parameters, buffers (running_mean/running_var/num_batches_tracked) and momentum=None
    (cumulative average). ``nn.SyncBatchNorm.convert_sync_batchnorm`` replaces it by torch's
    SyncBatchNorm (torch's kernels): that conversion knows nothing of ``relu=True``, which it drops."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None, *, bias: bool = True, relu: bool = False,
                 backend: Optional[str] = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.relu, self.backend = relu, backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training or not self.track_running_stats
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        use_running = not batch_stats or (self.training and self.track_running_stats)
        momentum = self.momentum
        if momentum is None:                         # torch: cumulative moving average
            n = int(self.num_batches_tracked) if self.num_batches_tracked is not None else 0
            momentum = 1.0 / n if n > 0 else 0.0
        return batch_norm(x, self.running_mean if use_running else None, self.running_var if use_running else None,
                          self.weight, self.bias, batch_stats, momentum, self.eps, relu=self.relu,
                          backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, relu={self.relu}, backend={self.backend!r}"


class LayerNorm(nn.LayerNorm):
    """torch.nn.LayerNorm on our kernels (a subclass; weight=1, bias=0 initially)."""

    def __init__(self, normalized_shape: Union[int, Sequence[int]], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None, *, backend: Optional[str] = None) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


class GroupNorm(nn.GroupNorm):
    """torch.nn.GroupNorm on our kernels (a subclass; per-channel affine, weight=1, bias=0 initially)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None, *,
                 bias: bool = True, backend: Optional[str] = None) -> None:
        super().__init__(num_groups, num_channels, eps, affine, device, dtype, bias=bias)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


class Linear(nn.Linear):
    """torch.nn.Linear on our kernels (a subclass)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None, *,
                 backend: Optional[str] = None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


class ReLU(nn.ReLU):
    """torch.nn.ReLU on our kernels (a subclass; ``inplace=True`` as torch)."""

    def __init__(self, inplace: bool = False, *, backend: Optional[str] = None) -> None:
        super().__init__(inplace)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu(x, self.inplace, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss on our kernels (a subclass; weight is a buffer, as torch's)."""

    def __init__(self, weight: Optional[torch.Tensor] = None, size_average: Optional[bool] = None,
                 ignore_index: int = -100, reduce: Optional[bool] = None, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, backend: Optional[str] = None) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                             label_smoothing=self.label_smoothing, backend=self.backend)


class InstanceNorm2d(nn.InstanceNorm2d):
    """torch.nn.InstanceNorm2d on our kernels (a subclass; (N, C, H, W) or unbatched (C, H, W))."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None, *, bias: bool = True, backend: Optional[str] = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if x.dim() == 3:                                     # unbatched (C, H, W)
            return self.forward(x.unsqueeze(0)).squeeze(0)
        use_input_stats = self.training or not self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        return instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_input_stats,
                             momentum, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


# ----------------------------------------------------------------------------------------------
# convert: swap a torch.nn model's supported modules for ours, in place
# ----------------------------------------------------------------------------------------------
# torch class -> (our class, the extra attributes ours adds, with their defaults)
_SWAPS: Dict[type, Tuple[type, Dict[str, Any]]] = {
    nn.Conv2d: (Conv2d, dict(algo="auto", precision="ieee", backend=None)),
    nn.MaxPool2d: (MaxPool2d, dict(backend=None)),
    nn.AvgPool2d: (AvgPool2d, dict(backend=None)),
    nn.BatchNorm2d: (BatchNorm2d, dict(relu=False, backend=None)),
    nn.LayerNorm: (LayerNorm, dict(backend=None)),
    nn.GroupNorm: (GroupNorm, dict(backend=None)),
    nn.InstanceNorm2d: (InstanceNorm2d, dict(backend=None)),
    nn.Linear: (Linear, dict(backend=None)),
    nn.ReLU: (ReLU, dict(backend=None)),
    nn.CrossEntropyLoss: (CrossEntropyLoss, dict(backend=None)),
}


@dataclass
class ConvertReport:
    """What :func:`convert` did: ``swapped`` and ``left`` list (qualified name, torch class name[, why]);
    ``model`` is the converted model (the argument itself, unless the root module was swapped)."""

    model: nn.Module
    swapped: List[Tuple[str, str]] = field(default_factory=list)
    left: List[Tuple[str, str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"swapped {len(self.swapped)} module(s), left {len(self.left)}"]
        lines += [f"  swapped {n or '<root>'}: {t}" for n, t in self.swapped]
        lines += [f"  left    {n or '<root>'}: {t} ({why})" for n, t, why in self.left]
        return "\n".join(lines)


def _why_not(m: nn.Module) -> Optional[str]:
    """None when ``m`` (a torch module of a swappable class) can run on our kernels, else why not."""
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} (only 'zeros')"
    return None


def _swap(m: nn.Module, cls: type, extra: Dict[str, Any]) -> nn.Module:
    """A ``cls`` module sharing ``m``'s parameters and buffers (same tensor objects, so optimizers
    built on ``m`` keep working), hooks and training mode; ``m`` itself is left unchanged."""
    new: Any = object.__new__(cls)
    d = dict(m.__dict__)
    for k, v in d.items():   # fresh containers (parameter/buffer/module/hook dicts), same tensors
        if isinstance(v, (dict, set)) and k.startswith("_"):
            d[k] = type(v)(v) if not isinstance(v, OrderedDict) else OrderedDict(v)
    new.__dict__.update(d)
    for k, v in extra.items():
        setattr(new, k, v)
    return new


def convert(model: nn.Module, *, backend: Optional[str] = None) -> ConvertReport:
    """Swap ``model``'s torch.nn Conv2d, MaxPool2d, AvgPool2d, BatchNorm2d, LayerNorm, GroupNorm,
    InstanceNorm2d, Linear, ReLU and CrossEntropyLoss (exact classes, not subclasses) for cnngpu.torch's, in place, keeping parameters, buffers,
    hooks and training mode (the same tensors: an optimizer built before still applies). Returns
    a :class:`ConvertReport` of what was swapped and which leaf modules were left (and why).
    ``backend`` is set on every swapped module."""
    report = ConvertReport(model)

    def visit(parent: Optional[nn.Module], name: str, qual: str, m: nn.Module) -> None:
        kind = _SWAPS.get(type(m))
        if kind is not None:
            why = _why_not(m)
            if why is None:
                cls, extra = kind
                new = _swap(m, cls, dict(extra, backend=backend))
                if parent is None:
                    report.model = new
                else:
                    setattr(parent, name, new)
                report.swapped.append((qual, type(m).__name__))
                return
            report.left.append((qual, type(m).__name__, why))
            return
        children = list(m.named_children())
        if not children and type(m).__module__.split(".")[0] != "cnngpu":
            if list(m.parameters(recurse=False)) or type(m).__module__.startswith("torch.nn"):
                report.left.append((qual, type(m).__name__, "no cnngpu.torch counterpart"))
        for cname, child in children:
            visit(m, cname, f"{qual}.{cname}" if qual else cname, child)

    visit(None, "", "", model)
    return report
