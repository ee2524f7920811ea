"""The fused block conv -> BatchNorm -> (+ residual) -> (ReLU) for torch models: a ``torch.library``
custom op (``cnngpu::conv2d_bn_relu`` and its backward; fake functions and autograd registered as in
``_ops.py``, so eager, autograd and torch.compile all see one op), the module ``Conv2dBNReLU`` and
``fuse(model)``, which swaps a model's Conv2d -> BatchNorm2d (-> ReLU) (-> add) sequences for it.

``Conv2dBNReLU``'s state_dict has the keys of ``nn.Sequential(OrderedDict(conv=nn.Conv2d(...),
bn=nn.BatchNorm2d(...)))``: ``conv.weight`` (``conv.bias``), ``bn.weight``, ``bn.bias``,
``bn.running_mean``, ``bn.running_var``, ``bn.num_batches_tracked`` -- its children *are* an
nn.Conv2d and an nn.BatchNorm2d.
"""
from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

from .. import functional as F
from ..geometry import pair
from ._bridge import _native, _tensor, _write_back, check_backend, empty, in_format, memory_format, pick_backend
from ._bridge import native_weight
from ._bridge import stats_dtype
from ._oplib import absent, no_alias, or_none, register_loop_vmap
from ._ops_conv import _pad, pad_args

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------
# custom ops
# ----------------------------------------------------------------------------------------------
@torch.library.custom_op("cnngpu::conv2d_bn_relu", mutates_args=())
def _fused_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], bn_weight: Optional[Tensor],
              bn_bias: Optional[Tensor], running_mean: Optional[Tensor], running_var: Optional[Tensor],
              residual: Optional[Tensor], stride: List[int], pad_ints: List[int], pad_str: str, dilation: List[int],
              groups: int, training: bool, momentum: float, eps: float, relu: bool, algo: str, precision: str,
              backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(out, y (training; else (0,)), mean, invstd, mask (out > 0 or NaN; (0,) without relu), new
    running_mean, new running_var ((0,) unless training with running stats)). Functional: the running
    statistics come back as new tensors, which the caller copies into its buffers."""
    be = pick_backend(x, backend)
    update = training and running_mean is not None
    rm = None if running_mean is None else (running_mean.clone() if update else running_mean)
    rv = None if running_var is None else (running_var.clone() if update else running_var)
    nrm = _native(rm, be)
    # versions declared for the conv weight, gamma and running_var: the eval block's folded weight is
    # cached per version of all three (``weight_cache``)
    with native_weight(weight, be) as wn, native_weight(bn_weight, be) as gn, native_weight(rv, be) as nrv:
        out, y, mean, invstd = F.conv2d_bn_relu(
            _native(x, be), wn, _native(bias, be), gn, _native(bn_bias, be), nrm, nrv,
            _native(residual, be), tuple(stride), _pad(pad_ints, pad_str), tuple(dilation), groups, training,
            momentum, eps, relu=relu, return_stats=True, algo=algo, precision=precision, backend=be)
    if update:
        _write_back(rm, nrm, be)
        _write_back(rv, nrv, be)
    dev, fmt = x.device, memory_format(x)
    ot = in_format(_tensor(out, be, dev, x.dtype), fmt)
    mask = in_format(torch.logical_not(ot.le(0)), fmt) if relu else absent(x, torch.bool)
    yt = in_format(_tensor(y, be, dev, x.dtype), fmt) if y is not None else absent(x)
    sdt = stats_dtype(x)
    return no_alias((ot, yt, _tensor(mean, be, dev, sdt), _tensor(invstd, be, dev, sdt), mask,
                     rm if update else absent(x), rv if update else absent(x)),
                    x, weight, bias, bn_weight, bn_bias, running_mean, running_var, residual)


@_fused_op.register_fake
def _(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, residual, stride, pad_ints, pad_str,
      dilation, groups, training, momentum, eps, relu, algo, precision, backend):
    g = F.conv2d_geometry((1,) + tuple(x.shape[1:]), tuple(weight.shape), tuple(stride), _pad(pad_ints, pad_str),
                          tuple(dilation), groups)
    shape, fmt, sdt = (x.shape[0], g.K, g.P, g.Q), memory_format(x), stats_dtype(x)
    update = training and running_mean is not None
    return (empty(x, shape, fmt), empty(x, shape, fmt) if training else absent(x), empty(x, (g.K,), dtype=sdt),
            empty(x, (g.K,), dtype=sdt), empty(x, shape, fmt, torch.bool) if relu else absent(x, torch.bool),
            torch.empty_like(running_mean) if update else absent(x),
            torch.empty_like(running_var) if update else absent(x))


@torch.library.custom_op("cnngpu::conv2d_bn_relu_backward", mutates_args=())
def _fused_backward_op(dout: Tensor, mask: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], y: Tensor,
                       bn_weight: Optional[Tensor], mean: Tensor, invstd: Tensor, stride: List[int],
                       pad_ints: List[int], pad_str: str, dilation: List[int], groups: int, training: bool, relu: bool,
                       has_residual: bool, algo: str, precision: str, backend: str
                       ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias, dbn_weight, dbn_bias, dresidual); absent ones are (0,) tensors."""
    be = pick_backend(x, backend)
    yn = None if y.dim() == 1 and y.numel() == 0 else _native(y, be)   # eval: (0,), the conv is recomputed
    out = mask.to(dout.dtype) if relu else dout       # only the sign of out is read, and only with relu
    with native_weight(weight, be) as wn:
        grads = F.conv2d_bn_relu_backward(
            _native(dout.contiguous(), be), _native(out.contiguous(), be), _native(x, be), wn,
            _native(bias, be), yn, _native(bn_weight, be), _native(mean, be), _native(invstd, be), tuple(stride),
            _pad(pad_ints, pad_str), tuple(dilation), groups, training=training, relu=relu,
            has_residual=has_residual, need_db=bias is not None, algo=algo, precision=precision, backend=be)
    dev = x.device
    like = (x, weight, bias, bn_weight, bn_weight, dout)
    res = [absent(x) if gr is None else _tensor(gr, be, dev, (lk if lk is not None else x).dtype)
           for gr, lk in zip(grads, like)]
    res[0] = in_format(res[0], memory_format(x))            # dx in x's memory format, the rest contiguous
    res[1] = in_format(res[1])
    if has_residual:
        res[5] = in_format(res[5])
    return no_alias(tuple(res), dout, mask, x, weight, bias, y, bn_weight, mean, invstd)


