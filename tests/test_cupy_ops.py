"""CuPy backend (CUDA C kernels) vs the NumPy reference: batch norm (+ReLU, train/eval,
running stats), layer norm, group/instance norm, relu, linear, cross-entropy, forward and backward,
fp32/fp16/bf16, many geometries; a LeNet-5 through the layer API on backend='cupy'.

Every test runs whenever the cupy backend is available (skipped with the registry's reason
otherwise); real sizes are @gpu. The reference runs in float64 on the exact
dtype-rounded inputs; outputs are poisoned with NaN before each launch (conftest), and each test
asserts the kernels it meant ran. Backward references take the device's own forward results
(y for the ReLU mask, mean/invstd) so that a sign flip at y ~ 0 in low precision cannot blur the
comparison.
"""
import zlib

import numpy as np
import pytest

import cnngpu.functional as F
from harness import assert_close, launches, native, randn, relayout, require, rng, round_to, to_f64

pytestmark = pytest.mark.cupy


def real(*values):
    """A parameter at a real size: GPU only."""
    return pytest.param(*values, marks=pytest.mark.gpu)


DTYPES = ["float32", "float16", "bfloat16"]


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


@pytest.fixture(scope="module")
def be():
    return require("cupy")


def nat(a, dtype):
    return native("cupy", a, dtype)


# ----------------------------------------------------------------------------------------------
# batch norm (+ ReLU)
# ----------------------------------------------------------------------------------------------
BN_SHAPES = [(2, 3, 5, 7), (8, 1, 4, 4), (3, 16, 1, 1), (16, 5), (4, 3, 64, 64), real((2, 64, 28, 28))]


