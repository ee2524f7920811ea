"""Tier 3 for the CUDA C kernels: compile every .cu file in kernels/cuda for sm_80 and sm_90 with
every specialisation the cupy backend can launch (the CUDA_BUILDS of its op modules conv, pool,
norm, basic), with the same options as the runtime loader (``_module.compile_options``), and read
the ptxas report.

Fails on: a compile error; a .cu file that no CUDA_BUILDS lists; an entry point listed in
CUDA_BUILDS that the build does not contain; spill stores/loads, a stack frame or lmem (local
memory) in any conv2d kernel. Spills in other kernels are reported as warnings. Also checks that
the 16-bit conv implicit GEMMs use tensor-core mma.sync fed by a >= 3-stage cp.async pipeline.

Compiler: nvcc (``nvcc -cubin -arch=sm_XX -Xptxas -v``) when on PATH or at /usr/local/bin/nvcc,
else NVRTC from PyPI (cuda-bindings + nvidia-cuda-nvrtc), else the tests skip with the reason.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from typing import Dict, Tuple

import pytest

cupy_backend = pytest.importorskip("cnngpu.backends.cupy_backend", reason="cupy not installed")
from cnngpu.backends.cupy_backend import _config as C  # noqa: E402
from cnngpu.backends.cupy_backend import _module, basic, conv, fused, norm, pool  # noqa: E402
from cnngpu.kernels import CUDA_DIR  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench._sass import parse_ptxas  # noqa: E402 -- the one ptxas -v reader (bench.static_cuda's too)

ARCHS = (80, 90)
MODULES = {"conv": conv, "pool": pool, "norm": norm, "basic": basic, "fused": fused}
STRICT_PREFIX = "conv2d_"  # kernels that must not touch local memory at all


def _builds() -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], Tuple[Dict, set]]:
    """(file, sorted defines) -> (defines, entry points listed for it), over every module."""
    out: Dict = {}
    for mod in MODULES.values():
        for fname, entries, defs in mod.CUDA_BUILDS:
            key = (fname, tuple(sorted((k, str(v)) for k, v in defs.items())))
            out.setdefault(key, (dict(defs), set()))[1].update(entries)
    return out


BUILDS = _builds()
BUILD_KEYS = sorted(BUILDS)


SHARED = {**C.KERNEL_DEFINES, **C.CONV_DEFINES}    # the -D constants every build carries


def _build_id(key) -> str:
    fname, defs = key
    return fname.replace(".cu", "") + "-" + "-".join(f"{k}={v}" for k, v in defs if k not in SHARED)


# ------------------------------------------------------------------------------------------------
# compilers
# ------------------------------------------------------------------------------------------------
def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    return "/usr/local/bin/nvcc" if os.access("/usr/local/bin/nvcc", os.X_OK) else None


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        return None
    try:
        res = nvrtc.nvrtcVersion()  # (status, major, minor)
        return nvrtc if res[0] == nvrtc.nvrtcResult.NVRTC_SUCCESS else None
    except Exception:  # the library itself is missing
        return None


def _compiler():
    if _nvcc():
        return "nvcc"
    if _nvrtc():
        return "nvrtc"
    return None


def compile_report(fname: str, defines: Dict, arch: int, ptx: bool = False) -> Tuple[bool, str]:
    """(ok, compiler log incl. the ptxas report) of kernels/cuda/``fname`` for sm_``arch``.
    ``ptx=True`` returns the PTX text instead of the report (nvcc only)."""
    opts = list(_module.compile_options(defines))
    path = os.path.join(CUDA_DIR, fname)
    nvcc = _nvcc()
    if nvcc:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out")
            cmd = [nvcc, "-ptx" if ptx else "-cubin", f"-arch=sm_{arch}", *([] if ptx else ["-Xptxas", "-v"]),
                   *opts, "-o", out, path]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            log = proc.stdout + proc.stderr
            if ptx and proc.returncode == 0:
                with open(out) as f:
                    return True, f.read()
            return proc.returncode == 0, log
    nvrtc = _nvrtc()
    with open(path, "rb") as f:
        src = f.read()
    err, prog = nvrtc.nvrtcCreateProgram(src, fname.encode(), 0, [], [])
    args = [o.encode() for o in opts] + [f"-arch=sm_{arch}".encode(), b"-Xptxas", b"-v"]
    (res,) = nvrtc.nvrtcCompileProgram(prog, len(args), args)
    _, n = nvrtc.nvrtcGetProgramLogSize(prog)
    buf = b" " * n
    nvrtc.nvrtcGetProgramLog(prog, buf)
    if ptx and res == nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, m = nvrtc.nvrtcGetPTXSize(prog)
        pbuf = b" " * m
        nvrtc.nvrtcGetPTX(prog, pbuf)
        return True, pbuf.decode(errors="replace")
    return res == nvrtc.nvrtcResult.NVRTC_SUCCESS, buf.decode(errors="replace")


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiler():
    c = _compiler()
    if c is None:
        pytest.skip("no CUDA compiler: neither nvcc (PATH, /usr/local/bin) nor NVRTC from PyPI "
                    "(pip install cuda-bindings nvidia-cuda-nvrtc-cu12)")
    return c


def test_parse_ptxas():
    """Per entry point; a called function's properties block (printed after its caller's) is its
    own row and does not overwrite the caller's numbers."""
    log = ("ptxas info    : Compiling entry function 'k1' for 'sm_90'\n"
           "ptxas info    : Function properties for k1\n"
           "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 255 registers, 16 bytes lmem, used 1 barriers\n"
           "ptxas info    : Compiling entry function 'k2' for 'sm_90a'\n"
           "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 0 barriers, 256 bytes cumulative stack size\n"
           "ptxas info    : Function properties for _Z1fPfi\n"
           "    256 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n")
    r = parse_ptxas(log)
    assert r == {"k1": {"stack": 8, "spill_stores": 4, "spill_loads": 12, "lmem": 16},
                 "k2": {"stack": 0, "spill_stores": 0, "spill_loads": 0, "lmem": 0},
                 "_Z1fPfi": {"stack": 256, "spill_stores": 8, "spill_loads": 8, "lmem": 0}}


