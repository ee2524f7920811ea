"""cnngpu.functional follows torch.nn.functional: argument names, order, defaults and return
values (a torch-order positional call gives torch's result), torch's cross_entropy options, relu
inplace, N-D linear, avg_pool2d divisor_override, and empty tensors on every backend."""
import inspect

import numpy as np
import pytest

import cnngpu.functional as F
from cnngpu import nn as cnn
from harness import native, require, to_f64

torch = pytest.importorskip("torch")
TF = torch.nn.functional
BACKENDS = ["numpy", "triton", pytest.param("cupy", marks=pytest.mark.cupy)]


def _r(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32).astype(dtype)


_E = inspect.Parameter.empty
# torch.nn.functional's documented signatures (several are builtins without inspect metadata)
TORCH_SIGS = {
    "conv2d": [("input", _E), ("weight", _E), ("bias", None), ("stride", 1), ("padding", 0), ("dilation", 1),
               ("groups", 1)],
    "max_pool2d": [("input", _E), ("kernel_size", _E), ("stride", None), ("padding", 0), ("dilation", 1),
                   ("ceil_mode", False), ("return_indices", False)],
    "avg_pool2d": [("input", _E), ("kernel_size", _E), ("stride", None), ("padding", 0), ("ceil_mode", False),
                   ("count_include_pad", True), ("divisor_override", None)],
    "batch_norm": [("input", _E), ("running_mean", _E), ("running_var", _E), ("weight", None), ("bias", None),
                   ("training", False), ("momentum", 0.1), ("eps", 1e-5)],
    "layer_norm": [("input", _E), ("normalized_shape", _E), ("weight", None), ("bias", None), ("eps", 1e-5)],
    "group_norm": [("input", _E), ("num_groups", _E), ("weight", None), ("bias", None), ("eps", 1e-5)],
    "relu": [("input", _E), ("inplace", False)],
    "linear": [("input", _E), ("weight", _E), ("bias", None)],
    "cross_entropy": [("input", _E), ("target", _E), ("weight", None), ("size_average", None),
                      ("ignore_index", -100), ("reduce", None), ("reduction", "mean"), ("label_smoothing", 0.0)],
}


