"""Render a benchmark report (the dict ``bench.gpu_report`` builds) as report.md, report.json and
ratio_vs_torch.png. Nothing here measures anything: every number comes from the report dict."""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict, defaultdict
from typing import Dict, List

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


def summary_rows(report: dict) -> List[dict]:
    """Per (op, dtype, provider): geometric mean of time / baseline over the shapes both ran."""
    base = report["config"]["baseline"]
    acc: Dict[tuple, List[float]] = defaultdict(list)
    counts: Dict[tuple, List[int]] = defaultdict(lambda: [0, 0])
    for r in report["results"]:
        if r["provider"] == base:
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
    return "\n".join(L) + "\n"


def render_plot(report: dict, path: str) -> bool:
    """One panel per op: time / baseline per shape (log scale), a series per backend and dtype.
    Returns False (and writes nothing) when there is nothing to plot or matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    base = report["config"]["baseline"]
    ops = [(op, rows) for op, rows in by_op(report["results"]).items()
           if any(r.get("ratio") is not None and r["provider"] != base for r in rows)]
    if not ops:
        return False
    ncols = 2 if len(ops) > 1 else 1
    nrows = math.ceil(len(ops) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.5 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(ops):]:
        ax.set_visible(False)
    for ax, (op, rows) in zip(axes.flat, ops):
        shapes = list(OrderedDict.fromkeys(r["shape"] for r in rows))
        series: Dict[tuple, Dict[str, float]] = OrderedDict()
        for r in rows:
            if r["provider"] != base and r.get("ratio") is not None:
                series.setdefault((r["provider"], r["dtype"]), {})[r["shape"]] = r["ratio"]
        for (prov, dt), pts in series.items():
            xs = [shapes.index(s) for s in pts]
            ax.plot(xs, list(pts.values()), marker="o", ms=3, lw=0.8, label=f"{prov} {dt}")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_title(op, fontsize=9)
        ax.set_ylabel(f"time / {base}", fontsize=8)
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels(shapes, rotation=90, fontsize=5)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=6, loc="best")
        ax.grid(True, which="both", axis="y", lw=0.3)
    fig.suptitle(f"{report['meta'].get('device', '')}: time / {base} (below the dashed line = faster)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
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
