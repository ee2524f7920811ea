"""autograd Functions: forward + backward of each op on our kernels (eager path)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import functional as F
from ._bridge import _affine_weight, _grad, _native, _tensor, _write_back


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

