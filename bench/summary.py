"""One table and one plot for a pytest-benchmark run of bench/ (the CPU suite, or the GPU
providers through pytest-benchmark), from pytest-benchmark's JSON.

    python -m pytest bench --benchmark-only --benchmark-json=bench.json
    python -m bench.summary bench.json --png bench.png      # table on stdout, plot in bench.png

The table is the geometric mean of time / baseline (torch_cpu for the CPU providers, torch for
the GPU ones) per op, dtype and provider over the shapes both ran, with the best and worst shape;
the plot shows time / baseline per shape, one panel per op family (log axes). Both are the same
renderers the GPU report uses (bench/report_md.py). bench/conftest.py prints the same table at
the end of every ``pytest bench`` run.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional

from . import cases as C
from . import report_md as R
from . import shapes as S


def records(benchmarks: List[dict]) -> List[dict]:
    """pytest-benchmark entries (JSON ``benchmarks`` or ``Metadata.as_dict()``) -> report records
    with the time / baseline ratio of each case filled in."""
    out = []
    for b in benchmarks:
        info = b.get("extra_info") or {}
        stats = b.get("stats") or {}
        if not info.get("op") or stats.get("median") is None:
            continue
        out.append({"task": info["op"], "op": info["op"], "shape": info["shape"], "provider": info["provider"],
                    "dtype": info["dtype"], "metric": "flops" if info.get("flops") else "bytes",
                    "flops": info.get("flops") or 0, "bytes": info.get("bytes") or 0, "status": "ok",
                    "ms": stats["median"] * 1e3, "reps": stats.get("rounds"), "rel_err": info.get("rel_err"),
                    "check": None if info.get("rel_err") is None else "ok", "note": None})
    base_ms: Dict[tuple, float] = {}
    for r in out:
        if r["provider"] == C.baseline(r["provider"]):
            base_ms[(r["op"], r["shape"], r["dtype"], r["provider"])] = r["ms"]
    for r in out:
        b = base_ms.get((r["op"], r["shape"], r["dtype"], C.baseline(r["provider"])))
        r["ratio"] = r["ms"] / b if b else None
        r["tflops"] = r["flops"] / (r["ms"] * 1e-3) / 1e12 if r["flops"] else None
        r["gbps"] = r["bytes"] / (r["ms"] * 1e-3) / 1e9 if r["bytes"] else None
        r["pct_ceiling"] = None
    order = {op: i for i, op in enumerate(S.ALL_OPS)}
    return sorted(out, key=lambda r: (order.get(r["op"], 99), r["dtype"], r["shape"], r["provider"]))


def report(benchmarks: List[dict], label: str = "pytest-benchmark run") -> dict:
    recs = records(benchmarks)
    providers = sorted({r["provider"] for r in recs})
    baseline = "torch_cpu" if any(p in C.CPU_PROVIDERS for p in providers) else "torch"
    if any(p in C.CPU_PROVIDERS for p in providers) and any(p not in C.CPU_PROVIDERS for p in providers):
        baseline = "torch_cpu / torch"
    return {"meta": {"device": label}, "results": recs,
            "config": {"baseline": baseline, "ops": list(S.ALL_OPS), "mode": "pytest-benchmark"}}


def _is_baseline(r: dict) -> bool:
    return r["provider"] == C.baseline(r["provider"])


def summary_table(rep: dict) -> str:
    """The geomean table as Markdown (also readable as plain text)."""
    rows = R.summary_rows(rep, is_baseline=_is_baseline)
    base = rep["config"]["baseline"]
    lines = [f"time / {base} (geometric mean over shapes; < 1 is faster than {base})", "",
             "| op | dtype | provider | geomean | best | worst | timed / cases |", "|---|---|---|---:|---:|---:|---:|"]
    for s in rows:
        lines.append(f"| {s['op']} | {s['dtype']} | {s['provider']} | {R._fmt(s['geomean_ratio'], '.2f')} | "
                     f"{R._fmt(s['best_ratio'], '.2f')} | {R._fmt(s['worst_ratio'], '.2f')} | "
                     f"{s['n_timed']} / {s['n_cases']} |")
    if not rows:
        lines.append("| (no case with a baseline to compare with) | | | | | | |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.split("\n")[0])
    ap.add_argument("json", help="pytest-benchmark JSON (--benchmark-json=FILE)")
    ap.add_argument("--png", help="write the ratio plot here")
    args = ap.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    cpu = (data.get("machine_info") or {}).get("cpu", {}).get("brand_raw") or "CPU"
    rep = report(data.get("benchmarks", []), label=f"pytest-benchmark: {cpu}")
    if not rep["results"]:
        print(f"{args.json}: no bench/ benchmarks in this file", file=sys.stderr)
        return 1
    print(summary_table(rep))
    if args.png:
        if R.render_plot(rep, args.png, is_baseline=_is_baseline):
            print(f"\nplot: {args.png}")
        else:
            print("\nno plot (matplotlib missing, or no case has a baseline)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
