"""NumPy reference normalization ops (batch norm +ReLU, layer norm, group/instance norm) checked
against torch CPU in float64 (an independent oracle), against float64 central finite differences
of the reference forward itself, for numerical stability under a large common offset, and in
float32/float16 against float64 with the harness tolerances. Everything goes through
cnngpu.functional with NumPy arrays."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnngpu.functional as cf
from harness import assert_close, check_backward, launches, randn, require, rng, round_to, seed_of, tolerance

EPS = 1e-5


@pytest.fixture(scope="module")
def be():
    return require("numpy")


def T(a, grad=False):
    """float64 NumPy -> float64 torch tensor (None passes through)."""
    if a is None:
        return None
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def G(t):
    return None if t is None else t.grad.numpy()


def close64(actual, expected, n, what, scale=0.0):
    """assert_close in float64; ``scale`` (>= 0) widens the bound to tol * (|expected| + scale)
    for results that cancel to far below the size of the terms they are made of (norm dx with
    2 values per group is analytically ~0)."""
    assert actual is not None, f"{what}: got None"
    if scale:
        err = np.abs(np.asarray(actual) - np.asarray(expected))
        tol = tolerance("float64", n)
        assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
        assert np.all(err <= tol * (np.abs(expected) + scale)), f"{what}: max error {err.max():.3e} > {tol:.1e} * scale"
    else:
        assert_close(actual, expected, "float64", n, what)


def scales(x, inv, w, dy, n):
    """Sizes of the terms each norm output is made of, for close64(scale=...): a result that
    cancels (x - mean with close values, dx with 2 values per group, a sum of +-terms) is judged
    against its terms, not against its own tiny value. ax = max|x|, iv = max invstd."""
    ax, iv = float(np.max(np.abs(x))), float(np.max(inv))
    aw = 1.0 if w is None else float(np.max(np.abs(w)))
    rdy = float(np.sqrt(np.mean(np.asarray(dy) ** 2)))
    return {"y": ax * iv * aw, "mean": ax, "inv": ax * iv * iv, "dx": rdy * iv * aw * max(1.0, ax * iv),
            "dsum": math.sqrt(n) * rdy * max(1.0, ax * iv)}


def bn_axes(ndim):
    return (0,) if ndim == 2 else (0, 2, 3)


def bn_count(shape):
    return int(np.prod(shape)) // shape[1]


# ----------------------------------------------------------------------------------------------
# batch norm vs torch (float64)
# ----------------------------------------------------------------------------------------------
BN_SHAPES = [(2, 3, 4, 5), (1, 3, 2, 7), (3, 1, 3, 3), (4, 5, 1, 1), (2, 7, 3, 2), (6, 3), (2, 5), (9, 1)]


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("running", [True, False])
def test_batch_norm_train_vs_torch(be, shape, affine, relu, running):
    gen = rng(seed_of(shape, affine, relu, running))
    C = shape[1]
    x = randn(gen, shape, "float64", scale=2.0) + 0.5
    w = randn(gen, (C,), "float64") if affine else None
    b = randn(gen, (C,), "float64") if affine else None
    rm = randn(gen, (C,), "float64") if running else None
    rv = (gen.random(C) + 0.5) if running else None
    dy = randn(gen, shape, "float64")
    momentum = 0.3
    rm0, rv0 = (rm.copy(), rv.copy()) if running else (None, None)

    with launches(be, "batch_norm_forward", "batch_norm_backward"):
        y, mean, invstd = cf.batch_norm(x, rm, rv, w, b, training=True, momentum=momentum, eps=EPS, relu=relu, return_stats=True)
        dx, dw, db = cf.batch_norm_backward(dy, x, y, w, mean, invstd, training=True, relu=relu)

    xt, wt, bt = T(x, True), T(w, affine), T(b, affine)
    rmt, rvt = T(rm0), T(rv0)
    yt = F.batch_norm(xt, rmt, rvt, wt, bt, training=True, momentum=momentum, eps=EPS)
    if relu:
        yt = F.relu(yt)
    yt.backward(T(dy))
    var_t, mean_t = torch.var_mean(xt.detach(), dim=bn_axes(len(shape)), unbiased=False)
    n = bn_count(shape)

    assert y.dtype == np.float64 and mean.dtype == np.float64 and invstd.dtype == np.float64
    assert mean.shape == (C,) and invstd.shape == (C,)
    assert not np.shares_memory(y, x)
    sc = scales(x, invstd, w, dy, n)
    close64(y, yt.detach().numpy(), n, "y", scale=sc["y"])
    close64(mean, mean_t.numpy(), n, "mean", scale=sc["mean"])
    close64(invstd, 1.0 / np.sqrt(var_t.numpy() + EPS), n, "invstd", scale=sc["inv"])
    if running:
        close64(rm, rmt.numpy(), n, "running_mean (updated in place)", scale=sc["mean"])
        close64(rv, rvt.numpy(), n, "running_var (updated in place, unbiased)", scale=sc["mean"] ** 2)
        assert not np.allclose(rm, rm0), "running_mean was not updated"
    close64(dx, G(xt), n, "dx", scale=sc["dx"])
    if affine:
        close64(dw, G(wt), n, "dweight", scale=sc["dsum"])
        close64(db, G(bt), n, "dbias", scale=sc["dsum"])
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 3, 2), (5, 4), (1, 6)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_eval_vs_torch(be, shape, affine, relu):
    gen = rng(seed_of(shape, affine, relu, "eval"))
    C = shape[1]
    x = randn(gen, shape, "float64")
    w = randn(gen, (C,), "float64") if affine else None
    b = randn(gen, (C,), "float64") if affine else None
    rm = randn(gen, (C,), "float64") * 0.5
    rv = gen.random(C) + 0.5
    dy = randn(gen, shape, "float64")
    rm0, rv0 = rm.copy(), rv.copy()

    # momentum is unused in eval: any number is accepted, as torch does (its OpInfo samples pass -1.2)
    y, mean, invstd = cf.batch_norm(x, rm, rv, w, b, training=False, momentum=-1.2, eps=EPS, relu=relu,
                                    return_stats=True)
    dx, dw, db = cf.batch_norm_backward(dy, x, y, w, mean, invstd, training=False, relu=relu)

    np.testing.assert_array_equal(rm, rm0, "eval must not touch running_mean")
    np.testing.assert_array_equal(rv, rv0, "eval must not touch running_var")
    assert not np.shares_memory(mean, rm), "mean must be a fresh array, not running_mean itself"
    np.testing.assert_array_equal(mean, rm0)
    close64(invstd, 1.0 / np.sqrt(rv0 + EPS), 1, "invstd")

    xt, wt, bt = T(x, True), T(w, affine), T(b, affine)
    yt = F.batch_norm(xt, T(rm0), T(rv0), wt, bt, training=False, eps=EPS)
    if relu:
        yt = F.relu(yt)
    yt.backward(T(dy))
    close64(y, yt.detach().numpy(), 1, "y")
    close64(dx, G(xt), 1, "dx")
    if affine:
        n = bn_count(shape)
        sc = scales(x, invstd, w, dy, n)
        close64(dw, G(wt), n, "dweight", scale=sc["dsum"])
        close64(db, G(bt), n, "dbias", scale=sc["dsum"])
    else:
        assert dw is None and db is None


def test_batch_norm_running_stats_over_steps(be):
    """Several training steps with different momenta track torch's running statistics."""
    gen = rng(7)
    C = 3
    rm, rv = np.zeros(C), np.ones(C)
    rmt, rvt = T(rm), T(rv)
    for step, m in enumerate([0.1, 0.5, 1.0, 0.0, 0.25]):
        x = randn(gen, (3, C, 2, 3), "float64", scale=step + 1.0) + step
        cf.batch_norm(x, rm, rv, None, None, training=True, momentum=m, eps=EPS, return_stats=True)
        F.batch_norm(T(x), rmt, rvt, None, None, training=True, momentum=m, eps=EPS)
        close64(rm, rmt.numpy(), 18, f"running_mean after step {step}")
        close64(rv, rvt.numpy(), 18, f"running_var after step {step}")


