"""Run the GPU parity suite (``pytest -m 'gpu or cupy' tests``) in a subprocess and count its outcomes.

The outcomes come from pytest's own ``--junitxml`` report, not from its text output. The subprocess
gets a wall-clock limit; on expiry it is interrupted (SIGINT to its process group: pytest then
stops, and still writes the report of the tests run so far, marked ``timed_out``), and killed if it
has not exited after a grace period. The process group matters: with pytest-xdist the tests run
in grandchildren that a plain ``Popen.kill`` (or ``subprocess.run(timeout=...)``) would leave
running on the GPU.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from typing import Dict, List

from . import _procs

_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
INTERRUPT_GRACE_S = 20.0


def _have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def parse_junit(path: str) -> Dict[str, object]:
    """Outcome counts and failing test ids from a pytest ``--junitxml`` file (``report_found``
    False and zero counts when there is none, e.g. after a hard kill)."""
    counts = {k: 0 for k in _OUTCOMES}
    failing: List[str] = []
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {"counts": counts, "report_found": False, "failing": [], "n_failing_listed": 0}
    for case in root.iter("testcase"):
        if not case.get("name"):   # the test running when the run was interrupted: no outcome
            continue
        tid = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag: child for child in case}
        if "failure" in kinds or "error" in kinds:
            tag = "failure" if "failure" in kinds else "error"
            outcome = "failed" if tag == "failure" else "error"
            counts[outcome] += 1
            msg = (kinds[tag].get("message") or "").splitlines()[0] if kinds[tag].get("message") else ""
            failing.append(f"{outcome.upper()} {tid} - {msg}"[:300])
        elif "skipped" in kinds:
            counts["xfailed" if kinds["skipped"].get("type") == "pytest.xfail" else "skipped"] += 1
        else:
            counts["passed"] += 1
    return {"counts": counts, "report_found": True, "failing": failing[:50], "n_failing_listed": len(failing)}


GPU_SUITE = "gpu or cupy"     # the tests that need a GPU, and every cupy-backend test


def run_parity(log_path: str, timeout_s: float, workers: int = 4, marker: str = GPU_SUITE,
               paths=("tests",), per_test_timeout_s: int = 60) -> Dict[str, object]:
    """Run ``pytest -m <marker> <paths>`` with output to ``log_path`` and a junit report beside it;
    return counts and status. With pytest-timeout installed, one test that hangs fails after
    ``per_test_timeout_s``."""
    xml_path = os.path.splitext(log_path)[0] + ".xml"
    if os.path.exists(xml_path):
        os.remove(xml_path)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
           "-m", marker, "-rfE", "--color=no", f"--junitxml={xml_path}", *paths]
    if workers > 1 and _have("xdist"):
        cmd += ["-n", str(workers)]
    if per_test_timeout_s and _have("pytest_timeout"):
        cmd += [f"--timeout={int(per_test_timeout_s)}"]
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        proc = _procs.spawn_logged(cmd, log)
        try:
            rc = proc.wait(timeout=timeout_s)
            _procs.forget(proc)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGINT)      # pytest writes its report of the tests so far
                rc = proc.wait(timeout=INTERRUPT_GRACE_S)
                _procs.forget(proc)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                _procs.kill(proc)   # the process group of the pytest we started, only
                rc = proc.returncode
    wall = time.perf_counter() - t0
    res = parse_junit(xml_path)
    res.update({"command": " ".join(cmd[1:]), "returncode": rc, "timed_out": timed_out,
                "timeout_s": timeout_s, "wall_s": round(wall, 1), "log": os.path.basename(log_path),
                "junit": os.path.basename(xml_path)})
    return res