@pytest.mark.parametrize("name", sorted(TORCH_SIGS))
def test_signature_is_torchs(name):
    """torch's positional parameters come first, with torch's names and defaults; cnngpu's own
    options are keyword-only."""
    want = TORCH_SIGS[name]
    try:                                   # where torch has a Python signature, the table matches it
        theirs = [(p.name, p.default) for p in inspect.signature(getattr(TF, name)).parameters.values()
                  if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        if theirs and theirs[0][0] == "input":
            assert theirs == want
    except (TypeError, ValueError):
        pass
    ours = list(inspect.signature(getattr(F, name)).parameters.values())
    assert [(p.name, p.default) for p in ours[:len(want)]] == want
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in ours[len(want):])


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 2, 5), (6, 3)])
def test_batch_norm_torch_order_positional_call(training, shape):
    x, rm, rv, w, b = _r(shape, 0), _r(3, 1), np.abs(_r(3, 2)) + 0.5, _r(3, 3), _r(3, 4)
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)
    yt = TF.batch_norm(torch.tensor(x), rmt, rvt, torch.tensor(w), torch.tensor(b), training, 0.3, 1e-4)
    rm2, rv2 = rm.copy(), rv.copy()
    y = F.batch_norm(x, rm2, rv2, w, b, training, 0.3, 1e-4)
    assert isinstance(y, np.ndarray) and y.shape == x.shape           # plain output, like torch
    np.testing.assert_allclose(y, yt.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rm2, rmt.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv2, rvt.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(w, _r(3, 3))                        # weight/bias untouched


def test_batch_norm_defaults_are_torchs():
    x, rm, rv = _r((4, 3), 5), _r(3, 6), np.abs(_r(3, 7)) + 0.5
    np.testing.assert_allclose(F.batch_norm(x, rm, rv), TF.batch_norm(torch.tensor(x), torch.tensor(rm),
                                                                       torch.tensor(rv)).numpy(), rtol=1e-12)


def test_return_variants():
    x = _r((2, 3, 4, 4), 8)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(F.max_pool2d(x, 2), y)
    yt, it = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(idx, it.numpy())
    assert len(F.layer_norm(x, (4, 4), return_stats=True)) == 3 and F.layer_norm(x, (4, 4)).shape == x.shape
    assert len(F.group_norm(x, 3, return_stats=True)) == 3 and F.group_norm(x, 3).shape == x.shape
    labels = np.array([0, 2], dtype=np.int64)
    loss = F.cross_entropy(x[:, :, 0, 0], labels)
    assert loss.shape == () and len(F.cross_entropy(x[:, :, 0, 0], labels, return_probs=True)) == 2


def test_relu_inplace_and_nd_linear():
    x = _r((2, 3, 5), 9)
    x0 = x.copy()
    out = F.relu(x, inplace=True)
    assert out is x
    np.testing.assert_array_equal(x, np.maximum(x0, 0))
    w, b = _r((4, 5), 10), _r(4, 11)
    for xin in (x0, x0[0, 0], x0[:, :, None, :]):
        y = F.linear(xin, w, b)
        np.testing.assert_allclose(y, TF.linear(torch.tensor(xin), torch.tensor(w), torch.tensor(b)).numpy(),
                                   rtol=1e-12)
        xt, wt, bt = torch.tensor(xin, requires_grad=True), torch.tensor(w, requires_grad=True), \
            torch.tensor(b, requires_grad=True)
        dy = _r(y.shape, 12)
        TF.linear(xt, wt, bt).backward(torch.tensor(dy))
        dx, dw, db = F.linear_backward(dy, xin, w)
        for a, e in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
            np.testing.assert_allclose(a, e.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("divisor", [1, 3, -2])
def test_avg_pool2d_divisor_override(ceil_mode, divisor):
    x = _r((1, 2, 7, 6), 13)
    xt = torch.tensor(x, requires_grad=True)
    yt = TF.avg_pool2d(xt, 3, 2, 1, ceil_mode, True, divisor)
    dy = _r(tuple(yt.shape), 14)
    yt.backward(torch.tensor(dy))
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode, True, divisor)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    dx = F.avg_pool2d_backward(dy, x.shape, 3, 2, 1, ceil_mode, True, divisor)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-14)


def _xent_case(shape, C, seed, probs=False, ignore=None):
    gen = np.random.default_rng(seed)
    z = gen.standard_normal(shape)
    if probs:
        t = gen.random(shape)
        t /= t.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)
    else:
        t = gen.integers(0, C, (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else ()).astype(np.int64)
        if ignore is not None and t.size:
            t.reshape(-1)[0] = ignore
    return z, t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("kind", ["classes", "ignore", "all_ignored", "probs", "nd", "nd_probs", "single"])
def test_cross_entropy_options_vs_torch(reduction, smoothing, weighted, kind):
    C = 4
    shape = {"nd": (3, C, 2, 3), "nd_probs": (3, C, 2, 3), "single": (C,)}.get(kind, (5, C))
    z, t = _xent_case(shape, C, hash((reduction, smoothing, weighted, kind)) % 1000, probs="probs" in kind,
                      ignore=1 if kind == "ignore" else None)
    if kind == "all_ignored":   # 'mean' is 0/0 = NaN (torch), the gradient still 0
        t[...] = 1
    w = np.random.default_rng(3).random(C) + 0.5 if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smoothing, ignore_index=1 if "ignore" in kind else -100)
    zt = torch.tensor(z, requires_grad=True)
    lt = TF.cross_entropy(zt, torch.tensor(t), None if w is None else torch.tensor(w), **kw)
    gt = torch.tensor(_r(tuple(lt.shape), 4))
    lt.backward(gt)
    loss, probs = F.cross_entropy(z, t, w, return_probs=True, **kw)
    np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-10, atol=1e-12)
    dl = gt.numpy() if reduction == "none" else float(gt)
    g = F.cross_entropy_backward(probs, t, dl, w, **kw)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bname", ["triton", pytest.param("cupy", marks=pytest.mark.cupy)])
