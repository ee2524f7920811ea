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
from typing import Any, Dict, Tuple

from cnngpu.kernels import CUDA_DIR

from ._cupy import EMULATED, cupy

_modules: Dict[tuple, Any] = {}


@functools.lru_cache(maxsize=None)
def source(fname: str) -> str:
    with open(os.path.join(CUDA_DIR, fname)) as f:
        return f.read()


def define_flags(defines: Dict[str, object] | None) -> Tuple[str, ...]:
    return tuple(f"-D{k}={v}" for k, v in sorted((defines or {}).items()))


def compile_options(defines: Dict[str, object] | None = None, arch: str | None = None) -> Tuple[str, ...]:
    """NVRTC/nvcc options shared by runtime builds and the CPU compile test; ``arch`` (e.g.
    'sm_90a', for sources that need arch-specific features) adds ``-arch=<arch>``."""
    return ("--std=c++17", f"-I{CUDA_DIR}") + define_flags(defines) + ((f"-arch={arch}",) if arch else ())


def nvrtc_cubin(code: str, options: Tuple[str, ...], name: str) -> bytes:
    """The cubin NVRTC builds from ``code`` with exactly ``options`` (no device needed)."""
    from cupy_backends.cuda.libs import nvrtc  # type: ignore[import-not-found,import-untyped,unused-ignore]
    prog = nvrtc.createProgram(code, name, (), ())
    try:
        try:
            nvrtc.compileProgram(prog, list(options))
        except Exception as e:
            raise RuntimeError(f"NVRTC failed on {name} ({' '.join(options)}):\n{nvrtc.getProgramLog(prog)}") from e
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)


def _nvrtc_module(code: str, options: Tuple[str, ...], name: str):
    """A cupy.cuda.function.Module built by NVRTC with exactly ``options`` (cupy.RawModule appends
    its own -arch=sm_XX, which cannot express the arch-specific sm_90a target)."""
    from cupy.cuda import function  # type: ignore[import-not-found,import-untyped,unused-ignore]
    mod = function.Module()
    mod.load(nvrtc_cubin(code, options, name))
    return mod


def get_function(fname: str, func_name: str, defines: Dict[str, object] | None = None, arch: str | None = None):
    """The kernel ``func_name`` (an extern "C" entry point) of kernels/cuda/``fname`` compiled with
    ``defines`` for the current device (for ``arch``, e.g. 'sm_90a', when given); compiled once,
    then cached. Launch as cupy.RawKernel: ``kern(grid, block, args, shared_mem=...)``."""
    dev = cupy.cuda.Device().id
    key = (dev, fname, define_flags(defines), arch)
    mod = _modules.get(key)
    if mod is None:
        opts = compile_options(defines, arch)
        if arch is None or EMULATED:
            mod = cupy.RawModule(code=source(fname), options=opts)
        else:
            mod = _nvrtc_module(source(fname), opts, fname)
        _modules[key] = mod
    return mod.get_function(func_name)


def set_max_dynamic_shared(kern, nbytes: int) -> None:
    """Opt ``kern`` in to ``nbytes`` of dynamic shared memory (above the default 48 KiB)."""
    if hasattr(kern, "max_dynamic_shared_size_bytes"):   # cupy.RawKernel and the emulation's
        if kern.max_dynamic_shared_size_bytes < nbytes:
            kern.max_dynamic_shared_size_bytes = int(nbytes)
        return
    from cupy_backends.cuda.api import driver  # type: ignore[import-not-found,import-untyped,unused-ignore]
    driver.funcSetAttribute(kern.ptr, driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, int(nbytes))
