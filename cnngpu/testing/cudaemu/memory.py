"""NumPy-backed "device" arrays for the emulated cupy backend, with guard bytes around every
allocation.

``ndarray`` is a numpy.ndarray subclass (views, reshapes, transposes and slicing behave as NumPy's,
and as cupy's for the subset the backend uses) whose ``.data.ptr`` is the address a kernel
receives. Allocations made through this module (``empty``/``full``/``zeros``/``asarray``...) sit
between two GUARD-byte runs of 0xFF (NaN in every float width, -1 in every integer width): a
kernel that reads past the end sees NaN, one that writes past it is reported by the launcher
(which also stages each argument in its own guarded copy, see launch.py).
"""
from __future__ import annotations

import numpy as np

GUARD = 256          # bytes of guard on each side of an allocation
ALIGN = 256          # cudaMalloc's alignment
GUARD_BYTE = 0xFF


class _Data:
    __slots__ = ("ptr",)

    def __init__(self, ptr: int):
        self.ptr = ptr


class ndarray(np.ndarray):
    """A device array of the emulated cupy: NumPy memory, cupy's ``.data.ptr``."""

    @property
    def data(self):  # cupy: a MemoryPointer whose .ptr is the device address
        return _Data(self.__array_interface__["data"][0])

    @property
    def device(self):
        from .cupy_api import cuda
        return cuda.Device(0)

    def get(self):
        """cupy's ndarray.get(): a host (NumPy) copy."""
        return np.array(self, copy=True).view(np.ndarray)

    def __array_finalize__(self, obj):
        pass


def _raw(nbytes: int) -> tuple[np.ndarray, int]:
    """(backing uint8 buffer, offset of an ALIGN-aligned data start) with GUARD bytes around."""
    buf = np.full(nbytes + 2 * GUARD + ALIGN, GUARD_BYTE, dtype=np.uint8)
    base = buf.__array_interface__["data"][0]
    off = GUARD + (-(base + GUARD)) % ALIGN
    return buf, off


def empty(shape, dtype=np.float32, order="C") -> ndarray:
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf, off = _raw(n)
    arr = np.ndarray(shape, dtype=dtype, buffer=buf, offset=off, order=order).view(ndarray)
    arr._guard = (buf, off, n)
    # uninitialised memory: 0xFF bytes (NaN / -1), like the poison the backend applies anyway
    return arr


def guard_damage(arr) -> str | None:
    """A description of damaged guard bytes of ``arr``'s allocation, or None when intact."""
    base = arr
    while getattr(base, "_guard", None) is None and isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    g = getattr(base, "_guard", None)
    if g is None:
        return None
    buf, off, n = g
    head, tail = buf[off - GUARD:off], buf[off + n:off + n + GUARD]
    bad_tail = np.flatnonzero(tail != GUARD_BYTE)
    if bad_tail.size:
        return f"{bad_tail[0]} bytes past the end of its {n}-byte allocation"
    bad_head = np.flatnonzero(head != GUARD_BYTE)
    if bad_head.size:
        return f"{GUARD - bad_head[-1]} bytes before the start of its {n}-byte allocation"
    return None


def asdevice(a, dtype=None) -> ndarray:
    """A guarded device copy of array-like ``a`` (always a copy)."""
    h = np.asarray(a, dtype=dtype)
    out = empty(h.shape, h.dtype)
    if h.size:
        np.copyto(out.view(np.ndarray), h)
    return out