def test_cross_entropy_options_on_device_backends(bname):
    require(bname)
    z, t = _xent_case((3, 5, 2), 5, 0, ignore=2)
    w = np.random.default_rng(1).random(5) + 0.5
    kw = dict(ignore_index=2, label_smoothing=0.1, reduction="sum")
    ref = F.cross_entropy(z.astype(np.float32), t, w.astype(np.float32), **kw)
    tt = native(bname, t, "int64") if bname != "numpy" else t
    out, probs = F.cross_entropy(native(bname, z, "float32"), tt, native(bname, w, "float32"), return_probs=True,
                                 backend=bname, **kw)
    np.testing.assert_allclose(to_f64(out), ref, rtol=1e-5)
    g = F.cross_entropy_backward(probs, tt, 1.0, native(bname, w, "float32"), backend=bname, **kw)
    assert tuple(g.shape) == z.shape


# ----------------------------------------------------------------------------------------------
# empty tensors: every op, forward and backward, shaped like torch's results
# ----------------------------------------------------------------------------------------------
def _empty_cases():
    return [
        ("conv2d N=0", lambda x: (0, 2, 5, 5), lambda xp, nat: F.conv2d(xp, nat(_r((3, 2, 3, 3), 0)), padding=1),
         lambda t: TF.conv2d(t, torch.tensor(_r((3, 2, 3, 3), 0), dtype=torch.float32), padding=1)),
        ("max_pool2d N=0", lambda x: (0, 2, 4, 4), lambda xp, nat: F.max_pool2d(xp, 2),
         lambda t: TF.max_pool2d(t, 2)),
        ("avg_pool2d N=0", lambda x: (0, 2, 4, 4), lambda xp, nat: F.avg_pool2d(xp, 2),
         lambda t: TF.avg_pool2d(t, 2)),
        ("batch_norm C=0", lambda x: (4, 0, 3, 3),
         lambda xp, nat: F.batch_norm(xp, nat(np.zeros(0)), nat(np.ones(0)), training=True),
         lambda t: TF.batch_norm(t, torch.zeros(0), torch.ones(0), training=True)),
        ("batch_norm eval N=0", lambda x: (0, 3, 2, 2),
         lambda xp, nat: F.batch_norm(xp, nat(np.zeros(3)), nat(np.ones(3))),
         lambda t: TF.batch_norm(t, torch.zeros(3), torch.ones(3))),
        ("layer_norm N=0", lambda x: (0, 4), lambda xp, nat: F.layer_norm(xp, (4,)),
         lambda t: TF.layer_norm(t, (4,))),
        ("group_norm N=0", lambda x: (0, 4, 2), lambda xp, nat: F.group_norm(xp, 2),
         lambda t: TF.group_norm(t, 2)),
        ("relu empty", lambda x: (0, 3), lambda xp, nat: F.relu(xp), lambda t: TF.relu(t)),
        ("linear M=0", lambda x: (0, 5), lambda xp, nat: F.linear(xp, nat(_r((3, 5), 1))),
         lambda t: TF.linear(t, torch.tensor(_r((3, 5), 1), dtype=torch.float32))),
    ]


@pytest.mark.parametrize("bname", BACKENDS)
@pytest.mark.parametrize("case", _empty_cases(), ids=lambda c: c[0])
def test_empty_forward_like_torch(bname, case):
    require(bname)
    _, shape_of, ours, theirs = case
    shape = shape_of(None)
    nat = lambda a: native(bname, np.asarray(a, dtype=np.float64), "float32")  # noqa: E731
    y = ours(nat(np.zeros(shape)), nat)
    yt = theirs(torch.zeros(shape))
    assert tuple(y.shape) == tuple(yt.shape)


