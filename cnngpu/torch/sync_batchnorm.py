"""SyncBatchNorm on our kernels: batch statistics merged across the ranks of a torch.distributed
process group (DDP), with an optional fused ReLU.

Training forward, per step (as ``torch.nn.SyncBatchNorm``, gathering M2 instead of invstd):
1. each rank computes its per-channel count, mean and M2 (sum of squared deviations; two-pass,
   never sum/sum of squares);
2. ``all_gather`` of (count, mean, M2) (float64), merged by Chan's parallel formula
   (empty ranks contribute nothing);
3. running_mean/running_var blended with the global mean and the unbiased global variance
   M2 / (N - 1), N the global count, as torch's SyncBatchNorm;
4. the normalize (+ReLU) runs on our batch_norm kernel in its "given statistics" mode, with the
   global mean and biased variance standing in for the running statistics.
Backward: our batch_norm backward kernel with the statistics as constants gives
``g * weight * invstd`` (g: dy through the ReLU mask) and the local sums sum(g), sum(g * xhat);
these are ``all_reduce``d (the only communication, as torch); the remaining per-channel affine
term of dx, ``-weight * invstd * (sum(g) + xhat * sum(g * xhat)) / N``, runs on the same normalize
kernel (weight/bias set to its coefficients) and is added. Parameter gradients are the local sums,
as torch's (DDP averages them across ranks).

Eval mode, ``track_running_stats=False`` in eval, no initialized process group or a group of one:
plain batch norm on our kernels (``cnngpu.torch.batch_norm``), as torch falls back to F.batch_norm.
Inputs (N, C, *): 2-D and 4-D go to the kernels as they are, other ranks as (N, C, L, 1).
Not traceable by torch.compile (collectives inside an autograd Function): eager (DDP) use.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from .. import functional as F
from ._bridge import _native, _tensor, pick_backend
from .functional import batch_norm


def _from(a: Any, backend: str, device: torch.device) -> torch.Tensor:
    """A kernel's array as a torch tensor on ``device``."""
    t = _tensor(a, backend, device)
    assert t is not None
    return t


def _stats_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype our kernels compute batch-norm statistics in (float64 for float64, else float32)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _local_stats(x: torch.Tensor) -> torch.Tensor:
    """(2C + 1,) float64: count, per-channel mean, per-channel M2 of x (N, C, *) (zeros when empty)."""
    C = int(x.shape[1])
    count = x.numel() // C
    out = torch.zeros(2 * C + 1, dtype=torch.float64, device=x.device)
    if count == 0:
        return out
    dims = [0] + list(range(2, x.dim()))
    var, mean = torch.var_mean(x.detach().to(_stats_dtype(x)), dim=dims, correction=0)
    out[0] = count
    out[1:C + 1] = mean
    out[C + 1:] = var.double() * count
    return out


def merge_stats(stats: torch.Tensor) -> Tuple[float, torch.Tensor, torch.Tensor]:
    """Chan's parallel merge of per-rank (count, mean (C,), M2 (C,)) rows ``stats`` (R, 2C + 1)
    -> (total count, mean (C,), M2 (C,)), float64; rows with count 0 are skipped."""
    C = (int(stats.shape[1]) - 1) // 2
    n = 0.0
    mean = torch.zeros(C, dtype=torch.float64, device=stats.device)
    m2 = torch.zeros(C, dtype=torch.float64, device=stats.device)
    for row in stats.double():
        nb = float(row[0])
        if nb <= 0:
            continue
        mb, m2b = row[1:C + 1], row[C + 1:]
        tot = n + nb
        delta = mb - mean
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta * delta * (n * nb / tot)
        n = tot
    return n, mean, m2


def _all_gather_rows(t: torch.Tensor, group: Any, world_size: int) -> torch.Tensor:
    """(world_size, len(t)): every rank's ``t`` (gloo has no all_gather_into_tensor: a list)."""
    if dist.get_backend(group) != "gloo":
        out = torch.empty(world_size * t.numel(), dtype=t.dtype, device=t.device)
        dist.all_gather_into_tensor(out, t, group)
        return out.reshape(world_size, -1)
    parts = [torch.empty_like(t) for _ in range(world_size)]
    dist.all_gather(parts, t, group)
    return torch.stack(parts)


