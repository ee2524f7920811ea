"""Backend registry: ``'numpy'`` (the executable specification), ``'cupy'`` and ``'triton'``.

Every backend is a package exposing the same operation set with the same signatures (see
``cnngpu.backends.ops.CONTRACT``, checked by tests/test_backend_contract.py) plus array helpers:

    name: str                      backend name
    array_type                     the native array class (numpy.ndarray, cupy.ndarray, torch.Tensor)
    asarray(a, dtype=None)         NumPy/native array -> native array on the backend's device
    to_numpy(x)                    native array -> numpy.ndarray (a copy for device arrays)
    LAUNCHES                       collections.Counter of kernel/op names run, so tests can assert
                                   that the requested backend (and algorithm) really ran

``get_backend(name)`` imports lazily and raises ``BackendUnavailableError`` with the reason
(package missing, no CUDA device, ...) when a backend cannot run here.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Dict, List

NAMES = ("numpy", "cupy", "triton")
_MODULES = {
    "numpy": "cnngpu.backends.numpy_backend",
    "cupy": "cnngpu.backends.cupy_backend",
    "triton": "cnngpu.backends.triton_backend",
}
_cache: Dict[str, ModuleType] = {}


class BackendUnavailableError(RuntimeError):
    """Raised when a backend is asked for but cannot run on this machine; the message says why."""


_EMULATE_HINT = "(set CNNGPU_CUDA_EMULATE=1 to run its CUDA kernels on the CPU emulation, a verification tool)"


def _why_unavailable(name: str) -> str | None:
    """None when backend ``name`` can run here, else a sentence saying why not."""
    if name == "numpy":
        return None
    if name == "triton":
        try:
            import torch  # noqa: F401
        except ImportError as e:
            return f"the triton backend needs torch, which is not installed ({e}); pip install 'cnngpu[triton]'"
        try:
            import triton  # noqa: F401
        except ImportError as e:
            return f"the triton backend needs triton, which is not installed ({e}); pip install 'cnngpu[triton]'"
        if os.environ.get("TRITON_INTERPRET") == "1":
            return None
        import torch
        if not torch.cuda.is_available():
            return ("the triton backend needs a CUDA device and torch sees none "
                    "(set TRITON_INTERPRET=1 to run the kernels on CPU tensors in Triton's interpreter)")
        return None
    if name == "cupy":
        from cnngpu.testing import cudaemu
        if cudaemu.enabled():   # CNNGPU_CUDA_EMULATE=1: the kernels run on the CPU emulation
            return cudaemu.why_unavailable()
        try:
            import cupy
        except ImportError as e:
            return f"the cupy backend needs cupy, which is not installed ({e}); pip install 'cnngpu[cupy]'"
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDARuntimeError, or a missing driver library
            return (f"the cupy backend needs a CUDA device; cupy could not reach one ({type(e).__name__}: {e}) "
                    f"{_EMULATE_HINT}")
        if n < 1:
            return f"the cupy backend needs a CUDA device; cupy found 0 devices {_EMULATE_HINT}"
        return None
    raise ValueError(f"unknown backend {name!r}; choose one of {NAMES}")


def is_available(name: str) -> bool:
    """True when ``get_backend(name)`` would succeed."""
    return _why_unavailable(name) is None


def available_backends() -> List[str]:
    """Names of the backends that can run on this machine, fastest first."""
    return [n for n in ("triton", "cupy", "numpy") if is_available(n)]


def default_backend() -> str:
    """The best backend that runs here: triton on a CUDA device, else cupy, else numpy.

    Triton under ``TRITON_INTERPRET=1`` on a machine without CUDA and cupy under
    ``CNNGPU_CUDA_EMULATE=1`` are *not* chosen by default: the interpreter and the emulation are
    verification tools, far slower than NumPy.
    """
    if os.environ.get("TRITON_INTERPRET") != "1" and is_available("triton"):
        return "triton"
    if not _cupy_emulated() and is_available("cupy"):
        return "cupy"
    return "numpy"


def get_backend(name: str | None = None) -> ModuleType:
    """Return the backend module for ``name`` (None: ``default_backend()``)."""
    if name is None:
        name = default_backend()
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, one of {NAMES}, got {type(name).__name__}")
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {NAMES}")
    if name in _cache:
        return _cache[name]
    why = _why_unavailable(name)
    if why is not None:
        raise BackendUnavailableError(why)
    mod = importlib.import_module(_MODULES[name])
    _cache[name] = mod
    return mod


def _cupy_emulated() -> bool:
    """True when the cupy backend runs on the CPU emulation (``CNNGPU_CUDA_EMULATE=1``)."""
    from cnngpu.testing import cudaemu
    return cudaemu.enabled()


def backend_of(x) -> str | None:
    """Name of the backend whose native array type ``x`` is, or None (for Python scalars etc.)."""
    import numpy as np
    if type(x).__module__.startswith("cnngpu.testing.cudaemu"):  # emulated cupy arrays subclass ndarray
        return "cupy"
    if isinstance(x, np.ndarray):
        return "numpy"
    mod = type(x).__module__
    if mod.startswith("torch"):
        return "triton"
    if mod.startswith("cupy"):
        return "cupy"
    return None


# ----------------------------------------------------------------------------------------------
# Output poisoning (a verification aid): when on, every backend fills the output buffers it
# allocates with NaN (floats) or -1 (ints) before a kernel writes them, so a kernel that skips an
# element cannot pass a parity test by luck. Tests turn it on; CNNGPU_POISON=1 turns it on too.
# ----------------------------------------------------------------------------------------------
_poison = {"on": os.environ.get("CNNGPU_POISON") == "1"}


def poison_enabled() -> bool:
    return _poison["on"]


def set_poison(on: bool) -> None:
    _poison["on"] = bool(on)
