"""Smoke tests of bench/ (runs in CI, no GPU): the shape lists, the analytic FLOP/byte counts, the
report rendering, the whole ``bench.gpu_report`` pipeline as a CPU dry run (with an injected
error, crash and hang), the parity-suite runner, and one tiny pytest-benchmark case."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cnngpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:          # plain `pytest` (not `python -m pytest`) does not add the root
    sys.path.insert(0, REPO)

from bench import cases as C  # noqa: E402
from bench import gpu_report as G  # noqa: E402
from bench import parity as PAR  # noqa: E402
from bench import report_md as R  # noqa: E402
from bench import shapes as S  # noqa: E402

# (C, H, K, kernel, stride, pad, expected output size): the ResNet-50 layer set of issue 5
RESNET50 = {
    "stem7x7_3to64_s2_224": (3, 224, 64, 7, 2, 3, 112),
    "1x1_64to64_56": (64, 56, 64, 1, 1, 0, 56),
    "1x1_64to256_56": (64, 56, 256, 1, 1, 0, 56),
    "1x1_256to128_56": (256, 56, 128, 1, 1, 0, 56),
    "1x1_1024to256_14": (1024, 14, 256, 1, 1, 0, 14),
    "3x3_64_56": (64, 56, 64, 3, 1, 1, 56),
    "3x3_128_s2_56": (128, 56, 128, 3, 2, 1, 28),
    "3x3_128_28": (128, 28, 128, 3, 1, 1, 28),
    "3x3_256_14": (256, 14, 256, 3, 1, 1, 14),
    "3x3_512_7": (512, 7, 512, 3, 1, 1, 7),
}


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("CNNGPU_BENCH_INJECT", None)
    return env


# ----------------------------------------------------------------------------------------------
# shape lists
# ----------------------------------------------------------------------------------------------
def test_resnet50_layer_set_at_batch_1_and_32():
    r50 = {s.name: s for s in S.CONV_SHAPES if s.name.startswith("r50_")}
    assert set(r50) == {f"r50_{k}_n{n}" for k in RESNET50 for n in (1, 32)}
    for key, (c, h, k, r, stride, pad, out) in RESNET50.items():
        for n in (1, 32):
            s = r50[f"r50_{key}_n{n}"]
            assert (s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.stride, s.pad, s.dilation, s.groups) == \
                (n, c, h, h, k, r, r, stride, pad, 1, 1)
            assert s.P == s.Q == out == cnngpu.conv_output_size(h, r, stride, pad)
            assert s.y_shape == (n, k, out, out)
            assert ("cpu" in s.tags) == (n == 1)     # batch 1 is the CPU-friendly subset


def test_lenet_cifar_and_other_lists():
    conv = {s.name: s for s in S.CONV_SHAPES}
    c1, c3 = conv["lenet_c1_5x5_1to6_32_n8"], conv["lenet_c3_5x5_6to16_14_n8"]
    assert (c1.C, c1.K, c1.P, c3.C, c3.K, c3.P) == (1, 6, 28, 6, 16, 10)
    assert any(n.startswith("cifar_") for n in conv)
    names = [s.name for s in S.CONV_SHAPES + S.POOL_SHAPES + S.BN_SHAPES + S.NORM_SHAPES]
    assert len(names) == len(set(names)), "shape names must be unique (the worker looks them up by name)"
    for op in S.ALL_OPS:
        shapes = S.shapes_for(op)
        for tag in ("cpu", "tiny", "quick"):
            assert any(tag in s.tags for s in shapes), (op, tag)
    for s in S.POOL_SHAPES:
        assert s.P == cnngpu.conv_output_size(s.H, s.kernel, s.stride, s.pad)


def test_pyproject_keeps_bench_out_of_the_test_run():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        assert tomllib.load(f)["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def test_provider_selection():
    big = next(s for s in S.CONV_SHAPES if s.name == "r50_3x3_64_56_n32")
    small = next(s for s in S.CONV_SHAPES if s.name == "r50_3x3_64_56_n1")
    assert not C.provider_runs("numpy", big, "float32", "auto", ["float32"])
    assert C.provider_runs("numpy", big, "float32", "all", ["float32"])
    assert C.provider_runs("torch_cpu", small, "float32", "auto", ["float32"])
    assert not C.provider_runs("numpy", small, "float16", "auto", ["float16"])
    assert C.provider_runs("triton", big, "float16", "quick", ["float16"])
    assert not C.provider_runs("triton", big, "bfloat16", "quick", ["float16"])


def test_unavailable_says_why(monkeypatch):
    from cnngpu import backends
    pool = S.select("maxpool_bwd", "tiny")[0]
    assert C.unavailable("numpy", "float32", pool, "maxpool_bwd") is None
    monkeypatch.delattr(backends.get_backend("numpy"), "max_pool2d_backward")
    assert "has no max_pool2d_backward" in C.unavailable("numpy", "float32", pool, "maxpool_bwd")
    if G.cuda_device() is None:
        with pytest.raises(C.Unavailable, match="CUDA"):
            C.make_case("maxpool_fwd", pool, "torch", "float16")


# ----------------------------------------------------------------------------------------------
# analytic counts, by hand and against the arrays the numpy backend really reads and writes
# ----------------------------------------------------------------------------------------------
def test_conv_counts_by_hand():
    s = S.ConvShape("t", 2, 3, 5, 5, 4, 3, 3, stride=1, pad=1)
    assert (s.P, s.Q) == (5, 5)
    assert s.flops("conv_fwd") == s.flops("conv_dx") == s.flops("conv_dw") == 2 * 2 * 4 * 5 * 5 * 3 * 3 * 3 == 10800
    assert s.bytes("conv_fwd", "float32") == (150 + 108 + 200) * 4 == 1832
    assert s.bytes("conv_dw", "float16") == 458 * 2
    g = S.ConvShape("g", 1, 4, 6, 6, 4, 3, 3, stride=2, pad=0, groups=2)
    assert (g.P, g.w_shape) == (2, (4, 2, 3, 3))
    assert g.flops("conv_fwd") == 2 * 1 * 4 * 2 * 2 * 2 * 9 == 576


def test_norm_and_pool_counts_by_hand():
    p = S.PoolShape("p", 1, 2, 4, 4, 2, 2)
    assert p.bytes("maxpool_fwd", "float16") == (32 + 8) * 2 + 8 * 8 == 144
    assert p.bytes("avgpool_bwd", "float32") == 40 * 4
    b = S.BNShape("b", 2, 3, 4, 4)
    assert (b.bytes("bn_relu_fwd", "float32"), b.bytes("bn_relu_bwd", "float32")) == (2 * 384 + 8 * 12, 4 * 384 + 5 * 12)
    ln = S.NormShape("l", "layer", (8, 16), 1)
    assert (ln.bytes("layernorm_fwd", "float32"), ln.bytes("layernorm_bwd", "float32")) == (1216, 1792)
    gn = S.NormShape("g", "group", (2, 4, 3, 3), groups=2)
    assert (gn.param_shape, gn.n_stats, gn.bytes("groupnorm_fwd", "float32")) == ((4,), 4, 640)


def test_counts_match_the_arrays_moved():
    import cnngpu.functional as F
    rng = np.random.default_rng(0)
    s = S.ConvShape("t", 2, 3, 7, 7, 4, 3, 3, stride=2, pad=1)
    x = rng.standard_normal(s.x_shape).astype(np.float32)
    w = rng.standard_normal(s.w_shape).astype(np.float32)
    y = F.conv2d(x, w, None, backend="numpy", **s.conv_args())
    assert y.shape == s.y_shape
    assert s.bytes("conv_fwd", "float32") == x.nbytes + w.nbytes + y.nbytes
    p = S.PoolShape("p", 2, 3, 7, 7, 3, 2, 1)
    y, idx = F.max_pool2d(x[:, :3], backend="numpy", **p.pool_args(), return_indices=True)
    assert p.bytes("maxpool_fwd", "float32") == x[:, :3].nbytes + y.nbytes + idx.nbytes


def test_derive_rates_ratios_and_ceiling():
    conv = S.ConvShape("c", 1, 8, 8, 8, 8, 3, 3, pad=1)
    recs = []
    for prov, ms in (("torch", 2.0), ("triton", 1.0), ("cupy", None)):
        recs.append({"task": "g0", "op": "conv_fwd", "shape": "c", "provider": prov, "dtype": "float16",
                     "metric": "flops", "flops": conv.flops("conv_fwd"), "bytes": conv.bytes("conv_fwd", "float16"),
                     "status": "ok" if ms else "error", "ms": ms})
    out = G.derive(recs, {"copy": {"GB/s": 100.0}, "matmul": {"float16": {"TFLOP/s": 0.001}}}, "torch")
    tri = next(r for r in out if r["provider"] == "triton")
    assert tri["tflops"] == pytest.approx(conv.flops("conv_fwd") / 1e-3 / 1e12)
    assert tri["ratio"] == pytest.approx(0.5)
    assert tri["pct_ceiling"] == pytest.approx(100 * tri["tflops"] / 0.001)
    assert next(r for r in out if r["provider"] == "cupy")["ratio"] is None


# ----------------------------------------------------------------------------------------------
# report rendering, dry run, parity runner, one benchmark
# ----------------------------------------------------------------------------------------------
def _fake_report():
    res = []
    for i, (prov, ms, st) in enumerate((("torch", 1.0, "ok"), ("triton", 0.5, "ok"), ("cupy", None, "error"))):
        res.append({"task": "g0", "op": "bn_relu_fwd", "shape": "bn_a", "provider": prov, "dtype": "float16",
                    "metric": "bytes", "flops": 0, "bytes": 10 ** 9, "status": st, "ms": ms,
                    "note": "RuntimeError: boom | x" if st == "error" else None, "rel_err": 1e-4 if i == 1 else None,
                    "check": "ok" if i == 1 else None})
    ceil = {"copy": {"GB/s": 2000.0, "ms": 1.0, "bytes": 2e9}, "matmul": {"float16": {"TFLOP/s": 700.0, "ms": 1.0, "n": 8192}}}
    results = G.derive(res, ceil, "torch")
    return {"meta": {"device": "FakeGPU", "date": "2026-01-01 00:00", "git_commit": "abc", "versions": {"torch": "x"},
                     "wall_s": 1.0},
            "config": {"mode": "CUDA", "baseline": "torch", "ops": list(S.ALL_OPS), "method": "m"},
            "ceilings": ceil, "parity": None, "results": results}


def test_render_markdown_and_outputs(tmp_path):
    rep = _fake_report()
    md = R.render_markdown(rep)
    assert "| bn_a | triton | float16 | 0.5000 | 2000 | 100.0 | 0.50 | ok 1.0e-04 |" in md
    assert "**error**: RuntimeError: boom / x" in md          # '|' in a note cannot break the table
    assert "| bn_relu_fwd | float16 | triton | 0.50 |" in md    # summary row (geomean)
    paths = R.write_outputs(rep, str(tmp_path))
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(paths["json"]) as f:
        summary = {r["provider"]: r for r in json.load(f)["summary"]}
    assert summary["triton"]["geomean_ratio"] == pytest.approx(0.5) and summary["triton"]["n_timed"] == 1
    assert summary["cupy"]["geomean_ratio"] is None and summary["cupy"]["n_cases"] == 1


def test_cpu_dry_run_pipeline_survives_failures(tmp_path):
    out = tmp_path / "dry"
    env = _env()
    env["CNNGPU_BENCH_INJECT"] = "error@conv_dx:numpy,crash@maxpool_fwd:numpy,hang@layernorm_fwd:numpy"
    # the hang comes last: its --case-timeout is the only wait (generous: CI machines are loaded)
    cmd = [sys.executable, "-m", "bench.gpu_report", "--cpu-dry-run", "--out", str(out), "--case-timeout", "10",
           "--ops", "conv_fwd,conv_dx,maxpool_fwd,bn_relu_bwd,groupnorm_bwd,layernorm_fwd"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    md = (out / "report.md").read_text()
    assert md.startswith("# cnngpu benchmark report: CPU dry run")
    assert "| ms | TFLOP/s | % ceiling | time / torch_cpu |" in md and "| ms | GB/s |" in md
    rep = json.loads((out / "report.json").read_text())
    assert rep["meta"]["mode"] == "cpu" and rep["meta"]["git_commit"] and rep["meta"]["versions"]["numpy"]
    assert rep["ceilings"]["copy"]["GB/s"] > 0 and rep["ceilings"]["matmul"]["float32"]["TFLOP/s"] > 0
    status = {(r["op"], r["provider"]): r for r in rep["results"]}
    assert len(status) == 12
    assert status[("conv_dx", "numpy")]["status"] == "error" and "injected" in status[("conv_dx", "numpy")]["note"]
    assert status[("maxpool_fwd", "numpy")]["status"] == "error" and "died" in status[("maxpool_fwd", "numpy")]["note"]
    assert status[("layernorm_fwd", "numpy")]["status"] == "timeout"
    for key in (("conv_fwd", "numpy"), ("bn_relu_bwd", "numpy"), ("groupnorm_bwd", "numpy")):
        r = status[key]
        assert r["status"] == "ok" and r["check"] == "ok" and r["ms"] > 0 and r["ratio"] > 0, r
    assert rep["meta"]["worker"]["restarts"] == 2
    assert (out / "ratio_vs_torch.png").stat().st_size > 1000


def test_gpu_report_without_cuda_exits_with_a_message():
    if G.cuda_device() is not None:
        pytest.skip("a CUDA device is visible: the no-CUDA path does not apply")
    p = subprocess.run([sys.executable, "-m", "bench.gpu_report"], cwd=REPO, env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == G.EXIT_NO_CUDA and "--cpu-dry-run" in p.stderr


def test_parity_runner_counts_and_timeout(tmp_path):
    t = tmp_path / "test_fake_gpu.py"
    t.write_text("import pytest, time\n"
                 "pytestmark = pytest.mark.gpu\n"
                 "def test_a(): pass\n"
                 "def test_b(): assert 0\n"
                 "def test_c(): pytest.skip('no')\n")
    res = PAR.run_parity(str(tmp_path / "p.log"), 120, workers=1, paths=(str(t),))
    assert res["counts"]["passed"] == 1 and res["counts"]["failed"] == 1 and res["counts"]["skipped"] == 1
    assert not res["timed_out"] and res["returncode"] == 1 and any("test_b" in f for f in res["failing"])
    h = tmp_path / "test_hang_gpu.py"
    h.write_text("import pytest, time\npytestmark = pytest.mark.gpu\ndef test_h(): time.sleep(600)\n")
    # the limit leaves a loaded CI machine time to start pytest: interrupted before its session
    # starts, pytest has no report to write
    import signal
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)   # as in an xdist worker: the child must reset it
    try:
        res = PAR.run_parity(str(tmp_path / "h.log"), 15.0, workers=1, paths=(str(t), str(h)))
    finally:
        signal.signal(signal.SIGINT, old)
    assert res["timed_out"] and res["wall_s"] < 15.0 + PAR.INTERRUPT_GRACE_S + 10
    assert res["report_found"], "an interrupted pytest still writes its junit report"
    assert res["counts"]["passed"] == 1 and res["counts"]["failed"] == 1   # the tests of t ran first


def test_parse_junit(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest">'
                   '<testcase classname="tests.a" name="test_x[1]"/>'
                   '<testcase classname="tests.a" name="test_x[2]"><failure message="assert 0&#10;more">tb</failure>'
                   '</testcase><testcase classname="tests.a" name="test_y"><error message="boom">tb</error></testcase>'
                   '<testcase classname="tests.a" name="test_s"><skipped type="pytest.skip" message="no"/></testcase>'
                   '<testcase classname="tests.a" name="test_f"><skipped type="pytest.xfail" message=""/></testcase>'
                   '</testsuite></testsuites>')
    res = PAR.parse_junit(str(xml))
    assert res["report_found"]
    assert res["counts"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1, "xfailed": 1, "xpassed": 0}
    assert res["failing"] == ["FAILED tests.a::test_x[2] - assert 0", "ERROR tests.a::test_y - boom"]
    assert not PAR.parse_junit(str(tmp_path / "missing.xml"))["report_found"]


def test_one_tiny_benchmark_runs_and_gpu_params_skip():
    cmd = [sys.executable, "-m", "pytest", "bench/test_bench_conv.py", "--bench-shapes", "tiny",
           "--bench-providers", "torch_cpu,numpy,triton", "--bench-dtypes", "float32", "-k", "conv_fwd",
           "--benchmark-disable", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-rs"]
    p = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    if G.cuda_device() is None:
        assert "2 passed, 1 skipped" in out and "triton unavailable" in out, out


def _fake_benchmark_json(path):
    """pytest-benchmark JSON for conv_fwd and maxpool_fwd at two shapes: numpy 2x and 0.5x torch_cpu."""
    benches = []
    for op, shapes, flops in (("conv_fwd", ("c1", "c2"), (10 ** 6, 10 ** 8)), ("maxpool_fwd", ("p1", "p2"), (0, 0))):
        for sh, fl in zip(shapes, flops):
            for prov, med in (("torch_cpu", 1e-3), ("numpy", 2e-3 if op == "conv_fwd" else 0.5e-3)):
                benches.append({"name": f"test[{op}-{sh}-{prov}]", "stats": {"median": med, "rounds": 5},
                                "extra_info": {"op": op, "shape": sh, "provider": prov, "dtype": "float32",
                                               "flops": fl, "bytes": 10 ** 6 * (1 + shapes.index(sh))}})
    path.write_text(json.dumps({"machine_info": {"cpu": {"brand_raw": "TestCPU"}}, "benchmarks": benches}))


def test_cpu_suite_summary_table_and_plot(tmp_path):
    """bench.summary: one geomean table per (op, dtype, provider) and one plot, from pytest-benchmark JSON."""
    from bench import summary
    js = tmp_path / "b.json"
    _fake_benchmark_json(js)
    png = tmp_path / "b.png"
    p = subprocess.run([sys.executable, "-m", "bench.summary", str(js), "--png", str(png)], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "| conv_fwd | float32 | numpy | 2.00 | 2.00 | 2.00 | 2 / 2 |" in p.stdout
    assert "| maxpool_fwd | float32 | numpy | 0.50 | 0.50 | 0.50 | 2 / 2 |" in p.stdout
    assert "torch_cpu |" not in p.stdout            # the baseline is not compared with itself
    assert png.stat().st_size > 1000
    rep = summary.report(json.loads(js.read_text())["benchmarks"])
    assert {r["metric"] for r in rep["results"] if r["op"] == "conv_fwd"} == {"flops"}


def test_plot_has_one_panel_per_op_family(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from bench import summary
    js = tmp_path / "b.json"
    _fake_benchmark_json(js)
    rep = summary.report(json.loads(js.read_text())["benchmarks"])
    seen = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, *a, **k):
        axes = [ax for ax in fig.axes if ax.get_visible()]
        seen["titles"] = [ax.get_title() for ax in axes]
        seen["scales"] = {(ax.get_xscale(), ax.get_yscale()) for ax in axes}
        seen["xlabels"] = [ax.get_xlabel() for ax in axes]
        return real_savefig(fig, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    assert R.render_plot(rep, str(tmp_path / "p.png"), is_baseline=summary._is_baseline)
    assert seen["titles"] == ["convolution: fwd, dX, dW", "pooling: max, avg; fwd, bwd"]
    assert seen["scales"] == {("log", "log")}
    assert "GFLOP" in seen["xlabels"][0] and "MB" in seen["xlabels"][1]


TINY = {
    "conv": S.ConvShape("tc", 2, 3, 7, 7, 4, 3, 3, stride=2, pad=1),
    "pool": S.PoolShape("tp", 2, 3, 8, 8, 3, 2, 1),
    "bn": S.BNShape("tb", 2, 3, 5, 5),
    "layernorm": S.NormShape("tl", "layer", (6, 16), 1),
    "groupnorm": S.NormShape("tg", "group", (2, 4, 3, 3), groups=2),
}


def _tiny(op):
    return TINY["conv" if op.startswith("conv") else "pool" if "pool" in op else op.split("_")[0]]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_triton_cases_match_torch_under_the_interpreter(dtype, monkeypatch):
    """The GPU report's triton cases (inputs, calls through cnngpu.functional, output picking) run
    here in Triton's interpreter and agree with torch CPU: the glue is right before a GPU sees it."""
    from cnngpu import backends
    if G.cuda_device() is None:
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("needs TRITON_INTERPRET=1 (tests/conftest.py sets it without CUDA)")
        monkeypatch.setattr(C, "_device_sync", lambda: None)
    try:
        backends.get_backend("triton")
    except Exception as e:
        pytest.skip(f"triton backend unavailable: {type(e).__name__}: {e}")
    device = "cuda" if G.cuda_device() else "cpu"
    for op in S.ALL_OPS:
        sh = _tiny(op)
        inputs = C.make_inputs(op, sh, dtype, device)
        ref = C.make_case(op, sh, "torch_cpu", dtype, {k: v.cpu() for k, v in inputs.items()}).result()
        out = C._cnngpu_case(op, sh, "triton", dtype, inputs).result()
        assert C.rel_error([o.cpu() for o in out], ref) <= C.CHECK_TOL[dtype], op


