"""Triton batch norm (+ fused ReLU), layer norm and group norm, forward and backward, vs the NumPy
reference (on the same dtype-rounded inputs). Under TRITON_INTERPRET=1 on CPU tensors.

Backward calls get the reference's forward outputs (y, mean, invstd/rstd) on both backends, so
each kernel is judged on identical inputs. "forced" cases shrink the tile tables and raise the
program target so every reduction is cut over several programs per channel / column block and
every row is walked in several chunks: the partial + combine paths run even at tiny sizes.
"""
import zlib

import numpy as np
import pytest

import cnngpu.functional as F
from harness import assert_close, launches, native, randn, require, rng, round_to, to_f64

DTYPES = ["float32", "float16", "bfloat16"]


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


@pytest.fixture(scope="module")
def be():
    return require("triton")


def _layout(t, layout):
    """The same values as a channels-last or a sliced (non-contiguous) tensor."""
    import torch
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":
        shape = list(t.shape)
        shape[1] *= 2
        shape[-1] *= 2
        big = torch.zeros(shape, dtype=t.dtype, device=t.device)
        idx = (slice(None), slice(None, None, 2)) + (slice(None),) * (t.dim() - 3) + (slice(None, None, 2),)
        big[idx] = t
        return big[idx]
    if layout == "transposed":            # (M, D) stored column-major
        return t.t().contiguous().t()
    return t


def norm_torch():
    import torch
    return torch


def _param_dtype(dtype, kind):
    return dtype if kind == "x" else "float32"


@pytest.fixture
def forced(monkeypatch):
    """Tiny tiles and a large program target: many programs per channel, many chunks per row."""
    from cnngpu.backends.triton_backend import norm
    from cnngpu.kernels.triton import batch_norm as BN, group_norm as GN, layer_norm as LN
    from cnngpu.kernels.triton._config import config
    def tiles(c, l, pairs):
        return [config(**{c: a, l: b}) for a, b in pairs]
    monkeypatch.setattr(BN, "TILE_CONFIGS", {"fp32": tiles("BLOCK_C", "BLOCK_R", ((1, 4), (2, 8))),
                                             "fp16": tiles("BLOCK_C", "BLOCK_R", ((1, 8), (4, 4)))})
    monkeypatch.setattr(GN, "TILE_CONFIGS", {"fp32": tiles("BLOCK_C", "BLOCK_L", ((1, 4), (2, 8))),
                                             "fp16": tiles("BLOCK_C", "BLOCK_L", ((2, 4), (4, 2)))})
    monkeypatch.setattr(LN, "ROW_CONFIGS", [config(BLOCK_D=8)])
    monkeypatch.setattr(LN, "DWDB_CONFIGS", {"fp32": tiles("BLOCK_M", "BLOCK_D", ((2, 8),)),
                                             "fp16": tiles("BLOCK_M", "BLOCK_D", ((4, 8),))})
    monkeypatch.setattr(norm, "TARGET_PROGRAMS_PER_SM", 64)
    return norm


# ----------------------------------------------------------------------------------------------
# batch norm
# ----------------------------------------------------------------------------------------------
# (shape, layout, affine, param dtype kind, forced split)
BN_CASES = [
    ((2, 3, 5, 7), "contiguous", True, "f32", False),
    ((2, 3, 5, 7), "contiguous", True, "x", True),        # several programs per channel
    ((1, 1, 3, 5), "contiguous", False, "f32", True),     # N = 1, C = 1, no affine
    ((3, 5, 4, 3), "channels_last", True, "f32", True),
    ((2, 3, 3, 5), "sliced", True, "f32", False),         # channel and W slices: H, W do not merge
    ((19, 3), "contiguous", True, "x", True),             # 2-D (N, C)
    ((2, 4, 1, 1), "contiguous", True, "f32", False),     # L = 1
]


def _bn_id(c):
    return "x".join(map(str, c[0])) + f"-{c[1]}-{'affine' if c[2] else 'noaffine'}-p{c[3]}" + ("-forced" if c[4] else "")


