"""Render a benchmark report (the dict ``bench.gpu_report`` builds) as report.md, report.json and
ratio_vs_torch.png. Nothing here measures anything: every number comes from the report dict."""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict, defaultdict
from typing import Callable, Dict, List, Optional

from . import shapes as S

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
PLOT_PNG = "ratio_vs_torch.png"


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def geomean(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def by_op(results: List[dict]) -> "OrderedDict[str, List[dict]]":
    out: "OrderedDict[str, List[dict]]" = OrderedDict()
    for r in results:
        out.setdefault(r["op"], []).append(r)
    return out


def _baseline_test(report: dict, is_baseline: Optional[Callable[[dict], bool]]) -> Callable[[dict], bool]:
    if is_baseline is not None:
        return is_baseline
    base = report["config"]["baseline"]
    return lambda r: r["provider"] == base


def summary_rows(report: dict, is_baseline: Optional[Callable[[dict], bool]] = None) -> List[dict]:
    """Per (op, dtype, provider): geometric mean of time / baseline over the shapes both ran."""
    is_base = _baseline_test(report, is_baseline)
    acc: Dict[tuple, List[float]] = defaultdict(list)
    counts: Dict[tuple, List[int]] = defaultdict(lambda: [0, 0])
    for r in report["results"]:
        if is_base(r):
            continue
        key = (r["op"], r["dtype"], r["provider"])
        counts[key][1] += 1
        if r.get("ratio") is not None:
            acc[key].append(r["ratio"])
            counts[key][0] += 1
    rows = []
    for key in sorted(counts, key=lambda k: (report["config"]["ops"].index(k[0]) if k[0] in report["config"]["ops"]
                                             else 99, k[1], k[2])):
        rows.append({"op": key[0], "dtype": key[1], "provider": key[2], "geomean_ratio": geomean(acc[key]),
                     "best_ratio": min(acc[key]) if acc[key] else None,
                     "worst_ratio": max(acc[key]) if acc[key] else None,
                     "n_timed": counts[key][0], "n_cases": counts[key][1]})
    return rows


def render_markdown(report: dict) -> str:
    meta, cfg, ceil = report["meta"], report["config"], report.get("ceilings") or {}
    base = cfg["baseline"]
    L: List[str] = []
    L.append(f"# cnngpu benchmark report: {meta.get('device', '?')}")
    L.append("")
    L.append(f"- date (UTC): {meta.get('date')}; mode: {cfg['mode']}; wall time: {_fmt(meta.get('wall_s'), '.0f')} s")
    L.append(f"- commit: {meta.get('git_commit')}{' (uncommitted changes)' if meta.get('git_dirty') else ''}")
    L.append("- versions: " + ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items()))
    if meta.get("interrupted"):
        L.append(f"- **interrupted** ({meta['interrupted']}): the cases not measured are listed as 'not run'")
    if meta.get("case_counts"):
        L.append("- cases: " + ", ".join(f"{v} {k}" for k, v in sorted(meta["case_counts"].items())))
    if meta.get("driver"):
        L.append(f"- driver: {meta['driver']}")
    L.append("")
    L.append("## Method")
    L.append("")
    L.append(cfg.get("method", ""))
    L.append("")
    L.append("## Ceilings measured in this run")
    L.append("")
    L.append("| ceiling | value | detail |")
    L.append("|---|---:|---|")
    if "copy" in ceil:
        c = ceil["copy"]
        L.append(f"| copy bandwidth | {c['GB/s']:.0f} GB/s | {c['bytes'] / 1e9:.2f} GB read+written in {c['ms']:.3f} ms |")
    if "copy_error" in ceil:
        L.append(f"| copy bandwidth | error | {ceil['copy_error']} |")
    if "error" in ceil:
        L.append(f"| (all) | not measured | {ceil['error']} |")
    for dt, c in (ceil.get("matmul") or {}).items():
        if "error" in c:
            L.append(f"| matmul {dt} | error | {c['error']} |")
        else:
            L.append(f"| matmul {dt} | {c['TFLOP/s']:.4g} TFLOP/s | {c['n']}^3 in {c['ms']:.3f} ms |")
    L.append("")
    par = report.get("parity")
    L.append("## Parity suite")
    L.append("")
    if not par:
        L.append("not run" + (f" ({cfg.get('parity_note')})" if cfg.get("parity_note") else ""))
    else:
        c = par["counts"]
        state = "TIMED OUT (counts so far)" if par["timed_out"] else f"exit code {par['returncode']}"
        L.append(f"`{par['command']}`: **{c.get('passed', 0)} passed, {c.get('failed', 0)} failed, "
                 f"{c.get('error', 0)} errors, {c.get('skipped', 0)} skipped** in {par['wall_s']} s ({state}; "
                 f"log: {par['log']})")
        if par["failing"]:
            L.append("")
            for f in par["failing"][:30]:
                L.append(f"- `{f}`")
            if par["n_failing_listed"] > 30:
                L.append(f"- ... {par['n_failing_listed'] - 30} more in {par['log']}")
    L.append("")
    L.append(f"## Summary: time / {base} (geometric mean over shapes; < 1 is faster than {base})")
    L.append("")
    L.append("| op | dtype | backend | geomean | best | worst | timed / cases |")
    L.append("|---|---|---|---:|---:|---:|---:|")
    for s in summary_rows(report):
        L.append(f"| {s['op']} | {s['dtype']} | {s['provider']} | {_fmt(s['geomean_ratio'], '.2f')} | "
                 f"{_fmt(s['best_ratio'], '.2f')} | {_fmt(s['worst_ratio'], '.2f')} | {s['n_timed']} / {s['n_cases']} |")
    L.append("")
    L.append(f"![time / {base} per shape]({PLOT_PNG})")
    L.append("")
    for op, rows in by_op(report["results"]).items():
        metric = rows[0]["metric"]
        unit = "TFLOP/s" if metric == "flops" else "GB/s"
        L.append(f"## {op}")
        L.append("")
        L.append(f"| shape | backend | dtype | ms | {unit} | % ceiling | time / {base} | check (rel err) | note |")
        L.append("|---|---|---|---:|---:|---:|---:|---|---|")
        for r in rows:
            rate = r.get("tflops") if metric == "flops" else r.get("gbps")
            rate_s = _fmt(rate, ".4g")
            check = ""
            if r.get("rel_err") is not None and r["provider"] != base:
                check = f"{r['check']} {r['rel_err']:.1e}"
            note = r.get("note") or ""
            if r["status"] != "ok":
                note = f"**{r['status']}**: {note}"
            note = note.replace("|", "/").replace("\n", " ")
            L.append(f"| {r['shape']} | {r['provider']} | {r['dtype']} | {_fmt(r.get('ms'), '.4f')} | {rate_s} | "
                     f"{_fmt(r.get('pct_ceiling'), '.1f')} | {_fmt(r.get('ratio'), '.2f')} | {check} | {note} |")
        L.append("")
    blk = meta.get("block")
    if blk:
        L.append("")
        L.append("## Fused ResNet BasicBlock (bench/block.py)")
        L.append("")
        state = "TIMED OUT (cases so far)" if blk["timed_out"] else f"exit code {blk['returncode']}"
        L.append(f"{blk['cases']} cases, {blk['errors']} errors, {blk['wall_s']} s of {blk['limit_s']} s ({state}); "
                 "times from bench/timing.py, the variant's analytic bytes beside each.")
        L.append("")
        L.append(blk["table"].rstrip("\n") if blk["table"] else "(no case finished)")
    return "\n".join(L) + "\n"