def test_batch_norm_relu_mask(be):
    """With relu=True only positions where y > 0 pass gradient (eval mode: dx is local)."""
    gen = rng(11)
    shape, C = (2, 3, 4, 4), 3
    x = randn(gen, shape, "float64")
    w, b = randn(gen, (C,), "float64"), randn(gen, (C,), "float64")
    rm, rv = randn(gen, (C,), "float64"), gen.random(C) + 0.5
    y, mean, invstd = cf.batch_norm(x, rm, rv, w, b, training=False, relu=True, return_stats=True)
    assert (y == 0).any() and (y > 0).any()
    dy = randn(gen, shape, "float64")
    dx_off, _, _ = cf.batch_norm_backward(np.where(y > 0, 0.0, dy), x, y, w, mean, invstd, training=False, relu=True)
    np.testing.assert_array_equal(dx_off, 0.0)
    dx_on, _, _ = cf.batch_norm_backward(np.where(y > 0, dy, 0.0), x, y, w, mean, invstd, training=False, relu=True)
    dx_plain, _, _ = cf.batch_norm_backward(np.where(y > 0, dy, 0.0), x, y, w, mean, invstd, training=False,
                                           relu=False)
    close64(dx_on, dx_plain, 1, "dx on the active set")


# ----------------------------------------------------------------------------------------------
# layer norm / group norm / instance norm vs torch (float64)
# ----------------------------------------------------------------------------------------------
LN_CASES = [((3, 4, 5, 6), 1), ((3, 4, 5, 6), 2), ((3, 4, 5, 6), 3), ((5, 7), 1), ((6,), 1), ((2, 3, 1, 4), 2),
            ((1, 9), 1), ((4, 1), 1)]


