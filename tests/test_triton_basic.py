"""Triton relu, linear and softmax cross-entropy, forward and backward, vs the NumPy reference
(float64 on the same dtype-rounded inputs). Under TRITON_INTERPRET=1 on CPU tensors; @gpu tests
at real sizes and for bf16 GEMMs (tl.dot on bf16 operands is wrong in the triton 3.9 interpreter)."""
import zlib

import numpy as np
import pytest

import cnngpu.functional as F
from harness import assert_close, launches, native, randn, require, rng, to_f64

torch = pytest.importorskip("torch")


def _seed(*parts) -> int:
    """A per-case seed that is stable across processes (str hash is randomized)."""
    return zlib.crc32(repr(parts).encode())


@pytest.fixture(scope="module")
def be():
    return require("triton")


def _t(a, dtype):
    return native("triton", np.asarray(a, dtype=np.float64), dtype)


def _labels(a, dtype="int64"):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.from_numpy(np.asarray(a).astype(dtype)).to(dev)


# ------------------------------------------------------------------------------------------------
# relu
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", [(7,), (3, 1029), (2, 3, 5, 7), (2, 3, 4, 5, 3), ()], ids=str)
def test_relu_fwd_bwd(be, shape, dtype):
    gen = rng(_seed("relu", shape, dtype))
    x = np.asarray(randn(gen, shape, dtype))                # (0-d: keep an array, not a scalar)
    with launches(be, "relu_fwd_elementwise"):
        y = F.relu(_t(x, dtype), backend="triton")
    assert str(y.dtype).endswith(dtype)
    yr = np.asarray(F.relu(x, backend="numpy"))   # (numpy returns a scalar for 0-d x)
    np.testing.assert_array_equal(to_f64(y), yr)          # a select is exact
    dy = np.asarray(randn(gen, shape, dtype))
    with launches(be, "relu_bwd_mask"):
        dx = F.relu_backward(_t(dy, dtype), y, backend="triton")
    np.testing.assert_array_equal(to_f64(dx), F.relu_backward(dy, yr, backend="numpy"))


def _layout(t, kind):
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "sliced":
        big = torch.zeros(t.shape[0], t.shape[1] * 2, t.shape[2], t.shape[3] * 3, dtype=t.dtype, device=t.device)
        big[:, ::2, :, ::3] = t
        return big[:, ::2, :, ::3]
    if kind == "transposed":
        return t.transpose(1, 3).contiguous().transpose(1, 3)
    return t


@pytest.mark.parametrize("x_layout,dy_layout", [("channels_last", "channels_last"), ("sliced", "contiguous"),
                                                ("transposed", "sliced"), ("contiguous", "channels_last")])
def test_relu_strided(be, x_layout, dy_layout):
    """Dense permuted layouts take the flat path and keep their strides; others go through strides."""
    gen = rng(_seed("relu_strided", x_layout, dy_layout))
    x = randn(gen, (2, 5, 3, 4), "float32")
    xt = _layout(_t(x, "float32"), x_layout)
    y = F.relu(xt, backend="triton")
    np.testing.assert_array_equal(to_f64(y), np.maximum(x, 0))
    if x_layout in ("channels_last", "transposed"):
        assert y.stride() == xt.stride()
    dy = randn(gen, x.shape, "float32")
    dx = F.relu_backward(_layout(_t(dy, "float32"), dy_layout), y, backend="triton")
    np.testing.assert_array_equal(to_f64(dx), np.where(x > 0, dy, 0.0))


def test_relu_nan_propagates(be):
    x = np.array([np.nan, -1.5, 2.0, -np.inf, np.inf, -0.25])
    y = F.relu(_t(x, "float32"), backend="triton")
    np.testing.assert_array_equal(to_f64(y), F.relu(x, backend="numpy"))
    dx = F.relu_backward(_t(np.arange(1.0, 7.0), "float32"), y, backend="triton")
    np.testing.assert_array_equal(to_f64(dx), [0, 0, 3, 0, 5, 0])


