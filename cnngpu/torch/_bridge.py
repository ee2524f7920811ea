"""torch tensor <-> backend array, the backend choice for a tensor, and the output memory format
(see cnngpu.torch's docstring). Used inside the custom ops' implementations (real tensors only)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Tuple

import numpy as np
import torch

from .. import backends as _backends
from ..backends import weight_cache


def pick_backend(x: torch.Tensor, backend: Optional[str] = None) -> str:
    """The backend that runs an op on tensor ``x`` (see the module docstring); checks it can."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__module__}.{type(x).__name__}")
    if backend is None or backend == "":
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
    if backend == "cupy" and x.device.type != _cupy_device_type():
        raise ValueError(f"backend 'cupy' needs {_cupy_device_type().upper()} tensors here, got a tensor on {x.device}")
    if backend == "triton":
        dev = be.device()
        if x.device.type != dev.type:
            raise ValueError(f"backend 'triton' runs on {dev.type} tensors here, got a tensor on {x.device}")
    return backend


def _cupy_device_type() -> str:
    """Where the cupy backend's arrays live: CUDA, or host memory on the CPU emulation
    (``CNNGPU_CUDA_EMULATE=1``, where CPU tensors convert zero-copy like CUDA tensors on a GPU)."""
    return "cpu" if _backends._cupy_emulated() else "cuda"


def check_backend(x: Any, backend: Optional[str]) -> str:
    """The ``backend`` argument of the custom ops: ``''`` for automatic (resolved per call, on the
    real tensors, so a traced or exported graph is device-agnostic), else the name. In eager mode
    on a real CPU/CUDA tensor the choice is checked at once (clear errors before any work); under
    torch.compile/export/fx tracing and on meta tensors the op's implementation checks it when it runs."""
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be a str or None, got {type(backend).__name__}")
    if isinstance(x, torch.fx.Proxy) or torch.compiler.is_compiling():
        return backend or ""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__module__}.{type(x).__name__}")
    if x.device.type in ("cpu", "cuda") and not _is_fake(x):
        pick_backend(x, backend)
    return backend or ""


def _is_fake(x: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor
    return isinstance(x, FakeTensor)


def _upcast(t: torch.Tensor, backend: str) -> torch.Tensor:
    """bfloat16 for a backend without it (numpy): float32, exact; results are rounded back by
    ``_tensor(..., dtype=)`` (torch's CPU kernels also compute bfloat16 in float32 and round)."""
    if t.dtype == torch.bfloat16 and "bfloat16" not in _backends.get_backend(backend).DTYPES:
        return t.float()
    return t


def _native(t: Optional[torch.Tensor], backend: str) -> Any:
    """torch tensor -> the backend's array (zero-copy except numpy-backend on CUDA tensors and
    bfloat16 on a backend without it)."""
    if t is None:
        return None
    t = _upcast(t.detach(), backend)
    if backend == "triton":
        return t
    if backend == "cupy":
        from ..backends.cupy_backend._cupy import cupy
        return cupy.from_dlpack(t)
    return t.cpu().numpy()


def _tensor(a: Any, backend: str, device: torch.device, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Backend array -> torch tensor on ``device`` (zero-copy where the device allows), cast to
    ``dtype`` when given (bfloat16 results of the float32 path are rounded to nearest even)."""
    if backend == "triton":
        t = a
    elif backend == "cupy":
        t = torch.from_dlpack(a)
    else:
        a = np.asarray(a)
        if not a.flags.writeable or any(s < 0 for s in a.strides):
            a = np.array(a)  # torch.from_numpy needs a writable, non-negative-stride array
        t = torch.from_numpy(a).to(device)
    return not_view(t if dtype is None or t.dtype == dtype else t.to(dtype))


def not_view(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a tensor on the same memory that is not an autograd view: a custom op's outputs
    must not be views (autograd would forbid inplace ops on them, e.g. ReLU(inplace=True))."""
    return t.detach() if t._is_view() else t


@contextlib.contextmanager
def native_weight(w: Optional[torch.Tensor], backend: str) -> Iterator[Any]:
    """``_native(w, backend)`` declared, for the block, as w's contents at w's current in-place
    version (``weight_cache.versioned``): the backends' re-laid copies of a conv weight are then
    made once per version of the parameter itself, although the array they receive is a new
    object on every call (a detached tensor, a cupy DLPack view)."""
    n = _native(w, backend)
    version = None if w is None else weight_cache.torch_version(w)
    if version is None:                 # no weight, or an inference tensor (no version counter)
        yield n
        return
    with weight_cache.versioned(n, w, version):
        yield n


def _write_back(buf: Optional[torch.Tensor], native: Any, backend: str) -> None:
    """After a kernel updated ``native`` (made from ``buf``) in place: make sure ``buf`` sees it
    (numpy on CUDA and the float32 stand-in for a bfloat16 buffer are copies)."""
    if buf is None:
        return
    if backend == "cupy":
        src = torch.from_dlpack(native)
    elif backend == "numpy":
        src = torch.from_numpy(np.asarray(native))
    else:
        src = native
    if src.data_ptr() != buf.data_ptr():
        buf.copy_(src)


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The format an output of ``x``'s op takes: channels_last in, channels_last out (as torch)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _strides(shape: Any, fmt: torch.memory_format) -> Tuple[int, ...]:
    """The strides torch.empty(shape, memory_format=fmt) gives (what the fake kernels promise)."""
    shape = tuple(int(s) for s in shape)
    order = [1, 3, 2, 0] if fmt == torch.channels_last and len(shape) == 4 else list(range(len(shape)))[::-1]
    st, acc = [0] * len(shape), 1
    for d in order:
        st[d] = acc
        acc *= max(shape[d], 1)
    return tuple(st)


def in_format(y: torch.Tensor, fmt: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``y`` with exactly the strides of ``empty(y, y.shape, fmt)`` (4-D: ``fmt``; else contiguous);
    a copy only when its strides differ."""
    if y.dim() != 4:
        fmt = torch.contiguous_format
    want = _strides(y.shape, fmt)
    if tuple(y.stride()) == want:
        return not_view(y)
    return torch.empty_strided(tuple(y.shape), want, dtype=y.dtype, device=y.device).copy_(y)


def empty(x: torch.Tensor, shape: Any, fmt: torch.memory_format = torch.contiguous_format,
          dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """A fake-kernel output: ``shape`` on x's device, x's dtype unless given, laid out as ``in_format``."""
    shape = tuple(shape)
    dt = x.dtype if dtype is None else dtype
    if len(shape) == 4:
        return torch.empty(shape, memory_format=fmt, dtype=dt, device=x.device)
    return torch.empty(shape, dtype=dt, device=x.device)


def stats_dtype(x: torch.Tensor) -> torch.dtype:
    """Per-row statistics (mean, invstd) are float32, float64 for float64 input."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