def test_every_cu_file_is_built():
    files = sorted(f for f in os.listdir(CUDA_DIR) if f.endswith(".cu"))
    assert files, f"no .cu files in {CUDA_DIR}"
    built = {fname for fname, _ in BUILDS}
    missing = [f for f in files if f not in built]
    assert not missing, f"kernels/cuda files in no op module's CUDA_BUILDS: {missing}"
    stale = sorted(built - set(files))
    assert not stale, f"CUDA_BUILDS name files that do not exist: {stale}"


@pytest.mark.parametrize("arch", ARCHS, ids=[f"sm_{a}" for a in ARCHS])
@pytest.mark.parametrize("key", BUILD_KEYS, ids=[_build_id(k) for k in BUILD_KEYS])
def test_compile(compiler, key, arch):
    fname, _ = key
    defines, entries = BUILDS[key]
    ok, log = compile_report(fname, defines, arch)
    assert ok, f"{fname} {defines} failed to compile for sm_{arch} ({compiler}):\n{log[-4000:]}"
    funcs = parse_ptxas(log)
    missing = sorted(e for e in entries if e not in funcs)
    assert not missing, f"{fname} {defines}: entry points listed in CUDA_BUILDS not in the build: {missing}"
    bad, soft = [], []
    for name, st in sorted(funcs.items()):
        spills = st["spill_stores"] + st["spill_loads"]
        if name.startswith(STRICT_PREFIX):
            if spills or st["stack"] or st["lmem"]:
                bad.append(f"{name}: {st}")
        elif spills:
            soft.append(f"{name}: {st}")
    if soft:
        warnings.warn(f"{fname} {defines} sm_{arch}: register spills in non-conv kernels: {soft}")
    assert not bad, f"{fname} {defines} sm_{arch}: local memory / spills in conv kernels:\n" + "\n".join(bad)


