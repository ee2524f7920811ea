"""Run the GPU parity suite (``pytest -m 'gpu or cupy' tests``) in a subprocess and count its outcomes.

The subprocess gets a wall-clock limit; on expiry its process group (started here) is killed
and the counts are read off the verbose per-test lines written so far, marked ``timed_out``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Dict, List

from . import _procs
from . import REPO_ROOT

_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
_LINE = re.compile(r"::\S*.*\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b|\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b.*::")
_SUMMARY = re.compile(r"^=+ (.+) in ([\d.]+)s(?: \([^)]*\))? =+$")
_WORD = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped",
         "XFAIL": "xfailed", "XPASS": "xpassed"}


def _have_xdist() -> bool:
    try:
        import xdist  # noqa: F401
        return True
    except ImportError:
        return False


def parse_log(text: str) -> Dict[str, object]:
    """Outcome counts and failing test ids from pytest ``-v -rfE`` output (complete or cut off)."""
    counts = {k: 0 for k in _OUTCOMES}
    summary_found = False
    for line in reversed(text.splitlines()):
        m = _SUMMARY.match(line.strip())
        if m:
            for n, word in re.findall(r"(\d+) (\w+)", m.group(1)):
                word = "error" if word == "errors" else word
                counts[word] = int(n)
            summary_found = True
            break
    if not summary_found:
        for line in text.splitlines():
            m = _LINE.search(line)
            if m:
                counts[_WORD[m.group(1) or m.group(2)]] += 1
    failing: List[str] = []
    for line in text.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            failing.append(line.strip()[:300])
    if not failing and not summary_found:
        for line in text.splitlines():
            m = _LINE.search(line)
            if m and (m.group(1) or m.group(2)) in ("FAILED", "ERROR"):
                failing.append(line.strip()[:300])
    return {"counts": counts, "summary_found": summary_found, "failing": failing[:50],
            "n_failing_listed": len(failing)}


def _have_pytest_timeout() -> bool:
    try:
        import pytest_timeout  # noqa: F401
        return True
    except ImportError:
        return False


GPU_SUITE = "gpu or cupy"     # the tests that need a GPU, and every cupy-backend test


def run_parity(log_path: str, timeout_s: float, workers: int = 4, marker: str = GPU_SUITE,
               paths=("tests",), per_test_timeout_s: int = 60) -> Dict[str, object]:
    """Run ``pytest -m <marker> <paths>`` with output to ``log_path``; return counts and status.
    With pytest-timeout installed, one test that hangs fails after ``per_test_timeout_s``."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
           "-m", marker, "-v", "-rfE", "--color=no", *paths]
    if workers > 1 and _have_xdist():
        cmd += ["-n", str(workers)]
    if per_test_timeout_s and _have_pytest_timeout():
        cmd += [f"--timeout={int(per_test_timeout_s)}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = _procs.spawn(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            rc = proc.wait(timeout=timeout_s)
            _procs.forget(proc)
        except subprocess.TimeoutExpired:
            timed_out = True
            _procs.kill(proc)   # the process group of the pytest we started, only
            rc = proc.returncode
    wall = time.perf_counter() - t0
    with open(log_path) as f:
        text = f.read()
    res = parse_log(text)
    res.update({"command": " ".join(cmd[1:]), "returncode": rc, "timed_out": timed_out,
                "timeout_s": timeout_s, "wall_s": round(wall, 1), "log": os.path.basename(log_path)})
    return res
