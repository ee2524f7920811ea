"""Compile a CUDA source for the CPU: translate (translate.py), g++ against cudaemu.h, cache on disk.

The cache key is a hash of the translated main source and every header of its include
directories, the options, the runtime (cudaemu.h, cudaemu_rt.cpp, translate.py, this file) and the
compiler's version, so each specialisation compiles once per machine (CI included) and any edit
of a kernel, a header or the emulator rebuilds. Cache directory: ``$CNNGPU_CUDAEMU_CACHE``, else
``~/.cache/cnngpu/cudaemu``. Writes are atomic (temporary file + rename): parallel test workers
may build the same object, never read a half-written one.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

from .translate import translate

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "cudaemu.h")
RUNTIME = os.path.join(HERE, "cudaemu_rt.cpp")
HEADER_EXT = (".cuh", ".h", ".hpp", ".hh", ".inc", ".inl")
CXX = os.environ.get("CXX", "g++")
CXXFLAGS = ["-x", "c++", "-std=c++17", "-O1", "-fPIC", "-fvisibility=hidden", "-Wno-unknown-pragmas",
            "-Wno-attributes"]

# what the last build did (tests and `cnngpu info` read it): {"key", "cached", "seconds"}
LAST_BUILD: Dict[str, object] = {}


class CompileError(RuntimeError):
    """g++ rejected the translated source (the message carries its diagnostics)."""


def cache_dir() -> str:
    d = os.environ.get("CNNGPU_CUDAEMU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cnngpu", "cudaemu")
    os.makedirs(d, exist_ok=True)
    return d


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


_RUNTIME_HASH: List[str] = []


def runtime_hash() -> str:
    """Hash of everything the emulator contributes to a build (and of the compiler version)."""
    if not _RUNTIME_HASH:
        h = hashlib.sha256()
        for p in (HEADER, RUNTIME, os.path.join(HERE, "translate.py"), os.path.abspath(__file__)):
            h.update(_read(p).encode())
        try:
            v = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            raise CompileError(f"cudaemu needs a C++ compiler ({CXX}): {e}") from None
        h.update(v.encode())
        h.update(" ".join(CXXFLAGS).encode())
        _RUNTIME_HASH.append(h.hexdigest()[:16])
    return _RUNTIME_HASH[0]


def parse_options(options: Sequence[str]) -> Tuple[List[str], List[str], str]:
    """(include dirs, -D flags, arch) from NVRTC-style options; unknown options raise ValueError."""
    incs, defs, arch = [], [], "900"
    it = iter(options)
    for o in it:
        o = str(o)
        if o.startswith("-I"):
            incs.append(o[2:] or next(it))
        elif o.startswith("--include-path="):
            incs.append(o.split("=", 1)[1])
        elif o.startswith("-D") or o.startswith("--define-macro="):
            d = o[2:] if o.startswith("-D") else o.split("=", 1)[1]
            defs.append("-D" + (d or next(it)))
        elif o.startswith(("--gpu-architecture=", "-arch=", "--gpu-architecture", "-arch")):
            v = o.split("=", 1)[1] if "=" in o else next(it)
            arch = "".join(ch for ch in v if ch.isdigit()) + "0"
            if v.endswith("90a"):  # arch-specific features (wgmma, setmaxnreg): nvcc's feature macro
                defs.append("-D__CUDA_ARCH_FEAT_SM90_ALL=1")
        elif o in ("--std=c++17", "-std=c++17", "--std=c++14", "-std=c++14", "--use_fast_math", "-use_fast_math",
                   "-lineinfo", "--generate-line-info", "-G", "--device-debug", "-restrict", "--restrict") \
                or o.startswith(("--maxrregcount", "-maxrregcount", "-default-device", "--ftz", "--prec-div",
                                 "--prec-sqrt", "--fmad", "-ftz", "-prec", "-fmad")):
            continue  # no effect on the emulation (see README: what it does not emulate)
        else:
            raise ValueError(f"cudaemu: compile option {o!r} is not understood")
    return incs, defs, arch


def _headers(incs: Sequence[str]) -> List[Tuple[int, str, str]]:
    """[(include dir index, relative path, text)] of every header under the include dirs."""
    out = []
    for k, d in enumerate(incs):
        for root, _, files in os.walk(d):
            for f in sorted(files):
                if f.endswith(HEADER_EXT):
                    p = os.path.join(root, f)
                    out.append((k, os.path.relpath(p, d), _read(p)))
    return sorted(out)


def _atomic_write(path: str, data: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def _runtime_object() -> str:
    path = os.path.join(cache_dir(), f"rt-{runtime_hash()}.o")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=cache_dir(), suffix=".o")
        os.close(fd)
        cmd = [CXX, *CXXFLAGS, "-O2", "-c", RUNTIME, "-o", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise CompileError(f"cudaemu runtime failed to compile:\n{r.stderr}")
        os.replace(tmp, path)
    return path


def build(code: str, options: Sequence[str] = (), name: str = "module.cu") -> str:
    """Path of the shared object for ``code`` compiled with ``options`` (built unless cached)."""
    incs, defs, arch = parse_options(options)
    main = translate(code, name)
    headers = [(k, rel, translate(text, rel)) for k, rel, text in _headers(incs)]
    h = hashlib.sha256()
    h.update(runtime_hash().encode())
    h.update(main.encode())
    for k, rel, text in headers:
        h.update(f"\0{k}\0{rel}\0".encode())
        h.update(text.encode())
    h.update("\0".join(defs + [arch]).encode())
    key = h.hexdigest()[:24]
    so = os.path.join(cache_dir(), f"{key}.so")
    LAST_BUILD.clear()
    LAST_BUILD.update(key=key, cached=True, seconds=0.0)
    if os.path.exists(so):
        return so
    t0 = time.perf_counter()
    rt = _runtime_object()
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        inc_flags = []
        for k in range(len(incs)):
            os.makedirs(os.path.join(tmp, f"inc{k}"), exist_ok=True)
            inc_flags.append("-I" + os.path.join(tmp, f"inc{k}"))
        for k, rel, text in headers:
            p = os.path.join(tmp, f"inc{k}", rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        src = os.path.join(tmp, "main.cpp")
        with open(src, "w") as f:
            f.write(main)
        out = os.path.join(tmp, "module.so")
        cmd = [CXX, *CXXFLAGS, f"-D__CUDA_ARCH__={arch}", *defs, *inc_flags, "-include", HEADER, "-shared",
               src, "-x", "none", rt, "-o", out]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise CompileError(f"cudaemu: g++ failed on {name} ({' '.join(defs)}):\n{r.stderr[-8000:]}\n"
                               f"command: {shlex.join(cmd)}")
        os.replace(out, so)
    LAST_BUILD.update(cached=False, seconds=time.perf_counter() - t0)
    return so
