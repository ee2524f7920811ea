"""Static report of the CUDA C kernels (kernels/cuda) on a CPU: ``python -m bench.static_cuda``.

Builds every entry of the cupy backend's ``CUDA_BUILDS`` (each op module of
``cnngpu.backends.cupy_backend`` that defines one; new modules and kernels appear by themselves)
with nvcc and the runtime loader's own options (``_module.compile_options``) for sm_80 and sm_90,
and for sm_90a too when the source (or a header it includes) has an ``__CUDA_ARCH_FEAT_SM90_ALL``
path. Per kernel (function) and architecture it reads:

  regs, stack, smem   ``cuobjdump --dump-resource-usage`` (static shared memory; dynamic shared
                      memory is a launch argument and not included)
  spill               spill stores + loads in bytes (``nvcc -Xptxas -v``)
  threads, occ        threads per block from ``__launch_bounds__`` (else the backends' 256-thread
                      BLOCK, marked ``~``) and the resident-warp occupancy they allow on an A100
                      (sm_80) or H200 (sm_90), with static shared memory only
  mix                 the SASS instruction mix (bench._sass; static counts in the binary, not
                      executed counts): HGMMA / HMMA / FFMA, LDGSTS (cp.async),
                      UTMALDG (TMA), LDG by width, LDS / LDSM, BAR, LDL / STL

The gate (``gate``): no spills and no local-memory LDL/STL anywhere; the fp16/bf16 implicit-GEMM
conv kernels use tensor cores (HMMA or HGMMA). Results are cached by (sources, defines, arch, nvcc
version) in ``$CNNGPU_CACHE`` (or ~/.cache/cnngpu/static_report.json), shared with bench.static_report.

Usage: ``python -m bench.static_cuda [--sample N] [--arch 80,90] [--json PATH] [--markdown]``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

from bench import _sass
from bench import _table

ARCHS = ("80", "90")
FEAT_SM90 = "__CUDA_ARCH_FEAT_SM90_ALL"
DEFAULT_THREADS = 256           # cupy_backend._config.BLOCK: the block of kernels without launch bounds
ANALYSIS_VERSION = "cuda-3"
SM_SMEM = {"80": 164 * 1024, "90": 228 * 1024}   # shared memory per SM: A100 (sm_80), H100/H200 (sm_90)


def cuda_builds() -> List[Tuple[str, Dict[str, object], List[str]]]:
    """(file, defines, entry points) of every distinct build the cupy backend can request: the
    union of ``CUDA_BUILDS`` over the backend's modules (one build per (file, defines))."""
    import cnngpu.backends.cupy_backend as pkg
    merged: Dict[tuple, Tuple[str, Dict[str, object], set]] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for fname, entries, defs in getattr(mod, "CUDA_BUILDS", ()):
            key = (fname, tuple(sorted((k, str(v)) for k, v in defs.items())))
            merged.setdefault(key, (fname, dict(defs), set()))[2].update(entries)
    return [(f, d, sorted(e)) for _, (f, d, e) in sorted(merged.items())]


def _sources(fname: str) -> List[str]:
    """The .cu file and the headers it includes (transitively, quoted includes in kernels/cuda)."""
    from cnngpu.kernels import CUDA_DIR
    seen, todo = [], [fname]
    while todo:
        f = todo.pop()
        if f in seen or not os.path.exists(os.path.join(CUDA_DIR, f)):
            continue
        seen.append(f)
        with open(os.path.join(CUDA_DIR, f)) as fh:
            todo += re.findall(r'#\s*include\s+"([^"]+)"', fh.read())
    return seen


def launcher_arch(fname: str) -> str | None:
    """The one architecture a launcher builds ``fname`` for (a module's ``BUILD_ARCH``, e.g. the
    sm_90a-only wgmma kernels, whose other builds are trap stubs never loaded), else None."""
    import cnngpu.backends.cupy_backend as pkg
    for info in pkgutil.iter_modules(pkg.__path__):
        arch = getattr(importlib.import_module(f"{pkg.__name__}.{info.name}"), "BUILD_ARCH", {}).get(fname)
        if arch:
            return str(arch).replace("sm_", "")
    return None


def archs_for(fname: str, archs=ARCHS) -> List[str]:
    """``archs``, plus '90a' when the file has an sm_90a-only (``__CUDA_ARCH_FEAT_SM90_ALL``) path;
    only the launcher's architecture when it builds the file for one (:func:`launcher_arch`)."""
    from cnngpu.kernels import CUDA_DIR
    fixed = launcher_arch(fname)
    if fixed is not None:
        return [fixed]
    text = "".join(open(os.path.join(CUDA_DIR, f)).read() for f in _sources(fname))
    return list(archs) + (["90a"] if FEAT_SM90 in text and "90" in archs else [])


def nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    return "/usr/local/bin/nvcc" if os.access("/usr/local/bin/nvcc", os.X_OK) else None