# ------------------------------------------------------------------------------------------------
# linear
# ------------------------------------------------------------------------------------------------
# (M, in, out): none a multiple of the interpreter's 16 x 16 x 16 tile except where stated
LINEAR_SIZES = [(1, 1, 1), (5, 7, 3), (37, 53, 19), (33, 16, 65), (16, 48, 10)]


def _check_linear(be, x, w, b, dy, dtype, precision=None, need_db=True, layout=lambda t: t):
    M, K = x.shape
    N = w.shape[0]
    xt, wt = layout(_t(x, dtype)), layout(_t(w, dtype))
    bt = _t(b, dtype) if b is not None else None
    tol = "tf32" if precision == "tf32" else dtype
    with launches(be, "linear_gemm", "linear_gemm[fwd]"):
        if precision is None:
            y = F.linear(xt, wt, bt, backend="triton")
        else:
            y = be.linear_forward(xt, wt, bt, precision=precision)
    assert str(y.dtype).endswith(dtype) and tuple(y.shape) == (M, N)
    assert_close(to_f64(y), F.linear(x, w, b, backend="numpy"), tol, K + 1, what="linear y")
    dyt = layout(_t(dy, dtype))
    tag = "linear_gemm[dw_db]" if need_db else "linear_gemm[dw]"
    with launches(be, "linear_gemm[dx]", tag):
        if precision is None:
            dx, dw, db = F.linear_backward(dyt, xt, wt, need_db=need_db, backend="triton")
        else:
            dx, dw, db = be.linear_backward(dyt, xt, wt, need_db=need_db, precision=precision)
    rdx, rdw, rdb = F.linear_backward(dy, x, w, need_db=need_db, backend="numpy")
    assert_close(to_f64(dx), rdx, tol, N, what="linear dx")
    assert_close(to_f64(dw), rdw, tol, M, what="linear dw")
    if need_db:
        assert str(db.dtype).endswith(dtype)
        assert_close(to_f64(db), rdb, dtype, M, what="linear db")
    else:
        assert db is None


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("size", LINEAR_SIZES, ids=lambda s: "M{}K{}N{}".format(*s))
def test_linear_fwd_bwd(be, size, dtype, bias):
    M, K, N = size
    gen = rng(_seed("linear", size, dtype, bias))
    x, w, dy = randn(gen, (M, K), dtype), randn(gen, (N, K), dtype), randn(gen, (M, N), dtype)
    b = randn(gen, (N,), dtype) if bias else None
    _check_linear(be, x, w, b, dy, dtype, need_db=bias)


def test_linear_tf32_precision(be):
    gen = rng(11)
    x, w, dy = randn(gen, (21, 35), "float32"), randn(gen, (9, 35), "float32"), randn(gen, (21, 9), "float32")
    _check_linear(be, x, w, randn(gen, (9,), "float32"), dy, "float32", precision="tf32")


def test_linear_strided_operands(be):
    """Transposed (column-major) x, w and dy are read through their strides."""
    gen = rng(12)
    x, w, dy = randn(gen, (19, 23), "float32"), randn(gen, (13, 23), "float32"), randn(gen, (19, 13), "float32")
    colmajor = lambda t: t.t().contiguous().t()          # noqa: E731
    _check_linear(be, x, w, randn(gen, (13,), "float32"), dy, "float32", layout=colmajor)


def test_linear_empty_batch_gives_zero_grads(be):
    """M = 0: dW and db are empty sums (zeros), written by the kernel (outputs start as NaN)."""
    x = _t(np.zeros((0, 5)), "float32")
    w = _t(randn(rng(3), (4, 5)), "float32")
    dx, dw, db = be.linear_backward(_t(np.zeros((0, 4)), "float32"), x, w)
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(to_f64(dw), np.zeros((4, 5)))
    np.testing.assert_array_equal(to_f64(db), np.zeros(4))