@pytest.mark.parametrize("bname", BACKENDS)
def test_empty_backwards(bname):
    require(bname)
    nat = lambda a: native(bname, np.asarray(a, dtype=np.float64), "float32")  # noqa: E731
    x, w = nat(np.zeros((0, 2, 5, 5))), nat(_r((3, 2, 3, 3), 0))
    dx, dw, db = F.conv2d_backward(nat(np.zeros((0, 3, 5, 5))), x, w, padding=1)
    assert tuple(dx.shape) == (0, 2, 5, 5) and tuple(dw.shape) == (3, 2, 3, 3) and tuple(db.shape) == (3,)
    assert float(abs(to_f64(dw)).max()) == 0.0
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert tuple(F.max_pool2d_backward(nat(np.zeros((0, 2, 2, 2))), idx, (0, 2, 5, 5), 2).shape) == (0, 2, 5, 5)
    assert tuple(F.avg_pool2d_backward(nat(np.zeros((0, 2, 2, 2))), (0, 2, 5, 5), 2).shape) == (0, 2, 5, 5)
    xb = nat(np.zeros((4, 0, 3, 3)))
    yb, m, s = F.batch_norm(xb, None, None, training=True, return_stats=True)
    g = F.batch_norm_backward(xb, xb, yb, None, m, s)
    assert tuple(g[0].shape) == (4, 0, 3, 3)
    xl = nat(np.zeros((0, 4)))
    yl, m, s = F.layer_norm(xl, 4, nat(np.ones(4)), nat(np.zeros(4)), return_stats=True)
    dx, dw, db = F.layer_norm_backward(xl, xl, nat(np.ones(4)), m, s, 1)
    assert tuple(dx.shape) == (0, 4) and tuple(dw.shape) == (4,) and float(abs(to_f64(dw)).sum()) == 0
    xg = nat(np.zeros((0, 4, 2)))
    yg, m, s = F.group_norm(xg, 2, return_stats=True)
    assert tuple(F.group_norm_backward(xg, xg, 2, None, m, s)[0].shape) == (0, 4, 2)
    assert tuple(F.relu_backward(nat(np.zeros((0, 3))), nat(np.zeros((0, 3)))).shape) == (0, 3)
    dx, dw, db = F.linear_backward(nat(np.zeros((0, 3))), nat(np.zeros((0, 5))), nat(_r((3, 5), 1)))
    assert tuple(dx.shape) == (0, 5) and tuple(dw.shape) == (3, 5) and tuple(db.shape) == (3,)


def test_empty_cross_entropy_like_torch():
    z, t = np.zeros((0, 3)), np.zeros(0, np.int64)
    for red in ("mean", "sum", "none"):
        lt = TF.cross_entropy(torch.tensor(z, requires_grad=True), torch.tensor(t), reduction=red)
        loss, probs = F.cross_entropy(z, t, reduction=red, return_probs=True)
        np.testing.assert_allclose(loss, lt.detach().numpy(), equal_nan=True)
        dl = np.zeros(0) if red == "none" else 1.0
        assert F.cross_entropy_backward(probs, t, dl, reduction=red).shape == (0, 3)


def test_nn_batchnorm_momentum_none_is_cumulative_average():
    bn = cnn.BatchNorm2d(3, momentum=None, backend="numpy", dtype="float64")
    ref = torch.nn.BatchNorm2d(3, momentum=None).double()
    for step in range(3):
        x = _r((4, 3, 2, 2), 20 + step) * (step + 1) + step
        np.testing.assert_allclose(bn(x), ref(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bn.running_mean, ref.running_mean.numpy(), rtol=1e-10)
        np.testing.assert_allclose(bn.running_var, ref.running_var.numpy(), rtol=1e-10)


def test_linear_with_no_in_features_is_the_bias_like_torch():
    x, w, b = np.zeros((2, 0)), np.zeros((3, 0)), np.array([1.0, -2.0, 0.5])
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = TF.linear(xt, wt, bt)
    dy = _r((2, 3), 30)
    yt.backward(torch.tensor(dy))
    np.testing.assert_array_equal(F.linear(x, w, b), yt.detach().numpy())
    dx, dw, db = F.linear_backward(dy, x, w)
    assert dx.shape == (2, 0) and dw.shape == (3, 0)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-12)
