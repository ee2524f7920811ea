"""A table of bad inputs across the public API (cnngpu.functional, cnngpu.nn, cnngpu.torch and the
CLI): each must raise the stated exception type with a message that names the culprit argument.
Generated rows: every array argument of every functional op given a list, a Python scalar, or
(after the first) an array of another backend; then hand-written rows for values, shapes and
states torch refuses (momentum=None in the functional form, float normalized_shape, read-only
running stats, wrong-length statistics, out-of-range argmax, int32 class indices, 'same' with
stride in cnngpu.torch, nn.Flatten on 1-D input, a second backward after one forward, ...)."""
import re

import numpy as np
import pytest

from cnngpu import functional as F
from cnngpu import nn

torch = pytest.importorskip("torch")


def f(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


X, W, B = f(2, 4, 8, 8), f(6, 4, 3, 3), f(6)
C4 = f(4)
Y2, IDX = f(2, 4, 4, 4), np.zeros((2, 4, 4, 4), np.int64)
Z, LAB = f(3, 5), np.array([0, 4, 2], np.int64)
LIN_W = f(3, 8)

# op -> (function, {argument name: valid value}, positional order of those arguments, extra kwargs)
OPS = {
    "conv2d": (F.conv2d, dict(input=X, weight=W, bias=B), {}),
    "conv2d_backward": (F.conv2d_backward, dict(dy=f(2, 6, 6, 6), x=X, weight=W), {}),
    "max_pool2d": (F.max_pool2d, dict(input=X), dict(kernel_size=2)),
    "max_pool2d_backward": (F.max_pool2d_backward, dict(dy=Y2, argmax=IDX), dict(x_shape=X.shape, kernel_size=2)),
    "avg_pool2d": (F.avg_pool2d, dict(input=X), dict(kernel_size=2)),
    "avg_pool2d_backward": (F.avg_pool2d_backward, dict(dy=Y2), dict(x_shape=X.shape, kernel_size=2)),
    "batch_norm": (F.batch_norm, dict(input=X, running_mean=C4.copy(), running_var=np.abs(C4) + 1, weight=C4,
                                      bias=C4), dict(training=True)),
    "batch_norm_backward": (F.batch_norm_backward, dict(dy=X, x=X, y=X, weight=C4, mean=C4, invstd=C4), {}),
    "layer_norm": (F.layer_norm, dict(input=X, weight=f(8), bias=f(8)), dict(normalized_shape=8)),
    "layer_norm_backward": (F.layer_norm_backward, dict(dy=X, x=X, weight=f(8), mean=f(64), rstd=f(64)),
                            dict(normalized_ndim=1)),
    "group_norm": (F.group_norm, dict(input=X, weight=C4, bias=C4), dict(num_groups=2)),
    "group_norm_backward": (F.group_norm_backward, dict(dy=X, x=X, weight=C4, mean=f(2, 2), rstd=f(2, 2)),
                            dict(num_groups=2)),
    "relu": (F.relu, dict(input=X), {}),
    "relu_backward": (F.relu_backward, dict(dy=X, y=X), {}),
    "linear": (F.linear, dict(input=f(5, 8), weight=LIN_W, bias=f(3)), {}),
    "linear_backward": (F.linear_backward, dict(dy=f(5, 3), x=f(5, 8), weight=LIN_W), {}),
    "cross_entropy": (F.cross_entropy, dict(input=Z, target=LAB, weight=f(5)), {}),
    "cross_entropy_backward": (F.cross_entropy_backward, dict(probs=Z, target=LAB, weight=f(5)), {}),
}


def _call(op, **override):
    fn, arrays, extra = OPS[op]
    kw = dict(arrays)
    kw.update(extra)
    kw.update(override)
    return lambda: fn(**kw)


def _generated():
    rows = []
    for op, (_, arrays, _) in OPS.items():
        names = list(arrays)
        for i, name in enumerate(names):
            rows.append((f"{op}-{name}-list", _call(op, **{name: [1.0, 2.0]}), TypeError, name))
            rows.append((f"{op}-{name}-scalar", _call(op, **{name: 3.0}), TypeError, name))
            if i > 0:
                rows.append((f"{op}-{name}-torch", _call(op, **{name: torch.zeros(2)}), TypeError, name))
    return rows


def _second_backward(layer, x):
    y = layer(x)
    layer.backward(np.ones_like(y))
    layer.backward(np.ones_like(y))


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _cli(*argv):
    from cnngpu.__main__ import main
    return lambda: main(list(argv))


import cnngpu.torch as ct  # noqa: E402

T = torch.zeros(2, 4, 8, 8)

HAND = [
    # values torch refuses or that must name themselves
    ("bn-momentum-None", _call("batch_norm", momentum=None), TypeError, "momentum"),
    ("bn-momentum-str", _call("batch_norm", momentum="0.1"), TypeError, "momentum"),
    ("bn-momentum-2", _call("batch_norm", momentum=2.0), ValueError, "momentum"),
    ("bn-eps-0", _call("batch_norm", eps=0.0), ValueError, "eps"),
    ("bn-eps-bool", _call("batch_norm", eps=True), ValueError, "eps"),
    ("bn-readonly-running_mean", _call("batch_norm", running_mean=_readonly(C4)), ValueError, "running_mean"),
    ("bn-readonly-running_var", _call("batch_norm", running_var=_readonly(np.abs(C4) + 1)), ValueError,
     "running_var"),
    ("bn-running_mean-length", _call("batch_norm", running_mean=f(3)), ValueError, "running_mean"),
    ("bn-running_var-length", _call("batch_norm", running_var=f(5)), ValueError, "running_var"),
    ("bn-weight-length", _call("batch_norm", weight=f(3)), ValueError, "weight"),
    ("bn-bias-length", _call("batch_norm", bias=f(3)), ValueError, "bias"),
    ("bn-weight-float64", _call("batch_norm", weight=C4.astype(np.float64)), TypeError, "weight"),
    ("bn-input-3d", _call("batch_norm", input=f(2, 4, 8)), ValueError, "input"),
    ("bn-input-int", _call("batch_norm", input=X.astype(np.int32)), TypeError, "input"),
    ("bn-eval-no-stats", _call("batch_norm", running_mean=None, running_var=None, training=False), ValueError,
     "running_mean"),
    ("bn-one-stat", _call("batch_norm", running_var=None), ValueError, "running_var"),
    ("bn-one-value", _call("batch_norm", input=f(1, 4)), ValueError, "input"),
    ("bn-backward-mean-length", _call("batch_norm_backward", mean=f(3)), ValueError, "mean"),
    ("bn-backward-invstd-length", _call("batch_norm_backward", invstd=f(5)), ValueError, "invstd"),
    ("bn-backward-dy-shape", _call("batch_norm_backward", dy=f(2, 4, 8, 7)), ValueError, "dy"),
    ("bn-backward-x-3d", _call("batch_norm_backward", dy=f(2, 4, 8), x=f(2, 4, 8), y=f(2, 4, 8)), ValueError, "x"),
    ("ln-normalized_shape-float", _call("layer_norm", normalized_shape=8.0), TypeError, "normalized_shape"),
    ("ln-normalized_shape-floats", _call("layer_norm", normalized_shape=(8.0, 8.0), weight=None, bias=None),
     TypeError, "normalized_shape"),
    ("ln-normalized_shape-str", _call("layer_norm", normalized_shape="8"), TypeError, "normalized_shape"),
    ("ln-normalized_shape-mismatch", _call("layer_norm", normalized_shape=(7,)), ValueError, "normalized_shape"),
    ("ln-weight-shape", _call("layer_norm", weight=f(7)), ValueError, "weight"),
    ("ln-bias-shape", _call("layer_norm", bias=f(2, 4)), ValueError, "bias"),
    ("ln-eps-neg", _call("layer_norm", eps=-1.0), ValueError, "eps"),
    ("ln-backward-mean-length", _call("layer_norm_backward", mean=f(63)), ValueError, "mean"),
    ("ln-backward-rstd-length", _call("layer_norm_backward", rstd=f(8)), ValueError, "rstd"),
    ("ln-backward-ndim-0", _call("layer_norm_backward", normalized_ndim=0), ValueError, "normalized_ndim"),
    ("ln-backward-ndim-float", _call("layer_norm_backward", normalized_ndim=1.0), TypeError, "normalized_ndim"),
    ("ln-backward-weight-shape", _call("layer_norm_backward", weight=f(7)), ValueError, "weight"),
    ("gn-groups-3", _call("group_norm", num_groups=3), ValueError, "num_groups"),
    ("gn-groups-float", _call("group_norm", num_groups=2.0), TypeError, "num_groups"),
    ("gn-weight-length", _call("group_norm", weight=f(3)), ValueError, "weight"),
    ("gn-backward-mean-shape", _call("group_norm_backward", mean=f(2, 3)), ValueError, "mean"),
    ("gn-backward-rstd-shape", _call("group_norm_backward", rstd=f(3)), ValueError, "rstd"),
    ("gn-backward-weight-length", _call("group_norm_backward", weight=f(5)), ValueError, "weight"),
    ("maxpool-argmax-high", _call("max_pool2d_backward", argmax=np.full((2, 4, 4, 4), 64, np.int64)), ValueError,
     "argmax"),
    ("maxpool-argmax-neg", _call("max_pool2d_backward", argmax=np.full((2, 4, 4, 4), -2, np.int64)), ValueError,
     "argmax"),
    ("maxpool-argmax-float", _call("max_pool2d_backward", argmax=IDX.astype(np.float32)), TypeError, "argmax"),
    ("maxpool-argmax-shape", _call("max_pool2d_backward", argmax=IDX[:, :, :3]), ValueError, "argmax"),
    ("maxpool-dy-shape", _call("max_pool2d_backward", dy=Y2[:, :3]), ValueError, "dy"),
    ("maxpool-kernel-0", _call("max_pool2d", kernel_size=0), ValueError, "kernel_size"),
    ("maxpool-stride-0", _call("max_pool2d", stride=0), ValueError, "stride"),
    ("maxpool-dilation-0", _call("max_pool2d", dilation=0), ValueError, "dilation"),
    ("maxpool-padding-neg", _call("max_pool2d", padding=-1), ValueError, "padding"),
    ("maxpool-padding-big", _call("max_pool2d", padding=2), ValueError, "padding"),
    ("maxpool-kernel-float", _call("max_pool2d", kernel_size=2.5), TypeError, "kernel_size"),
    ("maxpool-kernel-triple", _call("max_pool2d", kernel_size=(2, 2, 2)), ValueError, "kernel_size"),
    ("avgpool-divisor-0", _call("avg_pool2d", divisor_override=0), ValueError, "divisor_override"),
    ("avgpool-divisor-float", _call("avg_pool2d", divisor_override=1.5), ValueError, "divisor_override"),
    ("avgpool-dy-shape", _call("avg_pool2d_backward", dy=Y2[:, :, :2]), ValueError, "dy"),
    ("avgpool-input-5d", _call("avg_pool2d", input=f(1, 2, 3, 4, 5)), ValueError, "input"),
    ("conv-stride-0", _call("conv2d", stride=0), ValueError, "stride"),
    ("conv-padding-str", _call("conv2d", padding="full"), ValueError, "padding"),
    ("conv-padding-neg", _call("conv2d", padding=-1), ValueError, "padding"),
    ("conv-dilation-0", _call("conv2d", dilation=(1, 0)), ValueError, "dilation"),
    ("conv-groups-float", _call("conv2d", groups=1.0), TypeError, "groups"),
    ("conv-groups-3", _call("conv2d", groups=3), ValueError, "groups"),
    ("conv-weight-3d", _call("conv2d", weight=f(6, 4, 3)), ValueError, "weight"),
    ("conv-bias-length", _call("conv2d", bias=f(5)), ValueError, "bias"),
    ("conv-bias-dtype", _call("conv2d", bias=B.astype(np.float64)), TypeError, "bias"),
    ("conv-algo", _call("conv2d", algo="winograd"), ValueError, "algo"),
    ("conv-precision", _call("conv2d", precision="fp8"), ValueError, "precision"),
    ("conv-input-int", _call("conv2d", input=X.astype(np.int64)), TypeError, "input"),
    ("conv-backward-dy-shape", _call("conv2d_backward", dy=f(2, 6, 6, 5)), ValueError, "dy"),
    ("conv-backward-dy-dtype", _call("conv2d_backward", dy=f(2, 6, 6, 6).astype(np.float64)), TypeError, "dy"),
    ("conv-kernel-too-big", _call("conv2d", input=f(1, 4, 2, 2)), ValueError, "kernel"),
    ("relu-input-int", _call("relu", input=np.zeros(3, np.int32)), TypeError, "input"),
    ("relu-backward-shape", _call("relu_backward", y=f(2, 4, 8)), ValueError, "y"),
    ("relu-backward-dy-int", _call("relu_backward", dy=np.zeros((2, 4, 8, 8), np.int32)), TypeError, "dy"),
    ("linear-input-0d", _call("linear", input=np.ones((), np.float32)), ValueError, "input"),
    ("linear-weight-1d", _call("linear", weight=f(8)), ValueError, "weight"),
    ("linear-features", _call("linear", input=f(5, 7)), ValueError, "input"),
    ("linear-bias-length", _call("linear", bias=f(4)), ValueError, "bias"),
    ("linear-weight-dtype", _call("linear", weight=LIN_W.astype(np.float64)), TypeError, "weight"),
    ("linear-backward-dy-shape", _call("linear_backward", dy=f(5, 4)), ValueError, "dy"),
    ("ce-target-int32", _call("cross_entropy", target=LAB.astype(np.int32)), TypeError, "target"),
    ("ce-target-int16", _call("cross_entropy", target=LAB.astype(np.int16)), TypeError, "target"),
    ("ce-target-range", _call("cross_entropy", target=np.array([0, 5, 1])), ValueError, "target"),
    ("ce-target-negative", _call("cross_entropy", target=np.array([0, -1, 1])), ValueError, "target"),
    ("ce-target-length", _call("cross_entropy", target=np.array([0, 1])), ValueError, "target"),
    ("ce-target-float-shape", _call("cross_entropy", target=np.array([0.0, 1.0, 2.0])), TypeError, "target"),
    ("ce-target-probs-dtype", _call("cross_entropy", target=Z.astype(np.float64)), TypeError, "target"),
    ("ce-weight-length", _call("cross_entropy", weight=f(4)), ValueError, "weight"),
    ("ce-weight-dtype", _call("cross_entropy", weight=f(5).astype(np.float64)), TypeError, "weight"),
    ("ce-reduction", _call("cross_entropy", reduction="avg"), ValueError, "reduction"),
    ("ce-smoothing", _call("cross_entropy", label_smoothing=1.5), ValueError, "label_smoothing"),
    ("ce-smoothing-str", _call("cross_entropy", label_smoothing="0.1"), ValueError, "label_smoothing"),
    ("ce-ignore-float", _call("cross_entropy", ignore_index=-100.0), TypeError, "ignore_index"),
    ("ce-size_average", _call("cross_entropy", size_average=True), ValueError, "size_average"),
    ("ce-input-int", _call("cross_entropy", input=Z.astype(np.int64)), TypeError, "input"),
    ("ce-backward-dloss-str", _call("cross_entropy_backward", dloss="1"), TypeError, "dloss"),
    ("ce-backward-dloss-none-shape", _call("cross_entropy_backward", reduction="none", dloss=1.0), ValueError,
     "dloss"),
    ("ce-backward-dloss-vector", _call("cross_entropy_backward", dloss=np.ones(3, np.float32)), ValueError,
     "dloss"),
    ("ce-backward-target-range", _call("cross_entropy_backward", target=np.array([0, 1, 9])), ValueError,
     "target"),
    ("backend-unknown", _call("relu", backend="opencl"), ValueError, "backend"),
    ("backend-not-str", _call("relu", backend=1), TypeError, "backend"),
    ("backend-wrong-array", _call("relu", backend="triton"), TypeError, "input"),
    # cnngpu.nn
    ("nn-conv-in_channels", lambda: nn.Conv2d(0, 6, 3, backend="numpy"), ValueError, "in_channels"),
    ("nn-conv-kernel", lambda: nn.Conv2d(3, 6, (3, 0), backend="numpy"), ValueError, "kernel_size"),
    ("nn-conv-stride", lambda: nn.Conv2d(3, 6, 3, stride=0, backend="numpy"), ValueError, "stride"),
    ("nn-conv-padding", lambda: nn.Conv2d(3, 6, 3, padding="half", backend="numpy"), ValueError, "padding"),
    ("nn-conv-dtype", lambda: nn.Conv2d(3, 6, 3, dtype="int8", backend="numpy"), TypeError, "dtype"),
    ("nn-conv-algo", lambda: nn.Conv2d(3, 6, 3, algo="fft", backend="numpy"), ValueError, "algo"),
    ("nn-conv-forward-list", lambda: nn.Conv2d(4, 6, 3, backend="numpy")([[1.0]]), TypeError, "input"),
    ("nn-conv-forward-channels", lambda: nn.Conv2d(3, 6, 3, backend="numpy")(X), ValueError, "weight"),
    ("nn-conv-second-backward", lambda: _second_backward(nn.Conv2d(4, 6, 3, backend="numpy"), X), RuntimeError,
     "backward"),
    ("nn-linear-second-backward", lambda: _second_backward(nn.Linear(8, 3, backend="numpy"), f(5, 8)), RuntimeError,
     "backward"),
    ("nn-relu-second-backward", lambda: _second_backward(nn.ReLU(backend="numpy"), X), RuntimeError, "backward"),
    ("nn-bn-second-backward", lambda: _second_backward(nn.BatchNorm2d(4, backend="numpy"), X), RuntimeError,
     "backward"),
    ("nn-pool-second-backward", lambda: _second_backward(nn.MaxPool2d(2, backend="numpy"), X), RuntimeError,
     "backward"),
    ("nn-seq-second-backward", lambda: _second_backward(nn.Sequential(nn.Flatten(backend="numpy"),
                                                                      nn.Linear(256, 3, backend="numpy")), X),
     RuntimeError, "backward"),
    ("nn-flatten-1d", lambda: nn.Flatten(backend="numpy")(f(5)), ValueError, "Flatten"),
    ("nn-flatten-0d", lambda: nn.Flatten(backend="numpy")(np.zeros((), np.float32)), ValueError, "Flatten"),
    ("nn-bn-momentum", lambda: nn.BatchNorm2d(4, momentum=1.5, backend="numpy"), ValueError, "momentum"),
    ("nn-bn-momentum-str", lambda: nn.BatchNorm2d(4, momentum="x", backend="numpy"), TypeError, "momentum"),
    ("nn-bn-eps", lambda: nn.BatchNorm2d(4, eps=0, backend="numpy"), ValueError, "eps"),
    ("nn-bn-channels", lambda: nn.BatchNorm2d(6, backend="numpy")(X), ValueError, "weight"),
    ("nn-gn-groups", lambda: nn.GroupNorm(3, 8, backend="numpy"), ValueError, "num_groups"),
    ("nn-ln-eps", lambda: nn.LayerNorm(8, eps=-1.0, backend="numpy"), ValueError, "eps"),
    ("nn-pool-padding", lambda: nn.MaxPool2d(2, padding=2, backend="numpy"), ValueError, "padding"),
    ("nn-linear-features", lambda: nn.Linear(5, 3, backend="numpy")(f(2, 4)), ValueError, "input"),
    ("nn-loss-labels-int32", lambda: nn.CrossEntropyLoss()(Z, LAB.astype(np.int32)), TypeError, "target"),
    ("nn-loss-labels-range", lambda: nn.CrossEntropyLoss()(Z, np.array([0, 7, 1])), ValueError, "target"),
    ("nn-loss-reduction", lambda: nn.CrossEntropyLoss(reduction="avg")(Z, LAB), ValueError, "reduction"),
    ("nn-loss-second-backward", lambda: (lambda c: (c(Z, LAB), c.backward(), c.backward()))(nn.CrossEntropyLoss()),
     RuntimeError, "backward"),
    ("nn-sgd-lr", lambda: nn.SGD(nn.Linear(2, 2, backend="numpy").parameters(), lr=-0.1), ValueError, "lr"),
    ("nn-sgd-params", lambda: nn.SGD([np.zeros(3)], lr=0.1), TypeError, "params"),
    ("nn-backend", lambda: nn.ReLU(backend="metal"), ValueError, "backend"),
    # cnngpu.torch
    ("torch-conv-same-stride", lambda: ct.conv2d(T, torch.ones(1, 4, 3, 3), stride=2, padding="same"), ValueError,
     "stride"),
    ("torch-conv-stride-0", lambda: ct.conv2d(T, torch.ones(1, 4, 3, 3), stride=0), ValueError, "stride"),
    ("torch-conv-numpy-input", lambda: ct.conv2d(X, torch.ones(1, 4, 3, 3)), TypeError, "torch.Tensor"),
    ("torch-conv-groups", lambda: ct.Conv2d(3, 4, 3, groups=2), ValueError, "groups"),
    ("torch-bn-momentum", lambda: ct.batch_norm(T, None, None, training=True, momentum=1.5), ValueError,
     "momentum"),
    ("torch-bn-weight-length", lambda: ct.batch_norm(T, None, None, torch.ones(3), training=True), ValueError,
     "weight"),
    ("torch-ln-normalized_shape-float", lambda: ct.layer_norm(T, 8.0), TypeError, "normalized_shape"),
    ("torch-gn-groups", lambda: ct.group_norm(T, 3), ValueError, "num_groups"),
    ("torch-pool-kernel", lambda: ct.max_pool2d(T, 0), ValueError, "kernel_size"),
    ("torch-avgpool-int", lambda: ct.avg_pool2d(T.to(torch.int32), 2), TypeError, "input"),
    ("torch-conv-5d", lambda: ct.conv2d(T[None], torch.ones(1, 4, 3, 3)), ValueError, "input"),
    ("torch-bn-1d", lambda: ct.batch_norm(T[0, 0, 0], None, None, training=True), ValueError, "input"),
    ("torch-backend", lambda: ct.max_pool2d(T, 2, backend="cudnn"), ValueError, "backend"),
    # CLI (argparse exits with status 2 and names the option)
    ("cli-seed-negative", _cli("demo", "--seed", "-1"), SystemExit, "--seed"),
    ("cli-epochs-0", _cli("demo", "--epochs", "0"), SystemExit, "--epochs"),
    ("cli-batch-size-1", _cli("demo", "--batch-size", "1"), SystemExit, "--batch-size"),
    ("cli-lr-negative", _cli("demo", "--lr", "-0.5"), SystemExit, "--lr"),
    ("cli-lr-nan", _cli("demo", "--lr", "nan"), SystemExit, "--lr"),
    ("cli-threads-negative", _cli("demo", "--threads", "-2"), SystemExit, "--threads"),
    ("cli-backend", _cli("demo", "--backend", "opencl"), SystemExit, "--backend"),
    ("cli-dtype", _cli("demo", "--dtype", "int8"), SystemExit, "--dtype"),
]

ROWS = _generated() + HAND


def test_table_is_large_enough():
    assert len(ROWS) >= 150, len(ROWS)


@pytest.mark.parametrize("call,exc,name", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_names_the_culprit(call, exc, name, capsys):
    with pytest.raises(exc) as info:
        call()
    if exc is SystemExit:
        assert info.value.code == 2
        msg = capsys.readouterr().err
    else:
        msg = str(info.value)
    assert re.search(r"(?<![\w])" + re.escape(name) + r"(?![\w])", msg), f"message does not name {name!r}: {msg}"