def build_key(fname: str, defines: Dict[str, object], arch: str) -> str:
    from cnngpu.kernels import CUDA_DIR
    h = hashlib.sha256(ANALYSIS_VERSION.encode())
    for f in sorted(_sources(fname)):
        with open(os.path.join(CUDA_DIR, f), "rb") as fh:
            h.update(f.encode() + fh.read())
    ver = subprocess.run([nvcc() or "nvcc", "--version"], capture_output=True, text=True).stdout
    h.update(repr((sorted((k, str(v)) for k, v in defines.items()), arch, ver)).encode())
    return "cuda:" + h.hexdigest()[:24]


def compile_build(fname: str, defines: Dict[str, object], arch: str) -> Dict[str, dict]:
    """function -> analysis of one build (or {'error': ...} under the key '')."""
    from cnngpu.backends.cupy_backend import _module
    from cnngpu.kernels import CUDA_DIR
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "k.cubin")
        cmd = [nvcc() or "nvcc", "-cubin", f"-arch=sm_{arch}", "-Xptxas", "-v", *_module.compile_options(defines),
               "-o", out, os.path.join(CUDA_DIR, fname)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            return {"": {"error": (proc.stdout + proc.stderr)[-600:]}}
        with open(out, "rb") as f:
            cubin = f.read()
    return analyse_cubin(cubin, proc.stdout + proc.stderr, arch)


def analyse_cubin(cubin: bytes, ptxas_log: str, arch: str) -> Dict[str, dict]:
    """function -> its columns, from a cubin and the ptxas report of its build. The static shared
    memory that cuobjdump reports for sm_90 already includes the 1 KiB reserved per block."""
    res = _sass.resources(_sass.cuobjdump(cubin, "--dump-resource-usage"))
    mix = _sass.instruction_mix(_sass.cuobjdump(cubin, "--dump-sass"))
    bounds = _sass.max_threads(_sass.cuobjdump(cubin, "--dump-elf"))
    spills = _sass.parse_ptxas(ptxas_log)
    out = {}
    for fn, r in res.items():
        sp = spills.get(fn, {})
        threads = bounds.get(fn, DEFAULT_THREADS)
        blocks, occ = _sass.occupancy(r["regs"], r["shared"], threads,
                                      sm_smem=SM_SMEM[arch[:2]],
                                      reserved_smem=0 if arch.startswith("9") else 1024)
        out[fn] = dict(regs=r["regs"], stack=max(r["stack"], sp.get("stack", 0)), smem=r["shared"],
                       local=r["local"], spill=sp.get("spill_stores", 0) + sp.get("spill_loads", 0),
                       threads=threads, bounded=fn in bounds, blocks_per_sm=blocks, occ=occ,
                       mix=mix.get(fn, {}))
    return out


def gate(fn: str, defines: Dict[str, object], a: dict) -> Dict[str, bool]:
    """The per-kernel criteria: no spills, no local-memory traffic; tensor cores in the 16-bit
    implicit-GEMM conv kernels; in the mma.sync builds with the cp.async ring (IG_ASYNC, all-async
    or mixed: conv2d_igemm.cuh) >= 3 stages and cp.async (LDGSTS) in the SASS."""
    g = {"no_spills": a["spill"] == 0 and a["mix"].get("LDL", 0) + a["mix"].get("STL", 0) == 0}
    if "implicit_gemm" in fn and str(defines.get("SCALAR_T")) in ("f16_t", "bf16_t"):
        g["tensor_cores"] = a["mix"].get("HMMA", 0) + a["mix"].get("HGMMA", 0) > 0
    if "implicit_gemm" in fn and int(defines.get("IG_ASYNC", 0)):
        g["cp_async_ring"] = int(defines["IG_STAGES"]) >= 3 and a["mix"].get("LDGSTS", 0) > 0
    return g


def run(sample: int = 0, archs=ARCHS, cache_file=None, log=print) -> list:
    """Compile (cached) and analyse every build; rows per (build, arch, function)."""
    from bench.static_report import cache_path, load_cache, save_cache
    if nvcc() is None:
        raise RuntimeError("bench.static_cuda needs nvcc (PATH or /usr/local/bin/nvcc)")
    builds = cuda_builds()
    if sample:
        builds = sample_builds(builds, sample)
    cache_file = cache_file or cache_path()
    cache = load_cache(cache_file)
    rows, fresh = [], 0
    for fname, defs, entries in builds:
        for arch in archs_for(fname, archs):
            key = build_key(fname, defs, arch)
            if key not in cache:
                cache[key] = compile_build(fname, defs, arch)
                fresh += 1
                save_cache(cache_file, cache)
            tag = ",".join(f"{k}={v}" for k, v in sorted(defs.items()) if k in ("SCALAR_T", "VEC_A", "VEC_B", "IG_TF32"))
            got = cache[key]
            if "" in got:
                rows.append(dict(file=fname, defines=tag, arch=f"sm_{arch}", kernel="", error=got[""]["error"]))
                continue
            for fn in entries if entries else sorted(got):
                a = got.get(fn)
                if a is None:
                    rows.append(dict(file=fname, defines=tag, arch=f"sm_{arch}", kernel=fn,
                                     error="entry point listed in CUDA_BUILDS is not in the build"))
                    continue
                rows.append(dict(file=fname, defines=tag, arch=f"sm_{arch}", kernel=fn, **a,
                                 gate=gate(fn, defs, a)))
    log(f"# CUDA: {len(builds)} builds, {len(rows)} kernel rows, {fresh} compiled now (cache: {cache_file})")
    return rows


def sample_builds(builds, n: int):
    """Per .cu file, up to n builds (the first and, for n > 1, the last: e.g. fp32 and bf16)."""
    by: Dict[str, list] = {}
    for b in builds:
        by.setdefault(b[0], []).append(b)
    out = []
    for bs in by.values():
        out += bs if n >= len(bs) else ([bs[0]] if n == 1 else [bs[0]] + bs[len(bs) - n + 1:])
    return out


def table(rows, markdown=False) -> str:
    cols = ["file", "defines", "arch", "kernel", "regs", "spill", "stack", "smem", "thr", "occ", "HGMMA", "HMMA",
            "FFMA", "LDGSTS", "UTMALDG", "LDG 16/8/4/2B", "LDS", "LDSM", "BAR", "LDL/STL", "gate"]
    lines = []
    for r in rows:
        if "error" in r:
            err = "ERROR: " + r["error"][-80:].replace("\n", " ")
            lines.append([r["file"], r["defines"], r["arch"], r["kernel"], err]
                         + [""] * (len(cols) - 5))
            continue
        m = r["mix"]
        failed = [k for k, v in r["gate"].items() if not v]
        lines.append([r["file"], r["defines"], r["arch"], r["kernel"], r["regs"], r["spill"], r["stack"], r["smem"],
                      f"{r['threads']}" + ("" if r["bounded"] else "~"), f"{r['occ']:.2f}", m["HGMMA"], m["HMMA"],
                      m["FFMA"], m["LDGSTS"], m["UTMALDG"], f"{m['ldg16B']}/{m['ldg8B']}/{m['ldg4B']}/{m['ldg2B']}",
                      m["LDS"], m["LDSM"], m["BAR"], f"{m['LDL']}/{m['STL']}",
                      "pass" if not failed else "FAIL:" + ",".join(failed)])
    return _table.render(cols, lines, markdown)


def summary(rows) -> str:
    ok = [r for r in rows if "error" not in r]
    crit: Dict[str, list] = {}
    for r in ok:
        for k, v in r["gate"].items():
            crit.setdefault(k, []).append(v)
    parts = [f"CUDA: {len(rows)} kernel rows ({len(rows) - len(ok)} errors)"]
    parts += [f"{k}: {sum(v)}/{len(v)}" for k, v in crit.items()]
    parts.append(f"ALL: {sum(all(r['gate'].values()) for r in ok)}/{len(rows)}")
    return "; ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=0, help="only N builds per .cu file")
    ap.add_argument("--arch", default=",".join(ARCHS), help="comma-separated: 80,90 (90a added where needed)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when some kernel fails the gate")
    a = ap.parse_args(argv)
    rows = run(a.sample, tuple(a.arch.split(",")))
    print(table(rows, markdown=a.markdown))
    print()
    print(summary(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r for r in rows if "error" in r or not all(r["gate"].values())]
    return 0 if (a.no_fail or not bad) else 1


if __name__ == "__main__":
    sys.exit(main())


def compact_markdown(rows) -> str:
    """One markdown row per (file, kernel, arch) over the builds (dtypes, vector widths): register
    range, largest spill, the widest build's static instruction mix."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["file"], r["kernel"], r["arch"]), []).append(r)
    out = ["| file | kernel | arch | builds | regs | spill | stack | smem B | occupancy | HGMMA/HMMA/FFMA | LDGSTS | "
           "LDG 16/8/4/2B | LDS/LDSM | BAR | LDL/STL | gate |", "|---|" * 1 + "---|" * 15]
    for (f, k, arch), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out.append(f"| {f} | {k} | {arch} | {len(rs)} | ERROR | | | | | | | | | | | 0/{len(rs)} |")
            continue
        regs = sorted({r["regs"] for r in ok})
        m = max(ok, key=lambda r: r["mix"]["ldg16B"] * 16 + r["mix"]["ldg8B"] * 8)["mix"]
        passed = sum(all(r["gate"].values()) for r in ok)
        out.append(f"| {f} | {k} | {arch} | {len(rs)} | {regs[0]}-{regs[-1]} | {max(r['spill'] for r in ok)} | "
                   f"{max(r['stack'] for r in ok)} | {max(r['smem'] for r in ok)} | "
                   f"{min(r['occ'] for r in ok):.2f} | {m['HGMMA']}/{m['HMMA']}/{m['FFMA']} | {m['LDGSTS']} | "
                   f"{m['ldg16B']}/{m['ldg8B']}/{m['ldg4B']}/{m['ldg2B']} | {m['LDS']}/{m['LDSM']} | {m['BAR']} | "
                   f"{m['LDL']}/{m['STL']} | {passed}/{len(rs)} |")
    return "\n".join(out)