@pytest.mark.parametrize("shape,nd", LN_CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_vs_torch(be, shape, nd, affine):
    gen = rng(seed_of(shape, nd, affine))
    ns = shape[len(shape) - nd:]
    x = randn(gen, shape, "float64", scale=3.0) - 1.0
    w = randn(gen, ns, "float64") if affine else None
    b = randn(gen, ns, "float64") if affine else None
    dy = randn(gen, shape, "float64")
    with launches(be, "layer_norm_forward", "layer_norm_backward"):
        y, mean, rstd = cf.layer_norm(x, ns, w, b, eps=EPS, return_stats=True)
        dx, dw, db = cf.layer_norm_backward(dy, x, w, mean, rstd, nd)

    xt, wt, bt = T(x, True), T(w, affine), T(b, affine)
    yt = F.layer_norm(xt, ns, wt, bt, eps=EPS)
    yt.backward(T(dy))
    dims = tuple(range(len(shape) - nd, len(shape)))
    var_t, mean_t = torch.var_mean(xt.detach(), dim=dims, unbiased=False)
    M, D = int(np.prod(shape[:len(shape) - nd])), int(np.prod(ns))
    assert mean.shape == (M,) and rstd.shape == (M,) and y.shape == shape
    sc = scales(x, rstd, w, dy, M)
    close64(y, yt.detach().numpy(), D, "y", scale=sc["y"])
    close64(mean, mean_t.numpy().reshape(M), D, "mean", scale=sc["mean"])
    close64(rstd, (1.0 / np.sqrt(var_t.numpy() + EPS)).reshape(M), D, "rstd", scale=sc["inv"])
    close64(dx, G(xt), D, "dx", scale=sc["dx"])
    if affine:
        assert dw.shape == ns and db.shape == ns
        close64(dw, G(wt), M, "dweight", scale=sc["dsum"])
        close64(db, G(bt), M, "dbias", scale=sc["dsum"])
    else:
        assert dw is None and db is None


GN_CASES = [((2, 6, 3, 5), 1), ((2, 6, 3, 5), 2), ((2, 6, 3, 5), 3), ((2, 6, 3, 5), 6), ((3, 4), 2),
            ((2, 6, 7), 3), ((1, 4, 2, 3, 2), 2), ((1, 1, 4, 4), 1), ((3, 5, 1, 1), 5)]


@pytest.mark.parametrize("shape,groups", GN_CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_vs_torch(be, shape, groups, affine):
    gen = rng(seed_of(shape, groups, affine))
    N, C = shape[:2]
    x = randn(gen, shape, "float64", scale=2.0) + 0.7
    w = randn(gen, (C,), "float64") if affine else None
    b = randn(gen, (C,), "float64") if affine else None
    dy = randn(gen, shape, "float64")
    with launches(be, "group_norm_forward", "group_norm_backward"):
        y, mean, rstd = cf.group_norm(x, groups, w, b, eps=EPS, return_stats=True)
        dx, dw, db = cf.group_norm_backward(dy, x, groups, w, mean, rstd)

    xt, wt, bt = T(x, True), T(w, affine), T(b, affine)
    yt = F.group_norm(xt, groups, wt, bt, eps=EPS)
    yt.backward(T(dy))
    var_t, mean_t = torch.var_mean(xt.detach().reshape(N, groups, -1), dim=2, unbiased=False)
    L = int(np.prod(shape)) // (N * groups)
    assert mean.shape == (N, groups) and rstd.shape == (N, groups)
    n = int(np.prod(shape)) // C
    sc = scales(x, rstd, w, dy, n)
    close64(y, yt.detach().numpy(), L, "y", scale=sc["y"])
    close64(mean, mean_t.numpy(), L, "mean", scale=sc["mean"])
    close64(rstd, 1.0 / np.sqrt(var_t.numpy() + EPS), L, "rstd", scale=sc["inv"])
    close64(dx, G(xt), L, "dx", scale=sc["dx"])
    if affine:
        close64(dw, G(wt), n, "dweight", scale=sc["dsum"])
        close64(db, G(bt), n, "dbias", scale=sc["dsum"])
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 3, 3), (3, 5, 2, 7)])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_is_group_norm_with_C_groups(be, shape, affine):
    gen = rng(seed_of(shape, affine, "in"))
    C = shape[1]
    x = randn(gen, shape, "float64")
    w = randn(gen, (C,), "float64") if affine else None
    b = randn(gen, (C,), "float64") if affine else None
    dy = randn(gen, shape, "float64")
    y, mean, rstd = cf.group_norm(x, C, w, b, eps=EPS, return_stats=True)
    dx, dw, db = cf.group_norm_backward(dy, x, C, w, mean, rstd)
    xt, wt, bt = T(x, True), T(w, affine), T(b, affine)
    yt = F.instance_norm(xt, weight=wt, bias=bt, eps=EPS)
    yt.backward(T(dy))
    L = shape[2] * shape[3]
    sc = scales(x, rstd, w, dy, shape[0] * L)
    close64(y, yt.detach().numpy(), L, "y", scale=sc["y"])
    close64(dx, G(xt), L, "dx", scale=sc["dx"])
    if affine:
        close64(dw, G(wt), shape[0] * L, "dweight", scale=sc["dsum"])
        close64(db, G(bt), shape[0] * L, "dbias", scale=sc["dsum"])


