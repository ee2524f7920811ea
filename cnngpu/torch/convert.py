"""convert: swap a torch.nn model's supported modules for cnngpu.torch's, in place."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from .modules import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, CrossEntropyLoss, GroupNorm, InstanceNorm2d,
                      LayerNorm, Linear, MaxPool2d, ReLU)


# torch class -> (our class, the extra attributes ours adds, with their defaults)
_SWAPS: Dict[type, Tuple[type, Dict[str, Any]]] = {
    nn.Conv2d: (Conv2d, dict(algo="auto", precision="ieee", backend=None)),
    nn.MaxPool2d: (MaxPool2d, dict(backend=None)),
    nn.AvgPool2d: (AvgPool2d, dict(backend=None)),
    nn.BatchNorm1d: (BatchNorm1d, dict(relu=False, backend=None)),
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
    """Swap ``model``'s torch.nn Conv2d, MaxPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, LayerNorm,
    GroupNorm, InstanceNorm2d, Linear, ReLU and CrossEntropyLoss (exact classes, not subclasses) for
    cnngpu.torch's, in place, keeping parameters, buffers,
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
