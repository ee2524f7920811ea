"""Tier 4: the static performance report's gate (issue 12) on a sample of the ResNet-50 set.

``python -m bench.static_report --sample N`` plans conv fwd / dX / dW with the triton launchers on
'meta' tensors, compiles every tensor-core GEMM launch for sm_90 with triton's launch
specialisation and checks per case: wgmma overlapped, async copies of both operands, >= 2 stages,
no spills, no scalar 16-bit global loads. Runs in a child process without TRITON_INTERPRET (the
interpreter's jit functions cannot be compiled), with a fresh compile cache.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = 2          # shapes: the first (stem) and last (3x3 512 at 7x7, batch 32) of the list


def test_static_report_gate_on_a_sample(tmp_path):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["CNNGPU_CACHE"] = str(tmp_path / "cache.json")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "-m", "bench.static_report", "--parts", "conv", "--sample", str(SAMPLE),
                           "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    rows = json.loads(out.read_text()) if out.exists() else []
    assert rows, f"no rows:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # every pass, both layouts, both dtypes are in the sample
    assert {r["pass_"] for r in rows} == {"fwd", "dX", "dW"}
    assert {r["layout"] for r in rows} == {"nchw", "channels_last"}
    assert {r["dtype"] for r in rows} == {"float16", "bfloat16"}
    bad = [f"{r['case']}: {r.get('error') or [k for k, v in r['gate'].items() if not v]}"
           for r in rows if "error" in r or not all(r["gate"].values())]
    assert not bad, "static report gate failed:\n" + "\n".join(bad)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_static_report_tma_rows(tmp_path):
    """The opt-in TMA forward (algo='tma') compiled for sm_90 at a ResNet-50 1x1 layer: TMA loads
    (UTMALDG) feeding overlapped wgmma (HGMMA), >= 2 stages, no spills -- static facts only, the path
    is unmeasured."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["CNNGPU_CACHE"] = str(tmp_path / "cache.json")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "-m", "bench.static_report", "--parts", "tma", "--only",
                           "r50_1x1_64to256_56_n32", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    rows = json.loads(out.read_text()) if out.exists() else []
    assert rows, f"no rows:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert {r["dtype"] for r in rows} == {"float16", "bfloat16"}
    for r in rows:
        assert r["variant"] == "tma" and "error" not in r, r
        assert all(r["gate"].values()), (r["case"], r["gate"])
        assert r["mix"]["UTMALDG"] > 0 and r["mix"]["HGMMA"] > 0 and r["mix"]["LDGSTS"] == 0, r["mix"]
