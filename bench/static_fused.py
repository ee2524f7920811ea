"""Static report of the fused conv + BatchNorm + ReLU (+ residual) kernels (issue 16) on a CPU:
``python -m bench.static_report --parts fused``.

For the BasicBlock bench shapes (bench/shapes.py BLOCK_SHAPES, the GPU-sized ones: 56x56x64 and
14x14x256 at batch 32), NCHW and channels_last, fp16 and bf16, the triton backend's fused block
(``triton_backend.fused.conv2d_bn_relu_forward``, ReLU on) runs on 'meta' tensors in the four
variants a BasicBlock uses -- eval and training, without and with the residual -- and every launch is
captured (the implicit-GEMM conv through ``conv.capture_launches``, the other kernels through
``bench.static_memops.capture_jit_launches``; ``assume_sms`` plans for an H200). Each launch is
compiled for sm_90 with triton's launch specialisation (``bench.static_report.specialise``) and
read back with ``bench.static_report.analyse``:

* the conv with its epilogue (eval: folded BN + residual + ReLU, ``HAS_RES`` / ``RELU``; training:
  the per-tile mean / M2 partials, ``STATS``): the conv cases' columns and gate
  (``bench.static_report.gate``: wgmma overlapped, async copies of both operands, >= 2 stages,
  zero spills, no scalar 16-bit loads);
* ``conv_bn_fwd_finalize_stats`` (training): zero spills;
* ``conv_bn_fwd_apply`` (training): zero spills and, where y and the residual have a unit-stride
  axis with at least 4-byte alignment (``apply_vector_bytes``: the plane in NCHW, the channels in
  channels-last), loads that wide and no scalar 16-bit global load.

``floor_us``: the kernel's H200 roofline floor, max(FLOPs / 989 TFLOP/s, bytes / 4.8 TB/s), bytes
counted once per tensor the kernel must read or write. Compiled results share the conv report's
cache (``$CNNGPU_CACHE``).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench import static_report as SR
from bench import _table

LAYOUTS = ("nchw", "channels_last")
DTYPES = ("float16", "bfloat16")
VARIANTS = (("eval", False), ("eval", True), ("train", False), ("train", True))   # (mode, residual)
GEMM = "conv2d_fwd_implicit_gemm"
ITEMSIZE = 2


@dataclass
class FusedCase:
    shape: object       # bench.shapes.BlockShape
    layout: str
    dtype: str
    mode: str           # 'eval' | 'train'
    residual: bool
    launch: dict

    @property
    def label(self):
        res = "+res" if self.residual else ""
        return f"{self.shape.name}:{self.layout}:{self.dtype}:{self.mode}{res}:{self.launch['name']}"


def block_shapes(only: str | None = None):
    from bench.shapes import BLOCK_SHAPES
    return [s for s in BLOCK_SHAPES if "cpu" not in s.tags and (not only or only in s.name)]


def plan_cases(shapes, layouts=LAYOUTS, dtypes=DTYPES, variants=VARIANTS):
    """Every launch of the fused block's forward (one conv of the BasicBlock: C -> C, 3x3, pad 1)."""
    import torch

    from bench.static_memops import capture_jit_launches
    from cnngpu import functional as F
    from cnngpu.backends.triton_backend import _common, conv, fused

    out = []
    for sh in shapes:
        for layout in layouts:
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            for dt in dtypes:
                tdt = getattr(torch, dt)
                for mode, res in variants:
                    x = torch.empty(sh.x_shape, dtype=tdt, device="meta").contiguous(memory_format=fmt)
                    w = torch.empty((sh.C, sh.C, 3, 3), dtype=tdt, device="meta")
                    g = F.conv2d_geometry(sh.x_shape, w.shape, stride=1, padding=1)
                    gamma, beta, rm, rv = (torch.empty((sh.C,), dtype=torch.float32, device="meta")
                                           for _ in range(4))
                    r = torch.empty(sh.x_shape, dtype=tdt, device="meta").contiguous(memory_format=fmt) if res else None
                    with _common.assume_sms(SR.H200_SMS), conv.capture_launches() as cap, \
                            capture_jit_launches() as jcap:
                        fused.conv2d_bn_relu_forward(x, w, None, g, gamma, beta, rm, rv, r, mode == "train", 0.1,
                                                     1e-5, True)
                    out += [FusedCase(sh, layout, dt, mode, res, ln) for ln in list(cap) + list(jcap)]
    return out