def test_linear_int64_offsets(be, monkeypatch):
    """The INT64 kernel variant (chosen when an offset can pass 2^31) computes the same GEMMs;
    forced here by lowering the launcher's limit, since 2^31-element operands do not fit a CPU test."""
    from cnngpu.backends import limits
    from cnngpu.backends.triton_backend._common import needs_int64
    assert not needs_int64([_t(np.ones((4, 4)), "float32")], (4, 4, 4), offset_headroom=limits.EXTENT_HEADROOM)
    monkeypatch.setattr(limits, "INT32_LIMIT", 64 + limits.EXTENT_HEADROOM)
    gen = rng(13)
    x, w, dy = randn(gen, (9, 21), "float32"), randn(gen, (5, 21), "float32"), randn(gen, (9, 5), "float32")
    with launches(be, "linear_gemm[int64]"):
        _check_linear(be, x, w, randn(gen, (5,), "float32"), dy, "float32")


def test_linear_zero_in_features(be):
    """in_features = 0: y = bias, dw empty, and db still reduces dy (no dW tile carries it)."""
    gen = rng(14)
    b, dy = randn(gen, (4,), "float32"), randn(gen, (3, 4), "float32")
    x, w = _t(np.zeros((3, 0)), "float32"), _t(np.zeros((4, 0)), "float32")
    y = be.linear_forward(x, w, _t(b, "float32"))
    assert_close(to_f64(y), np.broadcast_to(b, (3, 4)), "float32", what="y = bias")
    dx, dw, db = be.linear_backward(_t(dy, "float32"), x, w)
    assert dx.shape == (3, 0) and dw.shape == (4, 0)
    assert_close(to_f64(db), dy.sum(axis=0), "float32", 3, what="db")


# ------------------------------------------------------------------------------------------------
# softmax cross-entropy
# ------------------------------------------------------------------------------------------------
def _check_ce(be, z, lab, dtype, label_dtype="int64", dloss=1.0, layout=lambda t: t):
    M, C = z.shape
    zt = layout(_t(z, dtype))
    lt = _labels(lab, label_dtype)
    with launches(be, "cross_entropy_fwd_softmax_rows", "cross_entropy_fwd_mean"):
        loss, probs = F.cross_entropy(zt, lt, backend="triton")
    rloss, rprobs = F.cross_entropy(z, lab.astype(np.int64), backend="numpy")
    assert tuple(loss.shape) == () and loss.dtype == torch.float32
    assert str(probs.dtype).endswith(dtype)
    # loss: fp32 arithmetic on exact dtype values; error ~ u32 * (|max logit| + log C) per row
    scale = 1.0 + float(np.abs(z).max()) / max(abs(float(rloss)), 1e-3)
    assert_close(to_f64(loss), rloss, "float32", M, factor=4.0 * scale, what="cross_entropy loss")
    assert_close(to_f64(probs), rprobs, dtype, C, what="cross_entropy probs")
    # backward from the triton probs, so only the backward's own rounding is measured
    p64 = to_f64(probs)
    with launches(be, "cross_entropy_bwd_softmax_minus_onehot"):
        g = F.cross_entropy_backward(probs, lt, dloss, backend="triton")
    assert str(g.dtype).endswith(dtype)
    assert_close(to_f64(g), F.cross_entropy_backward(p64, lab.astype(np.int64), dloss, backend="numpy"), dtype,
                 what="cross_entropy dlogits")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("M,C", [(1, 1), (7, 10), (33, 17), (70, 3), (5, 3000)])
def test_cross_entropy_fwd_bwd(be, M, C, dtype):
    """Odd batch sizes (ragged last row tile), C = 1, and C = 3000 (several class chunks)."""
    gen = rng(_seed("ce", M, C, dtype))
    z = randn(gen, (M, C), dtype, scale=3.0)
    lab = gen.integers(0, C, M)
    lab[0] = C - 1                                  # both ends of the class range
    lab[-1] = 0
    _check_ce(be, z, lab, dtype, dloss=float(gen.uniform(0.5, 2.0)))