def test_window_preset_dry_run(tmp_path):
    """``--window`` (the device-window command of bench/results/README.md): 400 s budget, conv
    fwd/dX/dW + BN+ReLU + pooling, then the fused BasicBlock (bench/block.py; triton and cupy on a
    GPU, numpy here); dry-run on the CPU (float32 there, fp16+bf16 on a GPU)."""
    out = tmp_path / "win"
    cmd = [sys.executable, "-m", "bench.gpu_report", "--window", "--cpu-dry-run", "--no-parity", "--out", str(out),
           "--case-timeout", "30"]
    p = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["budget_s"] == G.WINDOW_BUDGET_S
    assert set(rep["config"]["ops"]) == set(G.WINDOW_OPS)
    assert {r["op"] for r in rep["results"]} == set(G.WINDOW_OPS)
    assert G.WINDOW_DTYPES == ("float16", "bfloat16")
    # then the fused BasicBlock (bench/block.py): torch + unfused + fused per mode, every case checked
    from bench.shapes import BLOCK_MODES, BLOCK_VARIANTS
    blk = rep["meta"]["block"]
    assert rep["config"]["block_s"] == G.WINDOW_BLOCK_S and not blk["timed_out"] and blk["returncode"] == 0
    assert blk["cases"] == len(BLOCK_MODES) * len(BLOCK_VARIANTS) and blk["errors"] == 0, blk
    rows = [json.loads(ln) for ln in (out / "block.jsonl").read_text().splitlines()]
    assert {(r["mode"], r["variant"]) for r in rows} == {(m, v) for m in BLOCK_MODES for v in BLOCK_VARIANTS}
    assert all(r["ms"] > 0 and ("rel_err" in r) == (r["variant"] != "torch") for r in rows), rows
    assert "## Fused ResNet BasicBlock" in (out / "report.md").read_text()
    assert (out / "block.md").read_text().count("| tiny") == len(rows)