@_fused_backward_op.register_fake
def _(dout, mask, x, weight, bias, y, bn_weight, mean, invstd, stride, pad_ints, pad_str, dilation, groups,
      training, relu, has_residual, algo, precision, backend):
    e = absent(x)
    gw = e if bn_weight is None else torch.empty_like(bn_weight)
    return (empty(x, x.shape, memory_format(x)), empty(weight, weight.shape),
            e if bias is None else torch.empty_like(bias), gw, torch.empty_like(gw),
            empty(x, dout.shape) if has_residual else e)


def _fused_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    (x, weight, bias, bn_weight, bn_bias, _rm, _rv, residual, stride, pad_ints, pad_str, dilation, groups, training,
     _momentum, _eps, relu, algo, precision, backend) = inputs
    _out, y, mean, invstd, mask, _rm_new, _rv_new = output
    ctx.save_for_backward(x, weight, bias, y, bn_weight, mean, invstd, mask)   # not out: inplace ops after it are fine
    ctx.conf = (stride, pad_ints, pad_str, dilation, groups, training, relu, residual is not None, algo, precision,
                backend)
    ctx.flags = (bias is not None, bn_bias is not None)


def _fused_bwd(ctx: Any, dout: Tensor, *_unused: Any) -> Any:
    x, weight, bias, y, bn_weight, mean, invstd, mask = ctx.saved_tensors
    dx, dw, db, dgamma, dbeta, dres = _fused_backward_op(dout, mask, x, weight, bias, y, bn_weight, mean, invstd,
                                                         *ctx.conf)
    has_bias, has_bn_bias = ctx.flags
    has_res = ctx.conf[7]
    return ((dx, dw, or_none(db, has_bias), or_none(dgamma, bn_weight is not None), or_none(dbeta, has_bn_bias),
             None, None, or_none(dres, has_res)) + (None,) * 12)


_fused_op.register_autograd(_fused_bwd, setup_context=_fused_setup)
register_loop_vmap(_fused_op)               # vmap: one call per entry (as the other cnngpu:: ops without a fast rule)
register_loop_vmap(_fused_backward_op)


