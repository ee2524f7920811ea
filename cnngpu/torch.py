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
updated in place by the kernels (copied back on the numpy-on-CUDA path). Parameter names and
initialisation follow torch, so a torch.nn model's ``state_dict`` loads into these modules.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import backends as _backends
from . import functional as F
from ._typing import IntOrPair, Padding
from .geometry import pair

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm", "group_norm",
           "Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "LayerNorm", "GroupNorm", "pick_backend"]


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
        import cupy
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
                backend: Any) -> Any:
        ctx.conf = (kernel_size, stride, padding, ceil_mode, count_include_pad)
        ctx.backend, ctx.x_shape = backend, tuple(x.shape)
        y = F.avg_pool2d(_native(x, backend, "input"), *ctx.conf, backend=backend)
        return _tensor(y, backend, x.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any) -> Any:
        be = ctx.backend
        dx = F.avg_pool2d_backward(_grad(dy, be), ctx.x_shape, *ctx.conf, backend=be)
        return (_tensor(dx, be, dy.device),) + (None,) * 6


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
    return _Conv2dFn.apply(x, weight, bias, stride, padding, dilation, groups, algo, precision, be)


def max_pool2d(x: torch.Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               dilation: IntOrPair = 1, ceil_mode: bool = False, return_indices: bool = False, *,
               backend: Optional[str] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Max pooling (N, C, H, W) -> (N, C, P, Q); with return_indices also the flat h*W+w argmax."""
    be = pick_backend(x, backend)
    y, argmax = _MaxPool2dFn.apply(x, kernel_size, stride, padding, dilation, ceil_mode, be)
    return (y, argmax) if return_indices else y


def avg_pool2d(x: torch.Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, *, backend: Optional[str] = None
               ) -> torch.Tensor:
    """Average pooling (N, C, H, W) -> (N, C, P, Q) (torch semantics)."""
    be = pick_backend(x, backend)
    return _AvgPool2dFn.apply(x, kernel_size, stride, padding, ceil_mode, count_include_pad, be)


def batch_norm(x: torch.Tensor, running_mean: Optional[torch.Tensor] = None, running_var: Optional[torch.Tensor] = None,
               weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, relu: bool = False, backend: Optional[str] = None
               ) -> torch.Tensor:
    """torch.nn.functional.batch_norm (+ fused ReLU with ``relu=True``); x (N, C, H, W) or (N, C).
    Training updates running_mean/var in place when given."""
    be = pick_backend(x, backend)
    return _BatchNormFn.apply(x, weight, bias, running_mean, running_var, bool(training), momentum, eps, relu, be)


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
    return _GroupNormFn.apply(x, num_groups, weight, bias, eps, be)


# ----------------------------------------------------------------------------------------------
# nn.Modules (torch's parameter names, buffers and initialisation)
# ----------------------------------------------------------------------------------------------
class Conv2d(nn.Module):
    """Drop-in for torch.nn.Conv2d (zero padding) running our conv kernels; padding may be 'same'."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True, *,
                 algo: str = "auto", precision: str = "ieee", backend: Optional[str] = None,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must both be divisible "
                             f"by groups={groups}")
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, ks
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.algo, self.precision, self.backend = algo, precision, backend
        kw: Dict[str, Any] = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty((out_channels, in_channels // groups) + ks, **kw))
        self.bias = nn.Parameter(torch.empty(out_channels, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's default: kaiming_uniform_(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) bias."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                      algo=self.algo, precision=self.precision, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, backend={self.backend!r}")


class MaxPool2d(nn.Module):
    """Drop-in for torch.nn.MaxPool2d (stride defaults to kernel_size)."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 dilation: IntOrPair = 1, return_indices: bool = False, ceil_mode: bool = False, *,
                 backend: Optional[str] = None) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.return_indices, self.ceil_mode, self.backend = return_indices, ceil_mode, backend

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                          self.return_indices, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}, backend={self.backend!r}")


class AvgPool2d(nn.Module):
    """Drop-in for torch.nn.AvgPool2d (no divisor_override)."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True, *, backend: Optional[str] = None) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad, self.backend = ceil_mode, count_include_pad, backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                          backend=self.backend)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}, backend={self.backend!r}")


class BatchNorm2d(nn.Module):
    """torch.nn.BatchNorm2d with an optional fused ReLU (``relu=True``): weight/bias parameters,
    running_mean/running_var/num_batches_tracked buffers (torch's names, so state_dicts load).
    momentum must be a number (torch's cumulative-average ``momentum=None`` is not supported)."""

    running_mean: Optional[torch.Tensor]
    running_var: Optional[torch.Tensor]
    num_batches_tracked: Optional[torch.Tensor]

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, relu: bool = False, backend: Optional[str] = None,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats, self.relu, self.backend = affine, track_running_stats, relu, backend
        kw: Dict[str, Any] = dict(device=device, dtype=dtype)
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **kw))
            self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **kw))
            self.register_buffer("running_var", torch.ones(num_features, **kw))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

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
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}, relu={self.relu}, backend={self.backend!r}")


class LayerNorm(nn.Module):
    """Drop-in for torch.nn.LayerNorm (weight=1, bias=0 initially)."""

    def __init__(self, normalized_shape: Union[int, Sequence[int]], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, backend: Optional[str] = None, device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine, self.backend = ns, eps, elementwise_affine, backend
        kw: Dict[str, Any] = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(ns, **kw)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(ns, **kw)) if elementwise_affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"backend={self.backend!r}")


class GroupNorm(nn.Module):
    """Drop-in for torch.nn.GroupNorm (per-channel affine, weight=1, bias=0 initially)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 backend: Optional[str] = None, device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide num_channels={num_channels}")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.backend = backend
        kw: Dict[str, Any] = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(num_channels, **kw)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels, **kw)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, backend={self.backend!r}"
