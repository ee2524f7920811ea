"""One-call GPU report: parity suite, timings of every op x shape x backend against torch, ceilings.

    python -m bench.gpu_report                 # on a CUDA machine; about 9 minutes at most
    python -m bench.gpu_report --quick         # the ``quick`` shapes only
    python -m bench.gpu_report --window        # one device window: <= 400 s, conv/BN/pool fp16+bf16,
                                               # then the fused BasicBlock (bench/block.py)
    python -m bench.gpu_report --cpu-dry-run   # whole pipeline on the CPU, tiny shapes (testing)

Steps (each bounded in time; partial results are written as they come):
1. ``pytest -m 'gpu or cupy' tests`` in a subprocess with a timeout; pass/fail counts and failing ids.
2. In a worker subprocess (bench/worker.py): ceilings (device copy bandwidth; fp16/bf16/tf32/fp32
   matmul TFLOP/s with torch), then every (op, shape, dtype) group: torch NCHW (cuDNN for conv,
   the baseline), torch channels_last, triton, cupy -- outputs checked against torch, then timed
   with CUDA events (warm-up, L2 flush before every rep, median). Shapes tagged ``quick`` first,
   so a run cut short by the time budget still covers every op. A hung case is killed after
   ``--case-timeout`` s and a crashed worker restarted; either is recorded as that case's error.
3. With ``--window`` (or ``--block-s``): bench/block.py, the fused ResNet BasicBlock (torch eager
   vs cnngpu unfused vs fused, eval and a training step, triton and cupy), in the last
   WINDOW_BLOCK_S seconds of the budget (bench/block_step.py): block.md / block.jsonl.
4. bench/results/<gpu>-<date>/: report.md (ms, TFLOP/s or GB/s from the analytic counts in
   bench/shapes.py, % of the measured ceiling, time / torch), ratio_vs_torch.png, report.json
   (GPU, versions, git commit, every record), results.jsonl (raw), parity.log, worker.log.
   report.md/json are rewritten every ~20 s while the run goes on.

Without CUDA it exits with status 2 and says so, unless ``--cpu-dry-run`` is given: then the
same pipeline runs numpy vs torch-CPU on tiny shapes, and the report is labelled CPU throughout.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

from . import _procs
from . import cases as C
from . import report_md
from . import shapes as S
from . import REPO_ROOT
from cnngpu.__main__ import cpu_name

EXIT_NO_CUDA = 2
EXIT_NOT_INSTALLED = 3
GPU_PROVIDERS = ("torch", "torch_cl", "triton", "cupy")       # torch (NCHW) first: the baseline
# --window: what one lent device window verifies and times within 7 minutes of wall time (the
# device tool's 10-minute command limit, start and transfers left over)
WINDOW_BUDGET_S = 400.0
WINDOW_PARITY_S = 120.0
WINDOW_DTYPES = ("float16", "bfloat16")
WINDOW_OPS = S.CONV_OPS + S.BN_OPS + S.POOL_OPS
# the fused ResNet BasicBlock (bench/block.py via bench/block_step.py, triton and cupy) after the op
# timings: its slice of the window budget (estimate, unmeasured: 20 float16 cases, mostly compiles)
WINDOW_BLOCK_S = 100.0
CPU_PROVIDERS = ("torch_cpu", "numpy")
TIMING = {
    "cuda": {"warmup_ms": 10, "rep_ms": 30},     # triton.testing.do_bench
    "cpu": {"min_run_time_s": 0.02},             # torch.utils.benchmark.Timer.blocked_autorange
}
METHOD = {
    "cuda": ("Each case: inputs drawn once per (op, shape, dtype) and shared by all backends; the output "
             "is checked against torch's (max relative L2 error over outputs; MISMATCH above the dtype's "
             "tolerance, excluded from the ratios); then triton.testing.do_bench: ~{warmup_ms} ms of warm-up "
             "calls (compilation and autotuning happen before them, in the checked call), then ~{rep_ms} ms of "
             "repetitions, each preceded by a 256 MB write that evicts L2, timed alone between two CUDA "
             "events; the median is reported. TFLOP/s = 2*N*K*P*Q*(C/groups)*R*S / time (same "
             "count for fwd, dX, dW); GB/s = the op's minimum bytes (inputs read once, outputs written "
             "once; bench/shapes.py) / time. % ceiling: of the fp16/bf16/tf32/fp32 torch matmul TFLOP/s "
             "(conv) or the device copy bandwidth (others), measured in this run. torch = "
             "torch.nn.functional NCHW (cuDNN), torch_cl = channels_last; backward ops through autograd. "
             "float32 = IEEE fp32 math (cnngpu precision='ieee', torch TF32 off)."),
    "cpu": ("CPU DRY RUN (pipeline test, not a GPU measurement): numpy backend vs torch CPU on tiny shapes; "
            "torch.utils.benchmark.Timer.blocked_autorange (>= {min_run_time_s} s per case), median per call. "
            "Ceilings: numpy copy bandwidth and numpy float32 matmul on this CPU."),
}


# ----------------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------------
def _cmd(args, cwd=REPO_ROOT) -> Optional[str]:
    try:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except Exception:
        return None


def cuda_device() -> Optional[str]:
    """The CUDA device's name, or None when torch sees none."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def versions() -> Dict[str, str]:
    v = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "triton", "cupy"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception as e:
            v[mod] = f"unavailable ({type(e).__name__})"
    try:
        import torch
        v["torch CUDA"] = str(torch.version.cuda)
        if torch.cuda.is_available():
            v["cuDNN"] = str(torch.backends.cudnn.version())
    except Exception:
        pass
    return v


