"""Allocation, DLPack intake and bookkeeping shared by the cupy backend's op modules."""
from collections import Counter

from ._cupy import cupy

from .. import poison_enabled

LAUNCHES: Counter = Counter()


def empty(shape, dtype):
    """cupy.empty, filled with NaN (float, bfloat16 included) or -1 (int) when output poisoning is on."""
    out = cupy.empty(tuple(int(s) for s in shape), dtype=dtype)
    if poison_enabled():
        if out.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (kind 'V'): fill a NaN bit pattern
            out.view(cupy.uint16).fill(0x7FC0)
        else:
            out.fill(float("nan") if out.dtype.kind == "f" else -1)
    return out


def launched(kernel_name: str) -> None:
    """Record one launch of ``kernel_name`` (tests assert the kernel they meant really ran)."""
    LAUNCHES[kernel_name] += 1
