"""torch tensor <-> backend array, and the backend choice for a tensor (see cnngpu.torch's docstring)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from .. import backends as _backends


def pick_backend(x: torch.Tensor, backend: Optional[str] = None) -> str:
    """The backend that runs an op on tensor ``x`` (see the module docstring); checks it can."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__module__}.{type(x).__name__}")
    if backend is None:
        if x.device.type == "cpu":
            return "numpy"
        if x.device.type != "cuda":
            raise ValueError(f"cnngpu.torch runs on CPU or CUDA tensors, got device {x.device}")
        for name in ("triton", "cupy"):
            if _backends.is_available(name):
                return name
        raise _backends.BackendUnavailableError(
            f"CUDA tensor given but neither GPU backend can run: triton: {_backends._why_unavailable('triton')}; "
            f"cupy: {_backends._why_unavailable('cupy')}")
    be = _backends.get_backend(backend)  # ValueError (unknown) / BackendUnavailableError (why)
    if backend == "cupy" and x.device.type != "cuda":
        raise ValueError(f"backend 'cupy' needs CUDA tensors, got a tensor on {x.device}")
    if backend == "triton":
        dev = be.device()
        if x.device.type != dev.type:
            raise ValueError(f"backend 'triton' runs on {dev.type} tensors here, got a tensor on {x.device}")
    if backend == "numpy" and x.dtype == torch.bfloat16:
        raise TypeError(f"input has dtype bfloat16 (shape {tuple(x.shape)}), but backend 'numpy' has no bfloat16; "
                        f"use float16/float32/float64 or a GPU backend")
    return backend


def _native(t: Optional[torch.Tensor], backend: str, name: str = "a tensor argument") -> Any:
    """torch tensor -> the backend's array (zero-copy except numpy-backend on CUDA tensors)."""
    if t is None:
        return None
    t = t.detach()
    if backend == "triton":
        return t
    if backend == "cupy":
        from ..backends.cupy_backend._cupy import cupy
        return cupy.from_dlpack(t)
    if t.dtype == torch.bfloat16:
        raise TypeError(f"{name} has dtype bfloat16 (shape {tuple(t.shape)}), but backend 'numpy' has no "
                        f"bfloat16; use float16/float32/float64 or a GPU backend")
    return t.cpu().numpy()


def _tensor(a: Any, backend: str, device: torch.device) -> Optional[torch.Tensor]:
    """Backend array -> torch tensor on ``device`` (zero-copy where the device allows)."""
    if a is None:
        return None
    if backend == "triton":
        return a
    if backend == "cupy":
        return torch.from_dlpack(a)
    a = np.asarray(a)
    if not a.flags.writeable or any(s < 0 for s in a.strides):
        a = np.array(a)  # torch.from_numpy needs a writable, non-negative-stride array
    return torch.from_numpy(a).to(device)


def _write_back(buf: Optional[torch.Tensor], native: Any, backend: str) -> None:
    """After a kernel updated ``native`` in place: make sure ``buf`` sees it (numpy on CUDA copies)."""
    if buf is not None and backend == "numpy" and buf.device.type != "cpu":
        buf.copy_(torch.from_numpy(np.asarray(native)))


def _affine_weight(weight: Optional[torch.Tensor], bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The norms' weight as the kernels see it: ones when only a bias is given, so the backward
    computes the bias gradient (the kernels return dweight/dbias only when weight is given)."""
    if weight is None and bias is not None:
        return torch.ones_like(bias.detach())
    return weight


def _keep_format(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` in ``x``'s memory format: channels_last in, channels_last out (as torch)."""
    if (x.dim() == 4 and y.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)):
        return y.contiguous(memory_format=torch.channels_last)
    return y


def _grad(dy: torch.Tensor, backend: str) -> Any:
    return _native(dy.contiguous(), backend)