def git_info() -> Dict[str, object]:
    commit = _cmd(["git", "rev-parse", "HEAD"])
    dirty = _cmd(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"git_commit": commit or "unknown (not a git checkout)", "git_dirty": bool(dirty)}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "device"


def default_out_dir(label: str, date: str) -> str:
    base = os.path.join(REPO_ROOT, "bench", "results", f"{slug(label)}-{date}")
    out, i = base, 2
    while os.path.exists(out):
        out, i = f"{base}-{i}", i + 1
    return out


# ----------------------------------------------------------------------------------------------
# plan
# ----------------------------------------------------------------------------------------------
def build_plan(mode: str, ops, dtypes, providers, shape_set: str) -> List[dict]:
    """Tasks in run order: ceilings, then (op, shape, dtype) groups: ``quick`` shapes first, and
    within each tier the ops taken in turn (one group of each op, then the next of each, ...), so
    a run cut short by its budget still covers every op."""
    tiers: List[Dict[str, List[dict]]] = [{op: [] for op in ops}, {op: [] for op in ops}]
    for op in ops:
        for sh in S.shapes_for(op):
            if shape_set == "tiny" and "tiny" not in sh.tags:
                continue
            if shape_set == "quick" and "quick" not in sh.tags:
                continue
            tier = 0 if (shape_set != "all" or "quick" in sh.tags) else 1
            for dt in dtypes:
                tiers[tier][op].append({"kind": "group", "op": op, "shape": sh.name, "dtype": dt,
                                        "providers": list(providers)})
    order: List[dict] = []
    for tier in tiers:
        depth = max((len(v) for v in tier.values()), default=0)
        order += [tier[op][i] for i in range(depth) for op in ops if i < len(tier[op])]
    tasks = [{"id": "ceilings", "kind": "ceilings"}]
    for i, t in enumerate(order):
        t["id"] = f"g{i:04d}"
        tasks.append(t)
    return tasks


def pending(tasks: List[dict], done) -> List[tuple]:
    out = []
    for t in tasks:
        if t["kind"] == "ceilings":
            if (t["id"], None) not in done:
                out.append((t, None))
        else:
            out += [(t, p) for p in t["providers"] if (t["id"], p) not in done]
    return out


def record_failure(results_path: str, task: dict, provider: Optional[str], status: str, note: str):
    from .worker import append, base_record, shape_by_name
    if task["kind"] == "ceilings":
        append(results_path, {"task": task["id"], "provider": None, "ceilings": {"error": f"{status}: {note}"}})
        return
    rec = base_record(task, shape_by_name(task["shape"]), provider)
    rec.update(status=status, note=note)
    append(results_path, rec)


