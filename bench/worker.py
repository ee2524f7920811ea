"""The timing worker of ``bench.gpu_report``: runs a plan's tasks in a child process.

``python -m bench.worker PLAN RESULTS PROGRESS`` reads the plan (JSON written by gpu_report),
skips every (task, provider) that already has a line in RESULTS (JSON lines), and for the rest:

- ``ceilings``: measures copy bandwidth and matmul throughput (device or CPU) -> one line;
- ``group``: one (op, shape, dtype) with its providers, baseline first: the same random inputs for
  all; each provider's output is checked against the baseline's (relative error), then timed
  (triton.testing.do_bench: CUDA events, warm-up, L2 flush; torch.utils.benchmark.Timer on the
  CPU) -> one line per provider.

Before each case it writes ``{"task", "provider", "t"}`` to PROGRESS, so the parent can tell
which case a hang or a crash happened in, record it, and start a fresh worker for the rest.
A failing case is recorded (status ``error`` with the exception) and the worker goes on; after a
CUDA error that may have broken the context the worker exits with code 3 and the parent restarts it.

Self-test hook: env ``CNNGPU_BENCH_INJECT="error@op:provider,crash@op:provider,hang@op:provider"``
makes those cases raise, kill the worker, or sleep forever (the smoke test checks each path).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

from . import cases as C
from . import shapes as S
from . import timing as T

EXIT_CONTEXT_LOST = 3
_CUDA_FATAL = ("illegal memory access", "CUDA error", "cudaError", "CUDA_ERROR", "unspecified launch failure",
               "misaligned address", "device-side assert")


def shape_by_name(name: str):
    for sh in S.CONV_SHAPES + S.POOL_SHAPES + S.BN_SHAPES + S.NORM_SHAPES:
        if sh.name == name:
            return sh
    raise KeyError(f"no benchmark shape named {name!r}")


def done_keys(results_path: str):
    """(task, provider) pairs that already have a result line (provider None for ceilings)."""
    keys = set()
    if os.path.exists(results_path):
        with open(results_path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:   # a line cut off by a kill: ignore it
                    continue
                keys.add((r.get("task"), r.get("provider")))
    return keys


def append(path: str, record: dict):
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _progress(path: str, task: str, provider):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"task": task, "provider": provider, "t": time.time()}, f)
    os.replace(tmp, path)


def _injected(op: str, provider: str):
    spec = os.environ.get("CNNGPU_BENCH_INJECT", "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        what, _, target = item.partition("@")
        if target == f"{op}:{provider}":
            if what == "error":
                raise RuntimeError(f"injected failure in {op}:{provider} (CNNGPU_BENCH_INJECT)")
            if what == "crash":
                os._exit(99)
            if what == "hang":
                while True:
                    time.sleep(1)


def _fatal(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(s in text for s in _CUDA_FATAL)


def run_ceilings(mode: str) -> dict:
    out = {}
    if mode == "cuda":
        try:
            out["copy"] = T.copy_bandwidth_cuda()
        except Exception as e:
            out["copy_error"] = f"{type(e).__name__}: {e}"
        out["matmul"] = {}
        for dt in ("float16", "bfloat16", "tf32", "float32"):
            try:
                out["matmul"][dt] = T.matmul_tflops_cuda(dt)
            except Exception as e:
                out["matmul"][dt] = {"error": f"{type(e).__name__}: {e}"}
    else:
        out["copy"] = T.copy_bandwidth_cpu(16 << 20, min_run_time_s=0.05)
        out["matmul"] = {"float32": T.matmul_tflops_cpu(512, min_run_time_s=0.05)}
    return out


def base_record(task: dict, shape, provider: str) -> dict:
    op, dt = task["op"], task["dtype"]
    return {"task": task["id"], "op": op, "shape": shape.name, "provider": provider, "dtype": dt,
            "metric": shape.metric, "flops": shape.flops(op), "bytes": shape.bytes(op, dt),
            "status": "ok", "ms": None, "reps": None, "spread": None, "rel_err": None, "check": None,
            "note": None}


def run_group(task: dict, plan: dict, done, results_path: str, progress_path: str, log) -> None:
    mode, tcfg = plan["mode"], plan["timing"]
    op, dt = task["op"], task["dtype"]
    shape = shape_by_name(task["shape"])
    base = task["providers"][0]
    todo = [p for p in task["providers"] if (task["id"], p) not in done]
    if not todo:
        return
    device = "cuda" if mode == "cuda" else "cpu"
    inputs = None
    ref = {}

    def reference():
        if "out" not in ref:      # the baseline's output, computed once (or its failure, kept)
            try:
                ref["out"] = C.make_case(op, shape, base, dt, inputs=inputs).result()
            except Exception as e:
                ref["out"] = e
        if isinstance(ref["out"], Exception):
            raise ref["out"]
        return ref["out"]

    for prov in todo:
        _progress(progress_path, task["id"], prov)
        rec = base_record(task, shape, prov)
        t0 = time.perf_counter()
        case = None
        try:
            why = C.unavailable(prov, dt, shape, op)
            if why is not None:
                raise C.Unavailable(why)
            if inputs is None:
                inputs = C.make_inputs(op, shape, dt, device)
            _injected(op, prov)
            case = C.make_case(op, shape, prov, dt, inputs=inputs)
            out = case.result()          # first call: compilation / autotuning happen here
            if prov == base:
                ref["out"] = out
            else:
                try:
                    ref_out = reference()
                except Exception as e:   # the baseline's failure is not this provider's
                    rec["note"] = f"not checked: baseline {base} failed ({type(e).__name__}: {e})"[:500]
                else:
                    err = C.rel_error(out, ref_out)
                    rec["rel_err"] = err
                    rec["check"] = "ok" if err <= C.CHECK_TOL[dt] else "MISMATCH"
                    if rec["check"] != "ok":
                        rec["status"] = "mismatch"
                        rec["note"] = f"relative error {err:.2e} vs {base} > {C.CHECK_TOL[dt]:.0e}"
            del out
            if mode == "cuda":
                t = T.time_cuda(case.run, warmup_ms=tcfg["warmup_ms"], rep_ms=tcfg["rep_ms"])
            else:
                t = T.time_cpu(case.run_sync, min_run_time_s=tcfg["min_run_time_s"])
            rec.update(ms=t.ms, reps=t.reps, spread=round(t.spread, 4))
        except C.Unavailable as e:
            rec.update(status="unavailable", note=str(e))
        except Exception as e:
            rec.update(status="error", note=f"{type(e).__name__}: {e}"[:2000],
                       traceback=traceback.format_exc(limit=6)[-3000:])
            if mode == "cuda" and _fatal(e):
                rec["note"] += " (CUDA context may be lost: worker restarted)"
                append(results_path, rec)
                log(f"{task['id']} {op} {shape.name} {dt} {prov}: FATAL {rec['note'][:200]}")
                sys.exit(EXIT_CONTEXT_LOST)
        rec["wall_s"] = round(time.perf_counter() - t0, 3)
        append(results_path, rec)
        what = f"{rec['ms']:.4f} ms" if rec["ms"] is not None else rec["status"]
        if rec["status"] not in ("ok",):
            what += f" ({(rec['note'] or '')[:160]})"
        log(f"{task['id']} {op} {shape.name} {dt} {prov}: {what}")
        del case
    del inputs, ref
    if mode == "cuda":
        import torch
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print("usage: python -m bench.worker PLAN RESULTS PROGRESS", file=sys.stderr)
        return 2
    plan_path, results_path, progress_path = argv
    with open(plan_path) as f:
        plan = json.load(f)
    t_start = plan.get("t_start", time.time())

    def log(msg):
        print(f"[{time.time() - t_start:6.1f}s] {msg}", flush=True)

    from cnngpu import backends
    backends.set_poison(False)   # a verification aid; it would add a fill to every timed call
    done = done_keys(results_path)
    parent = plan.get("parent_pid")
    for task in plan["tasks"]:
        if parent is not None and os.getppid() != parent:
            log("the report process is gone: stopping")
            return 1
        if task["kind"] == "ceilings":
            if (task["id"], None) in done:
                continue
            _progress(progress_path, task["id"], None)
            log("measuring ceilings (copy bandwidth, matmul throughput)")
            append(results_path, {"task": task["id"], "provider": None, "ceilings": run_ceilings(plan["mode"])})
        else:
            run_group(task, plan, done, results_path, progress_path, log)
    _progress(progress_path, "__finished__", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
