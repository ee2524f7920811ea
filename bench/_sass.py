"""Reading compiled CUDA binaries on a CPU: per-function resources and the SASS instruction mix.

Shared by the static reports (``bench.static_report`` for the Triton kernels, ``bench.static_cuda``
for kernels/cuda). Tools: ``cuobjdump`` (shipped inside the triton wheel, triton/backends/nvidia/bin,
else from PATH). Every function returns plain dicts keyed by the kernel (function) name.

Instruction classes counted (SASS opcodes, the first dotted word of an instruction, predicates
stripped): HGMMA (Hopper warpgroup MMA), HMMA (mma.sync tensor-core MMA), FFMA, LDGSTS (cp.async),
UTMALDG (TMA loads), LDG by width (ldg16B = .128, ldg8B = .64, ldg4B = 32-bit, ldg2B = U16/S16,
ldg1B = U8/S8), LDS, LDSM (ldmatrix), STS, STG, BAR, LDL / STL (local memory: spills or stack arrays).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter
from typing import Dict

MIX_KEYS = ("HGMMA", "HMMA", "FFMA", "LDGSTS", "UTMALDG", "ldg16B", "ldg8B", "ldg4B", "ldg2B", "ldg1B", "LDS",
            "LDSM", "STS", "STG", "BAR", "LDL", "STL")
_LDG_BYTES = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}
_INSN = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)")
_FUNC = re.compile(r"^\s*Function\s*:\s*(\S+)", re.M)


def tool(name: str) -> str:
    """Path of a CUDA binary tool: the copy inside the triton wheel, else ``name`` (PATH)."""
    try:
        import triton
        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    return name


def cuobjdump(cubin: bytes, *flags: str) -> str:
    """stdout of ``cuobjdump flags`` on a cubin given as bytes."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        return subprocess.run([tool("cuobjdump"), *flags, path], capture_output=True, text=True,
                              timeout=120).stdout
    finally:
        os.unlink(path)


def resources(text: str) -> Dict[str, Dict[str, int]]:
    """function -> {regs, stack, shared, local} from ``cuobjdump --dump-resource-usage``."""
    out: Dict[str, Dict[str, int]] = {}
    for m in re.finditer(r"Function ([^\s:]+):\s*\n\s*(REG:.*)", text):
        vals = dict(re.findall(r"([A-Z]+):(\d+)", m.group(2)))
        out[m.group(1)] = {"regs": int(vals.get("REG", -1)), "stack": int(vals.get("STACK", 0)),
                           "shared": int(vals.get("SHARED", 0)), "local": int(vals.get("LOCAL", 0))}
    return out


def _classify(op: str) -> str | None:
    parts = op.split(".")
    head = parts[0]
    if head == "LDG":
        width = next((_LDG_BYTES[p] for p in parts[1:] if p in _LDG_BYTES), 4)
        return f"ldg{width}B"
    return head if head in MIX_KEYS else None


def instruction_mix(sass: str) -> Dict[str, Dict[str, int]]:
    """function -> {class: count} over ``MIX_KEYS`` from ``cuobjdump --dump-sass`` text."""
    out: Dict[str, Dict[str, int]] = {}
    heads = list(_FUNC.finditer(sass))
    for i, h in enumerate(heads):
        body = sass[h.end():heads[i + 1].start() if i + 1 < len(heads) else len(sass)]
        c: Counter = Counter()
        for m in _INSN.finditer(body):
            k = _classify(m.group(1))
            if k:
                c[k] += 1
        out[h.group(1)] = {k: c.get(k, 0) for k in MIX_KEYS}
    return out


def max_threads(elf: str) -> Dict[str, int]:
    """function -> threads per block fixed by ``__launch_bounds__`` (EIATTR_MAX_THREADS in
    ``cuobjdump --dump-elf``); functions without launch bounds are absent."""
    out: Dict[str, int] = {}
    cur = None
    lines = elf.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\.nv\.info\.(\S+)\s*$", line)
        if m:
            cur = m.group(1)
        elif line.startswith(".") and not line.startswith(".nv.info."):
            cur = None
        elif cur and "EIATTR_MAX_THREADS" in line:
            for nxt in lines[i + 1:i + 4]:
                v = re.search(r"Value:\s*(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", nxt)
                if v:
                    out[cur] = int(v.group(1), 16) * int(v.group(2), 16) * int(v.group(3), 16)
                    break
    return out


def ldg_widths(mix: Dict[str, int]) -> tuple:
    """(narrowest, widest) global load in bytes over plain LDG (0, 0 when there is none)."""
    ws = [int(k[3:-1]) for k in ("ldg16B", "ldg8B", "ldg4B", "ldg2B", "ldg1B") if mix.get(k)]
    return (min(ws), max(ws)) if ws else (0, 0)