# ----------------------------------------------------------------------------------------------
# float64 central finite differences of the reference forward (torch.autograd.gradcheck: the full
# Jacobian from the reference backward, one call per output element)
# ----------------------------------------------------------------------------------------------
def _inputs_away_from_kink(shape, affine, pre_activation, margin=0.02):
    """Draw x, w, b until every pre-activation lies at least ``margin`` from the ReLU kink
    (so central differences with h = 1e-6 never cross it) and some are negative."""
    C = shape[1]
    for seed in range(200):
        gen = rng(1000 + seed)
        x = randn(gen, shape, "float64")
        w = randn(gen, (C,), "float64") if affine else None
        b = randn(gen, (C,), "float64") if affine else None
        z = pre_activation(x, w, b)
        if np.min(np.abs(z)) > margin and (z < 0).any():
            return x, w, b
    raise AssertionError("no seed gave pre-activations away from 0")


@pytest.mark.parametrize("shape", [(2, 3, 2, 3), (4, 2), (1, 2, 3, 3)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_train_finite_differences(be, shape, relu, affine):
    x, w, b = _inputs_away_from_kink(
        shape, affine, lambda x, w, b: cf.batch_norm(x, None, None, w, b, training=True, eps=EPS, return_stats=True)[0])

    def fwd(x, w=None, b=None):
        return cf.batch_norm(x, None, None, w, b, training=True, eps=EPS, relu=relu, return_stats=True)[0]

    def bwd(dy, x, w=None, b=None):
        y, mean, invstd = cf.batch_norm(x, None, None, w, b, training=True, eps=EPS, relu=relu, return_stats=True)
        dx, dw, db = cf.batch_norm_backward(dy, x, y, w, mean, invstd, training=True, relu=relu)
        return (dx, dw, db) if affine else (dx,)

    arrays, names = ([x, w, b], ["dx", "dweight", "dbias"]) if affine else ([x], ["dx"])
    check_backward(fwd, bwd, arrays, names)


@pytest.mark.parametrize("shape", [(2, 3, 2, 3), (3, 2)])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_eval_finite_differences(be, shape, relu):
    C = shape[1]
    gen = rng(5)
    rm, rv = randn(gen, (C,), "float64"), gen.random(C) + 0.5
    x, w, b = _inputs_away_from_kink(
        shape, True, lambda x, w, b: cf.batch_norm(x, rm, rv, w, b, training=False, eps=EPS, return_stats=True)[0])
    rm0, rv0 = rm.copy(), rv.copy()

    def fwd(x, w, b):
        return cf.batch_norm(x, rm, rv, w, b, training=False, eps=EPS, relu=relu, return_stats=True)[0]

    def bwd(dy, x, w, b):
        y, mean, invstd = cf.batch_norm(x, rm, rv, w, b, training=False, eps=EPS, relu=relu, return_stats=True)
        return cf.batch_norm_backward(dy, x, y, w, mean, invstd, training=False, relu=relu)

    check_backward(fwd, bwd, [x, w, b], ["dx", "dweight", "dbias"])
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)


@pytest.mark.parametrize("shape,nd", [((2, 3, 4), 1), ((2, 3, 4), 2), ((2, 2, 2, 3), 3), ((5,), 1)])
def test_layer_norm_finite_differences(be, shape, nd):
    gen = rng(seed_of(shape, nd, "fd"))
    ns = shape[len(shape) - nd:]
    x, w, b = randn(gen, shape, "float64"), randn(gen, ns, "float64"), randn(gen, ns, "float64")

    def fwd(x, w, b):
        return cf.layer_norm(x, ns, w, b, eps=EPS, return_stats=True)[0]

    def bwd(dy, x, w, b):
        _, mean, rstd = cf.layer_norm(x, ns, w, b, eps=EPS, return_stats=True)
        return cf.layer_norm_backward(dy, x, w, mean, rstd, nd)

    check_backward(fwd, bwd, [x, w, b], ["dx", "dweight", "dbias"])


@pytest.mark.parametrize("shape,groups", [((2, 4, 2, 3), 2), ((2, 3, 5), 3), ((1, 4, 3), 1), ((3, 6), 2)])
def test_group_norm_finite_differences(be, shape, groups):
    gen = rng(seed_of(shape, groups, "fd"))
    C = shape[1]
    x, w, b = randn(gen, shape, "float64"), randn(gen, (C,), "float64"), randn(gen, (C,), "float64")

    def fwd(x, w, b):
        return cf.group_norm(x, groups, w, b, eps=EPS, return_stats=True)[0]

    def bwd(dy, x, w, b):
        _, mean, rstd = cf.group_norm(x, groups, w, b, eps=EPS, return_stats=True)
        return cf.group_norm_backward(dy, x, groups, w, mean, rstd)

    check_backward(fwd, bwd, [x, w, b], ["dx", "dweight", "dbias"])


# ----------------------------------------------------------------------------------------------
# numerical stability: a large common offset in float32
# ----------------------------------------------------------------------------------------------
OFFSET = 1e4


def _naive_var32(x32, axis):
    """E[x^2] - E[x]^2 in float32: what the reference must NOT do (used to show the test bites)."""
    m = x32.mean(axis=axis, dtype=np.float32)
    return (x32 * x32).mean(axis=axis, dtype=np.float32) - m * m


def _y_tol(invstd):
    # (x - mean) loses what float32 cannot resolve at the offset: a few ulps of OFFSET, times invstd
    return 8 * 2.0 ** -24 * OFFSET * float(np.max(invstd))


def test_batch_norm_stable_with_large_offset(be):
    gen = rng(21)
    shape = (8, 3, 6, 6)
    x32 = (OFFSET + gen.standard_normal(shape) * np.array([1.0, 0.1, 3.0]).reshape(1, 3, 1, 1)).astype(np.float32)
    x = x32.astype(np.float64)
    var_true = x.var(axis=(0, 2, 3))
    n = bn_count(shape)
    assert np.max(np.abs(_naive_var32(x32, (0, 2, 3)) - var_true) / var_true) > 0.1, "offset too small to bite"
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y, mean, invstd = cf.batch_norm(x32, rm, rv, None, None, training=True, momentum=1.0, eps=EPS, return_stats=True)
    assert y.dtype == np.float32 and invstd.dtype == np.float32
    np.testing.assert_allclose(invstd, 1.0 / np.sqrt(var_true + EPS), rtol=1e-5, err_msg="invstd")
    np.testing.assert_allclose(rv, var_true * n / (n - 1), rtol=1e-5, err_msg="running_var")
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-6, err_msg="mean")
    y_true = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(var_true + EPS).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, y_true, rtol=0, atol=_y_tol(invstd), err_msg="y")


