"""The functional API on torch tensors (argument order as in torch.nn.functional).

Every function is a thin call of a ``cnngpu::`` custom op (cnngpu.torch._ops): the same path
eager, under torch.compile/export, fx tracing, vmap and on meta tensors. Arguments that are not
tensors are normalised here (pairs, legacy reduction flags); the ops validate the rest.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from .. import functional as F
from .._typing import IntOrPair, Padding
from ..geometry import pair
from . import _ops
from ._bridge import check_backend


def _ints(v: IntOrPair, name: str) -> List[int]:
    return list(pair(v, name))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride: IntOrPair = 1,
           padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1, *, algo: str = "auto",
           precision: str = "ieee", backend: Optional[str] = None) -> torch.Tensor:
    """torch.nn.functional.conv2d on our kernels. x (N, C, H, W) or unbatched (C, H, W), weight
    (K, C/groups, R, S), bias (K,) -> (N, K, P, Q) (or (K, P, Q)). padding: int, pair, 'same' or 'valid'."""
    be = check_backend(x, backend)
    if isinstance(padding, str) and padding == "same" and pair(stride, "stride") != (1, 1):
        raise ValueError(f"padding='same' is not supported for strided convolutions (stride={stride!r}), as in "
                         f"torch; cnngpu.functional.conv2d offers it as an extension (TensorFlow's rule)")
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {groups!r}")
    pad_ints, pad_str = _ops.pad_args(padding)
    return _ops.conv2d(x, weight, bias, _ints(stride, "stride"), pad_ints, pad_str, _ints(dilation, "dilation"),
                       groups, algo, precision, be)


def max_pool2d(x: torch.Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               dilation: IntOrPair = 1, ceil_mode: bool = False, return_indices: bool = False, *,
               backend: Optional[str] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Max pooling (N, C, H, W) -> (N, C, P, Q) (or unbatched (C, H, W) -> (C, P, Q)); with
    return_indices also the int64 flat h*W+w argmax, as torch."""
    be = check_backend(x, backend)
    k = _ints(kernel_size, "kernel_size")
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else _ints(stride, "stride")
    y, idx = _ops.max_pool2d(x, k, s, _ints(padding, "padding"), _ints(dilation, "dilation"), bool(ceil_mode), be)
    return (y, idx) if return_indices else y


def avg_pool2d(x: torch.Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Optional[int] = None, *,
               backend: Optional[str] = None) -> torch.Tensor:
    """Average pooling (N, C, H, W) -> (N, C, P, Q) (or unbatched (C, H, W)), torch semantics."""
    be = check_backend(x, backend)
    k = _ints(kernel_size, "kernel_size")
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else _ints(stride, "stride")
    if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(divisor_override, int)
                                         or divisor_override == 0):
        raise ValueError(f"divisor_override must be a non-zero int or None, got {divisor_override!r}")
    return _ops.avg_pool2d(x, k, s, _ints(padding, "padding"), bool(ceil_mode), bool(count_include_pad),
                           divisor_override, be)


def batch_norm(x: torch.Tensor, running_mean: Optional[torch.Tensor] = None, running_var: Optional[torch.Tensor] = None,
               weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, relu: bool = False, backend: Optional[str] = None
               ) -> torch.Tensor:
    """torch.nn.functional.batch_norm (+ fused ReLU with ``relu=True``); x (N, C), (N, C, L),
    (N, C, H, W) or (N, C, D, H, W). Training updates running_mean/var in place when given (the
    op returns the new values, copied into them here)."""
    be = check_backend(x, backend)
    if momentum is None:
        raise TypeError("momentum must be a number in [0, 1], got None (torch.nn.functional.batch_norm takes a "
                        "float; the cumulative average of momentum=None is a layer feature: nn.BatchNorm2d)")
    F._check_eps_momentum(eps, momentum)
    out = _ops.batch_norm(x, weight, bias, running_mean, running_var, bool(training), float(momentum), float(eps),
                          bool(relu), be)
    if training and running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.copy_(out[4])
            running_var.copy_(out[5])
    return out[0]


def layer_norm(x: torch.Tensor, normalized_shape: Union[int, Sequence[int]], weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None, eps: float = 1e-5, *, backend: Optional[str] = None
               ) -> torch.Tensor:
    """LayerNorm over the trailing dims ``normalized_shape`` (int or tuple)."""
    be = check_backend(x, backend)
    ns = F._normalized_shape(normalized_shape)
    F._check_eps_momentum(eps)
    return _ops.layer_norm(x, list(ns), weight, bias, float(eps), be)[0]


def group_norm(x: torch.Tensor, num_groups: int, weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None, eps: float = 1e-5, *, backend: Optional[str] = None
               ) -> torch.Tensor:
    """GroupNorm: x (N, C, *) normalized over (C/num_groups, *) per sample and group."""
    be = check_backend(x, backend)
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"num_groups must be an int, got {num_groups!r}")
    F._check_eps_momentum(eps)
    return _ops.group_norm(x, num_groups, weight, bias, float(eps), be)[0]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
           backend: Optional[str] = None) -> torch.Tensor:
    """torch.nn.functional.linear: x (*, in) @ weight.T (out, in) + bias (out,)."""
    return _ops.linear(x, weight, bias, check_backend(x, backend))


def relu(x: torch.Tensor, inplace: bool = False, *, backend: Optional[str] = None) -> torch.Tensor:
    """torch.nn.functional.relu. ``inplace=True`` writes the result into x and returns x, as torch's
    relu_ (x's version counter moves, a leaf that requires grad is refused; autograd flows through
    the op's own saved output, so the backward stays valid whatever later happens to x; that output
    is one activation more than torch's relu_ keeps: the kernels never write into their input)."""
    y = _ops.relu(x, check_backend(x, backend))
    return x.copy_(y) if inplace else y


def cross_entropy(x: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                  size_average: Optional[bool] = None, ignore_index: int = -100, reduce: Optional[bool] = None,
                  reduction: str = "mean", label_smoothing: float = 0.0, *, backend: Optional[str] = None
                  ) -> torch.Tensor:
    """torch.nn.functional.cross_entropy (logits x (C,), (N, C) or (N, C, d1, ...); class indices
    or class probabilities target, which gets its gradient too)."""
    be = check_backend(x, backend)
    if size_average is not None or reduce is not None:   # torch's legacy arguments
        from torch.nn import _reduction
        reduction = _reduction.legacy_get_string(size_average, reduce)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    return _ops.cross_entropy(x, target, weight, ignore_index, reduction, float(label_smoothing), be)[0]


def instance_norm(x: torch.Tensor, running_mean: Optional[torch.Tensor] = None,
                  running_var: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
                  bias: Optional[torch.Tensor] = None, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5, *, backend: Optional[str] = None) -> torch.Tensor:
    """torch.nn.functional.instance_norm on x (N, C, *): with the input's statistics the
    ``cnngpu::instance_norm`` op (group_norm with one group per channel; running stats, when
    given, updated as torch does: the per-instance mean and unbiased variance averaged over N);
    else the running stats (the ``cnngpu::batch_norm`` op in eval mode)."""
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError("instance_norm with use_input_stats=False needs running_mean and running_var")
        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps, backend=backend)
    be = check_backend(x, backend)
    F._check_eps_momentum(eps, momentum)
    out = _ops.instance_norm(x, weight, bias, running_mean, running_var, float(momentum), float(eps), be)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.copy_(out[3])
            running_var.copy_(out[4])
    return out[0]
