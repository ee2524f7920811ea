"""Child processes of the report (parity pytest, timing worker): each in its own process group
(not its own session, so a machine's clean-up of the caller's session still reaches it), and
killable as a group -- ours only -- on a timeout or when the report itself is interrupted.

Why this is hand-written rather than pytest-timeout / pytest-xdist: the parity run does use both
(``--timeout`` per test, ``-n`` workers), but something must still bound the run as a whole and
stop xdist's worker processes, which ``subprocess.run(timeout=...)`` would leave running (it kills
only the direct child). The timing worker is not a pytest run: it must keep one CUDA context per
process, record a hung or crashed case as that case's result and go on with the rest of the plan
in its budget order, and restart after a CUDA error that leaves the process alive but its context
unusable -- xdist restarts only workers that die, and pytest-timeout's thread method ends the whole
process without telling the report which case it was.
"""
from __future__ import annotations

import os
import signal
import subprocess

_LIVE = set()


def _child_setup() -> None:
    os.setpgrp()
    # SIGINT back to its default: a parent that ignores it (an xdist worker does) would pass that on,
    # and the parity run's time limit interrupts pytest with SIGINT so that it writes its report
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(cmd, **kwargs) -> subprocess.Popen:
    """subprocess.Popen in a new process group (SIGINT at its default), remembered until ``kill`` or
    ``forget``."""
    proc = subprocess.Popen(cmd, preexec_fn=_child_setup, **kwargs)
    _LIVE.add(proc)
    return proc


def spawn_logged(cmd, log) -> subprocess.Popen:
    """``spawn`` a Python child of the report in the repository root: its output (unbuffered) to the
    open file ``log`` after a ``$ cmd`` line, the checkout first on PYTHONPATH."""
    from . import REPO_ROOT
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    return spawn(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def forget(proc: subprocess.Popen) -> None:
    _LIVE.discard(proc)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group we started for ``proc`` and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    _LIVE.discard(proc)


def kill_all() -> None:
    for proc in list(_LIVE):
        kill(proc)
