"""The main job: train a LeNet-5-style CNN on the 8x8 digits data set with the layer API.

``python -m cnngpu demo`` (or the ``cnngpu demo`` script) trains

    Conv 5x5 (1->6, pad 2) > BatchNorm+ReLU > MaxPool 2 > Conv 5x5 (6->16, pad 2) > BatchNorm+ReLU
    > MaxPool 2 > Flatten > Linear (256->84) > ReLU > Linear (84->10)

on the digits upsampled to 16x16 (nearest neighbour, so the 5x5 kernels and two poolings have
room: 16 -> 8 -> 4), on the best available backend, with SGD + momentum. It prints a progress
bar, per-epoch loss and accuracy, a per-layer forward/backward time table, and the held-out
accuracy on a fixed 20% split; it saves the first-layer filters and the loss curve as PNGs.

Data: the UCI optical-recognition digits (1797 images, 8x8, values 0..16) as shipped by
scikit-learn's ``load_digits``, stored in ``cnngpu/data/digits.npz`` (no download, no sklearn).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, TextIO, Tuple

import numpy as np

from . import backends as _backends
from .convert import to_numpy
from .nn import (SGD, BatchNorm2d, Conv2d, Conv2dBNReLU, CrossEntropyLoss, Flatten, Linear, MaxPool2d, Module, ReLU,
                 Sequential)

DATA_PATH = os.path.join(os.path.dirname(__file__), "data", "digits.npz")
SPLIT_SEED = 0          # the held-out split is the same for every run
TEST_FRACTION = 0.2
TARGET_ACCURACY = 0.95  # held-out accuracy the demo must reach (the CLI exits 1 below it)

log = logging.getLogger(__name__)

# Triton's interpreter (TRITON_INTERPRET=1) runs every kernel program in Python, one program at a
# time. Measured on the development machine (AMD EPYC, 2 shared cores), one LeNet training step
# took 100-120 s at batch 2 and 390 s at batch 8; a held-out evaluation forward pass ~3 s per image.
_INTERP_STEP_S = (16.0, 47.0)          # seconds per training step: a + b * batch_size
_INTERP_EVAL_S_PER_IMAGE = 3.0
_N_TRAIN, _N_TEST = 1438, 359          # the fixed split of the 1797 digits (see split())


def interpreter_estimate_s(epochs: int, batch_size: int) -> float:
    """Rough seconds a demo run on the triton backend would take in Triton's CPU interpreter
    (training steps plus the per-epoch held-out evaluation), from the measurement above."""
    a, b = _INTERP_STEP_S
    steps = epochs * -(-_N_TRAIN // batch_size)
    return steps * (a + b * batch_size) + epochs * _N_TEST * _INTERP_EVAL_S_PER_IMAGE


def load_digits(upsample: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """(images (1797, 1, 8*upsample, 8*upsample) float32 in [0, 1], labels (1797,) int64)."""
    with np.load(DATA_PATH) as d:
        images = d["images"].astype(np.float32) / 16.0
        labels = d["labels"].astype(np.int64)
    if upsample > 1:
        images = images.repeat(upsample, axis=1).repeat(upsample, axis=2)
    return images[:, None], labels


def split(n: int, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """Fixed shuffled train/test index split."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


FUSED_BACKENDS = ("triton", "cupy")     # fused=None: the conv blocks are fused on these


def build_lenet(backend: str, dtype: str = "float32", seed: int = 0, fused: Optional[bool] = None) -> Sequential:
    """LeNet-5-style network for 1x16x16 inputs and 10 classes (convs feed BatchNorm: no bias).

    fused: each Conv > BatchNorm+ReLU pair as one Conv2dBNReLU layer (same initial weights, same
    function); None: fused on the GPU backends (FUSED_BACKENDS), unfused on numpy."""
    be = backend
    if fused is None:
        fused = backend in FUSED_BACKENDS

    def block(cin: int, cout: int, s: int) -> List[Module]:
        if fused:
            return [Conv2dBNReLU(cin, cout, 5, padding=2, dtype=dtype, seed=s, backend=be)]
        return [Conv2d(cin, cout, 5, padding=2, bias=False, dtype=dtype, seed=s, backend=be),
                BatchNorm2d(cout, relu=True, dtype=dtype, backend=be)]
    return Sequential(
        *block(1, 6, seed),
        MaxPool2d(2, backend=be),
        *block(6, 16, seed + 1),
        MaxPool2d(2, backend=be),
        Flatten(backend=be),
        Linear(16 * 4 * 4, 84, dtype=dtype, seed=seed + 2, backend=be),
        ReLU(backend=be),
        Linear(84, 10, dtype=dtype, seed=seed + 3, backend=be),
    )