@pytest.mark.parametrize("fname,needs", [
    ("conv2d_fwd.cu", ["IG_BM", "DIRECT_TILE"]), ("conv2d_bwd.cu", ["IG_BM", "DX_MAX_TAPS"]),
    ("linear.cu", ["COLSUM_TX"]), ("layer_norm.cu", ["COLSUM_TX"]),
])
def test_shared_constants_come_from_the_launcher(fname, needs):
    """A .cu file preprocessed without the constants of cupy_backend/_config.py stops at an #error
    naming them: the launcher's values are the only ones (no second copy in the source)."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    cmd = [nvcc, "-E", "-x", "cu", "--std=c++17", f"-I{CUDA_DIR}", "-DSCALAR_T=float", "-DVEC_A=1", "-DVEC_B=1",
           "-o", os.devnull, os.path.join(CUDA_DIR, fname)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, f"{fname} preprocessed without the launcher's -D constants"
    for name in needs:
        assert name in proc.stdout + proc.stderr
    launcher = {**SHARED, **C.igemm_spec("float32", 1)}   # the conv files' per-specialisation constants too
    ok = subprocess.run(cmd[:-3] + [f"-D{k}={v}" for k, v in launcher.items()] + cmd[-3:],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]


@pytest.mark.parametrize("operands", ["both_16B", "mixed"])
@pytest.mark.parametrize("fname", [conv.FWD_FILE, conv.BWD_FILE])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_conv_uses_tensor_cores(compiler, fname, dtype, operands):
    """Both the all-cp.async build (VEC_A = VEC_B = 8) and the mixed one (VEC_A = 1: NCHW
    activations register-staged, VEC_B = 8 by cp.async) run mma.sync fed by the >= 3-stage ring."""
    if compiler != "nvcc":
        pytest.skip("PTX check uses nvcc")
    v = conv.max_vec(dtype)
    vecs = (v, v) if operands == "both_16B" else (1, v)
    ok, ptx = compile_report(fname, conv.defines(dtype, vecs), 80, ptx=True)
    assert ok, ptx[-4000:]
    kind = "f16" if dtype == "float16" else "bf16"
    assert re.search(rf"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.{kind}\.{kind}\.f32", ptx), \
        f"{fname} {dtype}: no m16n8k16 {kind} mma.sync in the PTX"
    assert "ldmatrix.sync.aligned.m8n8.x4" in ptx
    # 16-byte loads: the cp.async pipeline with >= 3 shared-memory stages (wait_group STAGES - 2
    # keeps STAGES - 2 slices in flight behind the one being multiplied)
    stages = conv.defines(dtype, vecs)["IG_STAGES"]
    assert stages >= 3
    assert re.search(r"cp\.async\.cg\.shared\.global(\.L2::\d+B)? \[%r\d+\], \[%rd\d+\], 16, %r\d+;", ptx), \
        f"{fname} {dtype}: no 16-byte zero-filling cp.async in the PTX"
    assert f"cp.async.wait_group {stages - 2};" in ptx and "cp.async.commit_group;" in ptx


# ------------------------------------------------------------------------------------------------
# the Hopper build (sm_90a: wgmma), kernels listed in conv.BUILD_ARCH
# ------------------------------------------------------------------------------------------------
def _cuobjdump() -> str | None:
    try:
        import triton
    except ImportError:
        return shutil.which("cuobjdump")
    p = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return p if os.access(p, os.X_OK) else shutil.which("cuobjdump")


SM90A_FILES = sorted(f for f, a in conv.BUILD_ARCH.items() if a == "sm_90a")
SM90A_ENTRIES = {conv.FWD_SM90_FILE: conv.FWD_SM90_ENTRIES, conv.DX_SM90_FILE: conv.DX_SM90_ENTRIES,
                 conv.DW_SM90_FILE: conv.DW_SM90_ENTRIES}
SM90A_MN_MAJOR = {conv.DW_SM90_FILE}   # both operands MN-major: HGMMA ... .tnspA.tnspB


@pytest.mark.parametrize("fname", SM90A_FILES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sm90a_conv_uses_wgmma(dtype, fname):
    """nvcc -gencode=arch=compute_90a,code=sm_90a: no spills / stack / local memory, and the SASS
    (cuobjdump) has the warpgroup MMA (HGMMA 64x128x16, fp32 accumulate), its wait with one group
    left in flight (WARPGROUP.DEPBAR.LE gsb0, 0x1) and cp.async copies (LDGSTS)."""
    nvcc, dump = _nvcc(), _cuobjdump()
    if nvcc is None or dump is None:
        pytest.skip("needs nvcc and cuobjdump (triton wheel)")
    opts = list(_module.compile_options(conv.w90_defines(dtype)))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "k.cubin")
        cmd = [nvcc, "-cubin", "-gencode=arch=compute_90a,code=sm_90a", "-Xptxas", "-v", *opts, "-o", out,
               os.path.join(CUDA_DIR, fname)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        funcs = parse_ptxas(proc.stdout + proc.stderr)
        for entry in SM90A_ENTRIES[fname]:
            st = funcs[entry]
            assert st == {"stack": 0, "spill_stores": 0, "spill_loads": 0, "lmem": 0}, (entry, st)
        sass = subprocess.run([dump, "-sass", out], capture_output=True, text=True, timeout=120).stdout
    assert re.search(r"HGMMA\.64x128x16\.F32", sass), "no HGMMA in the sm_90a SASS"
    assert ("tnspA.tnspB" in sass) == (fname in SM90A_MN_MAJOR), "operand majorness differs from the design"
    assert "WARPGROUP.DEPBAR.LE gsb0, 0x1" in sass
    assert "LDGSTS" in sass


@pytest.mark.parametrize("fname", SM90A_FILES)
def test_sm90a_path_compiles_away_for_other_targets(fname):
    """Without the sm_90a feature macro (sm_80, plain sm_90) the entry point is a trap: no wgmma."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    for arch in ARCHS:
        ok, ptx = compile_report(fname, conv.w90_defines("float16"), arch, ptx=True)
        assert ok, ptx[-4000:]
        assert "wgmma" not in ptx and "trap" in ptx