# ----------------------------------------------------------------------------------------------
# the worker loop: restart on crash, kill on hang, stop at the deadline
# ----------------------------------------------------------------------------------------------
def _read_progress(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def run_timings(out_dir: str, plan: dict, deadline: float, case_timeout: float, max_restarts: int,
                on_tick=None) -> Dict[str, int]:
    from .worker import done_keys
    plan_path = os.path.join(out_dir, "plan.json")
    results_path = os.path.join(out_dir, "results.jsonl")
    progress_path = os.path.join(out_dir, "progress.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f, indent=1)
    tasks = plan["tasks"]
    by_id = {t["id"]: t for t in tasks}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    stats = {"restarts": 0, "timeouts": 0, "crashes": 0}
    last_tick = time.time()
    while True:
        todo = pending(tasks, done_keys(results_path))
        if not todo:
            break
        if time.time() >= deadline or stats["restarts"] > max_restarts:
            why = ("not run: the time budget ran out" if time.time() >= deadline
                   else f"not run: the worker failed {stats['restarts']} times")
            print(f"[gpu_report] {why} ({len(todo)} cases left)", flush=True)
            for t, p in todo:
                record_failure(results_path, t, p, "not run", why)
            break
        if os.path.exists(progress_path):
            os.remove(progress_path)
        with open(os.path.join(out_dir, "worker.log"), "a") as wlog:
            proc = _procs.spawn([sys.executable, "-m", "bench.worker", plan_path, results_path, progress_path],
                                cwd=REPO_ROOT, env=env, stdout=None, stderr=wlog)
            failure = None
            while proc.poll() is None:
                time.sleep(0.25)
                now = time.time()
                prog = _read_progress(progress_path)
                if now >= deadline:
                    _procs.kill(proc)
                    failure = (prog, "timeout", "the run's time budget ran out during this case")
                elif prog and prog["task"] != "__finished__" and now - prog["t"] > case_timeout:
                    _procs.kill(proc)
                    stats["timeouts"] += 1
                    failure = (prog, "timeout", f"no result after {case_timeout:.0f} s (hung or too slow): killed")
                if on_tick and now - last_tick > 20:
                    last_tick = now
                    on_tick()
            rc = proc.returncode
            _procs.forget(proc)
        prog = _read_progress(progress_path) if failure is None else failure[0]
        if failure is None and rc != 0:
            stats["crashes"] += 1
            sig = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
            failure = (prog, "error", f"the worker died during this case ({sig}); see worker.log")
        if failure is not None:
            stats["restarts"] += 1
            prog = failure[0]
            if prog and prog["task"] in by_id and (prog["task"], prog["provider"]) not in done_keys(results_path):
                t = by_id[prog["task"]]
                record_failure(results_path, t, prog["provider"], failure[1], failure[2])
                print(f"[gpu_report] {t['id']} {t.get('op', '')} {t.get('shape', '')} {prog['provider']}: "
                      f"{failure[1]}: {failure[2]}", flush=True)
    for scratch in (progress_path, plan_path):   # report.json holds the configuration
        if os.path.exists(scratch):
            os.remove(scratch)
    return stats


# ----------------------------------------------------------------------------------------------
# assembling the report
# ----------------------------------------------------------------------------------------------
def load_results(results_path: str):
    ceilings, records = {}, {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if r.get("task") == "ceilings":
                    ceilings = r["ceilings"]
                else:
                    records[(r["task"], r["provider"])] = r   # the last line of a case wins
    return ceilings, list(records.values())


def derive(records: List[dict], ceilings: dict, baseline: str) -> List[dict]:
    """Add rates, % of ceiling and time / baseline to each record (in place; returns them sorted)."""
    base_ms = {(r["op"], r["shape"], r["dtype"]): r["ms"] for r in records
               if r["provider"] == baseline and r["status"] == "ok" and r["ms"]}
    copy = (ceilings.get("copy") or {}).get("GB/s")
    mm = ceilings.get("matmul") or {}
    for r in records:
        r["tflops"] = r["gbps"] = r["pct_ceiling"] = r["ratio"] = None
        if not r.get("ms"):
            continue
        sec = r["ms"] * 1e-3
        if r["metric"] == "flops":
            r["tflops"] = r["flops"] / sec / 1e12
            peak = (mm.get(r["dtype"]) or {}).get("TFLOP/s")
            r["pct_ceiling"] = 100 * r["tflops"] / peak if peak else None
        else:
            r["gbps"] = r["bytes"] / sec / 1e9
            r["pct_ceiling"] = 100 * r["gbps"] / copy if copy else None
        b = base_ms.get((r["op"], r["shape"], r["dtype"]))
        if b and r["status"] == "ok":
            r["ratio"] = r["ms"] / b
    order = {op: i for i, op in enumerate(S.ALL_OPS)}
    return sorted(records, key=lambda r: (order.get(r["op"], 99), r["task"], r["provider"] != baseline))


def assemble(out_dir: str, meta: dict, config: dict, parity: Optional[dict]) -> dict:
    ceilings, records = load_results(os.path.join(out_dir, "results.jsonl"))
    results = derive(records, ceilings, config["baseline"])
    counts: Dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    meta = dict(meta, wall_s=round(time.time() - meta["t_start"], 1), case_counts=counts)
    return {"meta": meta, "config": config, "ceilings": ceilings, "parity": parity, "results": results}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_report", description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="no GPU needed: run the pipeline with numpy vs torch CPU on tiny shapes (labelled CPU)")
    ap.add_argument("--quick", action="store_true", help="time only the shapes tagged 'quick'")
    ap.add_argument("--out", help="output folder (default bench/results/<device>-<date>)")
    ap.add_argument("--window", action="store_true",
                    help="the device-window preset (issue 12): at most 400 s in all (parity 120 s), conv "
                         "fwd/dX/dW, BN+ReLU and pooling in float16 and bfloat16, every provider")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="total wall-clock budget in seconds, parity included (default 480; 400 with --window)")
    ap.add_argument("--block-s", type=float, default=None,
                    help=f"seconds for the fused-block benchmark at the end (default {WINDOW_BLOCK_S:.0f} with "
                         "--window, else 0: not run)")
    ap.add_argument("--parity-timeout", type=float, default=150.0, help="limit for the parity suite (s)")
    ap.add_argument("--no-parity", action="store_true", help="skip the parity suite")
    ap.add_argument("--parity-paths", default="tests", help="comma-separated paths for the parity run")
    ap.add_argument("--case-timeout", type=float, default=60.0,
                    help="kill a case with no result after this many seconds (compilation included)")
    ap.add_argument("--max-restarts", type=int, default=8, help="worker restarts before giving up")
    ap.add_argument("--ops", help=f"comma-separated subset of {','.join(S.ALL_OPS)}")
    ap.add_argument("--dtypes", default=None, help="comma-separated dtypes (GPU default float16,float32)")
    ap.add_argument("--providers", default=None,
                    help=f"comma-separated, baseline first (GPU default {','.join(GPU_PROVIDERS)})")
    args = ap.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = WINDOW_BUDGET_S if args.window else 480.0
    if args.block_s is None:
        args.block_s = WINDOW_BLOCK_S if args.window else 0.0
    if args.window:
        args.parity_timeout = min(args.parity_timeout, WINDOW_PARITY_S)
        args.ops = args.ops or ",".join(WINDOW_OPS)
    t_start = time.time()
    deadline = t_start + args.budget_s

    try:
        import cnngpu.kernels  # noqa: F401  (the install maps kernels/ to cnngpu.kernels)
    except ImportError as e:
        print(f"bench.gpu_report: cnngpu is not installed from this checkout ({e}); run "
              "`pip install --no-deps --no-build-isolation -e .` in the repository root first", file=sys.stderr)
        return EXIT_NOT_INSTALLED
    device = cuda_device()
    if device is None and not args.cpu_dry_run:
        print("bench.gpu_report: no CUDA device is visible to torch (torch.cuda.is_available() is False), so "
              "there is nothing to measure. Run it on a CUDA machine, or pass --cpu-dry-run to exercise the "
              "pipeline on the CPU (numpy vs torch CPU, tiny shapes).", file=sys.stderr)
        return EXIT_NO_CUDA
    mode = "cpu" if args.cpu_dry_run else "cuda"
    if mode == "cpu":
        label, providers, dtypes, shape_set = f"CPU dry run: {cpu_name()}", CPU_PROVIDERS, ["float32"], "tiny"
    else:
        label, providers, dtypes = device, GPU_PROVIDERS, (list(WINDOW_DTYPES) if args.window
                                                          else ["float16", "float32"])
        shape_set = "quick" if args.quick else "all"
    if args.providers:
        providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    if args.dtypes:
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    ops = [o.strip() for o in args.ops.split(",")] if args.ops else list(S.ALL_OPS)
    for o in ops:
        if o not in S.ALL_OPS:
            ap.error(f"unknown op {o!r}; choose from {','.join(S.ALL_OPS)}")
    for p in providers:
        if p not in C.ALL_PROVIDERS:
            ap.error(f"unknown provider {p!r}; choose from {','.join(C.ALL_PROVIDERS)}")

    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    out_dir = os.path.abspath(args.out or default_out_dir("cpu-dry-run" if mode == "cpu" else device, date))
    os.makedirs(out_dir, exist_ok=True)
    meta = {"device": label, "mode": mode, "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "host_cpu": cpu_name(), "versions": versions(), "driver": None, "t_start": t_start,
            "command": " ".join(["python -m bench.gpu_report"] + (argv if argv is not None else sys.argv[1:]))}
    meta.update(git_info())
    if mode == "cuda":
        meta["driver"] = _cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    tasks = build_plan(mode, ops, dtypes, providers, shape_set)
    config = {"mode": "CPU dry run" if mode == "cpu" else "CUDA", "baseline": providers[0], "ops": ops,
              "dtypes": dtypes, "providers": list(providers), "shape_set": shape_set,
              "timing": TIMING[mode], "method": METHOD[mode].format(**TIMING[mode]),
              "budget_s": args.budget_s, "case_timeout_s": args.case_timeout, "block_s": args.block_s}
    print(f"[gpu_report] {label}: {len(tasks) - 1} (op, shape, dtype) groups x {len(providers)} providers "
          f"-> {out_dir}", flush=True)

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        parity, stats = _measure(args, mode, out_dir, meta, config, tasks, deadline, t_start)
    except _Interrupted as e:
        _procs.kill_all()
        meta["interrupted"] = str(e)
        print(f"[gpu_report] interrupted ({e}): writing what was measured", flush=True)
        parity, stats = _state.get("parity"), {"interrupted": str(e)}
        from .worker import done_keys
        results_path = os.path.join(out_dir, "results.jsonl")
        for t, p in pending(tasks, done_keys(results_path)):
            record_failure(results_path, t, p, "not run", f"the report was interrupted ({e})")
    meta["worker"] = stats
    paths = _write(out_dir, meta, config, parity, final=True)
    counts = assemble(out_dir, meta, config, parity)["meta"]["case_counts"]
    print(f"[gpu_report] done in {time.time() - t_start:.0f} s: cases {counts}; worker {stats}", flush=True)
    for p in paths.values():
        print(f"[gpu_report] wrote {p}", flush=True)
    return 130 if "interrupted" in meta else 0


class _Interrupted(Exception):
    pass


_state: Dict[str, object] = {}


def _interrupt(signum, frame):
    raise _Interrupted(signal.Signals(signum).name)


def _write(out_dir, meta, config, parity, final=False):
    """Write report.md/json (and at the end the PNG) from what results.jsonl holds now."""
    report = assemble(out_dir, meta, config, parity)
    if final:
        return report_md.write_outputs(report, out_dir)
    report = dict(report, summary=report_md.summary_rows(report))
    with open(os.path.join(out_dir, report_md.REPORT_JSON), "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(out_dir, report_md.REPORT_MD), "w") as f:
        f.write(report_md.render_markdown(report))
    return {}


def _measure(args, mode, out_dir, meta, config, tasks, deadline, t_start):
    """The parity suite (GPU only), then the timing worker loop; returns (parity, worker stats)."""
    parity = None
    if args.no_parity:
        config["parity_note"] = "--no-parity"
    elif mode == "cpu":
        config["parity_note"] = "CPU dry run: the gpu-marked suite needs a CUDA device"
    else:
        from .parity import GPU_SUITE, run_parity
        limit = max(10.0, min(args.parity_timeout, deadline - time.time() - 60))
        print(f"[gpu_report] parity suite: pytest -m '{GPU_SUITE}' {args.parity_paths} (limit {limit:.0f} s)",
              flush=True)
        parity = run_parity(os.path.join(out_dir, "parity.log"), limit, paths=args.parity_paths.split(","))
        _state["parity"] = parity
        c = parity["counts"]
        print(f"[gpu_report] parity: {c['passed']} passed, {c['failed']} failed, {c['error']} errors, "
              f"{c['skipped']} skipped in {parity['wall_s']} s{' (TIMED OUT)' if parity['timed_out'] else ''}",
              flush=True)

    _write(out_dir, meta, config, parity)
    plan = {"mode": mode, "t_start": t_start, "parent_pid": os.getpid(), "timing": TIMING[mode], "tasks": tasks}
    stats = run_timings(out_dir, plan, deadline - 15 - args.block_s, args.case_timeout, args.max_restarts,
                        on_tick=lambda: _write(out_dir, meta, config, parity))
    if args.block_s > 0:
        from .block_step import run_block
        limit = max(10.0, min(args.block_s, deadline - time.time() - 10))
        print(f"[gpu_report] fused block: python -m bench.block (limit {limit:.0f} s)", flush=True)
        meta["block"] = run_block(out_dir, mode, limit, dtype=config["dtypes"][0] if mode == "cuda" else "float32")
        b = meta["block"]
        print(f"[gpu_report] fused block: {b['cases']} cases, {b['errors']} errors in {b['wall_s']} s"
              f"{' (TIMED OUT)' if b['timed_out'] else ''}", flush=True)
    return parity, stats


if __name__ == "__main__":
    sys.exit(main())
