"""Tier 4: the memory-bound Triton kernels' static report (``python -m bench.static_memops``) on a
sample: the first GPU-sized bench shape of each op family (BatchNorm+ReLU, pooling, LayerNorm,
GroupNorm), fp16, NCHW and channels_last, every kernel launch compiled for sm_90 with triton's
launch specialisation. Gate: no spills anywhere; vector global loads wherever a tile row is
contiguous and aligned (the BatchNorm tile kernels here, in both layouts; the pool kernels on NCHW
rows and channels-last channels). Runs in a child process
without TRITON_INTERPRET (interpreted jit functions cannot be compiled), with a fresh cache.
Also unit-tests the SASS reading it relies on (bench/_sass.py)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import _sass  # noqa: E402


def test_instruction_mix_reads_sass():
    sass = """
        Function : k1
        /*0000*/                   LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ;
        /*0010*/              @!P0 LDG.E.U16 R5, desc[UR4][R2.64] ;
        /*0020*/                   LDGSTS.E.BYPASS.LTC128B.128 [R1], desc[UR4][R2.64] ;
        /*0030*/                   HGMMA.64x128x16.F32 R24, gdesc[UR4], RZ ;
        /*0040*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        Function : k2
        /*0000*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0010*/                   STL [R1], R0 ;
        /*0020*/                   LDL.LU R0, [R1] ;
    """
    mix = _sass.instruction_mix(sass)
    assert set(mix) == {"k1", "k2"}
    assert {k: v for k, v in mix["k1"].items() if v} == {"ldg16B": 1, "ldg2B": 1, "LDGSTS": 1, "HGMMA": 1, "BAR": 1}
    assert {k: v for k, v in mix["k2"].items() if v} == {"ldg4B": 1, "STL": 1, "LDL": 1}
    assert _sass.ldg_widths(mix["k1"]) == (2, 16)


def test_occupancy():
    assert _sass.occupancy(32, 0, 256) == (8, 1.0)           # 2048 threads
    assert _sass.occupancy(255, 0, 128)[0] == 2               # 256 regs/thread x 128 threads: 2 blocks
    assert _sass.occupancy(64, 100 * 1024, 256)[0] == 2       # shared memory bound (228 KiB per SM)


def test_memops_gate_on_a_sample(tmp_path):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["CNNGPU_CACHE"] = str(tmp_path / "cache.json")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "-m", "bench.static_memops", "--sample", "1", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    rows = json.loads(out.read_text()) if out.exists() else []
    assert rows, f"no rows:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert {r["op"] for r in rows} >= {"bn_relu_fwd", "bn_relu_bwd", "maxpool_fwd", "maxpool_bwd", "avgpool_fwd",
                                       "avgpool_bwd", "layernorm_fwd", "layernorm_bwd", "groupnorm_fwd",
                                       "groupnorm_bwd"}
    assert {r["layout"] for r in rows} == {"nchw", "channels_last"}
    vec = [r for r in rows if r.get("vector_expected")]
    # the BN tile kernels (partial stats, normalize, bwd partial sums, bwd dx) in both layouts
    assert {(r["kernel"], r["layout"]) for r in vec} >= {(k, lay) for lay in ("nchw", "channels_last") for k in (
        "batch_norm_fwd_partial_stats", "batch_norm_fwd_normalize", "batch_norm_bwd_partial_sums",
        "batch_norm_bwd_dx")}
    # the pool kernels' vector paths: NCHW rows (forward x, backward dy / argmax), channels-last forward
    assert {(r["kernel"], r["layout"]) for r in vec} >= {
        ("max_pool2d_fwd_rows", "nchw"), ("max_pool2d_bwd_rows", "nchw"), ("avg_pool2d_fwd_rows", "nchw"),
        ("avg_pool2d_bwd_rows", "nchw"), ("max_pool2d_fwd_channels", "channels_last"),
        ("avg_pool2d_fwd_channels", "channels_last")}
    assert all(r["floor_us"] > 0 for r in rows)
    bad = [f"{r['case']}: {r.get('error') or [k for k, v in r['gate'].items() if not v]}"
           for r in rows if "error" in r or not all(r["gate"].values())]
    assert not bad, "static report gate failed:\n" + "\n".join(bad)
    assert proc.returncode == 0, proc.stdout[-2000:]