# op families, one plot panel each (ops of a family share a panel: a series per op x provider x dtype)
FAMILIES = (("convolution: fwd, dX, dW", S.CONV_OPS), ("pooling: max, avg; fwd, bwd", S.POOL_OPS),
            ("BatchNorm + ReLU: fwd, bwd", S.BN_OPS),
            ("LayerNorm, GroupNorm: fwd, bwd", S.LAYER_NORM_OPS + S.GROUP_NORM_OPS))
_MARKERS = "osD^v<>ph*"


def _size(r: dict) -> float:
    """The x coordinate of a case: GFLOP (conv) or MB moved (the others), from the analytic counts."""
    return r["flops"] / 1e9 if r["metric"] == "flops" else r["bytes"] / 1e6


def render_plot(report: dict, path: str, is_baseline: Optional[Callable[[dict], bool]] = None) -> bool:
    """Time / baseline vs problem size, one panel per op family, log-log, a series per op x
    provider x dtype (marker = op, colour = provider and dtype), the parity line dashed.
    Returns False (and writes nothing) when there is nothing to plot or matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        return False
    is_base = _baseline_test(report, is_baseline)
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    base = report["config"]["baseline"]
    pts = [r for r in report["results"] if not is_base(r) and r.get("ratio") and _size(r) > 0]
    panels = [(title, ops, [r for r in pts if r["op"] in ops]) for title, ops in FAMILIES]
    panels = [p for p in panels if p[2]]
    if not panels:
        return False
    colours = {k: plt.get_cmap("tab10")(i % 10) for i, k in
               enumerate(sorted({(r["provider"], r["dtype"]) for r in pts}))}
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, ops, rows) in zip(axes.flat, panels):
        series: Dict[tuple, List[dict]] = OrderedDict()
        for r in sorted(rows, key=_size):
            series.setdefault((r["op"], r["provider"], r["dtype"]), []).append(r)
        for (op, prov, dt), rs in series.items():
            ax.plot([_size(r) for r in rs], [r["ratio"] for r in rs], marker=_MARKERS[ops.index(op) % len(_MARKERS)],
                    ms=5, lw=1.0, color=colours[(prov, dt)], label=f"{op} {prov} {dt}")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ratios = [r["ratio"] for r in rows]
        ax.set_ylim(min(min(ratios), 1.0) / 1.6, max(max(ratios), 1.0) * 1.6)   # the parity line always shows
        sizes = [_size(r) for r in rows]
        ax.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)
        for axis in (ax.xaxis, ax.yaxis):      # plain numbers at the decades and 2x/5x; no crowded minor labels
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
        ax.set_title(title, fontsize=10)
        unit = "GFLOP per call" if rows[0]["metric"] == "flops" else "MB moved per call"
        ax.set_xlabel(f"problem size: {unit} (log scale)", fontsize=9)
        ax.set_ylabel(f"time / {base} (log scale)", fontsize=9)
        ax.grid(True, which="major", lw=0.4)
        ax.grid(True, which="minor", lw=0.2, alpha=0.5)
        ax.legend(fontsize=7, loc="best", ncol=1 if len(series) <= 6 else 2)
    fig.suptitle(f"{report['meta'].get('device', '')}: time / {base} per shape (below the dashed line = faster)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(report: dict, out_dir: str) -> Dict[str, str]:
    """Write report.json, report.md and (when there is data) the PNG; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, REPORT_JSON), "md": os.path.join(out_dir, REPORT_MD)}
    report = dict(report, summary=summary_rows(report))
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(paths["md"], "w") as f:
        f.write(render_markdown(report))
    png = os.path.join(out_dir, PLOT_PNG)
    if render_plot(report, png):
        paths["png"] = png
    return paths
