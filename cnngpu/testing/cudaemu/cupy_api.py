"""A cupy stand-in for the emulation: exactly the cupy API subset cnngpu's cupy backend (and its
tests and benchmarks) use, on NumPy memory with guarded allocations.

Switching the backend onto it is a module substitution: where the backend does ``import cupy``,
it takes ``cnngpu.testing.cudaemu.cupy_api`` instead when ``CNNGPU_CUDA_EMULATE=1``. Anything not
listed here raises AttributeError naming the missing name (so a new cupy call in the backend
fails loudly instead of running on NumPy by accident).

Not emulated: streams and events (everything is synchronous), memory pools beyond the two calls
used, multiple devices, cupy's own elementwise/reduction kernels (array arithmetic runs on NumPy),
and the refusal of real cupy to convert device arrays implicitly to NumPy.
"""
from __future__ import annotations

import os

import numpy as np

from .launch import RawKernel, RawModule  # noqa: F401
from .memory import asdevice, empty as _empty, ndarray

try:  # cupy >= 14 exposes ml_dtypes' bfloat16 as a NumPy dtype
    from ml_dtypes import bfloat16  # noqa: F401
except ImportError:  # pragma: no cover
    bfloat16 = None

EMULATED = True
dtype = np.dtype
float16, float32, float64 = np.float16, np.float32, np.float64
int8, int16, int32, int64 = np.int8, np.int16, np.int32, np.int64
uint8, uint16, uint32, uint64 = np.uint8, np.uint16, np.uint32, np.uint64
bool_ = np.bool_


def empty(shape, dtype=np.float32, order="C") -> ndarray:
    return _empty(shape, dtype, order)


def full(shape, fill_value, dtype=None) -> ndarray:
    dt = np.dtype(dtype) if dtype is not None else np.asarray(fill_value).dtype
    out = _empty(shape, dt)
    out.view(np.ndarray)[...] = fill_value
    return out


def zeros(shape, dtype=np.float32) -> ndarray:
    return full(shape, 0, dtype)


def ones(shape, dtype=np.float32) -> ndarray:
    return full(shape, 1, dtype)


def asarray(a, dtype=None, order=None) -> ndarray:
    """A device array: ``a`` itself when it already is one of the right dtype, else a guarded copy."""
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return asdevice(a.view(np.ndarray) if isinstance(a, ndarray) else a, dtype)


def array(a, dtype=None, copy=True) -> ndarray:
    return asdevice(a.view(np.ndarray) if isinstance(a, ndarray) else a, dtype)


def ascontiguousarray(a, dtype=None) -> ndarray:
    if not isinstance(a, ndarray):
        raise TypeError(f"cupy.ascontiguousarray needs a cupy array, got {type(a).__name__}")
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return asdevice(np.ascontiguousarray(a.view(np.ndarray), dtype=dtype))


def asnumpy(a, stream=None, order="C") -> np.ndarray:
    """A host copy (numpy.ndarray) of a device array (or of anything array-like)."""
    return np.array(a.view(np.ndarray) if isinstance(a, ndarray) else a, copy=True, order=order)


def matmul(a, b, out=None) -> ndarray:
    """cuBLAS stand-in: float32 GEMM on NumPy (float32 accumulation order differs from cuBLAS)."""
    r = np.matmul(a.view(np.ndarray), b.view(np.ndarray))
    return asdevice(r)


def stack(arrays, axis=0) -> ndarray:
    return asdevice(np.stack([a.view(np.ndarray) if isinstance(a, ndarray) else a for a in arrays], axis))


def tile(a, reps) -> ndarray:
    return asdevice(np.tile(a.view(np.ndarray), reps))


def from_dlpack(x) -> ndarray:
    """Zero-copy view of a DLPack producer (e.g. a CPU torch tensor) as a device array."""
    mod = type(x).__module__
    if mod.startswith("torch") and str(getattr(x, "dtype", "")) == "torch.bfloat16":
        import torch
        return np.from_dlpack(x.view(torch.int16)).view(bfloat16).view(ndarray)
    return np.from_dlpack(x).view(ndarray)


def get_array_module(*args):
    return __import__(__name__, fromlist=["x"])


class _MemoryPool:
    def free_all_blocks(self):
        pass

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0


_pool = _MemoryPool()


def get_default_memory_pool():
    return _pool


class _Stream:
    def synchronize(self):
        pass


class _Device:
    """cupy.cuda.Device: one emulated device, id 0. MultiProcessorCount is 132 (an H100/H200) unless
    CNNGPU_CUDAEMU_SMS says otherwise, so the launchers plan split-K as on the lent GPU."""

    def __init__(self, device=None):
        d = 0 if device is None else int(device)
        if d != 0:
            raise ValueError(f"cudaemu emulates one device (id 0), got {device}")
        self.id = 0

    @property
    def attributes(self):
        return {"MultiProcessorCount": int(os.environ.get("CNNGPU_CUDAEMU_SMS", "132")),
                "MaxSharedMemoryPerBlock": 48 * 1024, "MaxSharedMemoryPerBlockOptin": 227 * 1024,
                "MaxThreadsPerBlock": 1024, "WarpSize": 32, "ComputeCapabilityMajor": 9,
                "ComputeCapabilityMinor": 0}

    @property
    def compute_capability(self):
        return "90"

    def synchronize(self):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def runtimeGetVersion():
        return 12040

    @staticmethod
    def getDeviceProperties(device):
        return {"name": b"cudaemu (CPU emulation of sm_90)", "multiProcessorCount": _Device().attributes[
            "MultiProcessorCount"]}


class _Cuda:
    Device = _Device
    runtime = _Runtime()

    @staticmethod
    def get_current_stream():
        return _Stream()

    Stream = _Stream


cuda = _Cuda()


def __getattr__(name):
    raise AttributeError(f"cupy.{name} is not part of the emulated cupy API (cnngpu.testing.cudaemu.cupy_api); "
                         f"add it there if the backend needs it")
