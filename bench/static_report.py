"""Static performance report of the Triton conv kernels, on a CPU: ``python -m bench.static_report``.

For every ResNet-50 bench shape (bench/shapes.py, batch 1 and 32), in NCHW and channels_last, fp16
and bf16, the triton backend's own launchers plan conv fwd, dX and dW on 'meta' tensors (nothing
runs: ``conv.capture_launches`` records each launch -- kernel, arguments, constexprs and the picked
config -- and ``assume_sms`` plans for an H200's 132 SMs). Each tensor-core GEMM launch is then
compiled for sm_90 with the specialisation triton applies at launch (its own binder: integers equal
to 1 become constants, 16-divisibility hints on pointers and integers), and read back:

  regs / spill   registers per thread; spill bytes (``ptxas -v`` on the PTX: spill stores + loads,
                 plus any local memory ``cuobjdump`` reports; a call's stack frame is not a spill)
  smem, stages   shared memory of the launch; the pipeline depth (leading dim of the multi-buffered
                 shared-memory allocations in the TTGIR; 1 = unpipelined)
  occ            resident warps per SM / 64 from registers, shared memory and threads
  wgmma          tensor-core wgmma in the PTX; ``ovl`` when some ``wgmma.wait_group`` leaves
                 groups in flight (N > 0: the MMA overlaps the next loads)
  async          asynchronous shared-memory copies in the main loop: cp.async ops and TMA loads
                 (TTGIR ``async_copy_global_to_local`` / ``async_tma_copy``); 2 = both operands
  sync2d         2-D tensor loads left synchronous (``tt.load`` of a rank-2 tensor)
  ldw            widest and narrowest global load in bytes (PTX ``ld.global`` and ``cp.async`` sizes);
                 ``b16`` counts scalar 16-bit global loads
  floor_us       the H200 roofline floor max(FLOPs / 989 TFLOP/s, bytes / 4.8 TB/s) of the op

The gate (``GATE``, issue 12) per case: wgmma with overlap, async copies of both operands, >= 2
stages, zero spills, no scalar 16-bit global loads. Compiled results are cached by key (kernel
source hash, signature, constexprs, attributes, options) in ``$CNNGPU_CACHE`` or
~/.cache/cnngpu/static_report.json, so a rerun only compiles what changed.

The fused conv + BN + ReLU (+ residual) block kernels at the BasicBlock shapes
(``bench.static_fused``: the conv with its epilogue under this gate, finalize / apply under the
memory-bound one), the memory-bound Triton kernels (BN+ReLU, pooling, layer/group norm:
``bench.static_memops``) and the CUDA kernels (every CUDA_BUILDS entry for sm_80 / sm_90 / sm_90a:
``bench.static_cuda``) are the report's other parts, each with its own columns and gate.

Usage: ``python -m bench.static_report [--parts conv,tma,fused,memops,cuda] [--sample N] [--only S]
[--json PATH] [--markdown | --compact]``; exit status 1 when some case fails its gate (``--no-fail``
keeps 0).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from bench import _sass
from bench import _table

H200_SMS = 132
H200_TFLOPS = 989e12            # dense bf16/fp16 tensor-core peak (datasheet)
H200_BYTES = 4.8e12             # HBM3e bandwidth (datasheet)
H200_SMEM = 228 * 1024          # shared memory per SM
H200_REGS = 65536
MAX_WARPS = 64
ARCH = 90
GEMM_KERNELS = ("conv2d_fwd_implicit_gemm", "conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dw_implicit_gemm")
# the conv kernels whose launches are cases (a direct FMA kernel picked for some pass is a case too,
# and fails the wgmma criterion); db and the split-K sum are memory-bound helpers, not reported
PASS_OF = {"conv2d_fwd_implicit_gemm": "fwd", "conv2d_bwd_dx_implicit_gemm": "dX",
           "conv2d_bwd_dw_implicit_gemm": "dW", "conv2d_fwd_direct": "fwd", "conv2d_bwd_dx_direct": "dX",
           "conv2d_bwd_dw_direct": "dW", "conv2d_fwd_1x1_tma": "fwd"}
OP_OF = {"fwd": "conv_fwd", "dX": "conv_dx", "dW": "conv_dw"}
ANALYSIS_VERSION = 4            # bump when analyse() changes: part of every cache key
CRITERIA = ("wgmma_overlap", "async_both", "stages>=2", "no_spills", "no_b16_loads")


@dataclass
class Case:
    shape: object          # bench.shapes.ConvShape
    layout: str            # 'nchw' | 'channels_last'
    dtype: str             # 'float16' | 'bfloat16'
    pass_: str             # 'fwd' | 'dX' | 'dW'
    launch: dict           # the captured launch

    @property
    def label(self):
        return f"{self.shape.name}:{self.layout}:{self.dtype}:{self.pass_}"


# ------------------------------------------------------------------------------------------------
# planning: the launchers' own decisions, captured
# ------------------------------------------------------------------------------------------------
def plan_cases(shapes, layouts=("nchw", "channels_last"), dtypes=("float16", "bfloat16")):
    """Every GEMM launch the triton launchers make for these shapes (fwd, and dX + dW of the
    backward), planned on 'meta' tensors for an H200."""
    import torch

    from cnngpu import functional as F
    from cnngpu.backends.triton_backend import _common, conv

    out = []
    for sh in shapes:
        for layout in layouts:
            for dt in dtypes:
                tdt = getattr(torch, dt)
                fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
                x = torch.empty(sh.x_shape, dtype=tdt, device="meta").contiguous(memory_format=fmt)
                w = torch.empty(sh.w_shape, dtype=tdt, device="meta")
                dy = torch.empty(sh.y_shape, dtype=tdt, device="meta").contiguous(memory_format=fmt)
                g = F.conv2d_geometry(sh.x_shape, sh.w_shape, **sh.conv_args())
                with _common.assume_sms(H200_SMS), conv.capture_launches() as cap:
                    conv.conv2d_forward(x, w, None, g)
                    conv.conv2d_backward(dy, x, w, g, need_db=False)
                for ln in cap:
                    if ln["name"] in PASS_OF:
                        out.append(Case(sh, layout, dt, PASS_OF[ln["name"]], ln))
    return out


def plan_tma_cases(shapes, dtypes=("float16", "bfloat16")):
    """The opt-in TMA forward (``algo='tma'``) of the shapes it can run (1x1, stride 1, no padding,
    16-byte aligned NCHW planes), planned like :func:`plan_cases` on NCHW 'meta' tensors."""
    import torch

    from cnngpu import functional as F
    from cnngpu.backends.triton_backend import _common, conv, conv_tma

    out = []
    for sh in shapes:
        for dt in dtypes:
            tdt = getattr(torch, dt)
            x = torch.empty(sh.x_shape, dtype=tdt, device="meta")
            w = torch.empty(sh.w_shape, dtype=tdt, device="meta")
            g = F.conv2d_geometry(sh.x_shape, sh.w_shape, **sh.conv_args())
            if conv_tma.tma_unsupported(g, x, w) is not None:
                continue
            with _common.assume_sms(H200_SMS), conv.capture_launches() as cap:
                conv.conv2d_forward(x, w, None, g, algo="tma")
            out += [Case(sh, "nchw", dt, "fwd", ln) for ln in cap if ln["name"] in PASS_OF]
    return out


# ------------------------------------------------------------------------------------------------
# compiling with the launch specialisation
# ------------------------------------------------------------------------------------------------
def _target():
    from triton.backends.compiler import GPUTarget
    return GPUTarget("cuda", ARCH, 32)


def specialise(fn, args, kwargs):
    """(signature, constexprs, attrs, options) exactly as ``JITFunction.run`` derives them at launch
    (triton's binder on the real arguments, for an sm_90 target)."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    backend = make_backend(_target())
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, options)
    return signature, constexprs, attrs, options