@pytest.mark.parametrize("label_dtype", ["int32", "uint8", "int16"])
def test_cross_entropy_label_dtypes(be, label_dtype):
    """Labels of any integer type; repeated and unused classes."""
    gen = rng(_seed("ce_lab", label_dtype))
    z = randn(gen, (19, 11), "float32")
    lab = np.array([3, 3, 3, 10, 0, 0, 7, 3, 3, 3, 1, 1, 10, 10, 3, 3, 2, 3, 3])
    _check_ce(be, z, lab, "float32", label_dtype=label_dtype, dloss=0.7)


@pytest.mark.parametrize("dtype,scale", [("float32", 1e4), ("float32", 3e30), ("float16", 3e3), ("bfloat16", 1e30)])
def test_cross_entropy_large_logits_stable(be, dtype, scale):
    """exp of the raw logits would overflow; the max-shifted log-sum-exp stays finite."""
    gen = rng(_seed("ce_big", dtype, scale))
    z = randn(gen, (9, 13), dtype, scale=scale)
    lab = gen.integers(0, 13, 9)
    _check_ce(be, z, lab, dtype)


def test_cross_entropy_strided_logits_and_probs(be):
    gen = rng(21)
    z = randn(gen, (6, 9), "float32")
    lab = gen.integers(0, 9, 6)
    colmajor = lambda t: t.t().contiguous().t()          # noqa: E731
    _check_ce(be, z, lab, "float32", layout=colmajor, dloss=1.3)
    # sliced probs into the backward
    p = _t(np.abs(randn(gen, (6, 18), "float32")), "float32")[:, ::2]
    g = F.cross_entropy_backward(p, _labels(lab), 1.0, backend="triton")
    assert_close(to_f64(g), F.cross_entropy_backward(to_f64(p), lab, 1.0, backend="numpy"), "float32",
                 what="dlogits from sliced probs")


# ------------------------------------------------------------------------------------------------
# real sizes and bf16 GEMMs on a GPU
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("precision", [None, "tf32"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("size", [(256, 400, 120), (1000, 1024, 777), (64, 4096, 1000)],
                         ids=lambda s: "M{}K{}N{}".format(*s))
def test_linear_gpu(be, size, dtype, precision):
    """Real sizes on tensor cores; bf16 here only (the interpreter's bf16 tl.dot is wrong)."""
    if precision == "tf32" and dtype != "float32":
        pytest.skip("tf32 applies to float32 operands only")
    M, K, N = size
    gen = rng(_seed("linear_gpu", size, dtype))
    x, w, dy = randn(gen, (M, K), dtype), randn(gen, (N, K), dtype), randn(gen, (M, N), dtype)
    _check_linear(be, x, w, randn(gen, (N,), dtype), dy, dtype, precision=precision)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("M,C", [(4096, 10), (512, 1000), (64, 50257)])
def test_cross_entropy_gpu(be, M, C, dtype):
    gen = rng(_seed("ce_gpu", M, C, dtype))
    _check_ce(be, randn(gen, (M, C), dtype, scale=4.0), gen.integers(0, C, M), dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_relu_gpu(be, dtype):
    gen = rng(_seed("relu_gpu", dtype))
    x = randn(gen, (32, 64, 56, 56), dtype)
    xt = _t(x, dtype).contiguous(memory_format=torch.channels_last)
    y = F.relu(xt, backend="triton")
    np.testing.assert_array_equal(to_f64(y), np.maximum(x, 0))
    dy = randn(gen, x.shape, dtype)
    dx = F.relu_backward(_t(dy, dtype), y, backend="triton")
    np.testing.assert_array_equal(to_f64(dx), np.where(x > 0, dy, 0.0))
