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


def test_static_report_fused_block_rows(tmp_path):
    """The fused conv + BN + ReLU (+ residual) block (issue 16) at the 14x14x256 BasicBlock shape,
    fp16, NCHW and channels_last, eval and training, with and without the residual: the conv with
    its epilogue (RELU / HAS_RES / STATS) passes the conv gate; finalize and apply have no spills,
    apply vector loads of y and the residual in both layouts and no scalar 16-bit load."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["CNNGPU_CACHE"] = str(tmp_path / "cache.json")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "-m", "bench.static_report", "--parts", "fused", "--only",
                           "14x14x256", "--sample", "1", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    rows = json.loads(out.read_text()) if out.exists() else []
    assert rows, f"no rows:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert {r["layout"] for r in rows} == {"nchw", "channels_last"}
    assert {(r["mode"], r["residual"]) for r in rows} == {("eval", False), ("eval", True), ("train", False),
                                                          ("train", True)}
    gemm = [r for r in rows if r["kernel"] == "conv2d_fwd_implicit_gemm"]
    assert {c for r in gemm for c in ("STATS", "HAS_RES", "RELU") if c in r["config"]} == {"STATS", "HAS_RES", "RELU"}
    assert {r["kernel"] for r in rows} == {"conv2d_fwd_implicit_gemm", "conv_bn_fwd_finalize_stats",
                                           "conv_bn_fwd_apply"}
    assert all(set(r["gate"]) == {"wgmma_overlap", "async_both", "stages>=2", "no_spills", "no_b16_loads"}
               for r in gemm if "error" not in r)
    apply = [r for r in rows if r["kernel"] == "conv_bn_fwd_apply"]
    # both layouts (NCHW: y channels-last, out / residual along the plane): vectors, no scalar 16-bit load
    assert apply and all({"vector_loads", "no_b16_loads"} <= set(r["gate"]) for r in apply)
    bad = [f"{r['case']}: {r.get('error') or [k for k, v in r['gate'].items() if not v]}"
           for r in rows if "error" in r or not all(r["gate"].values())]
    assert not bad, "fused block static gate failed:\n" + "\n".join(bad)
    assert proc.returncode == 0, proc.stdout[-2000:]