def floor_us(case: FusedCase) -> float:
    """H200 roofline floor of one launch (every tensor it must touch, once)."""
    sh = case.shape
    act = sh.N * sh.C * sh.H * sh.W * ITEMSIZE
    name = case.launch["name"]
    if name == GEMM:
        flops = 2 * sh.N * sh.C * sh.H * sh.W * sh.C * 9
        by = 2 * act + sh.C * sh.C * 9 * ITEMSIZE + (act if case.residual and case.mode == "eval" else 0)
        return max(flops / SR.H200_TFLOPS, by / SR.H200_BYTES) * 1e6
    if name == "conv_bn_fwd_apply":
        return (2 + case.residual) * act / SR.H200_BYTES * 1e6
    if name == "conv_bn_fwd_finalize_stats":     # the (T, K) fp32 mean and M2 partials
        named = dict(zip(case.launch["fn"].arg_names, case.launch["args"]))
        return 2 * int(named["T"]) * int(named["K"]) * 4 / SR.H200_BYTES * 1e6
    return 0.0


def apply_vector_bytes(launch: dict) -> int:
    """The vector width (bytes) ``conv_bn_fwd_apply``'s activation loads can get: y's and (HAS_RES)
    the residual's, each along its unit-stride axis (the plane in NCHW, the channels in channels-last)
    with the alignment the launcher proved (``*_ALIGN``), the narrowest of them; 0 when one of them
    has no unit-stride axis, no 4-byte alignment, or the BN affine is 16-bit (its per-channel loads
    would count as scalar 16-bit loads too)."""
    named = dict(zip(launch["fn"].arg_names, launch["args"]))
    named.update(launch["kwargs"])
    if any(named[k] and named[p].element_size() < 4 for k, p in (("HAS_W", "w_ptr"), ("HAS_B", "b_ptr"))):
        return 0
    widths = []
    for t in ("Y", "R") if named["HAS_RES"] else ("Y",):
        ptr = named[{"Y": "y_ptr", "R": "res_ptr"}[t]]
        widths.append(min(16, named[f"{t}_ALIGN"] * ptr.element_size()) if named[f"{t}_UNIT"] else 0)
    return min(widths) if min(widths) >= 4 else 0


def gate(name: str, a: dict, launch: dict) -> dict:
    """conv: issue 12's gate; finalize / apply: zero spills; apply, where ``apply_vector_bytes`` is
    nonzero: loads that wide and no scalar 16-bit load (a scalar y or residual load fails)."""
    if name == GEMM:
        return SR.gate(a)
    g = {"no_spills": SR.no_spills(a)}
    width = apply_vector_bytes(launch) if name == "conv_bn_fwd_apply" else 0
    if width:
        g["vector_loads"] = a["ld_max"] >= width
        g["no_b16_loads"] = a["b16"] == 0
    return g


def run(shapes, cache_file=None, log=print, dtypes=DTYPES) -> list:
    """Plan, compile (cached) and analyse every launch; returns rows (dicts)."""
    cases = plan_cases(shapes, dtypes=dtypes)
    cache_file = cache_file or SR.cache_path()
    cache = SR.load_cache(cache_file)
    rows, fresh = [], 0
    for c in cases:
        ln = c.launch
        key, a, new = SR.compiled_launch(ln, cache, cache_file)
        fresh += new
        kw = ln["kwargs"]
        if ln["name"] == GEMM:
            cfg = f"{kw.get('BLOCK_M')}x{kw.get('BLOCK_N')}x{kw.get('BLOCK_K')}/w{kw.get('num_warps')}s{kw.get('num_stages')}"
            epi = [k for k in ("STATS", "HAS_RES", "RELU") if kw.get(k)]
            cfg += ":" + ("+".join(epi) or "plain")
        else:
            blocks = "x".join(str(v) for k, v in sorted(kw.items()) if k.startswith("BLOCK"))
            cfg = f"{blocks}/w{kw.get('num_warps', 4)}"
        row = dict(case=c.label, shape=c.shape.name, layout=c.layout, dtype=c.dtype, mode=c.mode,
                   residual=c.residual, kernel=ln["name"], key=key, config=cfg, grid=list(ln["grid"]),
                   floor_us=round(floor_us(c), 2), **a)
        if "error" not in a:
            row["gate"] = gate(ln["name"], a, ln)
        rows.append(row)
    log(f"# fused block: {len(rows)} launches, {len({r['key'] for r in rows})} distinct binaries, {fresh} compiled "
        f"now (cache: {cache_file})")
    return rows


