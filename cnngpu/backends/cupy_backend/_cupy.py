"""The one place the cupy backend imports cupy: every other module does ``from ._cupy import cupy``,
so what backs the backend's arrays and kernels can be switched here alone.

``CNNGPU_CUDA_EMULATE=1`` (like ``TRITON_INTERPRET=1`` for Triton) binds ``cupy`` to the CPU
emulation's stand-in, ``cnngpu.testing.cudaemu.cupy_api``: the same launchers, planners and
specialisations then compile the real kernels/cuda sources with g++ and run them on NumPy memory.
"""
from cnngpu.testing import cudaemu as _cudaemu

EMULATED = _cudaemu.enabled()

if EMULATED:
    from cnngpu.testing.cudaemu import cupy_api as cupy
else:
    import cupy  # type: ignore[no-redef]

__all__ = ["cupy", "EMULATED"]