def _params(gen, n, dtype, mode, shape=None):
    """(weight, bias) as float64 NumPy rounded to their dtype, or (None, None); and that dtype."""
    if mode is None:
        return None, None, None
    pdt = dtype if mode == "same" else "float32"
    shape = (n,) if shape is None else shape
    w = round_to(1.0 + 0.5 * gen.standard_normal(shape), pdt)
    b = randn(gen, shape, pdt, 0.5)
    return w, b, pdt


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [None, "same", "float32"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_train(be, shape, dtype, affine, relu):
    if affine == "float32" and dtype == "float32":
        pytest.skip("same as affine='same' for float32")
    gen = rng(_seed("bn", shape, dtype, affine, relu))
    C = shape[1]
    M = int(np.prod(shape)) // C
    x = randn(gen, shape, dtype, 2.0) + round_to(3.0, dtype)       # an offset: stable statistics needed
    x = round_to(x, dtype)
    w, b, pdt = _params(gen, C, dtype, affine)
    rdt = "float32"
    rm, rv = randn(gen, (C,), rdt, 0.1), round_to(1.0 + gen.random(C), rdt)
    rm_d, rv_d = nat(rm, rdt), nat(rv, rdt)
    wd = None if w is None else nat(w, pdt)
    bd = None if b is None else nat(b, pdt)
    with launches(be, "batch_norm_fwd_welford_partials", "batch_norm_fwd_finalize_stats",
                  "batch_norm_fwd_normalize_affine_relu"):
        y, mean, invstd = F.batch_norm(nat(x, dtype), wd, bd, rm_d, rv_d, training=True, momentum=0.1,
                                       eps=1e-5, relu=relu, backend="cupy")
    rm_r, rv_r = rm.copy(), rv.copy()
    yr, mr, ir = F.batch_norm(x, w, b, rm_r, rv_r, training=True, momentum=0.1, eps=1e-5, relu=relu,
                              backend="numpy")
    assert str(y.dtype) == dtype and str(mean.dtype) == str(invstd.dtype) == "float32"
    assert_close(to_f64(mean), mr, "float32", M, "mean")
    assert_close(to_f64(invstd), ir, "float32", M, "invstd")
    assert_close(to_f64(y), yr, dtype, M, "y")
    assert_close(to_f64(rm_d), rm_r, "float32", M, "running_mean")
    assert_close(to_f64(rv_d), rv_r, "float32", M, "running_var")

    dy = randn(gen, shape, dtype)
    kernels = ["batch_norm_bwd_channel_partial_sums", "batch_norm_bwd_finalize_sums", "batch_norm_bwd_dx"]
    with launches(be, *kernels):
        dx, dw, db = F.batch_norm_backward(nat(dy, dtype), nat(x, dtype), y, wd, mean, invstd, training=True,
                                           relu=relu, backend="cupy")
    y64, m64, i64 = to_f64(y), to_f64(mean), to_f64(invstd)
    dxr, dwr, dbr = F.batch_norm_backward(dy, x, y64, w, m64, i64, training=True, relu=relu, backend="numpy")
    assert_close(to_f64(dx), dxr, dtype, M, "dx")
    if w is None:
        assert dw is None and db is None
    else:
        assert str(dw.dtype) == str(db.dtype) == pdt
        assert_close(to_f64(dw), dwr, pdt, M, "dweight")
        assert_close(to_f64(db), dbr, pdt, M, "dbias")


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [None, "same"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (16, 5), real((2, 64, 28, 28))], ids=str)
def test_batch_norm_eval(be, shape, dtype, affine, relu):
    gen = rng(_seed("bn-eval", shape, dtype, affine, relu))
    C = shape[1]
    M = int(np.prod(shape)) // C
    x = randn(gen, shape, dtype)
    w, b, pdt = _params(gen, C, dtype, affine)
    rm, rv = randn(gen, (C,), "float32", 0.3), round_to(0.5 + gen.random(C), "float32")
    wd = None if w is None else nat(w, pdt)
    bd = None if b is None else nat(b, pdt)
    rm_d, rv_d = nat(rm, "float32"), nat(rv, "float32")
    with launches(be, "batch_norm_eval_stats", "batch_norm_fwd_normalize_affine_relu"):
        y, mean, invstd = F.batch_norm(nat(x, dtype), wd, bd, rm_d, rv_d, training=False, relu=relu, backend="cupy")
    yr, mr, ir = F.batch_norm(x, w, b, rm.copy(), rv.copy(), training=False, relu=relu, backend="numpy")
    assert_close(to_f64(y), yr, dtype, 4, "y")                    # rsqrtf: a few ulp
    np.testing.assert_array_equal(to_f64(rm_d), rm)               # eval never touches running stats
    dy = randn(gen, shape, dtype)
    with launches(be, "batch_norm_bwd_dx"):
        dx, dw, db = F.batch_norm_backward(nat(dy, dtype), nat(x, dtype), y, wd, mean, invstd, training=False,
                                           relu=relu, backend="cupy")
    dxr, dwr, dbr = F.batch_norm_backward(dy, x, to_f64(y), w, to_f64(mean), to_f64(invstd), training=False,
                                          relu=relu, backend="numpy")
    assert_close(to_f64(dx), dxr, dtype, 4, "dx")
    if w is not None:
        assert_close(to_f64(dw), dwr, pdt, M, "dweight")
        assert_close(to_f64(db), dbr, pdt, M, "dbias")


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_batch_norm_strided_input(be, layout):
    gen = rng(_seed("bn-layout", layout))
    x = randn(gen, (3, 4, 6, 5), "float32")
    xd = relayout(nat(x, "float32"), layout)
    y, mean, invstd = F.batch_norm(xd, relu=True, backend="cupy")
    yr, mr, ir = F.batch_norm(x, relu=True, backend="numpy")
    assert_close(to_f64(y), yr, "float32", 90, "y")


# ----------------------------------------------------------------------------------------------
# layer norm
# ----------------------------------------------------------------------------------------------
# (x shape, normalized_ndim): warp-per-row (D <= 1024) and block-per-row (D > 1024) launches
LN_CASES = [((4, 7), 1), ((3, 5, 6), 2), ((5, 33), 1), ((2, 3, 1024), 1), ((3, 2000), 1),
            ((2, 4, 40, 40), 3), ((7,), 1), ((300, 64), 1)]


