"""Moving arrays between NumPy, CuPy and torch (the three backends' native types).

``convert(x, backend)`` returns ``x`` as the native array of ``backend`` ('numpy', 'cupy' or
'triton' = torch on the triton backend's device). It shares memory through DLPack where both
sides live on the same device (numpy <-> torch CPU, torch CUDA <-> cupy) and copies otherwise
(host <-> device, or a dtype NumPy lacks such as bfloat16). ``to_numpy(x)`` always gives a
``numpy.ndarray`` (bfloat16 widened to float32), e.g. for inspection or plotting.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import backends as _backends
from ._typing import Array

__all__ = ["to_numpy", "convert", "shares_memory"]


def _kind(x: Any) -> str:
    """'numpy', 'torch', 'cupy' or 'other' for the array's library (the registry's backend_of,
    with torch named as the library rather than the 'triton' backend)."""
    be = _backends.backend_of(x)
    return {"triton": "torch", None: "other"}.get(be, be or "other")


def to_numpy(x: Any) -> np.ndarray:
    """Any numpy/cupy/torch array, cnngpu.nn.Parameter (its data), scalar or list -> numpy.ndarray.

    NumPy input is returned as is; torch CPU tensors share memory with the result (DLPack /
    ``Tensor.numpy``); device arrays are copied to the host. bfloat16 becomes float32.
    """
    kind = _kind(x)
    if kind == "numpy":
        return x
    if kind == "other" and type(x).__name__ == "Parameter" and hasattr(x, "data"):  # cnngpu.nn.Parameter
        return to_numpy(x.data)
    if kind == "torch":
        import torch
        t = x.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        if t.device.type != "cpu":
            t = t.cpu()
        return t.resolve_conj().resolve_neg().numpy()
    if kind == "cupy":
        from .backends.cupy_backend._cupy import cupy
        if str(x.dtype) == "bfloat16" and getattr(cupy, "EMULATED", False):  # host memory, ml_dtypes bf16
            return cupy.asnumpy(x).astype(np.float32)
        if str(x.dtype) == "bfloat16":  # cupy holds bf16 only as a DLPack pass-through
            import torch
            return torch.from_dlpack(x).float().cpu().numpy()
        return cupy.asnumpy(x)
    return np.asarray(x)


def _torch_device() -> Any:  # torch.device (torch is optional)
    import torch
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def convert(x: Any, backend: str) -> Array:
    """Return ``x`` as a native array of ``backend`` ('numpy' | 'cupy' | 'triton').

    Zero-copy (DLPack) when source and target share a device: numpy <-> torch CPU (the triton
    backend under ``TRITON_INTERPRET=1``), torch CUDA <-> cupy. Otherwise a copy. The target backend
    must be available (``BackendUnavailableError`` says why not); the dtype is kept.
    """
    if backend not in _backends.NAMES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {_backends.NAMES}")
    kind = _kind(x)
    if backend == "numpy":
        return to_numpy(x)
    if backend == "triton":
        if not _backends.is_available("triton"):
            raise _backends.BackendUnavailableError(_backends._why_unavailable("triton"))
        import torch
        dev = _torch_device()
        if kind == "torch":
            return x if x.device == dev else x.to(dev)
        if kind == "cupy":
            t = torch.from_dlpack(x)  # same CUDA device: zero-copy
            return t if t.device == dev else t.to(dev)
        a = np.asarray(x)
        if dev.type == "cpu":
            # copy instead of sharing: read-only memory (torch would let kernels write into it) and
            # negative or byte-odd strides (torch.from_dlpack aborts the process on those)
            if not a.flags.writeable or any(st < 0 or st % a.itemsize for st in a.strides):
                return torch.from_numpy(np.array(a))
            try:
                return torch.from_dlpack(a)  # zero-copy on the host
            except (BufferError, RuntimeError, TypeError):  # a layout DLPack cannot describe
                return torch.from_numpy(np.array(a))
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    # cupy
    if not _backends.is_available("cupy"):
        raise _backends.BackendUnavailableError(_backends._why_unavailable("cupy"))
    from .backends.cupy_backend._cupy import cupy
    if kind == "cupy":
        return x
    if kind == "torch" and x.device.type == "cuda":
        return cupy.from_dlpack(x.detach())
    return cupy.asarray(to_numpy(x))


def shares_memory(a: Any, b: Any) -> bool:
    """True when two host arrays/tensors (numpy or torch CPU) view the same memory."""
    return np.shares_memory(to_numpy(a), to_numpy(b))
