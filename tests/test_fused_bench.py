"""bench/block.py (ResNet BasicBlock: torch eager vs cnngpu unfused vs fused) runs on the CPU (smoke:
tiny shape, numpy backend, every variant's output and input gradient checked against torch), and the
analytic traffic model of bench/shapes.py counts what each variant's kernels move."""
import pytest

from bench import block
from bench.shapes import BLOCK_MODES, BLOCK_SHAPES, BLOCK_TRAFFIC, BLOCK_VARIANTS, ITEMSIZE


def test_cpu_smoke_run(tmp_path, capsys):
    out = tmp_path / "block.md"
    assert block.main(["--cpu", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    rows = [ln for ln in lines[2:] if ln.startswith("| tiny")]
    assert len(rows) == len(BLOCK_MODES) * len(BLOCK_VARIANTS)
    assert all("rel " in r or "baseline" in r for r in rows), rows
    assert "GB/s (analytic)" in capsys.readouterr().out


def test_traffic_model():
    assert set(BLOCK_TRAFFIC) == {(v, m) for v in BLOCK_VARIANTS for m in BLOCK_MODES}
    s = next(b for b in BLOCK_SHAPES if b.name == "resnet_basic_56x56x64_b32")
    A = 32 * 64 * 56 * 56 * ITEMSIZE["float16"]
    w = 2 * 64 * 64 * 9 * ITEMSIZE["float16"]
    # fused inference: conv1 reads x, writes h; conv2 reads h and the identity, writes out
    assert s.bytes("cnngpu_fused", "eval", "float16") == 5 * A + w
    assert s.bytes("torch", "eval", "float16") == 15 * A + w
    for mode in BLOCK_MODES:
        assert s.bytes("cnngpu_fused", mode, "float16") < s.bytes("torch", mode, "float16")
    assert s.flops("train") == 3 * s.flops("eval") == 3 * 2 * 2 * 32 * 64 * 56 * 56 * 64 * 9
    assert [b.N for b in BLOCK_SHAPES if "tiny" not in b.tags] == [32, 32]


def test_needs_a_device_or_cpu_flag(monkeypatch, capsys):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert block.main([]) == 2
    assert "--cpu" in capsys.readouterr().err


@pytest.mark.gpu
def test_gpu_block_benchmark_runs(tmp_path):
    assert block.main(["--out", str(tmp_path / "block.md")]) == 0


def test_report_step_keeps_partial_results_on_timeout(tmp_path):
    """bench/block_step.py (the fused-block step of ``gpu_report --window``) stops the benchmark at
    its limit and reports it as timed out, with whatever cases had finished."""
    from bench.block_step import run_block
    r = run_block(str(tmp_path), "cpu", 0.5)
    assert r["timed_out"] and r["returncode"] is None and r["wall_s"] < 30
    assert r["cases"] == len([ln for ln in r["table"].splitlines() if ln.startswith("| tiny")])