def test_layer_norm_and_group_norm_stable_with_large_offset(be):
    gen = rng(22)
    x32 = (OFFSET + gen.standard_normal((6, 4, 25)) * 0.5).astype(np.float32)
    x = x32.astype(np.float64)
    var_ln = x.var(axis=2)
    assert np.max(np.abs(_naive_var32(x32, 2) - var_ln) / var_ln) > 0.1, "offset too small to bite"
    y, mean, rstd = cf.layer_norm(x32, (25,), eps=EPS, return_stats=True)
    np.testing.assert_allclose(rstd, (1.0 / np.sqrt(var_ln + EPS)).reshape(-1), rtol=1e-5, err_msg="LN rstd")
    y_true = (x - x.mean(axis=2, keepdims=True)) / np.sqrt(var_ln + EPS)[..., None]
    np.testing.assert_allclose(y, y_true, rtol=0, atol=_y_tol(rstd), err_msg="LN y")

    var_gn = x.reshape(6, 2, 50).var(axis=2)
    y, mean, rstd = cf.group_norm(x32, 2, eps=EPS, return_stats=True)
    np.testing.assert_allclose(rstd, 1.0 / np.sqrt(var_gn + EPS), rtol=1e-5, err_msg="GN rstd")
    y_true = ((x.reshape(6, 2, 50) - x.reshape(6, 2, 50).mean(axis=2, keepdims=True))
              / np.sqrt(var_gn + EPS)[..., None]).reshape(x.shape)
    np.testing.assert_allclose(y, y_true, rtol=0, atol=_y_tol(rstd), err_msg="GN y")


