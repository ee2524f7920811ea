"""Child processes of the report (parity pytest, timing worker): each in its own process group
(not its own session, so a machine's clean-up of the caller's session still reaches it), and
killable as a group -- ours only -- on a timeout or when the report itself is interrupted."""
from __future__ import annotations

import os
import signal
import subprocess

_LIVE = set()


def spawn(cmd, **kwargs) -> subprocess.Popen:
    """subprocess.Popen in a new process group, remembered until ``kill`` or ``forget``."""
    proc = subprocess.Popen(cmd, preexec_fn=os.setpgrp, **kwargs)
    _LIVE.add(proc)
    return proc


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
