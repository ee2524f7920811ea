"""Allocation, DLPack intake and bookkeeping shared by the cupy backend's op modules."""
from collections import Counter

import cupy

from .. import poison_enabled

LAUNCHES: Counter = Counter()


def empty(shape, dtype):
    """cupy.empty, filled with NaN (float) or -1 (int) when output poisoning is on."""
    out = cupy.empty(tuple(int(s) for s in shape), dtype=dtype)
    if poison_enabled():
        out.fill(float("nan") if out.dtype.kind == "f" else -1)
    return out


def launched(kernel_name: str) -> None:
    """Record one launch of ``kernel_name`` (tests assert the kernel they meant really ran)."""
    LAUNCHES[kernel_name] += 1