# ----------------------------------------------------------------------------------------------
# float32 / float16 vs float64 (same rounded inputs), harness tolerances
# ----------------------------------------------------------------------------------------------
def _low(a, dtype):
    return None if a is None else np.asarray(a, dtype=dtype)


@pytest.mark.parametrize("dtype,pdtype", [("float32", "float32"), ("float16", "float16"), ("float16", "float32")])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_low_precision(be, dtype, pdtype, training, relu):
    gen = rng(seed_of(dtype, pdtype, training, relu))
    shape, C = (4, 3, 5, 6), 3
    x = round_to(randn(gen, shape, "float64") + 0.25, dtype)
    w, b = randn(gen, (C,), pdtype), randn(gen, (C,), pdtype)
    rm, rv = round_to(0.3 * gen.standard_normal(C), pdtype), round_to(gen.random(C) + 0.5, pdtype)
    dy = randn(gen, shape, dtype)
    n = bn_count(shape)
    stat_dt = "float32"

    rm_lo, rv_lo = _low(rm, pdtype), _low(rv, pdtype)
    y, mean, invstd = cf.batch_norm(_low(x, dtype), rm_lo, rv_lo, _low(w, pdtype), _low(b, pdtype),
                                    training=training, momentum=0.2, eps=EPS, relu=relu, return_stats=True)
    dx, dw, db = cf.batch_norm_backward(_low(dy, dtype), _low(x, dtype), y, _low(w, pdtype), mean, invstd,
                                        training=training, relu=relu)
    assert y.dtype == dtype and dx.dtype == dtype
    assert mean.dtype == stat_dt and invstd.dtype == stat_dt
    assert dw.dtype == pdtype and db.dtype == pdtype
    assert rm_lo.dtype == pdtype and rv_lo.dtype == pdtype

    rm64, rv64 = rm.copy(), rv.copy()
    y64, mean64, invstd64 = cf.batch_norm(x, rm64, rv64, w, b, training=training, momentum=0.2, eps=EPS,
                                          relu=relu, return_stats=True)
    # backward oracle evaluated at the low-precision run's own y (same ReLU mask): float64 math
    dx64, dw64, db64 = cf.batch_norm_backward(dy, x, y.astype(np.float64), w, mean64, invstd64,
                                              training=training, relu=relu)
    assert_close(y, y64, dtype, n, "y")
    assert_close(mean, mean64, stat_dt, n, "mean")
    assert_close(invstd, invstd64, stat_dt, n, "invstd")
    assert_close(rm_lo, rm64, pdtype, n, "running_mean")
    assert_close(rv_lo, rv64, pdtype, n, "running_var")
    assert_close(dx, dx64, dtype, n, "dx")
    assert_close(dw, dw64, pdtype, n, "dweight")
    assert_close(db, db64, pdtype, n, "dbias")


