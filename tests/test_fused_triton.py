"""The triton backend's fused conv -> BatchNorm -> (+ residual) -> (ReLU) block against the NumPy reference
(under TRITON_INTERPRET=1 on CPU; bfloat16 dots on a GPU only): forward (out, y, statistics, running
statistics) and backward (dx, dw, db, dgamma, dbeta, dresidual), train and eval, with and without
residual, on the fused implicit-GEMM path (epilogue) and the composed direct-conv path. Outputs are
NaN-poisoned by the backend (tests/conftest.py); tests assert which path ran."""
import numpy as np
import pytest
import torch
import cnngpu.functional as cf
from harness import (assert_close, backend_under_test, launches, native, randn, relayout, rng, round_to, seed_of,
                     tolerance)

GEOMS = [  # (N, C, H, W, K, R, S, stride, pad, dilation, groups)
    (2, 5, 6, 5, 8, 3, 3, 1, 1, 1, 1),
    (2, 4, 7, 6, 6, 3, 2, 2, (1, 0), 1, 2),
    (3, 16, 4, 4, 5, 1, 1, 1, 0, 1, 1),
]
DTYPES = ["float32", "float16", pytest.param("bfloat16", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def be():
    yield from backend_under_test("triton")


def make_case(geom, dtype, seed, offset=0.0):
    """float64 NumPy inputs rounded to dtype; ``offset`` shifts the conv output's mean (via the bias)."""
    N, C, H, W, K, R, S, stride, pad, dil, groups = geom
    gen = rng(seed)
    c = dict(x=randn(gen, (N, C, H, W), dtype), w=randn(gen, (K, C // groups, R, S), dtype, 0.5),
             b=round_to(randn(gen, (K,), dtype) + offset, dtype),
             gamma=round_to(1.0 + 0.3 * randn(gen, (K,), "float32"), "float32"),
             beta=randn(gen, (K,), "float32"), rm=round_to(randn(gen, (K,), "float32", 0.3) + offset, "float32"),
             rv=round_to(0.5 + np.abs(randn(gen, (K,), "float32")), "float32"),
             conv=dict(stride=stride, padding=pad, dilation=dil, groups=groups))
    P, Q = cf.conv2d(c["x"], c["w"], **c["conv"]).shape[2:]
    c["res"] = randn(gen, (N, K, P, Q), dtype)
    c["dout"] = randn(gen, (N, K, P, Q), dtype)
    return c


def run_block(be, c, dtype, training, residual, relu=True, algo="auto", layout="nchw"):
    """Forward + backward of the block on ``be`` (inputs as ``dtype``, BN parameters float32) and on the
    NumPy reference (float64 copies of the same values); returns ((got...), (want...)) as float64."""
    ref = dict(x=c["x"], w=c["w"], b=c["b"].astype(np.float64), res=c["res"], dout=c["dout"])
    dev = {k: relayout(native(be.name, v, dtype), layout) if v.ndim == 4 and k in ("x", "res", "dout")
           else native(be.name, v, dtype) for k, v in ref.items()}
    p32 = {k: native(be.name, c[k], "float32") for k in ("gamma", "beta", "rm", "rv")}
    rm_ref, rv_ref = c["rm"].astype(np.float64), c["rv"].astype(np.float64)
    out, y, mean, invstd = cf.conv2d_bn_relu(dev["x"], dev["w"], dev["b"], p32["gamma"], p32["beta"], p32["rm"],
                                             p32["rv"], dev["res"] if residual else None, **c["conv"],
                                             training=training, relu=relu, algo=algo, return_stats=True)
    r_out, r_y, r_mean, r_inv = cf.conv2d_bn_relu(ref["x"], ref["w"], ref["b"], c["gamma"].astype(np.float64),
                                                  c["beta"].astype(np.float64), rm_ref, rv_ref,
                                                  ref["res"] if residual else None, **c["conv"],
                                                  training=training, relu=relu, return_stats=True)
    grads = cf.conv2d_bn_relu_backward(dev["dout"], out, dev["x"], dev["w"], dev["b"], y, p32["gamma"], mean, invstd,
                                       **c["conv"], training=training, relu=relu, has_residual=residual, algo=algo)
    # the reference backward at the device's own forward (its ReLU mask and its y, as float64)
    y64 = None if y is None else be.to_numpy(y).astype(np.float64)
    r_grads = cf.conv2d_bn_relu_backward(ref["dout"], be.to_numpy(out).astype(np.float64), ref["x"], ref["w"],
                                         ref["b"], y64, c["gamma"].astype(np.float64),
                                         be.to_numpy(mean).astype(np.float64), be.to_numpy(invstd).astype(np.float64),
                                         **c["conv"], training=training, relu=relu, has_residual=residual)
    f64 = (lambda a: None if a is None else be.to_numpy(a).astype(np.float64))
    got = dict(out=f64(out), y=f64(y), mean=f64(mean), invstd=f64(invstd), rm=f64(p32["rm"]), rv=f64(p32["rv"]),
               **dict(zip(("dx", "dw", "db", "dgamma", "dbeta", "dres"), map(f64, grads))), dres_src=ref["dout"])
    want = dict(out=r_out, y=r_y, mean=r_mean, invstd=r_inv, rm=rm_ref, rv=rv_ref,
                **dict(zip(("dx", "dw", "db", "dgamma", "dbeta", "dres"), r_grads)))
    return got, want


def check(got, want, dtype, red_fwd, red_bwd, factor=16.0):
    for k in want:
        if k == "dres_src":
            continue
        if want[k] is None:
            assert got[k] is None, k
            continue
        red = red_fwd if k in ("out", "y", "mean", "invstd", "rm", "rv") else red_bwd
        if k == "db" and got["y"] is not None:
            # training: db = sum of the BN input gradient, analytically zero (BN removes the conv
            # bias); judged against the size of the terms, sqrt(count) * RMS(dout) * max(invstd)
            terms = np.sqrt(red_bwd) * np.sqrt(np.mean(got["dres_src"] ** 2)) * np.max(want["invstd"]) * 2
            assert np.all(np.abs(got[k]) <= factor * tolerance(dtype, red_bwd) * terms), (k, got[k])
            continue
        # statistics are fp32, but of the conv output: of the rounded y where a backend composes the
        # block (the reference and the fused epilogue use the fp32 accumulator), so dtype's tolerance
        assert_close(got[k], want[k], dtype, red, k, factor=factor)


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_gemm_path(be, geom, dtype, training, residual):
    c = make_case(geom, dtype, seed_of(geom, dtype, training, residual))
    path = "conv2d_bn_relu_fwd[train-fused]" if training else "conv2d_bn_relu_fwd[eval-fused]"
    with launches(be, path, "conv2d_fwd_implicit_gemm", "conv2d_bn_relu_bwd"):
        got, want = run_block(be, c, dtype, training, residual, algo="implicit_gemm")
    if training:
        assert be.LAUNCHES["conv_bn_fwd_finalize_stats"] > 0
    red = c["w"][0].size
    check(got, want, dtype, red, got["out"].size // got["out"].shape[1])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_composed_direct_path_and_layouts(be, training, layout):
    geom = GEOMS[1]
    c = make_case(geom, "float32", seed_of("direct", training, layout))
    with launches(be, "conv2d_bn_relu_fwd[composed]", "conv2d_fwd_direct", "conv_bn_fwd_apply"):
        got, want = run_block(be, c, "float32", training, True, algo="direct", layout=layout)
    check(got, want, "float32", c["w"][0].size, got["out"].size)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_no_relu_channels_last_gemm(be, layout):
    c = make_case(GEOMS[0], "float16", seed_of("norelu", layout))
    got, want = run_block(be, c, "float16", True, True, relu=False, algo="implicit_gemm", layout=layout)
    check(got, want, "float16", c["w"][0].size, got["out"].size)


def _res_layout(t, layout):
    """The residual in ``layout``: 'nchw' / 'channels_last' / 'sliced' (harness.relayout: the
    pixels of a plane have no single stride, the launcher copies it) or 'strided_w' (every other
    column of a (N, K, P, 2Q) buffer: one pixel stride, no unit-stride axis)."""
    if layout != "strided_w":
        return relayout(t, layout)
    big = torch.full(t.shape[:3] + (2 * t.shape[3],), float("nan"), dtype=t.dtype)
    big[..., ::2] = t
    return big[..., ::2]


@pytest.mark.parametrize("geom", [GEOMS[0], (1, 3, 5, 5, 8, 3, 3, 1, 0, 1, 1)])   # P*Q = 30, 9 (N = 1)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("res_layout", ["nchw", "channels_last", "sliced", "strided_w"])
def test_apply_layouts(be, geom, layout, res_layout):
    """conv_bn_fwd_apply with y (channels-last rows of the GEMM, or the direct conv's output in x's
    layout), out (x's layout) and a residual in any layout: each addressed along its own unit-stride
    axis where it has one (fp16: the vector paths, plane sizes not a multiple of 8)."""
    c = make_case(geom, "float16", seed_of("apply", geom, layout, res_layout))
    x = relayout(native(be.name, c["x"], "float16"), layout)
    w, b = native(be.name, c["w"], "float16"), native(be.name, c["b"], "float16")
    res = _res_layout(native(be.name, c["res"], "float16"), res_layout)
    p32 = {k: native(be.name, c[k], "float32") for k in ("gamma", "beta", "rm", "rv")}
    for algo in ("implicit_gemm", "direct"):
        with launches(be, "conv_bn_fwd_apply"):
            out = cf.conv2d_bn_relu(x, w, b, p32["gamma"], p32["beta"], p32["rm"].clone(), p32["rv"].clone(), res,
                                    **c["conv"], training=True, algo=algo)
        want = cf.conv2d_bn_relu(c["x"], c["w"], c["b"].astype(np.float64), c["gamma"].astype(np.float64),
                                 c["beta"].astype(np.float64), None, None, c["res"], **c["conv"], training=True)
        assert out.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else
                                 torch.contiguous_format)
        assert_close(be.to_numpy(out).astype(np.float64), want, "float16", c["w"][0].size, f"out[{algo}]",
                     factor=16.0)


def test_statistics_stable_under_offset(be):
    """|mean| >> std of the conv output (bias 300, std ~1): the tile partials + Chan merge keep the
    variance (a sum / sum-of-squares formula would lose it entirely in fp32)."""
    c = make_case(GEOMS[0], "float32", seed_of("offset"), offset=300.0)
    got, want = run_block(be, c, "float32", True, False, algo="implicit_gemm")
    assert_close(got["invstd"], want["invstd"], "float32", 4096, "invstd")
    assert_close(got["rv"], want["rv"], "float32", 4096, "running_var")
    assert_close(got["out"], want["out"], "float32", 4096, "out")


def test_nan_input_propagates(be):
    c = make_case(GEOMS[0], "float32", seed_of("nan"))
    c["x"][0, 0, 2, 2] = np.nan
    x, w = native(be.name, c["x"], "float32"), native(be.name, c["w"], "float32")
    rm, rv = native(be.name, np.zeros(8), "float32"), native(be.name, np.ones(8), "float32")
    out = cf.conv2d_bn_relu(x, w, None, None, None, rm, rv, padding=1, training=False, algo="implicit_gemm")
    assert torch.isnan(out[0, :, 1:4, 1:4]).all() and not torch.isnan(out[1]).any()


@pytest.mark.parametrize("algo", ["implicit_gemm", "direct"])
def test_no_running_stats_no_affine(be, algo):
    """training without running statistics and without BN affine / conv bias, as the reference."""
    c = make_case(GEOMS[0], "float32", seed_of("plain", algo))
    x, w = native(be.name, c["x"], "float32"), native(be.name, c["w"], "float32")
    out, y, mean, invstd = cf.conv2d_bn_relu(x, w, None, None, None, None, None, padding=1, training=True, algo=algo,
                                             return_stats=True)
    r_out, r_y, r_mean, r_inv = cf.conv2d_bn_relu(c["x"], c["w"], None, None, None, None, None, padding=1,
                                                  training=True, return_stats=True)
    assert_close(be.to_numpy(out), r_out, "float32", 45, "out")
    assert_close(be.to_numpy(invstd), r_inv, "float32", 45, "invstd")
    dout = native(be.name, c["dout"], "float32")
    got = cf.conv2d_bn_relu_backward(dout, out, x, w, None, y, None, mean, invstd, padding=1, need_db=False,
                                     algo=algo)
    want = cf.conv2d_bn_relu_backward(c["dout"], be.to_numpy(out).astype(np.float64), c["x"], c["w"], None,
                                      be.to_numpy(y).astype(np.float64), None, be.to_numpy(mean).astype(np.float64),
                                      be.to_numpy(invstd).astype(np.float64), padding=1, need_db=False)
    assert_close(be.to_numpy(got[0]), want[0], "float32", out.numel(), "dx")
    assert_close(be.to_numpy(got[1]), want[1], "float32", out.numel(), "dw")
    assert got[2:] == (None, None, None, None)
