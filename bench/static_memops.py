"""Static report of the memory-bound Triton kernels on a CPU: ``python -m bench.static_memops``.

BatchNorm+ReLU (training forward and backward), max/avg pooling (forward and backward), LayerNorm
and GroupNorm (forward and backward) at the bench shapes (bench/shapes.py, the GPU-sized ones), fp16
and bf16, NCHW and channels_last (4-D inputs): the triton backend's launchers run on 'meta' tensors
with every ``JITFunction`` launch captured instead of run (:func:`capture_jit_launches`; ``assume_sms``
plans for an H200). Each launch is compiled for sm_90 with triton's launch specialisation
(``bench.static_report.specialise``: integers equal to 1 become constants, 16-divisibility hints) and
read back with ``bench.static_report.analyse``: registers, spills, shared memory, pipeline stages,
occupancy, global load widths (PTX ``ld.global`` vector bytes; ``b16`` scalar 16-bit loads) and the
SASS instruction mix. ``floor_us`` is the op's H200 roofline floor: bytes / 4.8 TB/s (every op here
is memory-bound; bytes from bench.shapes).

The gate per kernel launch: zero spills; and vector global loads (>= 8 bytes) where the tile's
fast axis is contiguous and 16-byte aligned -- :func:`expects_vector_loads` decides that from the
launch's own arguments (the stride of the fast axis specialised to 1, its extent and the other
strides multiples of 8 elements). The pooling kernels map lanes along the output row: their loads
are window gathers (stride >= 2 apart) and no vector width is expected of them.

Usage: ``python -m bench.static_memops [--sample N] [--json PATH] [--markdown] [--no-fail]``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass

from bench import static_report as SR
from bench import _table

DTYPES = ("float16", "bfloat16")
H200_BYTES = SR.H200_BYTES
# per tile kernel: the (n, c, l) stride arguments of each tensor it reads and writes -- what decides
# whether a tile row is a contiguous, 16-byte aligned run (expects_vector_loads)
VECTOR_AXES = {
    "batch_norm_fwd_partial_stats": [("sxn", "sxc", "sxl")],
    "batch_norm_fwd_normalize": [("sxn", "sxc", "sxl"), ("syn", "syc", "syl")],
    "batch_norm_bwd_partial_sums": [("sdn", "sdc", "sdl"), ("sxn", "sxc", "sxl"), ("syn", "syc", "syl")],
    "batch_norm_bwd_dx": [("sdn", "sdc", "sdl"), ("sxn", "sxc", "sxl"), ("syn", "syc", "syl"),
                          ("son", "soc", "sol")],
}

# per pool kernel: for each tensor it reads, (the stride argument of its fast axis, its other
# stride arguments, the fast axis' extent argument); a contiguous, aligned source expects vectors
POOL_VECTOR_AXES = {
    "max_pool2d_fwd_rows": [("sxw", ("sxn", "sxc", "sxh"), "W")],
    "avg_pool2d_fwd_rows": [("sxw", ("sxn", "sxc", "sxh"), "W")],
    "max_pool2d_fwd_channels": [("sxc", ("sxn", "sxh", "sxw"), "C")],
    "avg_pool2d_fwd_channels": [("sxc", ("sxn", "sxh", "sxw"), "C")],
    "max_pool2d_bwd_rows": [("sdq", ("sdn", "sdc", "sdp"), "Q"), ("siq", ("sin", "sic", "sip"), "Q")],
    "avg_pool2d_bwd_rows": [("sdq", ("sdn", "sdc", "sdp"), "Q")],
    "max_pool2d_bwd_channels": [("sdc", ("sdn", "sdp", "sdq"), "C"), ("sic", ("sin", "sip", "siq"), "C")],
    "avg_pool2d_bwd_channels": [("sdc", ("sdn", "sdp", "sdq"), "C")],
}


@dataclass
class MemCase:
    shape: object       # bench.shapes BNShape | PoolShape | NormShape
    op: str             # bench.shapes op name: bn_relu_fwd, maxpool_bwd, ...
    layout: str
    dtype: str
    launch: dict

    @property
    def label(self):
        return f"{self.shape.name}:{self.op}:{self.layout}:{self.dtype}:{self.launch['name']}"


@contextlib.contextmanager
def capture_jit_launches():
    """Within this block ``kernel[grid](*args, **kwargs)`` of every ``triton.JITFunction`` records
    dict(name, fn, args, kwargs, grid) in the yielded list instead of launching (no device needed;
    the launchers' 'meta' tensors are never read)."""
    from triton.runtime.jit import JITFunction
    rec: list = []
    orig = JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        g = grid(kwargs) if callable(grid) else grid
        rec.append(dict(name=self.fn.__name__, fn=self, args=args, kwargs=kwargs, grid=tuple(g)))

    JITFunction.run = run                     # type: ignore[method-assign]
    try:
        yield rec
    finally:
        JITFunction.run = orig                # type: ignore[method-assign]


def _meta(shape, dtype, layout="nchw"):
    import torch
    t = torch.empty(shape, dtype=dtype, device="meta")
    if layout == "channels_last" and len(shape) == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def _launches(shape, op, layout, dtype):
    """The captured launches of one op on one shape (meta tensors, H200 SM count)."""
    import torch
    from cnngpu import functional as F
    from cnngpu.backends.triton_backend import _common, norm, pool
    tdt = getattr(torch, dtype)
    f32 = torch.float32
    with _common.assume_sms(SR.H200_SMS), capture_jit_launches() as cap:
        if op.startswith("bn_relu"):
            x = _meta(shape.x_shape, tdt, layout)
            C = shape.C
            w, b, rm, rv = (_meta((C,), f32) for _ in range(4))
            if op == "bn_relu_fwd":
                norm.batch_norm_forward(x, w, b, rm, rv, True, 0.1, 1e-5, True)
            else:
                norm.batch_norm_backward(_meta(shape.x_shape, tdt, layout), x, _meta(shape.x_shape, tdt, layout), w,
                                         _meta((C,), f32), _meta((C,), f32), True, True)
        elif op.endswith("pool_fwd") or op.endswith("pool_bwd"):
            g = F.pool2d_geometry(shape.x_shape, **shape.pool_args())
            x = _meta(shape.x_shape, tdt, layout)
            dy = _meta(shape.y_shape, tdt, layout)
            if op == "maxpool_fwd":
                pool.max_pool2d_forward(x, g)
            elif op == "maxpool_bwd":
                pool.max_pool2d_backward(dy, _meta(shape.y_shape, torch.int64, layout), g)
            elif op == "avgpool_fwd":
                pool.avg_pool2d_forward(x, g, True)
            else:
                pool.avg_pool2d_backward(dy, g, True)
        else:
            x = _meta(shape.x_shape, tdt, layout)
            p = shape.param_shape
            w, b = _meta(p, tdt), _meta(p, tdt)
            stats = (shape.n_stats,) if shape.kind == "layer" else (shape.x_shape[0], shape.groups)
            mean, rstd = _meta(stats, f32), _meta(stats, f32)
            dy = _meta(shape.x_shape, tdt, layout)
            if op == "layernorm_fwd":
                norm.layer_norm_forward(x, shape.normalized_ndim, w, b, 1e-5)
            elif op == "layernorm_bwd":
                norm.layer_norm_backward(dy, x, w, mean, rstd, shape.normalized_ndim)
            elif op == "groupnorm_fwd":
                norm.group_norm_forward(x, shape.groups, w, b, 1e-5)
            else:
                norm.group_norm_backward(dy, x, shape.groups, w, mean, rstd)
    return cap


def plan_cases(sample: int = 0, only: str | None = None):
    """Every launch of the memory-bound ops on the bench shapes (GPU-sized: the 'cpu'-only ones
    dropped), both dtypes, NCHW and channels_last for 4-D inputs. ``sample`` > 0 keeps the first
    ``sample`` shapes of each op family and fp16 only; ``only`` keeps the shapes whose name has it."""
    from bench import shapes as S
    fams = [(S.BN_SHAPES, S.BN_OPS), (S.POOL_SHAPES, S.POOL_OPS),
            ([s for s in S.NORM_SHAPES if s.kind == "layer"], S.LAYER_NORM_OPS),
            ([s for s in S.NORM_SHAPES if s.kind == "group"], S.GROUP_NORM_OPS)]
    out = []
    for shapes, ops in fams:
        shapes = [s for s in shapes if "cpu" not in s.tags and (not only or only in s.name)]
        if sample:
            shapes = shapes[:sample]
        for sh in shapes:
            layouts = ("nchw", "channels_last") if len(sh.x_shape) == 4 else ("nchw",)
            for op in ops:
                for layout in layouts:
                    for dt in (DTYPES[:1] if sample else DTYPES):
                        for ln in _launches(sh, op, layout, dt):
                            out.append(MemCase(sh, op, layout, dt, ln))
    return out


def expects_vector_loads(launch: dict) -> bool:
    """Whether a tile kernel's loads can be vectorised: along L (every tensor's l-stride 1, its n and
    c strides and L multiples of 8 elements, BLOCK_R >= 8) or along C (c-strides 1, n and l strides
    and C multiples of 8, BLOCK_C >= 8): each tile row is then a contiguous run starting on a 16-byte
    boundary (for 16-bit data). Pool kernels: ``POOL_VECTOR_AXES``, each source's fast stride 1,
    its other strides and extent multiples of 8. Kernels in neither table (per-channel combines)
    expect nothing."""
    named = dict(zip(launch["fn"].arg_names, launch["args"]))
    named.update(launch["kwargs"])
    pool = POOL_VECTOR_AXES.get(launch["name"])
    if pool is not None:
        return all(named[unit] == 1 and int(named[extent]) % 8 == 0 and all(int(named[o]) % 8 == 0 for o in others)
                   for unit, others, extent in pool)
    axes = VECTOR_AXES.get(launch["name"])
    if axes is None:
        return False

    def aligned(unit, others, extent, block):
        return (all(named[t[unit]] == 1 for t in axes) and int(named[block]) >= 8 and int(named[extent]) % 8 == 0
                and all(int(named[t[i]]) % 8 == 0 for t in axes for i in others))

    return aligned(2, (0, 1), "L", "BLOCK_R") or aligned(1, (0, 2), "C", "BLOCK_C")


def gate(a: dict, vector_expected: bool) -> dict:
    g = {"no_spills": SR.no_spills(a)}
    if vector_expected:
        g["vector_loads"] = a["ld_max"] >= 8
    return g


def run(sample: int = 0, cache_file=None, log=print, only: str | None = None) -> list:
    """Plan, compile (cached) and analyse every launch; returns rows (dicts)."""
    cases = plan_cases(sample, only)
    cache_file = cache_file or SR.cache_path()
    cache = SR.load_cache(cache_file)
    rows, fresh = [], 0
    for c in cases:
        ln = c.launch
        key, a, new = SR.compiled_launch(ln, cache, cache_file)
        fresh += new
        kw = ln["kwargs"]
        blocks = "x".join(f"{v}" for k, v in sorted(kw.items()) if k.startswith("BLOCK"))
        if not blocks:       # the pool kernels' tiles: rows/pixels x columns/channels, span, vector
            blocks = ",".join(f"{k}{kw[k]}" for k in ("BR", "BQ", "BW", "BP", "BC", "SPAN", "VEC") if k in kw)
        cfg = f"{blocks}/w{kw.get('num_warps', 4)}s{kw.get('num_stages', '-')}"
        floor = c.shape.bytes(c.op, c.dtype) / H200_BYTES * 1e6
        row = dict(case=c.label, shape=c.shape.name, op=c.op, layout=c.layout, dtype=c.dtype, kernel=ln["name"],
                   key=key, config=cfg, grid=list(ln["grid"]), floor_us=round(floor, 2), **a)
        if "error" not in a:
            vec = expects_vector_loads(ln)
            row["vector_expected"] = vec
            row["gate"] = gate(a, vec)
        rows.append(row)
    log(f"# memory-bound ops: {len(rows)} launches, {len({r['key'] for r in rows})} distinct binaries, "
        f"{fresh} compiled now (cache: {cache_file})")
    return rows


def table(rows, markdown=False) -> str:
    cols = ["case", "config", "grid", "regs", "spill", "smem", "stages", "occ", "ldw", "b16", "LDG 16/8/4/2B",
            "floor_us", "gate"]
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([r["case"], r["config"], "", "ERROR: " + r["error"][:80]] + [""] * (len(cols) - 4))
            continue
        m = r.get("mix", {})
        failed = [k for k, v in r["gate"].items() if not v]
        lines.append([r["case"], r["config"], "x".join(str(v) for v in r["grid"]), r["regs"], r["spill"], r["smem"],
                      r["stages"], f"{r['occ']:.2f}", f"{r['ld_min']}-{r['ld_max']}", r["b16"],
                      "/".join(str(m.get(k, 0)) for k in ("ldg16B", "ldg8B", "ldg4B", "ldg2B")),
                      f"{r['floor_us']:.1f}",
                      ("pass" if not failed else "FAIL:" + ",".join(failed))
                      + (" (vec)" if r["vector_expected"] else "")])
    return _table.render(cols, lines, markdown)


def summary(rows) -> str:
    ok = [r for r in rows if "error" not in r]
    spills = sum(r["gate"]["no_spills"] for r in ok)
    vec = [r for r in ok if r["vector_expected"]]
    parts = [f"memory-bound: {len(rows)} launches ({len(rows) - len(ok)} did not compile)",
             f"no_spills: {spills}/{len(rows)}",
             f"vector_loads: {sum(r['gate']['vector_loads'] for r in vec)}/{len(vec)} where contiguous",
             f"ALL: {sum(all(r['gate'].values()) for r in ok)}/{len(rows)}"]
    return "; ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=0, help="first N shapes of each op family, fp16 only")
    ap.add_argument("--only", help="only shapes whose name contains this")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when some launch fails the gate")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("bench.static_memops compiles real kernels: unset TRITON_INTERPRET")
    rows = run(a.sample, only=a.only)
    print(table(rows, markdown=a.markdown))
    print()
    print(summary(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    bad = [r for r in rows if "error" in r or not all(r["gate"].values())]
    return 0 if (a.no_fail or not bad) else 1


if __name__ == "__main__":
    sys.exit(main())


def compact_markdown(rows) -> str:
    """One markdown row per (op, kernel, layout) over the shapes and dtypes: ranges of registers,
    occupancy and load widths, the largest spill, and how many launches pass the gate."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["op"], r["kernel"], r["layout"]), []).append(r)
    out = ["| op | kernel | layout | launches | regs | spill | occupancy | load bytes | vector loads expected | "
           "gate |", "|---|---|---|---|---|---|---|---|---|---|"]

    def rng(vals, fmt="{}"):
        lo, hi = min(vals), max(vals)
        return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}-{fmt.format(hi)}"

    for (op, kernel, layout), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        passed = sum(all(r["gate"].values()) for r in ok)
        if not ok:
            out.append(f"| {op} | {kernel} | {layout} | {len(rs)} | ERROR | | | | | 0/{len(rs)} |")
            continue
        out.append(f"| {op} | {kernel} | {layout} | {len(rs)} | {rng([r['regs'] for r in ok])} | "
                   f"{max(r['spill'] for r in ok)} | {rng([r['occ'] for r in ok], '{:.2f}')} | "
                   f"{min(r['ld_min'] for r in ok)}-{max(r['ld_max'] for r in ok)} | "
                   f"{sum(r['vector_expected'] for r in ok)} | {passed}/{len(rs)} |")
    return "\n".join(out)