@pytest.mark.parametrize("relu", [False, True], ids=["norelu", "relu"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BN_CASES, ids=_bn_id)
def test_batch_norm_fwd_bwd(be, request, case, dtype, training, relu):
    shape, layout, affine, pkind, force = case
    norm = request.getfixturevalue("forced") if force else None
    _check_batch_norm(be, norm, shape, layout, affine, pkind, dtype, training, relu, rng(_seed(case, dtype, training, relu)))


def _check_batch_norm(be, norm, shape, layout, affine, pkind, dtype, training, relu, gen):
    """Forward (y, stats, running stats) and backward of one case on triton vs numpy; ``norm``: the
    launcher module when the case must split each channel over several programs, else None."""
    force = norm is not None
    pdt = _param_dtype(dtype, pkind)
    C = shape[1]
    count = int(np.prod(shape)) // C
    # a per-channel offset so the channels' means differ
    x = round_to(randn(gen, shape, "float64", scale=2.0) + randn(gen, (1, C) + (1,) * (len(shape) - 2), "float64"),
                 dtype)
    w = randn(gen, (C,), pdt) if affine else None
    b = randn(gen, (C,), pdt) if affine else None
    rm = randn(gen, (C,), pdt)
    rv = round_to(np.abs(randn(gen, (C,), pdt)) + 0.5, pdt)
    momentum, eps = 0.3, 1e-5

    def on(backend, a, dt):
        return None if a is None else native(backend, a, dt)

    np_dt = {"float32": "float32", "float16": "float16", "bfloat16": "float32"}
    rm_t, rv_t = on("triton", rm, pdt), on("triton", rv, pdt)
    rm_n, rv_n = rm.astype(np_dt[pdt]), rv.astype(np_dt[pdt])
    xt = _layout(native("triton", x, dtype), layout)
    kernels = (["batch_norm_fwd_partial_stats", "batch_norm_fwd_combine_stats"] if training else []) + \
        ["batch_norm_fwd_normalize"]
    if force and training:
        plan = norm.batch_norm_plan(*norm._bn_geometry(xt), xt.stride(1) == 1 and xt.dim() == 4, xt.dtype, xt.device)
        assert plan.S > 1, plan
    with launches(be, *kernels):
        y, mean, invstd = F.batch_norm(xt, on("triton", w, pdt), on("triton", b, pdt), rm_t, rv_t,
                                       training=training, momentum=momentum, eps=eps, relu=relu, backend="triton")
    xn = x.astype(np_dt[dtype])
    yr, mr, ir = F.batch_norm(xn, None if w is None else w.astype(np_dt[pdt]),
                              None if b is None else b.astype(np_dt[pdt]), rm_n, rv_n,
                              training=training, momentum=momentum, eps=eps, relu=relu, backend="numpy")
    assert y.dtype == xt.dtype and tuple(y.shape) == shape
    if layout == "channels_last":                       # outputs keep the input's memory format
        assert y.is_contiguous(memory_format=norm_torch().channels_last)
    assert mean.dtype == invstd.dtype and str(mean.dtype) == "torch.float32"
    assert_close(to_f64(mean), mr, "float32", count, what="batch_norm mean")
    assert_close(to_f64(invstd), ir, "float32", count, what="batch_norm invstd")
    assert_close(to_f64(y), yr, dtype, count, what="batch_norm y")
    # running stats: updated in place when training (unbiased variance), untouched in eval
    assert_close(to_f64(rm_t), rm_n, pdt, count, what="running_mean")
    assert_close(to_f64(rv_t), rv_n, pdt, count, what="running_var")
    if not training:
        np.testing.assert_array_equal(to_f64(rm_t), round_to(rm, pdt))

    # backward on the reference's forward outputs (same ReLU mask, same statistics)
    dy = randn(gen, shape, dtype)
    dyt = _layout(native("triton", dy, dtype), layout)
    yrt = _layout(native("triton", yr.astype(np.float64), dtype), layout)
    kernels = (["batch_norm_bwd_partial_sums", "batch_norm_bwd_reduce_partials"] if (training or affine) else []) + \
        ["batch_norm_bwd_dx"]
    with launches(be, *kernels):
        dx, dw, db = F.batch_norm_backward(dyt, xt, yrt, on("triton", w, pdt), native("triton", mr, "float32"),
                                           native("triton", ir, "float32"), training=training, relu=relu,
                                           backend="triton")
    dxr, dwr, dbr = F.batch_norm_backward(dy.astype(np_dt[dtype]), xn, yr, None if w is None else w.astype(np_dt[pdt]),
                                          mr, ir, training=training, relu=relu, backend="numpy")
    assert dx.dtype == xt.dtype and tuple(dx.shape) == shape
    if layout == "channels_last":
        assert dx.is_contiguous(memory_format=norm_torch().channels_last)
    assert_close(to_f64(dx), dxr, dtype, count, what="batch_norm dx")
    if affine:
        assert str(dw.dtype) == f"torch.{pdt}" and str(db.dtype) == f"torch.{pdt}"
        assert_close(to_f64(dw), dwr, pdt, count, what="batch_norm dweight")
        assert_close(to_f64(db), dbr, pdt, count, what="batch_norm dbias")
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("op", ["batch_norm", "layer_norm", "group_norm"])
def test_large_offset_is_stable(be, forced, op):
    """Mean 1000, std 1: E[x^2] - E[x]^2 in float32 would lose every digit of the variance; the
    chunked two-pass + Chan merge keeps it (checked against float64 on the same values)."""
    x = randn(rng(7), (4, 2, 6, 5), "float32") + 1000.0
    xt = native("triton", x, "float32")
    if op == "batch_norm":
        _, mean, inv = F.batch_norm(xt, training=True, backend="triton")
        rows = x.transpose(1, 0, 2, 3).reshape(2, -1)
    elif op == "layer_norm":
        _, mean, inv = F.layer_norm(xt, (2, 6, 5), backend="triton")
        rows = x.reshape(4, -1)
    else:
        _, mean, inv = F.group_norm(xt, 2, backend="triton")
        rows = x.reshape(8, -1)
    exact = 1.0 / np.sqrt(rows.var(axis=1) + 1e-5)
    assert_close(to_f64(inv).ravel(), exact, "float32", rows.shape[1], what=f"{op} invstd vs float64")
    assert_close(to_f64(mean).ravel(), rows.mean(axis=1), "float32", rows.shape[1], what=f"{op} mean vs float64")


def test_strided_parameters_and_running_stats(be):
    """weight, bias, running stats and saved statistics given as strided views (every other value
    of a longer tensor): read correctly, and the running stats are updated in place."""
    import torch
    gen = rng(11)
    x = randn(gen, (3, 4, 5, 3), "float32")
    w, b, rm, rv = (randn(gen, (4,), "float32") for _ in range(4))
    rv = np.abs(rv) + 0.5

    def strided(a):
        big = torch.zeros(2 * a.size, dtype=torch.float32)
        big[::2] = torch.from_numpy(a)
        return big[::2]

    rm_t, rv_t = strided(rm), strided(rv)
    xt = native("triton", x, "float32")
    y, mean, inv = F.batch_norm(xt, strided(w), strided(b), rm_t, rv_t, momentum=0.2, relu=True, backend="triton")
    rm_n, rv_n = rm.astype(np.float32), rv.astype(np.float32)
    yr, mr, ir = F.batch_norm(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), rm_n, rv_n,
                              momentum=0.2, relu=True, backend="numpy")
    count = x.size // 4
    assert_close(to_f64(y), yr, "float32", count, what="y")
    assert_close(to_f64(rm_t), rm_n, "float32", count, what="running_mean (strided)")
    assert_close(to_f64(rv_t), rv_n, "float32", count, what="running_var (strided)")
    dy = randn(gen, x.shape, "float32")
    yrt = native("triton", yr.astype(np.float64), "float32")
    dx, dw, db = F.batch_norm_backward(native("triton", dy, "float32"), xt, yrt, strided(w), strided(mr), strided(ir),
                                       relu=True, backend="triton")
    dxr, dwr, dbr = F.batch_norm_backward(dy.astype(np.float32), x.astype(np.float32), yr, w.astype(np.float32), mr,
                                          ir, relu=True, backend="numpy")
    assert_close(to_f64(dx), dxr, "float32", count, what="dx")
    assert_close(to_f64(dw), dwr, "float32", count, what="dweight")
    # layer norm and group norm weights as strided views
    y, _, _ = F.layer_norm(xt, (3,), strided(w[:3]), strided(b[:3]), backend="triton")
    yr, _, _ = F.layer_norm(x.astype(np.float32), (3,), w[:3].astype(np.float32), b[:3].astype(np.float32),
                            backend="numpy")
    assert_close(to_f64(y), yr, "float32", 3, what="layer_norm y")
    y, _, _ = F.group_norm(xt, 2, strided(w), strided(b), backend="triton")
    yr, _, _ = F.group_norm(x.astype(np.float32), 2, w.astype(np.float32), b.astype(np.float32), backend="numpy")
    assert_close(to_f64(y), yr, "float32", 30, what="group_norm y")