@pytest.mark.parametrize("dtype,pdtype", [("float32", "float32"), ("float16", "float16"), ("float16", "float32")])
def test_layer_norm_and_group_norm_low_precision(be, dtype, pdtype):
    gen = rng(seed_of(dtype, pdtype, "lngn"))
    shape = (3, 4, 5, 6)
    x, dy = round_to(randn(gen, shape, "float64") - 0.5, dtype), randn(gen, shape, dtype)
    # layer norm over the last two dims
    ns = (5, 6)
    w, b = randn(gen, ns, pdtype), randn(gen, ns, pdtype)
    y, mean, rstd = cf.layer_norm(_low(x, dtype), ns, _low(w, pdtype), _low(b, pdtype), eps=EPS, return_stats=True)
    dx, dw, db = cf.layer_norm_backward(_low(dy, dtype), _low(x, dtype), _low(w, pdtype), mean, rstd, 2)
    assert y.dtype == dtype and dx.dtype == dtype and mean.dtype == "float32" and dw.dtype == pdtype
    y64, mean64, rstd64 = cf.layer_norm(x, ns, w, b, eps=EPS, return_stats=True)
    dx64, dw64, db64 = cf.layer_norm_backward(dy, x, w, mean64, rstd64, 2)
    assert_close(y, y64, dtype, 30, "LN y")
    assert_close(rstd, rstd64, "float32", 30, "LN rstd")
    assert_close(dx, dx64, dtype, 30, "LN dx")
    assert_close(dw, dw64, pdtype, 12, "LN dweight")
    assert_close(db, db64, pdtype, 12, "LN dbias")
    # group norm, 2 groups
    C = shape[1]
    w, b = randn(gen, (C,), pdtype), randn(gen, (C,), pdtype)
    y, mean, rstd = cf.group_norm(_low(x, dtype), 2, _low(w, pdtype), _low(b, pdtype), eps=EPS, return_stats=True)
    dx, dw, db = cf.group_norm_backward(_low(dy, dtype), _low(x, dtype), 2, _low(w, pdtype), mean, rstd)
    assert y.dtype == dtype and dx.dtype == dtype and rstd.dtype == "float32" and db.dtype == pdtype
    y64, mean64, rstd64 = cf.group_norm(x, 2, w, b, eps=EPS, return_stats=True)
    dx64, dw64, db64 = cf.group_norm_backward(dy, x, 2, w, mean64, rstd64)
    assert_close(y, y64, dtype, 60, "GN y")
    assert_close(mean, mean64, "float32", 60, "GN mean")
    assert_close(dx, dx64, dtype, 60, "GN dx")
    assert_close(dw, dw64, pdtype, 90, "GN dweight")
    assert_close(db, db64, pdtype, 90, "GN dbias")


# ----------------------------------------------------------------------------------------------
# strided inputs
# ----------------------------------------------------------------------------------------------
def test_norms_accept_channels_last_views(be):
    gen = rng(31)
    nhwc = randn(gen, (2, 4, 5, 6), "float64")
    x = nhwc.transpose(0, 3, 1, 2)  # (2, 6, 4, 5), channels-last strides
    assert not x.flags.c_contiguous
    xc = np.ascontiguousarray(x)
    dy = randn(gen, x.shape, "float64")
    w, b = randn(gen, (6,), "float64"), randn(gen, (6,), "float64")
    for name, run in [
        ("bn", lambda a: cf.batch_norm(a, None, None, w, b, training=True, relu=True, return_stats=True)),
        ("gn", lambda a: cf.group_norm(a, 3, w, b, return_stats=True)),
        ("ln", lambda a: cf.layer_norm(a, (4, 5), return_stats=True)),
    ]:
        for got, want in zip(run(x), run(xc)):
            close64(got, want, 40, f"{name} forward on a channels-last view")
    y, m, i = cf.batch_norm(xc, None, None, w, b, training=True, relu=True, return_stats=True)
    for got, want in zip(cf.batch_norm_backward(dy, x, y, w, m, i, training=True, relu=True),
                         cf.batch_norm_backward(dy, xc, y, w, m, i, training=True, relu=True)):
        close64(got, want, 40, "bn backward on a channels-last view")
    _, m, r = cf.group_norm(xc, 3, w, b, return_stats=True)
    for got, want in zip(cf.group_norm_backward(dy, x, 3, w, m, r), cf.group_norm_backward(dy, xc, 3, w, m, r)):
        close64(got, want, 40, "gn backward on a channels-last view")