def _cells(r) -> list:
    wg = ("ovl" if r["wait_depth"] > 0 else "sync") if r["wgmma"] else "-"
    asy = f"{r['cp_async']}cp+{r['tma']}tma" + (f"/{r['sync2d']}sync" if r["sync2d"] else "")
    failed = [k for k, v in r["gate"].items() if not v]
    return [r["regs"], r["spill"], r["smem"], r["stages"], f"{r['occ']:.2f}", wg, asy, f"{r['ld_min']}-{r['ld_max']}",
            r["b16"], f"{r['floor_us']:.1f}", "pass" if not failed else "FAIL:" + ",".join(failed)]


COLS = ["case", "config", "regs", "spill", "smem", "stages", "occ", "wgmma", "async", "ldw", "b16", "floor_us",
        "gate"]


def table(rows, markdown=False) -> str:
    lines = [[r["case"], r["config"], "ERROR: " + r["error"][:80]] + [""] * (len(COLS) - 3) if "error" in r else
             [r["case"], r["config"]] + _cells(r) for r in rows]
    return _table.render(COLS, lines, markdown)


def compact_markdown(rows) -> str:
    """One row per (shape, mode + residual, kernel): the fp16 NCHW launch's columns and how many of
    its variants (layouts x dtypes) pass the gate."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["shape"], r["mode"] + ("+res" if r["residual"] else ""), r["kernel"]), []).append(r)
    out = ["| shape | block | kernel | config | regs | spill | smem B | stages | occupancy | wgmma | async copies | "
           "load bytes | b16 | H200 floor us | gate (variants passing) |", "|" + "---|" * 15]
    for (shape, block, kernel), rs in groups.items():
        r = next((x for x in rs if x["layout"] == "nchw" and x["dtype"] == "float16"), rs[0])
        ok = sum("error" not in x and all(x["gate"].values()) for x in rs)
        if "error" in r:
            out.append(f"| {shape} | {block} | {kernel} | {r['config']} | ERROR | | | | | | | | | | {ok}/{len(rs)} |")
            continue
        c = _cells(r)
        out.append(f"| {shape} | {block} | {kernel} | {r['config']} | " + " | ".join(str(v) for v in c[:-1])
                   + f" | {ok}/{len(rs)} |")
    return "\n".join(out)


def summary(rows) -> str:
    ok = [r for r in rows if "error" not in r]
    gemm = [r for r in ok if r["kernel"] == GEMM]
    parts = [f"fused block: {len(rows)} launches ({len(rows) - len(ok)} did not compile)"]
    for crit in SR.CRITERIA:
        parts.append(f"conv+epilogue {crit}: {sum(r['gate'][crit] for r in gemm)}/{len(gemm)}")
    other = [r for r in ok if r["kernel"] != GEMM]
    parts.append(f"finalize/apply no_spills: {sum(r['gate']['no_spills'] for r in other)}/{len(other)}")
    vec = [r for r in other if "vector_loads" in r["gate"]]
    parts.append(f"apply vector_loads: {sum(r['gate']['vector_loads'] for r in vec)}/{len(vec)}, no_b16_loads: "
                 f"{sum(r['gate']['no_b16_loads'] for r in vec)}/{len(vec)} where contiguous")
    parts.append(f"ALL: {sum(all(r['gate'].values()) for r in ok)}/{len(rows)}")
    return "; ".join(parts)