# ----------------------------------------------------------------------------------------------
# layer norm
# ----------------------------------------------------------------------------------------------
# (shape, normalized_ndim, layout, affine, forced)
LN_CASES = [
    ((4, 10), 1, "contiguous", True, False),
    ((3, 37), 1, "contiguous", True, True),               # rows walked in chunks, dw/db split
    ((2, 3, 5, 7), 2, "contiguous", True, True),
    ((2, 3, 4), 3, "contiguous", False, False),           # M = 1, no affine
    ((9,), 1, "contiguous", True, True),                  # no leading dims
    ((6, 11), 1, "transposed", True, True),               # column-major rows (strided loads)
    ((2, 3, 3, 6), 1, "sliced", True, False),             # non-contiguous, needs a copy
]


def _ln_id(c):
    return "x".join(map(str, c[0])) + f"-nd{c[1]}-{c[2]}-{'affine' if c[3] else 'noaffine'}" + ("-forced" if c[4] else "")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LN_CASES, ids=_ln_id)
def test_layer_norm_fwd_bwd(be, request, case, dtype):
    shape, nd, layout, affine, force = case
    if force:
        norm = request.getfixturevalue("forced")
        D = int(np.prod(shape[len(shape) - nd:]))
        M = int(np.prod(shape)) // D
        cpu = norm.torch.device("cpu")
        assert norm.layer_norm_row_config(D, getattr(norm.torch, dtype)).kwargs["BLOCK_D"] < D                # rows walked in chunks
        if M > 4:
            assert norm.layer_norm_dwdb_plan(M, D, getattr(norm.torch, dtype), cpu)[3] > 1  # several row slabs
    _check_layer_norm(be, shape, nd, layout, affine, dtype, rng(_seed(case, dtype)))