def test_sm90a_runtime_build_by_nvrtc():
    """The launcher's own build of the Hopper kernel (NVRTC with compile_options(..., 'sm_90a'),
    what _module.get_function does on an sm_90 device) yields SASS with HGMMA."""
    pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    dump = _cuobjdump()
    if dump is None:
        pytest.skip("needs cuobjdump (triton wheel)")
    try:   # cupy finds libnvrtc through cuda.pathfinder, which raises this (a RuntimeError) when absent
        from cuda.pathfinder import DynamicLibNotFoundError as missing_lib
    except ImportError:
        missing_lib = OSError
    fname = conv.FWD_SM90_FILE
    try:
        cubin = _module.nvrtc_cubin(_module.source(fname),
                                    _module.compile_options(conv.w90_defines("bfloat16"), conv.BUILD_ARCH[fname]),
                                    fname)
    except (ImportError, OSError, missing_lib) as e:   # the NVRTC library itself missing
        pytest.skip(f"NVRTC unavailable: {e}")
    # cupy's nvrtc.getCUBIN returns the image one byte short of its last program header (as
    # cupy's own RawModule loads it; the driver accepts it), which cuobjdump refuses: pad it to
    # the extent its ELF header states (e_phoff + e_phnum * e_phentsize) for the inspection.
    phoff, = struct.unpack_from("<Q", cubin, 32)
    phentsize, phnum = struct.unpack_from("<HH", cubin, 54)
    cubin = cubin + b"\0" * max(0, phoff + phentsize * phnum - len(cubin))
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "k.cubin")
        with open(p, "wb") as f:
            f.write(cubin)
        sass = subprocess.run([dump, "-sass", p], capture_output=True, text=True, timeout=120).stdout
    assert re.search(r"HGMMA\.64x128x16\.F32\.BF16", sass), sass[:2000]
