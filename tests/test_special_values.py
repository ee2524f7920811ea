"""NaN / Inf semantics equal to torch's, on every backend: the NumPy reference, Triton (the
interpreter on CPU here) and cupy where it runs. Each case builds float32 inputs holding NaN, +inf
and -inf, runs the op and its backward, and compares with torch CPU, NaN where torch has NaN."""
import numpy as np
import pytest

import cnngpu.functional as F
from harness import native, require, to_f64

torch = pytest.importorskip("torch")
TF = torch.nn.functional
BACKENDS = ["numpy", "triton", pytest.param("cupy", marks=pytest.mark.cupy)]
NAN, INF = float("nan"), float("inf")


def _same(actual, expected, what, rtol=1e-5, atol=1e-5):
    a, e = to_f64(actual), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"{what}: NaN positions differ")
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def _specials(shape, seed, where=((0, 0), (1, 1), (2, 2))):
    """Random float32-exact values with NaN, +inf, -inf planted at three flat positions."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32).astype(np.float64)
    flat = x.reshape(-1)
    n = flat.size
    for (i, _), v in zip(where, (NAN, INF, -INF)):
        flat[(7 * i + 3) % n] = v
    return x


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float32, requires_grad=grad)


@pytest.mark.parametrize("bname", BACKENDS)
def test_relu_keeps_nan_and_its_backward_passes_dy_there(bname):
    require(bname)
    x = _specials((3, 5), 0)
    x[0, 0] = 0.0
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32).astype(np.float64)
    xt = _t(x, True)
    yt = torch.relu(xt)
    yt.backward(_t(dy))
    y = F.relu(native(bname, x, "float32"), backend=bname)
    _same(y, yt.detach(), "relu y")
    dx = F.relu_backward(native(bname, dy, "float32"), y, backend=bname)
    _same(dx, xt.grad, "relu dx")
    # the y=NaN case explicitly: torch's threshold_backward passes dy where y is NaN
    assert np.isnan(to_f64(y)).any() and (to_f64(dx)[np.isnan(to_f64(y))] == dy[np.isnan(to_f64(y))]).all()


@pytest.mark.parametrize("bname", BACKENDS)
@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_relu_nan_like_torch(bname, training):
    require(bname)
    N, C, H, W = 2, 3, 3, 4
    x = np.random.default_rng(2).standard_normal((N, C, H, W)).astype(np.float32).astype(np.float64)
    x[0, 1, 1, 2] = NAN                 # channel 1 has a NaN: its statistics are NaN in training
    x[1, 2, 0, 0] = INF
    w, b = np.array([1.5, -0.5, 2.0]), np.array([0.1, 0.2, -0.3])
    rm, rv = np.array([0.1, -0.2, 0.3]), np.array([1.2, 0.8, 1.1])
    dy = np.random.default_rng(3).standard_normal(x.shape)
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    yt = torch.relu(TF.batch_norm(xt, _t(rm), _t(rv), wt, bt, training, 0.1, 1e-5))
    yt.backward(_t(dy))
    nat = lambda a: native(bname, a, "float32")  # noqa: E731
    y, mean, invstd = F.batch_norm(nat(x), nat(rm), nat(rv), nat(w), nat(b), training, 0.1, 1e-5, relu=True,
                                   return_stats=True, backend=bname)
    _same(y, yt.detach(), "bn+relu y")
    dx, dw, db = F.batch_norm_backward(nat(dy), nat(x), y, nat(w), mean, invstd, training=training, relu=True,
                                       backend=bname)
    _same(dx, xt.grad, "bn+relu dx", atol=1e-4)
    _same(dw, wt.grad, "bn+relu dweight", atol=1e-4)
    _same(db, bt.grad, "bn+relu dbias", atol=1e-4)


@pytest.mark.parametrize("bname", BACKENDS)
def test_max_pool2d_nan_wins_with_its_index(bname):
    require(bname)
    x = _specials((1, 2, 5, 5), 4)
    x[0, 0, 0, 1] = NAN                 # two NaN in one window: torch takes the last one
    x[0, 1, 3, 3] = NAN
    dy = np.random.default_rng(5).standard_normal((1, 2, 3, 3))
    xt = _t(x, True)
    yt, it = TF.max_pool2d(xt, 3, 2, 1, return_indices=True)
    yt.backward(_t(dy))
    y, idx = F.max_pool2d(native(bname, x, "float32"), 3, 2, 1, return_indices=True, backend=bname)
    _same(y, yt.detach(), "maxpool y")
    np.testing.assert_array_equal(to_f64(idx), it.numpy(), "maxpool argmax")
    dx = F.max_pool2d_backward(native(bname, dy, "float32"), idx, x.shape, 3, 2, 1, backend=bname)
    _same(dx, xt.grad, "maxpool dx")


@pytest.mark.parametrize("bname", BACKENDS)
def test_avg_pool2d_specials(bname):
    require(bname)
    x = _specials((1, 2, 5, 5), 6)
    dy = np.random.default_rng(7).standard_normal((1, 2, 3, 3))
    xt = _t(x, True)
    yt = TF.avg_pool2d(xt, 3, 2, 1, count_include_pad=False)
    yt.backward(_t(dy))
    y = F.avg_pool2d(native(bname, x, "float32"), 3, 2, 1, count_include_pad=False, backend=bname)
    _same(y, yt.detach(), "avgpool y")
    dx = F.avg_pool2d_backward(native(bname, dy, "float32"), x.shape, 3, 2, 1, count_include_pad=False,
                               backend=bname)
    _same(dx, xt.grad, "avgpool dx")


@pytest.mark.parametrize("bname", BACKENDS)
@pytest.mark.parametrize("op", ["layer_norm", "group_norm"])
def test_norms_propagate_nan_per_row(bname, op):
    require(bname)
    x = np.random.default_rng(8).standard_normal((3, 4, 5)).astype(np.float32).astype(np.float64)
    x[1, 2, 3] = NAN
    x[2, 0, 0] = INF
    w = np.random.default_rng(9).standard_normal(4 if op == "group_norm" else 5) + 1
    b = np.random.default_rng(10).standard_normal(w.shape)
    dy = np.random.default_rng(11).standard_normal(x.shape)
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    nat = lambda a: native(bname, a, "float32")  # noqa: E731
    if op == "layer_norm":
        yt = TF.layer_norm(xt, (5,), wt, bt)
        y, m, r = F.layer_norm(nat(x), (5,), nat(w), nat(b), return_stats=True, backend=bname)
        grads = F.layer_norm_backward(nat(dy), nat(x), nat(w), m, r, 1, backend=bname)
    else:
        yt = TF.group_norm(xt, 2, wt, bt)
        y, m, r = F.group_norm(nat(x), 2, nat(w), nat(b), return_stats=True, backend=bname)
        grads = F.group_norm_backward(nat(dy), nat(x), 2, nat(w), m, r, backend=bname)
    yt.backward(_t(dy))
    _same(y, yt.detach(), f"{op} y")
    for g, gt, name in zip(grads, (xt.grad, wt.grad, bt.grad), ("dx", "dweight", "dbias")):
        _same(g, gt, f"{op} {name}", atol=1e-4)


@pytest.mark.parametrize("bname", BACKENDS)
def test_cross_entropy_specials(bname):
    require(bname)
    z = np.random.default_rng(12).standard_normal((4, 5)).astype(np.float32).astype(np.float64)
    z[1, 2] = NAN
    z[2, 3] = INF
    z[3, 0] = -INF
    labels = np.array([0, 1, 2, 4], dtype=np.int64)
    zt = _t(z, True)
    lt = TF.cross_entropy(zt, torch.from_numpy(labels))
    lt.backward()
    lab = labels if bname == "numpy" else native(bname, labels, "int64")
    loss, probs = F.cross_entropy(native(bname, z, "float32"), lab, return_probs=True, backend=bname)
    _same(loss, lt.detach(), "cross-entropy loss")
    _same(probs, torch.softmax(_t(z), 1), "cross-entropy probs")
    _same(F.cross_entropy_backward(probs, lab, backend=bname), zt.grad, "cross-entropy dlogits")


@pytest.mark.parametrize("bname", BACKENDS)
def test_conv2d_specials(bname):
    require(bname)
    x = _specials((1, 2, 5, 5), 13)
    w = np.random.default_rng(14).standard_normal((3, 2, 3, 3)).astype(np.float32).astype(np.float64)
    dy = np.random.default_rng(15).standard_normal((1, 3, 5, 5))
    xt, wt = _t(x, True), _t(w, True)
    yt = TF.conv2d(xt, wt, padding=1)
    yt.backward(_t(dy))
    nat = lambda a: native(bname, a, "float32")  # noqa: E731
    y = F.conv2d(nat(x), nat(w), padding=1, backend=bname)
    _same(y, yt.detach(), "conv y", atol=1e-4)
    dx, dw, _ = F.conv2d_backward(nat(dy), nat(x), nat(w), padding=1, need_db=False, backend=bname)
    _same(dx, xt.grad, "conv dx", atol=1e-4)
    _same(dw, wt.grad, "conv dweight", atol=1e-4)


@pytest.mark.parametrize("bname", BACKENDS)
@pytest.mark.parametrize("geom", [((1, 1, 1, 1), 2, 1, 1, 2), ((1, 2, 1, 3), 2, 1, 1, 2), ((2, 1, 2, 5), (2, 3), 1, 1, (3, 2))])
def test_max_pool2d_window_of_only_padding(bname, geom):
    """With dilation a window can see only padding (torch allows the geometry): y = -inf like
    torch, argmax = -1 and no gradient (torch's index there points into the padding, and its
    backward may send that window's gradient to a real pixel: cnngpu deliberately sends none)."""
    require(bname)
    shape, k, s, p, d = geom
    x = np.random.default_rng(16).standard_normal(shape).astype(np.float32).astype(np.float64)
    xt = _t(x, True)
    yt = TF.max_pool2d(xt, k, s, p, d)
    dy = np.random.default_rng(17).standard_normal(tuple(yt.shape)).astype(np.float32).astype(np.float64)
    only_pad = np.isneginf(yt.detach().numpy())
    yt.backward(_t(np.where(only_pad, 0.0, dy)))
    y, idx = F.max_pool2d(native(bname, x, "float32"), k, s, p, d, return_indices=True, backend=bname)
    _same(y, yt.detach(), "maxpool y")
    assert only_pad.any()
    np.testing.assert_array_equal(to_f64(idx)[only_pad], -1)
    dx = F.max_pool2d_backward(native(bname, dy, "float32"), idx, shape, k, s, p, d, backend=bname)
    _same(dx, xt.grad, "maxpool dx")


@pytest.mark.parametrize("bname", ["numpy", "triton"])
def test_max_pool2d_backward_rejects_out_of_range_argmax(bname):
    require(bname)
    dy = native(bname, np.ones((1, 1, 2, 2)), "float32")
    bad = np.array([[[[0, 1], [2, 16]]]], dtype=np.int64)
    idx = bad if bname == "numpy" else native(bname, bad, "int64")
    with pytest.raises(ValueError, match=r"argmax must hold flat indices in \[0, 16\).*\[0, 16\]"):
        F.max_pool2d_backward(dy, idx, (1, 1, 4, 4), 2, backend=bname)
