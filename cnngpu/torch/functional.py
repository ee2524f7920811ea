"""The functional API on torch tensors (argument order as in torch.nn.functional)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from .. import functional as F
from .._typing import IntOrPair, Padding
from ..geometry import pair
from ._autograd import (_AvgPool2dFn, _BatchNormFn, _Conv2dFn, _CrossEntropyFn, _GroupNormFn, _LayerNormFn,
                        _LinearFn, _MaxPool2dFn, _ReLUFn)
from ._bridge import _affine_weight, _keep_format, pick_backend
from ._ops import _batch_norm_op, _compiling, _conv2d_op, _pad_args


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
