"""cudaemu: the project's CUDA C kernels executed on the CPU (verification tier 3 of DESIGN.md).

The real ``kernels/cuda`` sources, unmodified, are translated (``translate``: inline PTX and
``__shared__`` declarations), compiled with g++ against ``cudaemu.h`` and run by the fiber runtime
``cudaemu_rt.cpp``: blocks one after another, each block's threads as cooperative fibers, warp
collectives and PTX tensor-core instructions emulated exactly as the PTX ISA defines them.

Public API (mirrors the cupy subset the cupy backend uses):
  RawModule(code=..., options=(...)).get_function(name) -> RawKernel;  kern(grid, block, args,
  shared_mem=0).  cupy_api: a cupy stand-in (arrays, dtypes, cuda.Device, RawModule, ...).
  schedule('reverse') / set_order(): thread and block order of the launches (races show as
  different results between the two orders).  EXECUTED: launches per entry point.
See README.md in this directory for what it checks and what it cannot catch.
"""
from .build import CompileError, LAST_BUILD, cache_dir  # noqa: F401
from .launch import (EXECUTED, ArgumentError, CudaEmuError, OutOfBoundsError, RawKernel,  # noqa: F401
                     RawModule, order, schedule, set_order)
from .translate import TranslateError, translate  # noqa: F401

ENV_SWITCH = "CNNGPU_CUDA_EMULATE"


def enabled() -> bool:
    """True when the cupy backend is asked to run on the emulation (``CNNGPU_CUDA_EMULATE=1``)."""
    import os
    return os.environ.get(ENV_SWITCH, "") not in ("", "0")


def describe() -> str:
    """One line for ``cnngpu info``: what the emulated cupy backend runs on."""
    from . import build
    return (f"cupy backend emulated on the CPU (cnngpu.testing.cudaemu: g++ fibers, PTX interpreter; "
            f"{build.CXX}, cache {build.cache_dir()}, thread order {order()})")
