"""Conv2d, MaxPool2d, AvgPool2d, ReLU, Linear, Flatten: thin stateful wrappers over
``cnngpu.functional`` (forward caches, backward returns dx and accumulates parameter grads)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .. import functional as F
from ..geometry import pair
from .module import Module, Parameter, kaiming_uniform, positive_int
from .._typing import Array, IntOrPair, Padding


def _positive_pair(value: Any, name: str) -> Tuple[int, int]:
    p = pair(value, name)
    if p[0] < 1 or p[1] < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return p


def _padding_arg(padding: Padding) -> Padding:
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        return padding
    p = pair(padding, "padding")
    if p[0] < 0 or p[1] < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return p


class Conv2d(Module):
    """2-D convolution layer. x (N, C_in, H, W) -> y (N, C_out, P, Q).

    weight (C_out, C_in/groups, R, S) and bias (C_out,) are initialised like torch's defaults
    (uniform in +-1/sqrt(C_in/groups*R*S)) from ``numpy.random.default_rng(seed)``.
    padding: int, pair, 'same' or 'valid'. algo/precision are passed to ``functional.conv2d`` and
    ``functional.conv2d_backward`` (as cnngpu.torch does).
    """

    weight: Parameter
    bias: Optional[Parameter]

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True, algo: str = "auto",
                 precision: str = "ieee", backend: Optional[str] = None, dtype: str = "float32",
                 seed: Optional[int] = None) -> None:
        super().__init__(backend, dtype)
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.groups = positive_int(groups, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must both be "
                             f"divisible by groups={groups}")
        self.kernel_size = _positive_pair(kernel_size, "kernel_size")
        self.stride = _positive_pair(stride, "stride")
        self.dilation = _positive_pair(dilation, "dilation")
        self.padding = _padding_arg(padding)
        F._check_conv_opts(algo, precision)
        self.algo, self.precision = algo, precision
        gen = np.random.default_rng(seed)
        R, S = self.kernel_size
        fan_in = self.in_channels // self.groups * R * S
        self._add_param("weight", kaiming_uniform(gen, (self.out_channels, self.in_channels // self.groups, R, S), fan_in))
        self.bias = self._add_param("bias", kaiming_uniform(gen, (self.out_channels,), fan_in)) if bias else None
        self._x: Optional[Array] = None

    def _kw(self) -> Dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    backend=self.backend)

    def forward(self, x: Array) -> Array:
        self._x = x
        with self.weight.versioned() as w:          # re-laid weights cached per Parameter.version
            return F.conv2d(x, w, None if self.bias is None else self.bias.data, algo=self.algo,
                            precision=self.precision, **self._kw())

    def backward(self, dy: Array) -> Array:
        if self._x is None:
            raise RuntimeError("Conv2d.backward called before forward")
        with self.weight.versioned() as w:
            dx, dw, db = F.conv2d_backward(dy, self._x, w, need_db=self.bias is not None,
                                           algo=self.algo, precision=self.precision, **self._kw())
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        g = F.conv2d_geometry(tuple(input_shape), self.weight.shape, self.stride, self.padding, self.dilation,
                              self.groups)
        return (g.N, g.K, g.P, g.Q)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}")
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + f", backend={self.backend!r}, dtype={self.dtype!r}"


class _Pool2d(Module):
    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair], padding: IntOrPair, dilation: IntOrPair,
                 ceil_mode: bool, backend: Optional[str]) -> None:
        super().__init__(backend)
        self.kernel_size = _positive_pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _positive_pair(stride, "stride")
        self.dilation = _positive_pair(dilation, "dilation")
        self.padding = pair(padding, "padding")
        if min(self.padding) < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        k = self.kernel_size
        if self.padding[0] > k[0] // 2 or self.padding[1] > k[1] // 2:
            raise ValueError(f"padding {self.padding} must be at most half the kernel_size {k}")
        self.ceil_mode = bool(ceil_mode)
        self._x_shape: Optional[Tuple[int, ...]] = None

    def _geom_args(self) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
        return (self.kernel_size, self.stride, self.padding)

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        g = F.pool2d_geometry(tuple(input_shape), self.kernel_size, self.stride, self.padding, self.dilation,
                              self.ceil_mode)
        return (g.N, g.C, g.P, g.Q)

    def extra_repr(self) -> str:
        s = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.ceil_mode:
            s += ", ceil_mode=True"
        return s


class MaxPool2d(_Pool2d):
    """Max pooling (PyTorch semantics; stride defaults to kernel_size). Caches the argmax."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 dilation: IntOrPair = 1, ceil_mode: bool = False, backend: Optional[str] = None) -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode, backend)
        self._argmax: Optional[Array] = None

    def forward(self, x: Array) -> Array:
        y, self._argmax = F.max_pool2d(x, *self._geom_args(), dilation=self.dilation, ceil_mode=self.ceil_mode,
                                       return_indices=True, backend=self.backend)
        self._x_shape = tuple(int(s) for s in x.shape)
        return y

    def backward(self, dy: Array) -> Array:
        if self._argmax is None or self._x_shape is None:
            raise RuntimeError("MaxPool2d.backward called before forward")
        return F.max_pool2d_backward(dy, self._argmax, self._x_shape, *self._geom_args(), dilation=self.dilation,
                                     ceil_mode=self.ceil_mode, backend=self.backend)


