"""Every code block of README.md runs as written.

- ```python blocks run in a fresh interpreter (cwd: a temporary folder), each on its own;
- ```bash blocks run in bash from a copy of the repository (so they can write there), with
  ``CNNGPU_BENCH_SHAPES=tiny`` so a benchmark command takes seconds, not minutes;
- blocks tagged ``gpu`` in the fence info string are skipped without a CUDA device;
- blocks tagged ``ci`` (the install and test commands) are what .ci/run runs in fresh venvs: here
  we check that .ci/run reads them out of the README (it cannot drift from them);
- ```text blocks are prose (the CLI synopsis), checked against the CLI elsewhere (test_demo.py).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("ci_readme", os.path.join(ROOT, ".ci", "readme.py"))
readme = importlib.util.module_from_spec(_spec)
assert _spec.loader is not None
_spec.loader.exec_module(readme)

BLOCKS = readme.blocks()
CODE = [b for b in BLOCKS if b.lang in ("python", "bash") and "ci" not in b.tags]


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def test_readme_has_the_blocks_we_expect():
    langs = {b.lang for b in BLOCKS}
    assert langs <= {"python", "bash", "text"}, langs
    assert len(readme.ci_blocks()) == 2
    assert sum(b.lang == "python" for b in BLOCKS) >= 4
    assert any("gpu" in b.tags for b in BLOCKS)


def test_ci_runs_the_readme_commands():
    """.ci/run takes its two install/test commands from the README (command 1 then command 2)."""
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert '"$(python3 .ci/readme.py ci 1)"' in ci and '"$(python3 .ci/readme.py ci 2)"' in ci
    c1, c2 = (readme.commands(b) for b in readme.ci_blocks())
    assert c1 == ["pip install -e '.[demo]' && python -m cnngpu demo"]
    assert c2[0] == "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert c2[-1].endswith("python -m pytest -q -n 2")
    # the one substitution .ci/run makes is the torch line, and it names it exactly
    assert c2[0] in ci and "pip install torch==2.13.0" in ci


def _copy_repo(dst: str) -> str:
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", ".benchmarks",
                                    "demo_out", "results")
    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


@pytest.mark.parametrize("block", CODE, ids=[f"{b.lang}-line{b.line}" for b in CODE])
def test_readme_block_runs(block, tmp_path):
    if "gpu" in block.tags and not _cuda():
        pytest.skip(f"README.md:{block.line} is marked gpu and no CUDA device is visible")
    # a user's shell: none of the PYTEST_* variables of this run (under xdist they would make a
    # nested pytest-benchmark run think it runs under xdist, and disable it)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(CNNGPU_BENCH_SHAPES="tiny", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    if block.lang == "python":
        cmd, cwd = [sys.executable, "-c", block.code], str(tmp_path)
    else:
        cwd = _copy_repo(str(tmp_path / "repo"))
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"README.md:{block.line} failed:\n{block.code}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
