"""nn.Modules on our kernels: subclasses of torch's (parameter names, buffers, initialisation,
isinstance checks are torch's)."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .._typing import IntOrPair, Padding
from .functional import (avg_pool2d, batch_norm, conv2d, cross_entropy, group_norm, instance_norm, layer_norm,
                         linear, max_pool2d, relu)


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


class _BatchNormForward:
    """The forward of our BatchNorm modules: torch's _BatchNorm.forward (running statistics,
    num_batches_tracked, momentum=None as the cumulative average) on the ``cnngpu::batch_norm`` op."""

    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.fx.Proxy):      # fx symbolic tracing: no shape checks on proxies
            self._check_input_dim(x)
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

    def extra_repr(self: Any) -> str:
        return f"{nn.modules.batchnorm._BatchNorm.extra_repr(self)}, relu={self.relu}, backend={self.backend!r}"


class BatchNorm2d(_BatchNormForward, nn.BatchNorm2d):
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


class BatchNorm1d(_BatchNormForward, nn.BatchNorm1d):
    """torch.nn.BatchNorm1d on our kernels: input (N, C) or (N, C, L); otherwise as BatchNorm2d
    (a ``_BatchNorm`` subclass, optional fused ReLU)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Optional[Union[str, torch.device]] = None,
                 dtype: Optional[torch.dtype] = None, *, bias: bool = True, relu: bool = False,
                 backend: Optional[str] = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.relu, self.backend = relu, backend


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
        if not isinstance(x, torch.fx.Proxy):
            self._check_input_dim(x)
        if not isinstance(x, torch.fx.Proxy) and x.dim() == 3:                                     # unbatched (C, H, W)
            return self.forward(x.unsqueeze(0)).squeeze(0)
        use_input_stats = self.training or not self.track_running_stats
        momentum = self.momentum if self.momentum is not None else 0.0
        return instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_input_stats,
                             momentum, self.eps, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"
