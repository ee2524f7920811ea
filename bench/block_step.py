"""The fused-block step of ``bench.gpu_report`` (``--window``, or ``--block-s``): bench/block.py
(ResNet BasicBlock: torch eager vs cnngpu unfused vs fused, eval and a training step) in a child
process with a wall-clock limit, both GPU backends (triton and cupy; the numpy backend on a CPU
dry run), writing block.md and block.jsonl into the report folder as each case finishes, so a run
cut short by the limit keeps what it measured."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict

from . import _procs

BLOCK_MD, BLOCK_JSONL, BLOCK_LOG = "block.md", "block.jsonl", "block.log"
GPU_BACKENDS = "triton,cupy"


def run_block(out_dir: str, mode: str, limit_s: float, dtype: str = "float16") -> Dict[str, object]:
    """Run ``python -m bench.block`` (``--cpu`` in mode 'cpu') for at most ``limit_s`` seconds;
    return {returncode, timed_out, wall_s, cases, errors, table (the markdown), paths}."""
    md, jl, log_path = (os.path.join(out_dir, n) for n in (BLOCK_MD, BLOCK_JSONL, BLOCK_LOG))
    for p in (md, jl):
        if os.path.exists(p):
            os.remove(p)
    cmd = [sys.executable, "-m", "bench.block", "--out", md, "--jsonl", jl]
    cmd += ["--cpu"] if mode == "cpu" else ["--backend", GPU_BACKENDS, "--dtype", dtype]
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        proc = _procs.spawn_logged(cmd, log)
        try:
            rc = proc.wait(timeout=max(1.0, limit_s))
            _procs.forget(proc)
        except subprocess.TimeoutExpired:
            timed_out = True
            _procs.kill(proc)
            rc = None
    rows = []
    if os.path.exists(jl):
        with open(jl) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    table = open(md).read() if os.path.exists(md) else ""
    return {"returncode": rc, "timed_out": timed_out, "wall_s": round(time.perf_counter() - t0, 1),
            "limit_s": round(limit_s, 1), "cases": len(rows), "errors": sum("error" in r for r in rows),
            "table": table, "paths": {"md": md, "jsonl": jl, "log": log_path}}