def case_key(fn, signature, constexprs, attrs, options) -> str:
    """Cache key of one binary: kernel source, signature, constexprs, attributes, options."""
    opts = {k: v for k, v in sorted(options.__dict__.items()) if isinstance(v, (int, float, str, bool, type(None)))}
    text = repr((ANALYSIS_VERSION, fn.cache_key, sorted(signature.items()),
                 sorted((str(k), repr(v)) for k, v in constexprs.items()),
                 sorted((str(k), repr(v)) for k, v in attrs.items()), sorted(opts.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _bin(name):
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.exists(path) else name


def analyse(ttgir: str, ptx: str, cubin: bytes, shared: int, num_warps: int) -> dict:
    """The report's columns from one compiled kernel's TTGIR, PTX and cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        res = subprocess.run([_bin("cuobjdump"), "--dump-resource-usage", path], capture_output=True, text=True).stdout
        sass = subprocess.run([_bin("cuobjdump"), "--dump-sass", path], capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    mix = next(iter(_sass.instruction_mix(sass).values()), {})
    m = re.search(r"REG:(\d+)", res)
    regs = int(m.group(1)) if m else -1
    m = re.search(r"LOCAL:(\d+)", res)
    local = int(m.group(1)) if m else 0
    stack = int(re.search(r"STACK:(\d+)", res).group(1)) if "STACK:" in res else 0
    spill_ops = len(re.findall(r"\b(?:LDL|STL)\b", sass))
    px = _sass.ptxas_spills(ptx)        # exact spill bytes; LDL/STL may also be an ABI stack frame
    spill = (local + px["spill_stores"] + px["spill_loads"]) if px else local + (1 if spill_ops and not local else 0)
    # pipeline stages: leading extent of rank-3 shared-memory buffers (multi-buffered operands)
    bufs = [int(d) for d in re.findall(r"!ttg\.memdesc<(\d+)x\d+x\d+x", ttgir)]
    stages = max(bufs) if bufs else 1
    waits = [int(n) for n in re.findall(r"wgmma\.wait_group\.sync\.aligned\s+(\d+)", ptx)]
    wgmma = "wgmma.mma_async" in ptx
    cp_async = len(re.findall(r"ttg\.async_copy_global_to_local", ttgir))
    tma = len(re.findall(r"async_tma_copy_global_to_local", ttgir))
    sync2d = len(re.findall(r"= tt\.load [^\n]*-> tensor<\d+x\d+x", ttgir))
    widths = []
    for vec, bits in re.findall(r"ld\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.[bfus](\d+)\b", ptx):
        widths.append(int(vec or 1) * int(bits) // 8)
    widths += [int(n, 0) for n in re.findall(r"cp\.async\.c[ag]\.shared\.global(?:\.[A-Za-z0-9_:]+)*\s+"
                                             r"\[[^\]]+\],\s*\[[^\]]+\],\s*(0x[0-9a-fA-F]+|\d+)", ptx)]
    b16 = len(re.findall(r"ld\.global(?:\.[a-z]+)*\.(?:b16|u16|f16|bf16)\b", ptx))
    threads = 32 * num_warps
    regs_per_block = ((max(regs, 1) * 32 + 255) // 256 * 256) * num_warps
    blocks = min(H200_REGS // regs_per_block if regs > 0 else 32, (H200_SMEM // (shared + 1024)) if shared else 32,
                 2048 // threads, 32)
    occ = blocks * num_warps / MAX_WARPS
    return dict(regs=regs, spill=spill, stack=max(stack, px["stack"] if px else 0), spill_ops=spill_ops,
                spills_exact=px is not None,
                smem=shared, stages=stages, occ=round(occ, 3), wgmma=wgmma, wait_depth=max(waits) if waits else -1,
                cp_async=cp_async, tma=tma, sync2d=sync2d, ld_max=max(widths) if widths else 0,
                ld_min=min(widths) if widths else 0, b16=b16, blocks_per_sm=blocks, mix=mix)


def compile_case(fn, args, kwargs) -> tuple:
    """(key, analysis) of one captured launch, compiled for sm_90."""
    import triton
    from triton.compiler import ASTSource
    sig, ce, attrs, options = specialise(fn, args, kwargs)
    key = case_key(fn, sig, ce, attrs, options)
    return key, (sig, ce, attrs, options)


def build(fn, sig, ce, attrs, options) -> dict:
    import triton
    from triton.compiler import ASTSource
    opts = {k: getattr(options, k) for k in ("num_warps", "num_stages", "num_ctas")}
    compiled = triton.compile(ASTSource(fn, sig, ce, attrs), target=_target(), options=opts)
    md = compiled.metadata
    shared = md.shared if hasattr(md, "shared") else md["shared"]
    return analyse(compiled.asm["ttgir"], compiled.asm["ptx"], compiled.asm["cubin"], int(shared), opts["num_warps"])


def no_spills(a: dict) -> bool:
    """No register spills: ptxas's spill bytes (and no local memory) when ptxas ran on the PTX; else
    no LDL/STL at all (which also counts a stack frame without spills)."""
    if a.get("spills_exact"):
        return a["spill"] == 0
    return a["spill"] == 0 and a["spill_ops"] == 0


def gate(a: dict) -> dict:
    """Issue 12's per-case criteria."""
    return {"wgmma_overlap": a["wgmma"] and a["wait_depth"] > 0,
            "async_both": a["cp_async"] + a["tma"] >= 2 and a["sync2d"] == 0,
            "stages>=2": a["stages"] >= 2,
            "no_spills": no_spills(a),
            "no_b16_loads": a["b16"] == 0}


# ------------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------------
def cache_path() -> str:
    return os.environ.get("CNNGPU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cnngpu",
                                                          "static_report.json")


def load_cache(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def save_cache(path, cache):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"          # concurrent reports: no shared temp file
    with open(tmp, "w") as f:
        json.dump(cache, f)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
def floor_us(case: Case) -> tuple:
    op = OP_OF[case.pass_]
    fl = case.shape.flops(op) / H200_TFLOPS
    by = case.shape.bytes(op, case.dtype) / H200_BYTES
    return max(fl, by) * 1e6, ("compute" if fl >= by else "memory")


def compiled_launch(ln: dict, cache: dict, cache_file: str):
    """(key, analysis, 1 if compiled now else 0) of a captured launch ``ln`` compiled with Triton's
    launch specialisation; results are cached under ``key`` in ``cache`` (saved to ``cache_file``
    after each new build). A launch that does not compile gets ``{"error": ...}`` (reported, not
    fatal). Shared by every Triton part of the report (conv, TMA, fused, memops)."""
    sig, ce, attrs, options = specialise(ln["fn"], ln["args"], ln["kwargs"])
    key = case_key(ln["fn"], sig, ce, attrs, options)
    if key in cache:
        return key, cache[key], 0
    try:
        cache[key] = build(ln["fn"], sig, ce, attrs, options)
    except Exception as e:  # noqa: BLE001 -- a case that does not compile is reported, not fatal
        cache[key] = {"error": f"{type(e).__name__}: {str(e)[-400:]}"}
    save_cache(cache_file, cache)
    return key, cache[key], 1


def run(shapes, cache_file=None, log=print, tma: bool = False) -> list:
    """Plan, compile (cached) and analyse every case; returns rows (dicts). ``tma``: the opt-in TMA
    forward's cases (:func:`plan_tma_cases`) instead of the launchers' default plan."""
    cases = plan_tma_cases(shapes) if tma else plan_cases(shapes)
    cache_file = cache_file or cache_path()
    cache = load_cache(cache_file)
    rows, fresh = [], 0
    for c in cases:
        ln = c.launch
        key, a, new = compiled_launch(ln, cache, cache_file)
        fresh += new
        kw = ln["kwargs"]
        cfg = f"{kw.get('BLOCK_M')}x{kw.get('BLOCK_N')}x{kw.get('BLOCK_K')}/w{kw.get('num_warps')}s{kw.get('num_stages')}"
        variant = "1x1" if kw.get("IS_1X1") else ("flat" if kw.get("FLAT_K") or kw.get("FLAT_N") else "taps")
        if ln["name"].endswith("_direct"):
            variant = "direct"
        if ln["name"].endswith("_tma"):
            variant = "tma"
        fus, bound = floor_us(c)
        row = dict(case=c.label, shape=c.shape.name, layout=c.layout, dtype=c.dtype, pass_=c.pass_, key=key,
                   config=cfg, variant=variant, grid=list(ln["grid"]), floor_us=round(fus, 2), bound=bound, **a)
        if "error" not in a:
            row["gate"] = gate(a)
        rows.append(row)
    log(f"# {len(rows)} cases, {len({r['key'] for r in rows})} distinct binaries, {fresh} compiled now "
        f"(cache: {cache_file})")
    return rows


def table(rows, markdown=False) -> str:
    cols = ["case", "config", "regs", "spill", "smem", "stages", "occ", "wgmma", "async", "ldw", "b16", "floor_us",
            "gate"]
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([r["case"], r["config"], "ERROR: " + r["error"][:80]] + [""] * (len(cols) - 3))
            continue
        wg = ("ovl" if r["wait_depth"] > 0 else "sync") if r["wgmma"] else "no"
        asy = f"{r['cp_async']}cp+{r['tma']}tma" + (f"/{r['sync2d']}sync" if r["sync2d"] else "")
        failed = [k for k, v in r["gate"].items() if not v]
        lines.append([r["case"], r["config"] + ":" + r["variant"], r["regs"], r["spill"], r["smem"], r["stages"],
                      f"{r['occ']:.2f}", wg, asy, f"{r['ld_min']}-{r['ld_max']}", r["b16"],
                      f"{r['floor_us']:.1f}{r['bound'][0]}", "pass" if not failed else "FAIL:" + ",".join(failed)])
    return _table.render(cols, lines, markdown)


def compact_markdown(rows) -> str:
    """One markdown row per (shape, pass): the fp16 NCHW case's columns, and how many of its variants
    (NCHW / channels_last x fp16 / bf16; the TMA part: NCHW x fp16 / bf16) pass the gate."""
    groups = {}
    for r in rows:
        groups.setdefault((r["shape"], r["pass_"]), []).append(r)
    out = ["| shape | pass | config (BMxBNxBK/warps,stages:variant) | grid | regs | spill | smem KB | stages | "
           "occupancy | wgmma | async copies | load bytes | H200 floor us | gate (variants passing) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (shape, pass_), rs in groups.items():
        r = next((x for x in rs if x["layout"] == "nchw" and x["dtype"] == "float16"), rs[0])
        ok = sum("error" not in x and all(x["gate"].values()) for x in rs)
        if "error" in r:
            out.append(f"| {shape} | {pass_} | {r['config']} | | ERROR | | | | | | | | | {ok}/{len(rs)} |")
            continue
        wg = ("overlapped" if r["wait_depth"] > 0 else "sync") if r["wgmma"] else "none"
        asy = " + ".join(f"{n} {what}" for n, what in ((r["cp_async"], "cp.async"), (r["tma"], "TMA")) if n) or "none"
        grid = "x".join(str(v) for v in r["grid"])
        out.append(f"| {shape} | {pass_} | {r['config']}:{r['variant']} | {grid} | {r['regs']} | {r['spill']} | "
                   f"{r['smem'] // 1024} | {r['stages']} | {r['occ']:.2f} | {wg} | {asy} | "
                   f"{r['ld_min']}-{r['ld_max']} | {r['floor_us']:.1f} ({r['bound']}) | {ok}/{len(rs)} |")
    return "\n".join(out)


def summary(rows) -> str:
    ok = [r for r in rows if "error" not in r]
    parts = [f"{len(rows)} cases ({len(rows) - len(ok)} did not compile)"]
    for crit in CRITERIA:
        parts.append(f"{crit}: {sum(r['gate'][crit] for r in ok)}/{len(rows)}")
    allp = sum(all(r["gate"].values()) for r in ok)
    parts.append(f"ALL: {allp}/{len(rows)}")
    by = {}
    for r in ok:
        k = (r["layout"], r["pass_"])
        p, n = by.get(k, (0, 0))
        by[k] = (p + all(r["gate"].values()), n + 1)
    parts.append("per layout/pass: " + ", ".join(f"{l}/{p}: {a}/{n}" for (l, p), (a, n) in sorted(by.items())))
    return "; ".join(parts)


def resnet50_shapes():
    from bench.shapes import CONV_SHAPES
    return [s for s in CONV_SHAPES if s.name.startswith("r50_")]


def sample_shapes(n):
    """n ResNet-50 shapes spread over the list (first and last included)."""
    allsh = resnet50_shapes()
    if n <= 0 or n >= len(allsh):
        return allsh
    step = (len(allsh) - 1) / max(n - 1, 1)
    return [allsh[round(i * step)] for i in range(n)]


PARTS = ("conv", "tma", "fused", "memops", "cuda")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated: conv (Triton conv fwd/dX/dW), tma (the opt-in TMA forward, "
                         "algo='tma', where it applies), fused (the fused conv+BN+ReLU block kernels at the "
                         "BasicBlock shapes: bench.static_fused), memops (Triton BN/pool/norm: "
                         "bench.static_memops), cuda (kernels/cuda: bench.static_cuda)")
    ap.add_argument("--sample", type=int, default=0,
                    help="conv: N shapes spread over the ResNet-50 set; fused: fp16 only; memops: the first N "
                         "shapes per op family, fp16; cuda: N builds per .cu file")
    ap.add_argument("--only", help="only shapes whose name contains this (conv, tma, fused, memops)")
    ap.add_argument("--json", help="write the rows here (one part: its list; several: {part: rows})")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--compact", action="store_true",
                    help="markdown, one row per (shape, pass) for conv / tma, per (op, kernel, layout) for "
                         "memops, per (file, kernel, arch) for cuda, with the count of passing cases")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when some case fails the gate")
    a = ap.parse_args(argv)
    parts = [p for p in a.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {PARTS}")
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("bench.static_report compiles real kernels: unset TRITON_INTERPRET")
    out, sums = {}, []
    if "conv" in parts:
        shapes = sample_shapes(a.sample)
        if a.only:
            shapes = [s for s in shapes if a.only in s.name]
        rows = out["conv"] = run(shapes)
        print(compact_markdown(rows) if a.compact else table(rows, markdown=a.markdown))
        print()
        sums.append(summary(rows))
    if "tma" in parts:
        shapes = sample_shapes(a.sample)
        if a.only:
            shapes = [s for s in shapes if a.only in s.name]
        rows = out["tma"] = run(shapes, tma=True)
        print(compact_markdown(rows) if a.compact else table(rows, markdown=a.markdown))
        print()
        sums.append("TMA (opt-in, unmeasured): " + summary(rows))
    if "fused" in parts:
        from bench import static_fused
        rows = out["fused"] = static_fused.run(static_fused.block_shapes(a.only),
                                               dtypes=static_fused.DTYPES[:1] if a.sample else static_fused.DTYPES)
        print(static_fused.compact_markdown(rows) if a.compact else static_fused.table(rows, markdown=a.markdown))
        print()
        sums.append(static_fused.summary(rows))
    if "memops" in parts:
        from bench import static_memops
        rows = out["memops"] = static_memops.run(a.sample, only=a.only)
        print(static_memops.compact_markdown(rows) if a.compact else static_memops.table(rows, markdown=a.markdown))
        print()
        sums.append(static_memops.summary(rows))
    if "cuda" in parts:
        from bench import static_cuda
        try:
            rows = out["cuda"] = static_cuda.run(a.sample)
        except (ImportError, RuntimeError) as e:    # no cupy backend or no nvcc here: say so, go on
            sums.append(f"CUDA: not built ({type(e).__name__}: {e})")
        else:
            print(static_cuda.compact_markdown(rows) if a.compact else static_cuda.table(rows, markdown=a.markdown))
            print()
            sums.append(static_cuda.summary(rows))
    print("\n".join(sums))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out[parts[0]] if len(parts) == 1 else out, f, indent=1, default=str)
    bad = [r for rows in out.values() for r in rows if "error" in r or not all(r["gate"].values())]
    return 0 if (a.no_fail or not bad) else 1


if __name__ == "__main__":
    sys.exit(main())