def _check_layer_norm(be, shape, nd, layout, affine, dtype, gen):
    ns = shape[len(shape) - nd:]
    D = int(np.prod(ns))
    pdt = "float32" if dtype == "bfloat16" else dtype
    x = randn(gen, shape, dtype, scale=3.0)
    w = randn(gen, ns, pdt) if affine else None
    b = randn(gen, ns, pdt) if affine else None
    np_dt = {"float32": "float32", "float16": "float16", "bfloat16": "float32"}
    xt = _layout(native("triton", x, dtype), layout)
    with launches(be, "layer_norm_fwd_fused"):
        y, mean, rstd = F.layer_norm(xt, ns, None if w is None else native("triton", w, pdt),
                                     None if b is None else native("triton", b, pdt), backend="triton")
    xn = x.astype(np_dt[dtype])
    yr, mr, rr = F.layer_norm(xn, ns, None if w is None else w.astype(pdt), None if b is None else b.astype(pdt),
                              backend="numpy")
    assert y.dtype == xt.dtype and tuple(y.shape) == shape
    assert_close(to_f64(mean), mr, "float32", D, what="layer_norm mean")
    assert_close(to_f64(rstd), rr, "float32", D, what="layer_norm rstd")
    assert_close(to_f64(y), yr, dtype, D, what="layer_norm y")

    dy = randn(gen, shape, dtype)
    dyt = _layout(native("triton", dy, dtype), layout)
    kernels = ["layer_norm_bwd_dx_fused"] + (["layer_norm_bwd_dwdb_partial", "sum_partial_rows_pair"] if affine else [])
    with launches(be, *kernels):
        dx, dw, db = F.layer_norm_backward(dyt, xt, None if w is None else native("triton", w, pdt),
                                           native("triton", mr, "float32"), native("triton", rr, "float32"), nd,
                                           backend="triton")
    dxr, dwr, dbr = F.layer_norm_backward(dy.astype(np_dt[dtype]), xn, None if w is None else w.astype(pdt),
                                          mr, rr, nd, backend="numpy")
    M = int(np.prod(shape)) // D
    assert_close(to_f64(dx), dxr, dtype, D, what="layer_norm dx")
    if affine:
        assert tuple(dw.shape) == ns and str(dw.dtype) == f"torch.{pdt}"
        assert_close(to_f64(dw), dwr, pdt, M, what="layer_norm dweight")
        assert_close(to_f64(db), dbr, pdt, M, what="layer_norm dbias")
    else:
        assert dw is None and db is None