@pytest.mark.parametrize("affine", [None, "same", "float32"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LN_CASES, ids=str)
def test_layer_norm(be, case, dtype, affine):
    if affine == "float32" and dtype == "float32":
        pytest.skip("same as affine='same' for float32")
    shape, nd = case
    gen = rng(_seed("ln", case, dtype, affine))
    ns = shape[len(shape) - nd:]
    D = int(np.prod(ns))
    M = int(np.prod(shape)) // D
    x = round_to(randn(gen, shape, dtype, 2.0) + 1.5, dtype)
    w, b, pdt = _params(gen, None, dtype, affine, shape=ns)
    wd = None if w is None else nat(w, pdt)
    bd = None if b is None else nat(b, pdt)
    with launches(be, "layer_norm_fwd_rows"):
        y, mean, rstd = F.layer_norm(nat(x, dtype), ns, wd, bd, 1e-5, backend="cupy")
    yr, mr, rr = F.layer_norm(x, ns, w, b, 1e-5, backend="numpy")
    assert str(y.dtype) == dtype and tuple(mean.shape) == (M,)
    assert_close(to_f64(mean), mr, "float32", D, "mean")
    assert_close(to_f64(rstd), rr, "float32", D, "rstd")
    assert_close(to_f64(y), yr, dtype, D, "y")
    dy = randn(gen, shape, dtype)
    kernels = ["layer_norm_bwd_dx_rows"] + ([] if w is None else ["layer_norm_bwd_dwdb_partials",
                                                                  "layer_norm_bwd_dwdb_finalize"])
    with launches(be, *kernels):
        dx, dw, db = F.layer_norm_backward(nat(dy, dtype), nat(x, dtype), wd, mean, rstd, nd, backend="cupy")
    dxr, dwr, dbr = F.layer_norm_backward(dy, x, w, to_f64(mean), to_f64(rstd), nd, backend="numpy")
    assert_close(to_f64(dx), dxr, dtype, D, "dx")
    if w is None:
        assert dw is None and db is None
    else:
        assert tuple(dw.shape) == tuple(ns) and str(dw.dtype) == pdt
        assert_close(to_f64(dw), dwr, pdt, M, "dweight")
        assert_close(to_f64(db), dbr, pdt, M, "dbias")


# ----------------------------------------------------------------------------------------------
# group norm / instance norm
# ----------------------------------------------------------------------------------------------
GN_CASES = [((2, 6, 5, 4), 3), ((2, 6, 5, 4), 6), ((2, 6, 5, 4), 1), ((3, 12), 2), ((2, 8, 3, 3, 2), 4),
            ((1, 3, 7, 9), 3), real(((4, 32, 28, 28), 8)), ((2, 1, 60, 60), 1)]


@pytest.mark.parametrize("affine", [None, "same", "float32"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GN_CASES, ids=str)
def test_group_norm(be, case, dtype, affine):
    if affine == "float32" and dtype == "float32":
        pytest.skip("same as affine='same' for float32")
    shape, G = case
    gen = rng(_seed("gn", case, dtype, affine))
    N, C = shape[:2]
    L = int(np.prod(shape)) // (N * G)
    x = round_to(randn(gen, shape, dtype, 2.0) - 2.0, dtype)
    w, b, pdt = _params(gen, C, dtype, affine)
    wd = None if w is None else nat(w, pdt)
    bd = None if b is None else nat(b, pdt)
    with launches(be, "group_norm_fwd_group_block"):
        y, mean, rstd = F.group_norm(nat(x, dtype), G, wd, bd, 1e-5, backend="cupy")
    yr, mr, rr = F.group_norm(x, G, w, b, 1e-5, backend="numpy")
    assert str(y.dtype) == dtype and tuple(mean.shape) == (N, G)
    assert_close(to_f64(mean), mr, "float32", L, "mean")
    assert_close(to_f64(rstd), rr, "float32", L, "rstd")
    assert_close(to_f64(y), yr, dtype, L, "y")
    dy = randn(gen, shape, dtype)
    kernels = ["group_norm_bwd_plane_sums", "group_norm_bwd_group_coeffs", "group_norm_bwd_dx"]
    if w is not None:
        kernels.append("group_norm_bwd_dweight_dbias")
    with launches(be, *kernels):
        dx, dw, db = F.group_norm_backward(nat(dy, dtype), nat(x, dtype), G, wd, mean, rstd, backend="cupy")
    dxr, dwr, dbr = F.group_norm_backward(dy, x, G, w, to_f64(mean), to_f64(rstd), backend="numpy")
    assert_close(to_f64(dx), dxr, dtype, L, "dx")
    if w is None:
        assert dw is None and db is None
    else:
        per_channel = int(np.prod(shape)) // C
        assert str(dw.dtype) == pdt
        assert_close(to_f64(dw), dwr, pdt, per_channel, "dweight")
        assert_close(to_f64(db), dbr, pdt, per_channel, "dbias")


# ----------------------------------------------------------------------------------------------
# relu, linear, cross-entropy
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 17, 9), (64, 1000)], ids=str)
def test_relu(be, shape, dtype):
    gen = rng(_seed("relu", shape, dtype))
    x = randn(gen, shape, dtype)
    with launches(be, "relu_fwd"):
        y = F.relu(nat(x, dtype), backend="cupy")
    np.testing.assert_array_equal(to_f64(y), np.maximum(x, 0))
    dy = randn(gen, shape, dtype)
    with launches(be, "relu_bwd_mask"):
        dx = F.relu_backward(nat(dy, dtype), y, backend="cupy")
    np.testing.assert_array_equal(to_f64(dx), np.where(x > 0, dy, 0.0))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mio", [(5, 7, 3), (33, 64, 17), (1, 400, 120), real((256, 512, 10))], ids=str)