# ----------------------------------------------------------------------------------------------
# functional + module
# ----------------------------------------------------------------------------------------------
def conv2d_bn_relu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   bn_weight: Optional[torch.Tensor],
                   bn_bias: Optional[torch.Tensor], running_mean: Optional[torch.Tensor],
                   running_var: Optional[torch.Tensor], residual: Optional[torch.Tensor] = None, stride: Any = 1,
                   padding: Any = 0, dilation: Any = 1, groups: int = 1, training: bool = False,
                   momentum: float = 0.1, eps: float = 1e-5, *, relu: bool = True, algo: str = "auto",
                   precision: str = "ieee", backend: Optional[str] = None) -> torch.Tensor:
    """``cnngpu.functional.conv2d_bn_relu`` on torch tensors, differentiable in x, weight, bias,
    bn_weight, bn_bias and residual; training updates running_mean/var in place when given."""
    be = check_backend(x, backend)
    pad_ints, pad_str = pad_args(padding)
    bn_w = bn_weight
    if bn_w is None and bn_bias is not None:           # the kernels give dbn_bias only with a weight
        bn_w = torch.ones_like(bn_bias.detach())
    out = _fused_op(x, weight, bias, bn_w, bn_bias, running_mean, running_var, residual, list(pair(stride, "stride")),
                    pad_ints, pad_str, list(pair(dilation, "dilation")), int(groups), bool(training),
                    float(momentum), float(eps), bool(relu), algo, precision, be)
    if training and running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.copy_(out[5])
            running_var.copy_(out[6])
    return out[0]


class Conv2dBNReLU(nn.Module):
    """conv -> BatchNorm2d -> (+ residual) -> (ReLU) as one fused op; children ``conv`` (an nn.Conv2d)
    and ``bn`` (an nn.BatchNorm2d), so the state_dict is that of
    ``nn.Sequential(OrderedDict(conv=nn.Conv2d(...), bn=nn.BatchNorm2d(...)))``.
    ``forward(x, residual=None)``: residual (the conv output's shape) is added before the ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = False, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True, track_running_stats: bool = True,
                 device: Any = None, dtype: Optional[torch.dtype] = None, *, relu: bool = True, algo: str = "auto",
                 precision: str = "ieee", backend: Optional[str] = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                              device=device, dtype=dtype)
        self.bn = nn.BatchNorm2d(out_channels, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.relu, self.algo, self.precision, self.backend = bool(relu), algo, precision, backend

    @classmethod
    def from_modules(cls, conv: Any, bn: Any, relu: bool = True,
                     backend: Optional[str] = None) -> "Conv2dBNReLU":
        """A block that shares (not copies) ``conv``'s and ``bn``'s parameters and buffers."""
        if conv.padding_mode != "zeros":
            raise ValueError(f"Conv2dBNReLU supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        if bn.num_features != conv.out_channels:
            raise ValueError(f"bn has {bn.num_features} features but conv has {conv.out_channels} output channels")
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.conv, m.bn = conv, bn
        m.relu, m.algo, m.precision, m.backend = bool(relu), "auto", "ieee", backend
        return m

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        bn, conv = self.bn, self.conv
        batch_stats = self.training or not bn.track_running_stats
        if self.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        use_running = not batch_stats or (self.training and bn.track_running_stats)
        momentum = bn.momentum
        if momentum is None:                         # torch: cumulative moving average
            n = int(bn.num_batches_tracked) if bn.num_batches_tracked is not None else 0
            momentum = 1.0 / n if n > 0 else 0.0
        return conv2d_bn_relu(x, conv.weight, conv.bias, bn.weight, bn.bias,
                              bn.running_mean if use_running else None, bn.running_var if use_running else None,
                              residual, conv.stride, conv.padding, conv.dilation, conv.groups, batch_stats, momentum,
                              bn.eps, relu=self.relu, algo=self.algo, precision=self.precision, backend=self.backend)

    def extra_repr(self) -> str:
        return f"relu={self.relu}, backend={self.backend!r}"


# ----------------------------------------------------------------------------------------------
# fuse(model)
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FuseReport:
    """What ``fuse`` did: ``fused`` names (module paths) of the blocks made, ``skipped`` (path, why)."""
    fused: List[str] = dataclasses.field(default_factory=list)
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"fused {len(self.fused)} block(s): " + ", ".join(self.fused)]
        lines += [f"not fused {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


def _plain_conv_bn(conv: Any, bn: Any) -> Optional[str]:
    """None when (conv, bn) can be fused, else why not."""
    if not isinstance(conv, nn.Conv2d):
        return f"{type(conv).__name__} is not an nn.Conv2d"
    if not isinstance(bn, nn.BatchNorm2d) or type(bn).__name__ == "SyncBatchNorm":
        return f"{type(bn).__name__} after the conv is not a BatchNorm2d"
    if getattr(bn, "relu", False):
        return "the BatchNorm2d has its own fused ReLU (cnngpu.torch.BatchNorm2d(relu=True))"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (zeros only)"
    if bn.num_features != conv.out_channels:
        return "BatchNorm2d features != conv out_channels"
    return None


def _fuse_sequential(seq: nn.Sequential, path: str, report: FuseReport, backend: Optional[str]) -> None:
    names = list(seq._modules)
    i = 0
    while i < len(names) - 1:
        a, b = seq._modules[names[i]], seq._modules[names[i + 1]]
        if isinstance(a, nn.Conv2d):
            why = _plain_conv_bn(a, b)
            if why is not None:
                report.skipped.append((f"{path}{names[i]}", why))
                i += 1
                continue
            relu = i + 2 < len(names) and type(seq._modules[names[i + 2]]) is nn.ReLU
            seq._modules[names[i]] = Conv2dBNReLU.from_modules(a, b, relu=relu, backend=backend)
            seq._modules[names[i + 1]] = nn.Identity()
            if relu:
                seq._modules[names[i + 2]] = nn.Identity()
            report.fused.append(f"{path}{names[i]}" + ("+relu" if relu else ""))
            i += 3 if relu else 2
            continue
        i += 1


class _FusedBasicBlock(nn.Module):
    """torchvision's BasicBlock with (conv1, bn1, relu) and (conv2, bn2, + identity, relu) fused."""

    def __init__(self, block: Any, backend: Optional[str]) -> None:
        super().__init__()
        self.block1 = Conv2dBNReLU.from_modules(block.conv1, block.bn1, relu=True, backend=backend)
        self.block2 = Conv2dBNReLU.from_modules(block.conv2, block.bn2, relu=True, backend=backend)
        self.downsample: Optional[nn.Module] = block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.block2(self.block1(x), identity)