# ----------------------------------------------------------------------------------------------
# group norm / instance norm
# ----------------------------------------------------------------------------------------------
# (shape, groups, layout, affine, path): "fused" = one program per (n, group) walking small tiles;
# "split" = pieces of every group over several programs (partial stats + combine); None = default
GN_CASES = [
    ((2, 6, 5, 3), 1, "contiguous", True, "fused"),       # one group: layer norm over (C, H, W)
    ((2, 6, 5, 3), 3, "contiguous", True, "split"),
    ((2, 6, 5, 3), 6, "contiguous", True, "fused"),       # instance norm
    ((1, 3, 7, 5), 3, "channels_last", True, "split"),    # instance norm, N = 1, channels-last
    ((1, 12, 5, 4), 2, "contiguous", True, "split"),      # several channel blocks per group
    ((3, 8), 2, "contiguous", False, None),               # 2-D (N, C), no affine
    ((2, 4, 3, 2, 3), 2, "contiguous", True, "split"),    # 3 spatial dims
    ((2, 4, 3, 5), 2, "sliced", True, "fused"),           # non-contiguous, needs a copy
]


def _gn_id(c):
    return "x".join(map(str, c[0])) + f"-g{c[1]}-{c[2]}-{'affine' if c[3] else 'noaffine'}-{c[4] or 'default'}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GN_CASES, ids=_gn_id)
def test_group_norm_fwd_bwd(be, request, monkeypatch, case, dtype):
    shape, G, layout, affine, path = case
    if path is not None:
        norm = request.getfixturevalue("forced")
        if path == "fused":
            monkeypatch.setattr(norm, "TARGET_PROGRAMS_PER_SM", 0)
        N, C = shape[:2]
        L = int(np.prod(shape[2:]))
        plan = norm.group_norm_plan(N, G, C // G, L, layout == "channels_last", getattr(norm.torch, dtype),
                                    norm.torch.device("cpu"))
        assert plan.fused == (path == "fused") and plan.NCBG * plan.NLB > 1, plan
        assert path == "fused" or plan.S > 1 or plan.NCBG > 1, plan
    _check_group_norm(be, shape, G, layout, affine, dtype, rng(_seed(case, dtype)))


