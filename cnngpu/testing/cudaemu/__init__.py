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
from __future__ import annotations

from .build import CompileError, LAST_BUILD, cache_dir  # noqa: F401
from .launch import (EXECUTED, ArgumentError, CudaEmuError, OutOfBoundsError, RawKernel,  # noqa: F401
                     RawModule, order, schedule, set_order)
from .translate import TranslateError, translate  # noqa: F401

ENV_SWITCH = "CNNGPU_CUDA_EMULATE"


def enabled() -> bool:
    """True when the cupy backend is asked to run on the emulation (``CNNGPU_CUDA_EMULATE=1``)."""
    import os
    return os.environ.get(ENV_SWITCH, "") not in ("", "0")


def entry_points(cuda_dir: str | None = None) -> set:
    """Every ``extern "C" __global__`` entry point in the .cu files of ``cuda_dir`` (default
    kernels/cuda): what ``EXECUTED`` must cover for every CUDA kernel to have run."""
    import glob
    import os
    import re
    if cuda_dir is None:
        from cnngpu.kernels import CUDA_DIR
        cuda_dir = CUDA_DIR
    bounds = r'(?:__launch_bounds__\s*\([^)]*\)\s*)?'
    pat = re.compile(r'extern\s+"C"\s+__global__\s+' + bounds + r'void\s+' + bounds + r'(\w+)\s*\(')
    names = set()
    for path in glob.glob(os.path.join(cuda_dir, "*.cu*")):
        with open(path) as f:
            names.update(pat.findall(f.read()))
    return names


def why_unavailable() -> str | None:
    """None when the emulation can run here, else why not (the backend registry's reason)."""
    import shutil
    from . import build
    if shutil.which(build.CXX) is None:
        return (f"the cupy backend is emulated (CNNGPU_CUDA_EMULATE=1) but the C++ compiler {build.CXX!r} "
                f"is not on PATH (install g++ or set CXX)")
    try:
        import ml_dtypes  # noqa: F401
    except ImportError as e:
        return f"the cupy backend is emulated (CNNGPU_CUDA_EMULATE=1) but ml_dtypes is missing ({e})"
    return None


def describe() -> str:
    """One line for ``cnngpu info``: what the emulated cupy backend runs on."""
    from . import build
    return (f"cupy backend emulated on the CPU (cnngpu.testing.cudaemu: g++ fibers, PTX interpreter; "
            f"{build.CXX}, cache {build.cache_dir()}, thread order {order()})")
