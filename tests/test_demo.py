"""The main-job demo: ``python -m cnngpu demo`` trains LeNet on the shipped digits to >= 95%
held-out accuracy, writes its figures, and validates its options (numpy backend, ~10 s CPU)."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from cnngpu import backends
from cnngpu.__main__ import main
from cnngpu.demo import TARGET_ACCURACY, _Progress, load_digits, run_demo, split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_ok(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG_MAGIC and os.path.getsize(path) > 1000


def test_cli_demo_reaches_target_and_writes_figures(tmp_path):
    """The real command, default settings, as a user runs it (exit 0 means >= 95%)."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "figs"
    proc = subprocess.run([sys.executable, "-m", "cnngpu", "demo", "--backend", "numpy", "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "epoch  1/8" in text and "epoch  8/8" in text
    assert "per-layer time per training batch" in text
    for layer in ("Conv2d", "BatchNorm2d", "MaxPool2d", "Linear"):
        assert layer in text
    final = [ln for ln in text.splitlines() if ln.startswith("held-out accuracy")]
    assert final, text
    acc = float(final[-1].split()[2])
    assert acc >= TARGET_ACCURACY, text
    for name in ("first_layer_filters.png", "loss_curve.png"):
        assert _png_ok(str(out / name)), name


def test_run_demo_result_fields(tmp_path):
    """In-process: a 3-epoch run still learns (accuracy asserted), figures written, per-layer times."""
    pytest.importorskip("matplotlib")
    res = run_demo("numpy", epochs=3, seed=1, out=str(tmp_path), progress=False, verbose=False)
    assert res.backend == "numpy" and res.dtype == "float32"
    assert len(res.epochs) == 3
    assert res.test_accuracy >= 0.90  # 3 epochs reach ~0.95 (0.947 with seed 1); a broken net stays ~0.1
    assert res.epochs[-1]["loss"] < res.epochs[0]["loss"]
    assert len(res.step_losses) == 3 * int(np.ceil(1438 / 32))
    assert np.all(np.isfinite(res.step_losses))
    names = [r["layer"] for r in res.layer_times]
    assert names == ["Conv2d", "BatchNorm2d", "MaxPool2d", "Conv2d", "BatchNorm2d", "MaxPool2d", "Flatten",
                     "Linear", "ReLU", "Linear"]
    assert all(r["fwd_ms"] > 0 and r["bwd_ms"] > 0 for r in res.layer_times)
    assert res.layer_times[0]["shape"] == (32, 6, 16, 16)
    assert set(res.figures) == {"filters", "loss_curve"}
    assert all(_png_ok(p) for p in res.figures.values())


def test_cli_exits_1_below_target(tmp_path, capsys):
    """A run that cannot reach 95% (one epoch at a tiny learning rate) fails the command."""
    rc = main(["demo", "--backend", "numpy", "--epochs", "1", "--lr", "1e-4", "--quiet", "--out", str(tmp_path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "below the 95% target" in err


def test_cli_backend_and_dtype_validation(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--backend", "torchscript"])
    assert e.value.code == 2
    assert "invalid choice: 'torchscript'" in capsys.readouterr().err
    # numpy has no bfloat16: a clear message and exit status 2, before any training
    assert main(["demo", "--backend", "numpy", "--dtype", "bfloat16", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bfloat16" in err and "numpy" in err
    if not backends.is_available("cupy"):
        assert main(["demo", "--backend", "cupy", "--out", str(tmp_path)]) == 2
        assert "cannot run here" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
    (["--epochs", "2.5"], "argument --epochs: must be an integer >= 1, got '2.5'"),
    (["--batch-size", "1"], "argument --batch-size: must be an integer >= 2, got 1"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    (["--threads", "-1"], "argument --threads: must be an integer >= 0, got -1"),
    (["--lr", "0"], "argument --lr: must be a positive finite number, got '0'"),
    (["--lr", "nan"], "argument --lr: must be a positive finite number, got 'nan'"),
    (["--lr=-inf"], "argument --lr: must be a positive finite number, got '-inf'"),
    (["--lr", "fast"], "argument --lr: must be a positive number, got 'fast'"),
    (["--out", ""], "argument --out: must be a folder name"),
    (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
])
def test_cli_rejects_bad_values_before_training(args, message, capsys):
    """Every bad value stops the command with status 2 and names the option, before any training."""
    with pytest.raises(SystemExit) as e:
        main(["demo", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_cli_rejects_a_file_as_out(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(f)])
    assert "exists and is not a folder" in capsys.readouterr().err


def test_cli_version(capsys):
    import cnngpu
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"cnngpu {cnngpu.__version__}"


def test_demo_help_documents_every_option_with_its_default(capsys):
    from cnngpu.__main__ import build_parser
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())   # argparse wraps lines
    import argparse
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    demo = sub.choices["demo"]
    for action in demo._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{action.option_strings} has no help text"
        for opt in action.option_strings:
            assert opt in text
        if action.default not in (None, False):
            assert f"(default: {'./' if action.dest == 'out' else ''}{action.default})" in text, action.dest
    for opt in ("--no-progress", "--quiet", "--backend"):
        assert opt in text
    assert "%%" not in text
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for action in demo._actions:   # the README's synopsis lists every option too
        if action.dest != "help":
            assert action.option_strings[-1] in readme, action.option_strings


def test_triton_demo_under_the_interpreter_is_refused_with_an_estimate(monkeypatch, capsys, tmp_path):
    """TRITON_INTERPRET=1 runs each kernel program in Python: the demo says how long it would take
    instead of sitting at 0/45 for hours."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert main(["demo", "--backend", "triton", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Triton's CPU interpreter" in err and "would take about" in err and "hours" in err, err
    assert "--backend numpy" in err
    assert not os.listdir(tmp_path)
    from cnngpu.demo import interpreter_estimate_s
    assert interpreter_estimate_s(8, 32) > 3600
    assert interpreter_estimate_s(1, 32) < interpreter_estimate_s(8, 32)


def test_missing_threadpoolctl_is_logged(monkeypatch, caplog):
    from cnngpu.demo import blas_threads
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    with caplog.at_level("WARNING", logger="cnngpu"):
        with blas_threads(1) as limited:
            assert not limited
    assert any(r.name == "cnngpu.demo" and "threadpoolctl is not installed" in r.getMessage() for r in caplog.records)




def test_cli_info(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "numpy" in text and "available" in text and "default backend:" in text
    import numpy
    import cnngpu
    lines = {ln.split(":", 1)[0]: ln.split(":", 1)[1].strip() for ln in text.splitlines() if ":" in ln}
    assert lines["cnngpu"] == cnngpu.__version__ and lines["numpy"] == numpy.__version__
    assert lines["python"].startswith(".".join(map(str, sys.version_info[:3])))
    for name in ("torch", "triton", "cupy", "device"):
        assert lines.get(name), (name, text)
    try:
        import torch
    except ImportError:
        assert lines["torch"].startswith("not installed")
    else:
        assert lines["torch"].startswith(torch.__version__)
        if not torch.cuda.is_available():
            assert lines["device"].startswith("CPU only")


def test_plain_progress_bar_without_tqdm(monkeypatch):
    """Without tqdm the demo draws its own bar on a terminal."""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    s = Tty()
    bar = _Progress(4, "epoch 1/1", enabled=True, stream=s)
    assert bar.plain and bar.bar is None
    for _ in range(4):
        bar.update(0.5)
    bar.close()
    assert "4/4" in s.getvalue() and "#" * _Progress.WIDTH in s.getvalue()
    quiet = io.StringIO()  # not a terminal: nothing drawn
    bar = _Progress(4, "x", enabled=True, stream=quiet)
    bar.update(0.5)
    bar.close()
    assert quiet.getvalue() == ""


def test_shipped_digits_are_sklearn_digits():
    images, labels = load_digits(upsample=1)
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert images.min() == 0.0 and images.max() == 1.0
    assert np.array_equal(np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    up, _ = load_digits()
    assert up.shape == (1797, 1, 16, 16) and np.array_equal(up[:, :, ::2, ::2], images)
    tr, te = split(1797)
    assert len(te) == 359 and len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 1797
    sk = pytest.importorskip("sklearn.datasets")
    ref = sk.load_digits()
    assert np.array_equal(images[:, 0] * 16, ref.images) and np.array_equal(labels, ref.target)


def test_pyproject_ships_data_and_script():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        cfg = tomllib.load(f)
    assert cfg["project"]["scripts"]["cnngpu"] == "cnngpu.__main__:main"
    assert "data/*.npz" in cfg["tool"]["setuptools"]["package-data"]["cnngpu"]
    assert os.path.isfile(os.path.join(ROOT, "cnngpu", "data", "digits.npz"))


def test_console_script_runs():
    """The installed ``cnngpu`` entry point (pyproject [project.scripts]) reaches the same main()."""
    import shutil
    exe = shutil.which("cnngpu") or os.path.join(os.path.dirname(sys.executable), "cnngpu")
    if not os.path.isfile(exe):
        pytest.skip("the cnngpu script is not installed in this environment (pip install -e .)")
    proc = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "default backend:" in proc.stdout, proc.stderr


def test_blas_threads_limit():
    """The demo pins NumPy's BLAS to one thread (tiny GEMMs; no spinning against other processes)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from cnngpu.demo import blas_threads
    np.ones((4, 4)) @ np.ones((4, 4))  # BLAS loaded
    with blas_threads(1) as limited:
        assert limited
        assert all(d["num_threads"] == 1 for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas")
    with blas_threads(None) as limited:
        assert limited


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cupy"])
def test_demo_on_gpu_backends(backend, tmp_path):
    """On a CUDA machine the demo reaches the target on each GPU backend (default settings)."""
    if not backends.is_available(backend):
        pytest.skip(backends._why_unavailable(backend))
    res = run_demo(backend, out=str(tmp_path), progress=False, verbose=False)
    assert res.test_accuracy >= TARGET_ACCURACY
    assert all(_png_ok(p) for p in res.figures.values())
    assert all(r["fwd_ms"] > 0 for r in res.layer_times)
