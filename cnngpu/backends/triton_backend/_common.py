"""Allocation and bookkeeping shared by the triton backend's op modules."""
from collections import Counter

import torch

from .. import poison_enabled

LAUNCHES: Counter = Counter()


def empty(shape, dtype, device):
    """torch.empty, filled with NaN (float) or -1 (int) when output poisoning is on."""
    out = torch.empty(tuple(int(s) for s in shape), dtype=dtype, device=device)
    if poison_enabled():
        out.fill_(float("nan") if out.dtype.is_floating_point else -1)
    return out


def launched(kernel_name: str) -> None:
    """Record one launch of ``kernel_name`` (tests assert the kernel they meant really ran)."""
    LAUNCHES[kernel_name] += 1