def occupancy(regs: int, shared: int, threads: int, sm_regs: int = 65536, sm_smem: int = 228 * 1024,
              max_warps: int = 64, max_blocks: int = 32, reserved_smem: int = 1024) -> tuple:
    """(blocks per SM, resident warps / max_warps) from registers per thread, shared memory per
    block and threads per block (register allocation in 256-register units per warp; 1 KiB of
    shared memory reserved per block, as on sm_80 / sm_90)."""
    warps = max(1, (threads + 31) // 32)
    regs_per_warp = (max(regs, 1) * 32 + 255) // 256 * 256
    by_regs = sm_regs // (regs_per_warp * warps)
    by_smem = sm_smem // (shared + reserved_smem) if shared else max_blocks
    blocks = max(0, min(by_regs, by_smem, (max_warps * 32) // (warps * 32), max_blocks))
    return blocks, round(blocks * warps / max_warps, 3)


def _triton_ptxas(arch: int):
    """(ptxas path, extra flags) the installed triton's CUDA backend assembles sm_``arch`` with:
    triton 3.9 uses its CUDA 13 ptxas ('ptxas-blackwell') from sm_90 on, with
    ``--regAllocOptLevel=2``; triton 3.6 its legacy ptxas below sm_100, without that flag."""
    import inspect

    from triton.backends.nvidia import compiler as nv
    path = nv.get_ptxas(arch).path
    flags = ["-lineinfo"]
    if "regAllocOptLevel=2" in inspect.getsource(nv.CUDABackend.make_cubin):
        flags.append("--regAllocOptLevel=2")
    return path, flags


_PTXAS_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_\w+'")
_PTXAS_PROPS_OF = re.compile(r"Function properties for (\S+)")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_LMEM = re.compile(r"(\d+) bytes lmem")


def parse_ptxas(log: str) -> Dict[str, Dict[str, int]]:
    """function -> {stack, spill_stores, spill_loads, lmem} (bytes) from a ``ptxas -v`` (``nvcc
    -Xptxas -v``, NVRTC ``-Xptxas -v``) report. Every entry point has a row (zeros until its
    properties line); a called (non-inlined) device function gets its own row from its
    "Function properties for" block, which ptxas prints after the entry that calls it -- its
    numbers are not the entry's. ``lmem`` comes from the entry's "Used N registers" line."""
    funcs: Dict[str, Dict[str, int]] = {}
    entry = props_of = None
    for line in log.splitlines():
        m = _PTXAS_ENTRY.search(line)
        if m:
            entry = props_of = m.group(1)
            funcs[entry] = {"stack": 0, "spill_stores": 0, "spill_loads": 0, "lmem": 0}
            continue
        m = _PTXAS_PROPS_OF.search(line)
        if m:
            props_of = m.group(1)
            funcs.setdefault(props_of, {"stack": 0, "spill_stores": 0, "spill_loads": 0, "lmem": 0})
            continue
        m = _PTXAS_FRAME.search(line)
        if m and props_of is not None:
            funcs[props_of].update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                                   spill_loads=int(m.group(3)))
            continue
        m = _PTXAS_LMEM.search(line)
        if m and entry is not None and "Used" in line:
            funcs[entry]["lmem"] = int(m.group(1))
    return funcs


def ptxas_spills(ptx: str) -> Dict[str, int] | None:
    """{stack, spill_stores, spill_loads} (bytes) of a one-kernel PTX module from ``ptxas -v`` run
    as the installed triton runs it (same ptxas, same flags) for the PTX's own target; None when
    that fails. Separates register spills from a stack frame (e.g. the ABI frame of a called slow
    path such as IEEE fp32 division), which LDL/STL counts cannot."""
    m = re.search(r"^\s*\.target\s+sm_(\d+)(a?)", ptx, re.M)
    if not m:
        return None
    try:
        exe, flags = _triton_ptxas(int(m.group(1)))
    except Exception:  # noqa: BLE001 -- no triton CUDA backend: no exact spill count
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        try:
            proc = subprocess.run([exe, *flags, "-v", f"--gpu-name=sm_{m.group(1)}{m.group(2)}", "-o",
                                   os.path.join(tmp, "k.o"), src], capture_output=True, text=True, timeout=300)
        except OSError:
            return None
    funcs = parse_ptxas(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not funcs:
        return None
    # spills anywhere in the module (a called function's too); the largest frame
    return {"stack": max(f["stack"] for f in funcs.values()),
            "spill_stores": sum(f["spill_stores"] for f in funcs.values()),
            "spill_loads": sum(f["spill_loads"] for f in funcs.values())}