class AvgPool2d(_Pool2d):
    """Average pooling (PyTorch semantics; stride defaults to kernel_size)."""

    def __init__(self, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True, backend: Optional[str] = None) -> None:
        super().__init__(kernel_size, stride, padding, 1, ceil_mode, backend)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: Array) -> Array:
        self._x_shape = tuple(int(s) for s in x.shape)
        return F.avg_pool2d(x, *self._geom_args(), ceil_mode=self.ceil_mode,
                            count_include_pad=self.count_include_pad, backend=self.backend)

    def backward(self, dy: Array) -> Array:
        if self._x_shape is None:
            raise RuntimeError("AvgPool2d.backward called before forward")
        return F.avg_pool2d_backward(dy, self._x_shape, *self._geom_args(), ceil_mode=self.ceil_mode,
                                     count_include_pad=self.count_include_pad, backend=self.backend)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.count_include_pad else s + ", count_include_pad=False"


class ReLU(Module):
    """max(x, 0); caches its output (the gradient mask)."""

    def __init__(self, backend: Optional[str] = None) -> None:
        super().__init__(backend)
        self._y: Optional[Array] = None

    def forward(self, x: Array) -> Array:
        self._y = F.relu(x, backend=self.backend)
        return self._y

    def backward(self, dy: Array) -> Array:
        if self._y is None:
            raise RuntimeError("ReLU.backward called before forward")
        return F.relu_backward(dy, self._y, backend=self.backend)


class Linear(Module):
    """y = x @ weight.T + bias. x (M, in_features) -> (M, out_features); torch's default init."""

    weight: Parameter
    bias: Optional[Parameter]

    def __init__(self, in_features: int, out_features: int, bias: bool = True, backend: Optional[str] = None,
                 dtype: str = "float32", seed: Optional[int] = None) -> None:
        super().__init__(backend, dtype)
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        gen = np.random.default_rng(seed)
        self._add_param("weight", kaiming_uniform(gen, (self.out_features, self.in_features), self.in_features))
        self.bias = self._add_param("bias", kaiming_uniform(gen, (self.out_features,), self.in_features)) if bias else None
        self._x: Optional[Array] = None

    def forward(self, x: Array) -> Array:
        self._x = x
        return F.linear(x, self.weight.data, None if self.bias is None else self.bias.data, backend=self.backend)

    def backward(self, dy: Array) -> Array:
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward")
        dx, dw, db = F.linear_backward(dy, self._x, self.weight.data, need_db=self.bias is not None,
                                       backend=self.backend)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        if len(input_shape) != 2 or int(input_shape[1]) != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) needs input shape "
                             f"(M, {self.in_features}), got {tuple(input_shape)}")
        return (int(input_shape[0]), self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"backend={self.backend!r}, dtype={self.dtype!r}")


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...); backward reshapes dy back."""

    def __init__(self, backend: Optional[str] = None) -> None:
        super().__init__(backend)
        self._x_shape: Optional[Tuple[int, ...]] = None

    def forward(self, x: Array) -> Array:
        if getattr(x, "ndim", 0) < 2:
            raise ValueError(f"Flatten needs x with at least 2 dims (N, ...) (torch flattens from dim 1), got "
                             f"shape {tuple(int(s) for s in getattr(x, 'shape', ()))}")
        self._x_shape = tuple(int(s) for s in x.shape)
        return x.reshape(self._x_shape[0], -1)

    def backward(self, dy: Array) -> Array:
        if self._x_shape is None:
            raise RuntimeError("Flatten.backward called before forward")
        return dy.reshape(self._x_shape)

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        n = 1
        for s in input_shape[1:]:
            n *= int(s)
        return (int(input_shape[0]), n)