def test_linear(be, mio, dtype, bias):
    M, IN, OUT = mio
    gen = rng(_seed("linear", mio, dtype, bias))
    x = randn(gen, (M, IN), dtype)
    w = randn(gen, (OUT, IN), dtype, 1 / np.sqrt(IN))
    b = randn(gen, (OUT,), dtype) if bias else None
    with launches(be, "linear_fwd_bias_epilogue"):
        y = F.linear(nat(x, dtype), nat(w, dtype), None if b is None else nat(b, dtype), backend="cupy")
    yr = F.linear(x, w, b, backend="numpy")
    assert str(y.dtype) == dtype
    assert_close(to_f64(y), yr, dtype, IN, "y")
    dy = randn(gen, (M, OUT), dtype)
    kernels = ["linear_bias_grad_partials", "linear_bias_grad_finalize"] if bias else []
    with launches(be, *kernels):
        dx, dw, db = F.linear_backward(nat(dy, dtype), nat(x, dtype), nat(w, dtype), need_db=bias, backend="cupy")
    dxr, dwr, dbr = F.linear_backward(dy, x, w, need_db=bias, backend="numpy")
    assert_close(to_f64(dx), dxr, dtype, OUT, "dx")
    assert_close(to_f64(dw), dwr, dtype, M, "dw")
    if bias:
        assert_close(to_f64(db), dbr, dtype, M, "db")
    else:
        assert db is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mk", [(6, 10), (1, 3), real((300, 1000)), (3, 1500), real((2, 50000))], ids=str)
def test_cross_entropy(be, mk, dtype):
    M, K = mk
    gen = rng(_seed("xent", mk, dtype))
    z = randn(gen, (M, K), dtype, 3.0)
    labels = gen.integers(0, K, size=M)
    lab_d = nat(labels, "int64")
    with launches(be, "softmax_xent_fwd_rows", "softmax_xent_loss_mean"):
        loss, probs = F.cross_entropy(nat(z, dtype), lab_d, backend="cupy")
    loss_r, probs_r = F.cross_entropy(z, labels, backend="numpy")
    assert str(loss.dtype) == "float32" and loss.shape == () and str(probs.dtype) == dtype
    assert_close(to_f64(loss), loss_r, "float32", K + M, "loss")
    assert_close(to_f64(probs), probs_r, dtype, K, "probs")
    with launches(be, "softmax_xent_bwd"):
        dz = F.cross_entropy_backward(probs, lab_d, 0.7, backend="cupy")
    dzr = F.cross_entropy_backward(to_f64(probs), labels, 0.7, backend="numpy")
    assert_close(to_f64(dz), dzr, dtype, 1, "dlogits")


@pytest.mark.gpu
def test_relu_past_int32_indexing(be):
    """2**31 + 1000 float16 elements (4 GiB): the flat index must be 64-bit in the kernel."""
    import cupy
    pattern = np.linspace(-3, 3, 1000).astype(np.float16)
    reps = (2 ** 31) // 1000 + 2
    x = cupy.tile(cupy.asarray(pattern), reps)
    assert x.size > 2 ** 31
    y = F.relu(x, backend="cupy")
    want = np.maximum(pattern, 0)
    for start in (0, (2 ** 31 // 1000) * 1000, x.size - 1000):
        np.testing.assert_array_equal(cupy.asnumpy(y[start:start + 1000]), want)
    del x, y
    cupy.get_default_memory_pool().free_all_blocks()


# The layer API on backend='cupy' (LeNet-5 vs numpy) is tests/test_nn.py::test_lenet_on_device_backend_matches_numpy[cupy].
