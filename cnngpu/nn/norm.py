"""Normalization layers: BatchNorm2d (optionally fused with ReLU), LayerNorm, GroupNorm,
InstanceNorm2d. Affine parameters start at weight=1, bias=0 (torch's defaults); for float16 /
bfloat16 activations the parameters and statistics are float32."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .. import functional as F
from .module import Module, Parameter, param_dtype, positive_int
from .._typing import Array


class BatchNorm2d(Module):
    """BatchNorm over (N, H, W) per channel, with an optional fused ReLU (``relu=True``).

    Training mode: batch statistics (biased variance) normalize x, and when
    ``track_running_stats`` the running mean/var are updated in place with ``momentum`` (unbiased
    variance, as in torch; ``momentum=None``: the cumulative average, factor 1/num_batches_tracked,
    as in torch). Eval mode: the running statistics, or the batch statistics when
    ``track_running_stats=False``. x: (N, C, H, W) (or (N, C)).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, relu: bool = False, backend: Optional[str] = None,
                 dtype: str = "float32") -> None:
        super().__init__(backend, dtype)
        self.num_features = positive_int(num_features, "num_features")
        F._check_eps_momentum(eps, momentum)
        self.eps = float(eps)
        self.momentum: Optional[float] = None if momentum is None else float(momentum)
        self.num_batches_tracked = 0
        self.affine, self.track_running_stats, self.relu = bool(affine), bool(track_running_stats), bool(relu)
        C, pdt = self.num_features, param_dtype(self.dtype)
        self.weight: Optional[Parameter] = None
        self.bias: Optional[Parameter] = None
        if self.affine:
            self._add_param("weight", np.ones(C), pdt)
            self._add_param("bias", np.zeros(C), pdt)
        self.running_mean: Optional[Array] = None
        self.running_var: Optional[Array] = None
        if self.track_running_stats:
            self._add_buffer("running_mean", np.zeros(C), pdt)
            self._add_buffer("running_var", np.ones(C), pdt)
        self._cache: Optional[Tuple[Any, ...]] = None

    def forward(self, x: Array) -> Array:
        batch_stats = self.training or not self.track_running_stats
        track = self.track_running_stats and self.training
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        momentum = self.momentum
        if track:
            self.num_batches_tracked += 1
            if momentum is None:                     # torch: cumulative moving average
                momentum = 1.0 / self.num_batches_tracked
        y, mean, invstd = F.batch_norm(x, self.running_mean if (track or not batch_stats) else None,
                                       self.running_var if (track or not batch_stats) else None, w, b,
                                       batch_stats, 0.1 if momentum is None else momentum, self.eps, relu=self.relu, return_stats=True,
                                       backend=self.backend)
        self._cache = (x, y, mean, invstd, batch_stats)
        return y

    def backward(self, dy: Array) -> Array:
        if self._cache is None:
            raise RuntimeError("BatchNorm2d.backward called before forward")
        x, y, mean, invstd, batch_stats = self._cache
        dx, dw, db = F.batch_norm_backward(dy, x, y, None if self.weight is None else self.weight.data, mean, invstd,
                                           training=batch_stats, relu=self.relu, backend=self.backend)
        if self.weight is not None and self.bias is not None:
            self.weight.accumulate(dw)
            self.bias.accumulate(db)
        return dx

    def extra_repr(self) -> str:
        s = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
        if not self.affine:
            s += ", affine=False"
        if not self.track_running_stats:
            s += ", track_running_stats=False"
        if self.relu:
            s += ", relu=True"
        return s + f", backend={self.backend!r}, dtype={self.dtype!r}"


class LayerNorm(Module):
    """LayerNorm over the trailing ``normalized_shape`` dims of x (same mode in train and eval)."""

    def __init__(self, normalized_shape: Union[int, Sequence[int]], eps: float = 1e-5, elementwise_affine: bool = True,
                 backend: Optional[str] = None, dtype: str = "float32") -> None:
        super().__init__(backend, dtype)
        ns = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        self.normalized_shape = tuple(positive_int(s, "normalized_shape") for s in ns)
        if not self.normalized_shape:
            raise ValueError("normalized_shape must have at least one dimension")
        F._check_eps_momentum(eps)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = self.bias = None
        if self.elementwise_affine:
            pdt = param_dtype(self.dtype)
            self._add_param("weight", np.ones(self.normalized_shape), pdt)
            self._add_param("bias", np.zeros(self.normalized_shape), pdt)
        self._cache: Optional[Tuple[Any, ...]] = None

    def forward(self, x: Array) -> Array:
        y, mean, rstd = F.layer_norm(x, self.normalized_shape, None if self.weight is None else self.weight.data,
                                     None if self.bias is None else self.bias.data, self.eps, return_stats=True,
                                     backend=self.backend)
        self._cache = (x, mean, rstd)
        return y

    def backward(self, dy: Array) -> Array:
        if self._cache is None:
            raise RuntimeError("LayerNorm.backward called before forward")
        x, mean, rstd = self._cache
        dx, dw, db = F.layer_norm_backward(dy, x, None if self.weight is None else self.weight.data, mean, rstd,
                                           len(self.normalized_shape), backend=self.backend)
        if self.weight is not None:
            self.weight.accumulate(dw)
            self.bias.accumulate(db)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"backend={self.backend!r}, dtype={self.dtype!r}")


class GroupNorm(Module):
    """GroupNorm: channels split into ``num_groups`` groups, each normalized over (C/G, H, W) per
    sample; per-channel affine (same mode in train and eval)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 backend: Optional[str] = None, dtype: str = "float32") -> None:
        super().__init__(backend, dtype)
        self.num_groups = positive_int(num_groups, "num_groups")
        self.num_channels = positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_groups={num_groups} must divide num_channels={num_channels}")
        F._check_eps_momentum(eps)
        self.eps = float(eps)
        self.affine = bool(affine)
        self.weight = self.bias = None
        if self.affine:
            pdt = param_dtype(self.dtype)
            self._add_param("weight", np.ones(self.num_channels), pdt)
            self._add_param("bias", np.zeros(self.num_channels), pdt)
        self._cache: Optional[Tuple[Any, ...]] = None

    def forward(self, x: Array) -> Array:
        if x.ndim >= 2 and int(x.shape[1]) != self.num_channels:
            raise ValueError(f"{type(self).__name__} expects x with C={self.num_channels} channels, got x shape "
                             f"{tuple(int(s) for s in x.shape)}")
        y, mean, rstd = F.group_norm(x, self.num_groups, None if self.weight is None else self.weight.data,
                                     None if self.bias is None else self.bias.data, self.eps, return_stats=True,
                                     backend=self.backend)
        self._cache = (x, mean, rstd)
        return y

    def backward(self, dy: Array) -> Array:
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        x, mean, rstd = self._cache
        dx, dw, db = F.group_norm_backward(dy, x, self.num_groups, None if self.weight is None else self.weight.data,
                                           mean, rstd, backend=self.backend)
        if self.weight is not None:
            self.weight.accumulate(dw)
            self.bias.accumulate(db)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"backend={self.backend!r}, dtype={self.dtype!r}")


class InstanceNorm2d(GroupNorm):
    """InstanceNorm: each (sample, channel) plane normalized over (H, W) = GroupNorm with one
    group per channel. No running statistics (torch's default track_running_stats=False)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False, backend: Optional[str] = None,
                 dtype: str = "float32") -> None:
        super().__init__(num_features, num_features, eps, affine, backend, dtype)
        self.num_features = self.num_channels

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}, backend={self.backend!r}, dtype={self.dtype!r}"