class _SyncBatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, eps: Any,
                momentum: Any, relu: Any, group: Any, world_size: Any, backend: Any) -> Any:
        C = int(x.shape[1])
        n, mean, m2 = merge_stats(_all_gather_rows(_local_stats(x), group, world_size))
        if running_mean is not None and running_var is not None and n > 0:
            with torch.no_grad():   # torch: unbiased global variance (n == 1 gives NaN/inf, as torch)
                unbiased = m2 / (n - 1) if n > 1 else m2 * float("nan")
                running_mean.copy_((1 - momentum) * running_mean.double() + momentum * mean)
                running_var.copy_((1 - momentum) * running_var.double() + momentum * unbiased)
        sdt = _stats_dtype(x)
        gmean = mean.to(sdt)
        gvar = (m2 / n if n > 0 else m2).to(sdt)          # biased variance: what normalizes
        ctx.backend, ctx.relu, ctx.group, ctx.count = backend, relu, group, n
        ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
        if x.numel() == 0:
            ctx.save_for_backward(x, None, weight, gmean, gvar, gmean)
            return torch.empty_like(x)
        # normalize (+ReLU) with the global statistics: the kernel's "given statistics" mode
        y, _, invstd = F.batch_norm(_native(x, backend), _native(gmean, backend), _native(gvar, backend),
                                    _native(weight, backend), _native(bias, backend), False, 0.0, eps, relu=relu,
                                    return_stats=True, backend=backend)
        y = _from(y, backend, x.device).to(x.dtype)
        # not the output (inplace ops may follow): with the ReLU only its pass mask (NaN passes)
        mask = torch.logical_not(y.le(0)) if relu else None
        ctx.eps = eps
        ctx.save_for_backward(x, mask, weight, gmean, gvar, _from(invstd, backend, x.device))
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Any) -> Any:
        x, mask, weight, gmean, gvar, invstd = ctx.saved_tensors
        be, group, C = ctx.backend, ctx.group, int(x.shape[1])
        need = ctx.needs_input_grad
        nones: Tuple[None, ...] = (None,) * 8
        if x.numel() == 0:            # an empty rank still joins the collective (as torch)
            if need[0]:
                dist.all_reduce(torch.zeros(2 * C, dtype=torch.float64, device=x.device), group=group)
            return (torch.zeros_like(x) if need[0] else None, None, None) + nones
        sdt = gmean.dtype
        w = weight if weight is not None else torch.ones(C, dtype=sdt, device=x.device)
        y = mask.to(x.dtype) if ctx.relu else x      # the kernels read the ReLU mask from y's sign
        # statistics as constants: dx0 = g * w * invstd, and the local sums sum(g * xhat), sum(g)
        dx0, sum_gx, sum_g = F.batch_norm_backward(_native(dy.contiguous(), be), _native(x, be), _native(y, be),
                                                   _native(w, be), _native(gmean, be), _native(invstd, be),
                                                   training=False, relu=ctx.relu, backend=be)
        dev = x.device
        sum_g_t, sum_gx_t = _from(sum_g, be, dev), _from(sum_gx, be, dev)
        dweight = sum_gx_t if ctx.has_weight and need[1] else None
        dbias = sum_g_t if ctx.has_bias and need[2] else None
        if not need[0]:
            return (None, dweight, dbias) + nones
        sums = torch.cat([sum_g_t.double(), sum_gx_t.double()])
        dist.all_reduce(sums, group=group)
        # dx = w * invstd * (g - S_g / N - xhat * S_gx / N): the affine part on the normalize kernel
        scale = -(w.double() * invstd.double()) / ctx.count
        coef_x, coef_1 = (scale * sums[C:]).to(sdt), (scale * sums[:C]).to(sdt)
        corr = F.batch_norm(_native(x, be), _native(gmean, be), _native(gvar, be), _native(coef_x, be),
                            _native(coef_1, be), False, 0.0, ctx.eps, backend=be)
        dx = _from(dx0, be, dev) + _from(corr, be, dev)
        return (dx.to(x.dtype), dweight, dbias) + nones


def _momentum_factor(m: _BatchNorm) -> float:
    """Increments num_batches_tracked when training with tracked statistics and returns the blend
    factor (torch's: momentum, or 1 / num_batches_tracked for momentum=None)."""
    factor = 0.0 if m.momentum is None else float(m.momentum)
    if m.training and m.track_running_stats and m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
        if m.momentum is None:
            factor = 1.0 / float(m.num_batches_tracked)
    return factor


class SyncBatchNorm(nn.SyncBatchNorm):
    """torch.nn.SyncBatchNorm (a subclass: isinstance checks, parameters, buffers and state_dict are
    torch's) on our kernels, with an optional fused ReLU (``relu=True``) and ``backend=``; CPU
    tensors too (gloo). Input (N, C, *); see the module docstring for what runs where."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any = None,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None, *,
                 bias: bool = True, relu: bool = False, backend: Optional[str] = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, process_group, device, dtype,
                         bias=bias)
        self.relu, self.backend = relu, backend

    def _group(self) -> Tuple[Any, int]:
        """The process group to sync over and its size (1 when torch.distributed is not initialized)."""
        if not (dist.is_available() and dist.is_initialized()):
            return None, 1
        group = self.process_group if self.process_group else dist.group.WORLD
        return group, dist.get_world_size(group)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        x = input
        if x.dim() not in (2, 4):        # (N, C, *) -> (N, C, L, 1) for the kernels
            L = 1
            for d in x.shape[2:]:
                L *= int(d)
            return self.forward(x.reshape(int(x.shape[0]), int(x.shape[1]), L, 1)).reshape(x.shape)
        factor = _momentum_factor(self)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_buffers = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_buffers else None
        running_var = self.running_var if use_buffers else None
        group, world_size = self._group() if bn_training and self.training else (None, 1)
        if world_size <= 1:
            return batch_norm(x, running_mean, running_var, self.weight, self.bias, bn_training, factor, self.eps,
                              relu=self.relu, backend=self.backend)
        be = pick_backend(x, self.backend)
        y = _SyncBatchNormFn.apply(x, self.weight, self.bias, running_mean, running_var, self.eps, factor,
                                   bool(self.relu), group, world_size, be)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)     # channels_last in, out (as torch)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, relu={self.relu}, backend={self.backend!r}"

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group: Any = None) -> nn.Module:
        """:func:`convert_sync_batchnorm` (torch's classmethod builds torch's SyncBatchNorm)."""
        return convert_sync_batchnorm(module, process_group)


def convert_sync_batchnorm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` for our kernels: every BatchNorm*D (torch's,
    ours, a SyncBatchNorm) in ``module`` becomes a :class:`SyncBatchNorm` sharing its parameters and
    buffers (the same tensors), training mode and qconfig, keeping our ``relu`` and ``backend``.
    Returns ``module`` converted in place, or the new module when ``module`` itself is a BatchNorm."""
    out = module
    if isinstance(module, _BatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group, bias=module.bias is not None,
                            relu=bool(getattr(module, "relu", False)), backend=getattr(module, "backend", None))
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    children: List[Tuple[str, nn.Module]] = list(module.named_children())
    for name, child in children:
        out.add_module(name, convert_sync_batchnorm(child, process_group))
    return out
