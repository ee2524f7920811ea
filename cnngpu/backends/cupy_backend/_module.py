"""Loading CUDA C sources from kernels/cuda/ with cupy.RawModule, cached per device and
specialisation.

A specialisation is a dict of preprocessor defines (e.g. {"SCALAR_T": "__half", "TILE": 64});
each distinct (device, file, defines) compiles once. The same option list serves the CPU compile
test (tests/test_cuda_compile.py builds every entry of every op module's CUDA_BUILDS with nvcc),
so what is checked on CPU is what runs on the GPU.
"""
from __future__ import annotations

import functools
import os
from typing import Dict, Tuple

from cnngpu.kernels import CUDA_DIR

from ._cupy import cupy

_modules: Dict[tuple, object] = {}


@functools.lru_cache(maxsize=None)
def source(fname: str) -> str:
    with open(os.path.join(CUDA_DIR, fname)) as f:
        return f.read()


def define_flags(defines: Dict[str, object] | None) -> Tuple[str, ...]:
    return tuple(f"-D{k}={v}" for k, v in sorted((defines or {}).items()))


def compile_options(defines: Dict[str, object] | None = None) -> Tuple[str, ...]:
    """NVRTC/nvcc options shared by runtime builds and the CPU compile test."""
    return ("--std=c++17", f"-I{CUDA_DIR}") + define_flags(defines)


def get_function(fname: str, func_name: str, defines: Dict[str, object] | None = None):
    """The cupy.RawKernel ``func_name`` (an extern "C" entry point) of kernels/cuda/``fname``
    compiled with ``defines`` for the current device; compiled once, then cached."""
    dev = cupy.cuda.Device().id
    key = (dev, fname, define_flags(defines))
    mod = _modules.get(key)
    if mod is None:
        mod = cupy.RawModule(code=source(fname), options=compile_options(defines))
        _modules[key] = mod
    return mod.get_function(func_name)
