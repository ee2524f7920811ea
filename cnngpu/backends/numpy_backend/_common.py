"""Bookkeeping shared by the numpy backend's op modules (LAUNCHES lives here, not in __init__,
so op modules can import it without a circular import)."""
from collections import Counter

import numpy as np

LAUNCHES: Counter = Counter()


def launched(op_name: str) -> None:
    """Record one run of ``op_name`` (tests assert that the op they meant really ran)."""
    LAUNCHES[op_name] += 1


def compute_dtype(dtype) -> np.dtype:
    """The dtype a reference op computes in: float16 -> float32, float32 and float64 unchanged."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype
