"""NumPy reference relu, linear and softmax cross-entropy checked against torch CPU in float64
(an independent oracle), against float64 central finite differences, for stability with huge
logits, and in float32/float16 against float64 with the harness tolerances. Everything goes
through cnngpu.functional with NumPy arrays."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnngpu.functional as cf
from harness import assert_close, check_backward, launches, randn, require, rng, seed_of


@pytest.fixture(scope="module")
def be():
    return require("numpy")


def T(a, grad=False):
    if a is None:
        return None
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# ----------------------------------------------------------------------------------------------
# relu
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7,), (2, 3, 4, 5), (3, 1), (1, 1, 1, 1)])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_relu_vs_torch(be, shape, dtype):
    gen = rng(seed_of(shape, dtype))
    x = randn(gen, shape, dtype)
    flat = x.reshape(-1)
    flat[: min(2, flat.size)] = [0.0, -0.0][: min(2, flat.size)]  # the kink itself: zero gradient
    dy = randn(gen, shape, dtype)
    xl, dyl = x.astype(dtype), dy.astype(dtype)
    with launches(be, "relu_forward", "relu_backward"):
        y = cf.relu(xl)
        dx = cf.relu_backward(dyl, y)
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == shape and dx.shape == shape
    assert not np.shares_memory(y, xl) and not np.shares_memory(dx, dyl)
    xt = torch.tensor(xl, requires_grad=True)
    yt = torch.relu(xt)
    yt.backward(torch.tensor(dyl))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_relu_propagates_nan_like_torch(be):
    x = np.array([np.nan, -1.0, 2.0, np.inf, -np.inf], dtype=np.float32)
    np.testing.assert_array_equal(cf.relu(x), torch.relu(torch.tensor(x)).numpy())


# ----------------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------------
LINEAR_SHAPES = [(1, 1, 1), (5, 7, 3), (8, 16, 10), (3, 1, 4), (1, 9, 2)]


@pytest.mark.parametrize("M,K,O", LINEAR_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_vs_torch(be, M, K, O, bias):
    gen = rng(seed_of(M, K, O, bias))
    x, w = randn(gen, (M, K), "float64"), randn(gen, (O, K), "float64")
    b = randn(gen, (O,), "float64") if bias else None
    dy = randn(gen, (M, O), "float64")
    with launches(be, "linear_forward", "linear_backward"):
        y = cf.linear(x, w, b)
        dx, dw, db = cf.linear_backward(dy, x, w, need_db=bias)
    xt, wt, bt = T(x, True), T(w, True), T(b, True)
    yt = F.linear(xt, wt, bt)
    yt.backward(T(dy))
    assert y.shape == (M, O) and dx.shape == (M, K) and dw.shape == (O, K)
    assert_close(y, yt.detach().numpy(), "float64", K, "y")
    assert_close(dx, xt.grad.numpy(), "float64", O, "dx")
    assert_close(dw, wt.grad.numpy(), "float64", M, "dweight")
    if bias:
        assert_close(db, bt.grad.numpy(), "float64", M, "dbias")
    else:
        assert db is None


@pytest.mark.parametrize("M,K,O", [(3, 4, 2), (1, 5, 3)])
def test_linear_finite_differences(be, M, K, O):
    gen = rng(seed_of(M, K, O, "fd"))
    x, w, b = randn(gen, (M, K), "float64"), randn(gen, (O, K), "float64"), randn(gen, (O,), "float64")
    check_backward(cf.linear, lambda dy, x, w, b: cf.linear_backward(dy, x, w, need_db=True),
                   [x, w, b], ["dx", "dweight", "dbias"])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_linear_low_precision(be, dtype):
    gen = rng(seed_of(dtype, "linear"))
    M, K, O = 6, 40, 9
    x, w, b = randn(gen, (M, K), dtype), randn(gen, (O, K), dtype), randn(gen, (O,), dtype)
    dy = randn(gen, (M, O), dtype)
    lo = lambda a: a.astype(dtype)  # noqa: E731  (exact: values are already rounded to dtype)
    y = cf.linear(lo(x), lo(w), lo(b))
    dx, dw, db = cf.linear_backward(lo(dy), lo(x), lo(w))
    for a in (y, dx, dw, db):
        assert a.dtype == dtype
    assert_close(y, x @ w.T + b, dtype, K, "y")
    assert_close(dx, dy @ w, dtype, O, "dx")
    assert_close(dw, dy.T @ x, dtype, M, "dweight")
    assert_close(db, dy.sum(0), dtype, M, "dbias")


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy
# ----------------------------------------------------------------------------------------------
CE_SHAPES = [(1, 1), (4, 10), (7, 3), (1, 5), (16, 100)]


@pytest.mark.parametrize("M,K", CE_SHAPES)
@pytest.mark.parametrize("label_dtype", ["int64", "uint8"])       # torch's Long or Byte; int32 is refused
@pytest.mark.parametrize("dloss", [1.0, 2.5])
def test_cross_entropy_vs_torch(be, M, K, label_dtype, dloss):
    gen = rng(seed_of(M, K, label_dtype, dloss))
    z = randn(gen, (M, K), "float64", scale=3.0)
    labels = gen.integers(0, K, size=M).astype(label_dtype)
    with launches(be, "cross_entropy_forward", "cross_entropy_backward"):
        loss, probs = cf.cross_entropy(z, labels, return_probs=True)
        dz = cf.cross_entropy_backward(probs, labels, dloss)
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float64
    assert probs.shape == (M, K) and probs.dtype == np.float64 and dz.dtype == np.float64
    assert not np.shares_memory(dz, probs)
    zt = T(z, True)
    lt = F.cross_entropy(zt, torch.tensor(labels.astype(np.int64)))
    lt.backward(torch.tensor(dloss, dtype=torch.float64))
    assert_close(loss, lt.detach().numpy(), "float64", M * K, "loss")
    assert_close(probs, torch.softmax(T(z), dim=1).numpy(), "float64", K, "probs")
    assert_close(dz, zt.grad.numpy(), "float64", K, "dlogits")


@pytest.mark.parametrize("M,K", [(3, 4), (1, 6), (5, 2)])
def test_cross_entropy_finite_differences(be, M, K):
    gen = rng(seed_of(M, K, "fd"))
    z = randn(gen, (M, K), "float64", scale=2.0)
    labels = gen.integers(0, K, size=M)
    dloss = 1.7

    def forward(z):
        return dloss * cf.cross_entropy(z, labels, return_probs=True)[0]

    def backward(dy, z):
        return (cf.cross_entropy_backward(cf.cross_entropy(z, labels, return_probs=True)[1], labels, dloss * float(dy)),)

    check_backward(forward, backward, [z], ["dlogits"])


def test_cross_entropy_stable_with_huge_logits(be):
    """Logits far beyond exp's float32 range: max subtraction and log-sum-exp keep it finite."""
    gen = rng(41)
    M, K = 6, 12
    z32 = (gen.standard_normal((M, K)) * 30 + 100).astype(np.float32)
    z32[0] += 1e4
    z32[1, 3] = 3e4  # one dominant class: probability 1 (to float precision), loss ~0 or huge
    labels = gen.integers(0, K, size=M)
    labels[1] = 3
    with np.errstate(over="ignore"):
        assert not np.all(np.isfinite(np.exp(z32))), "logits too small to overflow a naive softmax"
    loss, probs = cf.cross_entropy(z32, labels, return_probs=True)
    dz = cf.cross_entropy_backward(probs, labels, 1.0)
    z = z32.astype(np.float64)
    zt = T(z, True)
    lt = F.cross_entropy(zt, torch.tensor(labels))
    lt.backward()
    assert loss.dtype == np.float32 and np.isfinite(loss)
    assert np.all(np.isfinite(probs)) and np.all(np.isfinite(dz))
    assert_close(loss, lt.detach().numpy(), "float32", M * K, "loss")
    assert_close(probs, torch.softmax(T(z), dim=1).numpy(), "float32", K, "probs")
    assert_close(dz, zt.grad.numpy(), "float32", K, "dlogits")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cross_entropy_low_precision(be, dtype):
    gen = rng(seed_of(dtype, "ce"))
    M, K = 9, 20
    z = randn(gen, (M, K), dtype, scale=2.0)
    labels = gen.integers(0, K, size=M)
    loss, probs = cf.cross_entropy(z.astype(dtype), labels, return_probs=True)
    dz = cf.cross_entropy_backward(probs, labels, 0.5)
    assert loss.dtype == np.float32 and loss.shape == ()
    assert probs.dtype == dtype and dz.dtype == dtype
    loss64, probs64 = cf.cross_entropy(z, labels, return_probs=True)
    # the oracle backward runs in float64 on the float64 probabilities
    dz64 = cf.cross_entropy_backward(probs64, labels, 0.5)
    assert_close(loss, loss64, "float32", M * K, "loss")
    assert_close(probs, probs64, dtype, K, "probs")
    assert_close(dz, dz64, dtype, K, "dlogits")


def test_relu_0d_input_stays_an_array():
    """A 0-d input gives 0-d arrays (not NumPy scalars), so the result can be fed back in."""
    x = np.asarray(np.float32(-1.5))
    y = cf.relu(x, backend="numpy")
    assert isinstance(y, np.ndarray) and y.shape == () and y == 0
    dx = cf.relu_backward(np.asarray(np.float32(2.0)), np.asarray(cf.relu(np.asarray(np.float32(3.0)))))
    assert isinstance(dx, np.ndarray) and dx.shape == () and dx == 2.0
    assert isinstance(cf.relu_backward(np.asarray(np.float32(2.0)), y), np.ndarray)
