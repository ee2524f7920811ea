"""Launch plumbing shared by the cupy backend's non-conv op modules (pool, norm, basic): kernel
lookup by (file, entry point, dtype), scalar argument packing, contiguity, float32 parameters.

Kept apart from the pure configuration functions (_config.py) and from the op modules so that a
CPU test can substitute the device pieces (``cupy``, ``get_function``, ``sm_count``) in one place.
"""
from __future__ import annotations

import functools

import numpy as np

from ...dtypes import dtype_name
from . import _module
from ._cupy import cupy
from ._common import empty, launched
from ._config import BLOCK, elementwise_grid, scalar_define


def i32(v) -> np.int32:
    """An int kernel argument (checked to fit)."""
    v = int(v)
    if not -2 ** 31 <= v < 2 ** 31:
        raise ValueError(f"value {v} does not fit the kernel's 32-bit int argument")
    return np.int32(v)


def i64(v) -> np.int64:
    return np.int64(int(v))


def f32(v) -> np.float32:
    return np.float32(v)


@functools.lru_cache(maxsize=None)
def _sm_count(device_id: int) -> int:
    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])


def sm_count() -> int:
    """Streaming multiprocessors of the current device (cached per device)."""
    return _sm_count(cupy.cuda.Device().id)


def run(fname: str, func: str, dtype: str, grid, block, args, shared_mem: int = 0) -> None:
    """Launch entry point ``func`` of kernels/cuda/``fname`` specialised for ``dtype`` and record it."""
    kern = _module.get_function(fname, func, scalar_define(dtype))
    kern(tuple(int(g) for g in grid), tuple(int(b) for b in block), tuple(args), shared_mem=shared_mem)
    launched(func)


def contiguous(x):
    """x as a C-contiguous cupy array (no copy when it already is one)."""
    return cupy.ascontiguousarray(x)


def cast_to_float32(a):
    """A contiguous float32 copy of ``a`` (a itself when it already is contiguous float32), widened by
    the cast_to_float32 kernel, so half and bfloat16 never depend on cupy's own dtype support."""
    a = contiguous(a)
    if a.dtype == cupy.float32:
        return a
    out = cupy.empty(a.shape, dtype=cupy.float32)
    if a.size:
        run("elementwise.cu", "cast_to_float32", dtype_of(a), elementwise_grid(a.size), (BLOCK,),
            (a, out, i64(a.size)))
    return out


def cast_from_float32(a32, dtype):
    """A float32 contiguous array rounded to ``dtype`` (a fresh output array; a32 itself for float32)."""
    dtype = cupy.dtype(dtype)
    if dtype == cupy.float32:
        return a32
    out = empty(a32.shape, dtype)
    if a32.size:
        run("elementwise.cu", "cast_from_float32", dtype.name, elementwise_grid(a32.size), (BLOCK,),
            (a32, out, i64(a32.size)))
    return out


def float_param(p, n: int, fill: float):
    """A parameter vector as contiguous float32 (a copy only when needed), or ``fill`` x n when None."""
    if p is None:
        return cupy.full((n,), fill, dtype=cupy.float32)
    return cast_to_float32(p.reshape(-1))


def dtype_of(x) -> str:
    return dtype_name(x)


def raw_bits(a):
    """A same-size unsigned-integer view for 16-bit floats (layout copies without float kernels,
    so no cupy arithmetic on bfloat16 is needed)."""
    return a.view(cupy.uint16) if a.itemsize == 2 else a