def _is_basic_block(m: nn.Module) -> bool:
    return (type(m).__name__ == "BasicBlock" and all(hasattr(m, a) for a in ("conv1", "bn1", "conv2", "bn2", "relu"))
            and getattr(m, "expansion", 1) == 1)


def fuse(model: nn.Module, backend: Optional[str] = None) -> FuseReport:
    """Fuse ``model``'s conv -> BatchNorm2d (-> ReLU) (-> add) sequences in place; returns a FuseReport.

    Recognised: consecutive ``nn.Conv2d``, ``nn.BatchNorm2d`` (and ``nn.ReLU``) children of an
    ``nn.Sequential`` (the BatchNorm / ReLU slots become ``nn.Identity``), and torchvision-style
    ``BasicBlock`` modules (conv1/bn1/relu/conv2/bn2/downsample; its residual add and final ReLU
    go into the second block's epilogue). The fused blocks share the original parameters and buffers,
    so an optimizer built before ``fuse`` keeps training them; their state_dict keys move under the
    block ('0.weight' -> '0.conv.weight', '1.running_mean' -> '0.bn.running_mean', BasicBlock
    'conv1.weight' -> 'block1.conv.weight'). Anything else -- other module
    structure (a forward that is not such a chain), a conv followed by something other than
    BatchNorm2d, non-zero padding modes -- is left alone and listed in ``report.skipped``.
    """
    report = FuseReport()

    def visit(mod: nn.Module, path: str) -> None:
        for name, child in list(mod._modules.items()):
            if child is None:
                continue
            cpath = f"{path}{name}"
            if _is_basic_block(child):
                why = _plain_conv_bn(child.conv1, child.bn1) or _plain_conv_bn(child.conv2, child.bn2)
                if why is None:
                    mod._modules[name] = _FusedBasicBlock(child, backend)
                    report.fused.append(f"{cpath} (BasicBlock: conv1+bn1+relu, conv2+bn2+add+relu)")
                    if isinstance(child.downsample, nn.Sequential):
                        _fuse_sequential(child.downsample, f"{cpath}.downsample.", report, backend)
                    continue
                report.skipped.append((cpath, why))
            if isinstance(child, nn.Sequential):
                _fuse_sequential(child, cpath + ".", report, backend)
            visit(child, cpath + ".")
    if _is_basic_block(model):
        report.skipped.append(("<root>", "a BasicBlock at the root cannot be replaced in place: wrap it, "
                                         "e.g. fuse(nn.Sequential(block))"))
    if isinstance(model, nn.Sequential):
        _fuse_sequential(model, "", report, backend)
    visit(model, "")
    return report