def _check_group_norm(be, shape, G, layout, affine, dtype, gen):
    from cnngpu.backends.triton_backend import norm
    N, C = shape[:2]
    group_len = int(np.prod(shape)) // (N * G)
    pdt = "float32" if dtype == "bfloat16" else dtype
    x = randn(gen, shape, dtype, scale=2.0)
    w = randn(gen, (C,), pdt) if affine else None
    b = randn(gen, (C,), pdt) if affine else None
    np_dt = {"float32": "float32", "float16": "float16", "bfloat16": "float32"}
    xt = _layout(native("triton", x, dtype), layout)
    x3 = xt.reshape(N, C, -1)
    plan = norm.group_norm_plan(N, G, C // G, x3.shape[2], x3.stride(1) == 1, xt.dtype, xt.device)
    fwd = ["group_norm_fwd_fused"] if plan.fused else \
        ["group_norm_fwd_partial_stats", "group_norm_fwd_combine_stats", "group_norm_fwd_normalize"]
    with launches(be, *fwd):
        y, mean, rstd = F.group_norm(xt, G, None if w is None else native("triton", w, pdt),
                                     None if b is None else native("triton", b, pdt), backend="triton")
    xn = x.astype(np_dt[dtype])
    yr, mr, rr = F.group_norm(xn, G, None if w is None else w.astype(pdt), None if b is None else b.astype(pdt),
                              backend="numpy")
    assert y.dtype == xt.dtype and tuple(y.shape) == shape and tuple(mean.shape) == (N, G)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=norm_torch().channels_last)
    assert_close(to_f64(mean), mr, "float32", group_len, what="group_norm mean")
    assert_close(to_f64(rstd), rr, "float32", group_len, what="group_norm rstd")
    assert_close(to_f64(y), yr, dtype, group_len, what="group_norm y")

    dy = randn(gen, shape, dtype)
    dyt = _layout(native("triton", dy, dtype), layout)
    kernels = ["group_norm_bwd_dx"] if plan.fused else \
        ["group_norm_bwd_partial_sums", "sum_partial_rows_pair", "group_norm_bwd_dx_tiles"]
    kernels += ["sum_partial_rows_pair"] if affine else []
    with launches(be, *kernels):
        dx, dw, db = F.group_norm_backward(dyt, xt, G, None if w is None else native("triton", w, pdt),
                                           native("triton", mr, "float32"), native("triton", rr, "float32"),
                                           backend="triton")
    dxr, dwr, dbr = F.group_norm_backward(dy.astype(np_dt[dtype]), xn, G, None if w is None else w.astype(pdt),
                                          mr, rr, backend="numpy")
    assert_close(to_f64(dx), dxr, dtype, group_len, what="group_norm dx")
    if affine:
        per_channel = int(np.prod(shape)) // C
        assert str(dw.dtype) == f"torch.{pdt}"
        assert_close(to_f64(dw), dwr, pdt, per_channel, what="group_norm dweight")
        assert_close(to_f64(db), dbr, pdt, per_channel, what="group_norm dbias")
    else:
        assert dw is None and db is None


# ----------------------------------------------------------------------------------------------
# GPU: real sizes (skipped without a CUDA device)
# ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("relu", [False, True], ids=["norelu", "relu"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,layout", [((32, 64, 56, 56), "contiguous"), ((32, 256, 14, 14), "channels_last"),
                                          ((8, 2048, 7, 7), "contiguous"), ((1, 3, 224, 224), "contiguous"),
                                          ((256, 512), "contiguous")])
def test_gpu_batch_norm_real_sizes(be, shape, layout, dtype, training, relu):
    _check_batch_norm(be, None, shape, layout, True, "f32", dtype, training, relu, rng(_seed(shape, dtype, training)))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,nd", [((4096, 768), 1), ((64, 50, 1000), 1), ((16, 64, 28, 28), 3), ((3, 70000), 1)])
def test_gpu_layer_norm_real_sizes(be, shape, nd, dtype):
    _check_layer_norm(be, shape, nd, "contiguous", True, dtype, rng(_seed(shape, dtype)))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,G,layout", [((32, 64, 28, 28), 32, "contiguous"), ((8, 128, 56, 56), 128, "contiguous"),
                                            ((16, 256, 14, 14), 8, "channels_last"), ((2, 64, 56, 56), 1, "contiguous")])
def test_gpu_group_norm_real_sizes(be, shape, G, layout, dtype):
    _check_group_norm(be, shape, G, layout, True, dtype, rng(_seed(shape, G, dtype)))