def _synchronize(backend: str) -> None:
    """Wait for queued device work so that wall-clock layer timings are real."""
    if backend == "triton":
        import torch
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif backend == "cupy":
        from .backends.cupy_backend._cupy import cupy
        cupy.cuda.get_current_stream().synchronize()


@dataclass
class DemoResult:
    backend: str
    dtype: str
    test_accuracy: float
    epochs: List[Dict[str, float]]          # per epoch: loss, train_acc, test_acc, seconds
    step_losses: List[float]
    layer_times: List[Dict[str, Any]]       # per layer: name, shape, fwd_ms, bwd_ms (per batch)
    seconds: float
    figures: Dict[str, str] = field(default_factory=dict)


class _Progress:
    """Per-batch progress bar on ``stream`` (stderr): tqdm when installed, else a plain text bar.
    Drawn only when the stream is a terminal (the per-epoch lines are printed either way)."""

    WIDTH = 30

    def __init__(self, total: int, desc: str, enabled: bool, stream: Optional[TextIO] = None) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.stream = sys.stderr if stream is None else stream
        self.bar: Any = None
        self.plain = False
        if not enabled or not getattr(self.stream, "isatty", lambda: False)():
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self.plain = True
            return
        self.bar = tqdm(total=total, desc=desc, leave=False, unit="batch", file=self.stream)

    def update(self, loss: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}")
        elif self.plain:
            filled = self.WIDTH * self.done // max(self.total, 1)
            self.stream.write(f"\r{self.desc} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                              f"{self.done}/{self.total} loss {loss:.3f}")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.plain:
            self.stream.write("\r" + " " * (len(self.desc) + self.WIDTH + 40) + "\r")  # erase the line
            self.stream.flush()


def _to_backend(a: np.ndarray, backend: str, dtype: str) -> Any:
    """A NumPy batch -> the backend's native array in ``dtype`` (bfloat16 included)."""
    return _backends.get_backend(backend).asarray(a, dtype=dtype)


def evaluate(net: Sequential, images: np.ndarray, labels: np.ndarray, backend: str, batch_size: int = 512,
             dtype: str = "float32") -> float:
    """Accuracy of ``net`` in eval mode (running BatchNorm statistics)."""
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = net(_to_backend(images[i:i + batch_size], backend, dtype))
        correct += int((to_numpy(logits).argmax(axis=1) == labels[i:i + batch_size]).sum())
    net.train(was_training)
    return correct / len(images)


@contextlib.contextmanager
def blas_threads(n: Optional[int]) -> Iterator[bool]:
    """Limit NumPy's BLAS to ``n`` threads inside the block (needs threadpoolctl; None: no change).

    The demo's matrices are tiny (a 32x256 by 256x84 GEMM): one BLAS thread is the fastest, and a
    multi-threaded OpenBLAS on a loaded machine spins its threads against the other processes
    (measured here on 2 shared cores: 45 s for the default run with 2 threads vs 5 s with 1)."""
    if n is None:
        yield True
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("threadpoolctl is not installed, so NumPy's BLAS keeps its own thread count; on a busy "
                    "machine one thread is several times faster (pip install 'cnngpu[demo]')")
        yield False
        return
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield True


def run_demo(backend: Optional[str] = None, epochs: int = 8, batch_size: int = 32, lr: float = 0.05,
             momentum: float = 0.9, weight_decay: float = 5e-4, seed: int = 0, out: Optional[str] = "demo_out",
             progress: bool = True, verbose: bool = True, dtype: str = "float32",
             threads: Optional[int] = 1, fused: Optional[bool] = None) -> DemoResult:
    """Train the LeNet on digits and return a DemoResult; figures go to ``out`` (None: no figures).

    fused: the conv blocks as fused Conv2dBNReLU layers (``build_lenet``; None: on the GPU backends).

    dtype: activation/weight dtype (one of the backend's DTYPES; BatchNorm keeps float32 statistics
    for half precision). threads: NumPy BLAS threads during the run (see ``blas_threads``; None
    leaves the BLAS library's own setting).
    """
    with blas_threads(threads):
        return _run_demo(backend, epochs, batch_size, lr, momentum, weight_decay, seed, out, progress, verbose, dtype,
                         fused)


def _run_demo(backend: Optional[str], epochs: int, batch_size: int, lr: float, momentum: float,
              weight_decay: float, seed: int, out: Optional[str], progress: bool, verbose: bool,
              dtype: str, fused: Optional[bool] = None) -> DemoResult:
    backend = backend or _backends.default_backend()
    be = _backends.get_backend(backend)  # says why when the backend cannot run here
    if dtype not in be.DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported by backend {backend!r}; choose one of {be.DTYPES}")
    # the demo's report (the CLI's output, asked for with verbose=True) is printed; notes go to logging
    say: Callable[[str], None] = print if verbose else (lambda text: None)
    images, labels = load_digits()
    tr, te = split(len(images))
    mean, std = float(images[tr].mean()), float(images[tr].std())
    images = (images - mean) / std
    x_train, y_train, x_test, y_test = images[tr], labels[tr], images[te], labels[te]

    net = build_lenet(backend, dtype=dtype, seed=seed, fused=fused)
    crit = CrossEntropyLoss()
    opt = SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    say(f"cnngpu demo: LeNet-5-style CNN on digits ({len(tr)} train / {len(te)} held out, 16x16), "
        f"backend={backend!r}, {dtype}, {'fused' if isinstance(net[0], Conv2dBNReLU) else 'unfused'} conv blocks, "
        f"{epochs} epochs, batch {batch_size}, SGD lr={lr} momentum={momentum}")
    say(f"receptive field of the conv stack: {net.receptive_field()}; output shape for a batch: "
        f"{net.output_shape((batch_size, 1, 16, 16))}")

    n_layers = len(net)
    fwd_t, bwd_t = np.zeros(n_layers), np.zeros(n_layers)
    n_timed = 0
    gen = np.random.default_rng(seed + 1000)
    step_losses: List[float] = []
    history: List[Dict[str, float]] = []
    t_start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t_epoch = time.perf_counter()
        perm = gen.permutation(len(x_train))
        bar = _Progress(-(-len(perm) // batch_size), f"epoch {epoch}/{epochs}", progress)
        loss_sum, correct, seen = 0.0, 0, 0
        net.train()
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            h = _to_backend(x_train[idx], backend, dtype)
            yb = y_train[idx]
            _synchronize(backend)
            for j, layer in enumerate(net):  # forward, layer by layer, timed
                t0 = time.perf_counter()
                h = layer.forward(h)
                _synchronize(backend)
                fwd_t[j] += time.perf_counter() - t0
            loss = crit(h, yb)
            correct += int((to_numpy(h).argmax(axis=1) == yb).sum())
            opt.zero_grad()
            g = crit.backward()
            for j in range(n_layers - 1, -1, -1):  # backward, timed
                t0 = time.perf_counter()
                g = net[j].backward(g)
                _synchronize(backend)
                bwd_t[j] += time.perf_counter() - t0
            opt.step()
            n_timed += 1
            step_losses.append(loss)
            loss_sum += loss * len(idx)
            seen += len(idx)
            bar.update(loss)
        bar.close()
        test_acc = evaluate(net, x_test, y_test, backend, dtype=dtype)
        rec = dict(epoch=epoch, loss=loss_sum / seen, train_acc=correct / seen, test_acc=test_acc,
                   seconds=time.perf_counter() - t_epoch)
        history.append(rec)
        say(f"epoch {epoch:2d}/{epochs}: loss {rec['loss']:.4f}  train acc {rec['train_acc']:.4f}  "
            f"held-out acc {test_acc:.4f}  ({rec['seconds']:.2f} s)")
    seconds = time.perf_counter() - t_start

    layer_times: List[Dict[str, Any]] = []
    for j, (layer, shape) in enumerate(net.output_shapes((batch_size, 1, 16, 16))):
        layer_times.append(dict(index=j, layer=type(layer).__name__, shape=shape,
                                fwd_ms=1e3 * fwd_t[j] / max(n_timed, 1), bwd_ms=1e3 * bwd_t[j] / max(n_timed, 1)))
    say(format_layer_table(layer_times, backend))
    result = DemoResult(backend, dtype, history[-1]["test_acc"] if history else evaluate(net, x_test, y_test, backend, dtype=dtype),
                        history, step_losses, layer_times, seconds)
    if out is not None:
        result.figures = save_figures(net, result, out)
        for name, path in result.figures.items():
            say(f"saved {name}: {path}")
    verdict = "reached" if result.test_accuracy >= TARGET_ACCURACY else "DID NOT reach"
    say(f"held-out accuracy {result.test_accuracy:.4f} ({round(result.test_accuracy * len(te))}/{len(te)}) -- "
        f"{verdict} the 95% target; {seconds:.1f} s on backend {backend!r}")
    return result


def format_layer_table(rows: List[Dict[str, Any]], backend: str) -> str:
    total = sum(r["fwd_ms"] + r["bwd_ms"] for r in rows) or 1.0
    lines = [f"per-layer time per training batch on backend {backend!r} (wall clock, device synchronized):",
             f"  {'#':>2}  {'layer':<12} {'output shape':<18} {'forward ms':>10} {'backward ms':>11} {'share':>6}"]
    for r in rows:
        lines.append(f"  {r['index']:>2}  {r['layer']:<12} {str(r['shape']):<18} {r['fwd_ms']:>10.3f} "
                     f"{r['bwd_ms']:>11.3f} {100 * (r['fwd_ms'] + r['bwd_ms']) / total:>5.1f}%")
    lines.append(f"  {'':>2}  {'total':<12} {'':<18} {sum(r['fwd_ms'] for r in rows):>10.3f} "
                 f"{sum(r['bwd_ms'] for r in rows):>11.3f}")
    return "\n".join(lines)


def save_figures(net: Sequential, result: DemoResult, out: str) -> Dict[str, str]:
    """first_layer_filters.png and loss_curve.png in ``out`` (skipped with a note without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no figures (pip install 'cnngpu[demo]')")
        return {}
    os.makedirs(out, exist_ok=True)
    paths: Dict[str, str] = {}

    conv1 = net[0].conv if isinstance(net[0], Conv2dBNReLU) else net[0]
    assert isinstance(conv1, Conv2d)
    w = to_numpy(conv1.weight.data).astype(np.float64)  # (6, 1, 5, 5)
    k = w.shape[0]
    fig, axes = plt.subplots(1, k, figsize=(1.6 * k, 2.0), squeeze=False)
    lim = float(np.abs(w).max()) or 1.0
    for i, ax in enumerate(axes[0]):
        ax.imshow(w[i, 0], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"filter {i}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"first-layer 5x5 filters after training (backend {result.backend})", fontsize=9)
    paths["filters"] = os.path.join(out, "first_layer_filters.png")
    fig.savefig(paths["filters"], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(result.step_losses) + 1)
    ax.plot(steps, result.step_losses, lw=0.8, alpha=0.6, label="training loss (per batch)")
    per_epoch = len(result.step_losses) / max(len(result.epochs), 1)
    ax.plot([e["epoch"] * per_epoch for e in result.epochs], [e["loss"] for e in result.epochs], "o-",
            label="training loss (epoch mean)")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot([e["epoch"] * per_epoch for e in result.epochs], [e["test_acc"] for e in result.epochs], "s--",
             color="tab:green", label="held-out accuracy")
    ax2.set_ylabel("held-out accuracy")
    ax2.set_ylim(min(0.8, min((e["test_acc"] for e in result.epochs), default=0.8)), 1.0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    ax.set_title(f"LeNet on digits, backend {result.backend}: held-out accuracy {result.test_accuracy:.3f}",
                 fontsize=9)
    paths["loss_curve"] = os.path.join(out, "loss_curve.png")
    fig.savefig(paths["loss_curve"], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths
