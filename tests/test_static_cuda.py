"""Tier 4: the CUDA kernels' static report (``python -m bench.static_cuda``) on a sample: one build
of every kernels/cuda file that the cupy backend's CUDA_BUILDS list (found over all its modules),
for sm_80 and sm_90 (+ sm_90a where the source has an sm_90a path), read back from the cubins.
Gate: no spills and no local-memory traffic in any kernel; tensor-core MMAs in the 16-bit conv
implicit GEMMs. Needs nvcc (skips without it)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

pytest.importorskip("cnngpu.backends.cupy_backend", reason="cupy not installed")
from bench import static_cuda  # noqa: E402
from cnngpu.kernels import CUDA_DIR  # noqa: E402


def test_every_cu_file_has_a_build():
    files = sorted(f for f in os.listdir(CUDA_DIR) if f.endswith(".cu"))
    built = {f for f, _, _ in static_cuda.cuda_builds()}
    assert set(files) == built, f"kernels/cuda files without a CUDA_BUILDS entry: {sorted(set(files) - built)}"


def test_sm90a_follows_the_source(tmp_path, monkeypatch):
    from cnngpu import kernels
    (tmp_path / "a.cu").write_text('#include "h.cuh"\n')
    (tmp_path / "h.cuh").write_text("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n#endif\n")
    (tmp_path / "b.cu").write_text("// plain\n")
    monkeypatch.setattr(kernels, "CUDA_DIR", str(tmp_path))
    assert static_cuda.archs_for("a.cu") == ["80", "90", "90a"]
    assert static_cuda.archs_for("b.cu") == ["80", "90"]


def test_launcher_only_arch_is_the_one_reported():
    """The wgmma files are loaded only as sm_90a builds (conv.BUILD_ARCH): their sm_80/sm_90 builds
    are trap stubs the report leaves out."""
    from cnngpu.backends.cupy_backend import conv
    for fname in conv.BUILD_ARCH:
        assert static_cuda.archs_for(fname) == ["90a"]
    assert static_cuda.launcher_arch("conv2d_fwd.cu") is None


def test_cuda_gate_on_a_sample(tmp_path):
    if static_cuda.nvcc() is None:
        pytest.skip("nvcc not found")
    env = dict(os.environ, CNNGPU_CACHE=str(tmp_path / "cache.json"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "-m", "bench.static_cuda", "--sample", "1", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    rows = json.loads(out.read_text()) if out.exists() else []
    assert rows, f"no rows:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    files = {f for f in os.listdir(CUDA_DIR) if f.endswith(".cu")}
    assert {r["file"] for r in rows} == files
    assert {"sm_80", "sm_90"} <= {r["arch"] for r in rows}
    ok = [r for r in rows if "error" not in r]
    assert all(r["regs"] > 0 for r in ok)
    assert any("tensor_cores" in r["gate"] for r in ok), "no 16-bit implicit-GEMM conv kernel in the sample"
    bad = [f"{r['file']}:{r['arch']}:{r['kernel']}: {r.get('error') or [k for k, v in r['gate'].items() if not v]}"
           for r in rows if "error" in r or not all(r["gate"].values())]
    assert not bad, "CUDA static report gate failed:\n" + "\n".join(bad)
    assert proc.returncode == 0, proc.stdout[-2000:]
