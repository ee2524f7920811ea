"""End to end: the project's real CUDA kernels (kernels/cuda/*.cu, unmodified) run on the CPU
emulation (cnngpu.testing.cudaemu), launched by the real cupy-backend launchers, against the NumPy
reference backend.

The cupy backend runs on the emulation (conftest's ``emulated_cupy``: CNNGPU_CUDA_EMULATE=1, or a
module swap on a machine with a GPU), so planners, grids, specialisations (-D options)
and argument packing are exactly those a GPU run uses. Outputs are poisoned with NaN (conftest).
Every case runs in forward and in reverse thread/block order: a result that depends on the order
is a race. Shapes are tiny (1-4 blocks per launch) to stay fast on 2 cores.
"""
import numpy as np
import pytest

pytest.importorskip("ml_dtypes")
from ml_dtypes import bfloat16  # noqa: E402

import cnngpu.functional as F  # noqa: E402
from cnngpu.backends import numpy_backend as ref  # noqa: E402
from cnngpu.testing import cudaemu  # noqa: E402
from cnngpu.testing.cudaemu import cupy_api  # noqa: E402
from bench.static_cuda import cuda_builds  # noqa: E402

DT = {"float32": np.float32, "float16": np.float16, "bfloat16": bfloat16}
TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2, "tf32": 2e-3}


@pytest.fixture(scope="module")
def be(emulated_cupy):
    """cnngpu.backends.cupy_backend on the emulation (conftest)."""
    return emulated_cupy


@pytest.fixture(params=["forward", "reverse"])
def order(request):
    with cudaemu.schedule(request.param):
        yield request.param


def data(shape, dtype, seed, scale=1.0):
    """Random values already rounded to ``dtype`` (host) and the same as float64."""
    h = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(DT[dtype])
    return h, h.astype(np.float64)


def dev(h):
    return cupy_api.asarray(h)


def check(got, want, dtype, what, scale=1.0):
    g = cupy_api.asnumpy(got).astype(np.float64)
    w = np.asarray(want, dtype=np.float64)
    assert g.shape == w.shape, what
    assert not np.isnan(g).any() or np.isnan(w).any(), f"{what}: NaN in the output (unwritten element?)"
    tol = TOL[dtype] * max(1.0, scale)
    err = np.max(np.abs(g - w) / (np.abs(w) + 1.0)) if g.size else 0.0
    assert err <= tol, f"{what}: max rel err {err:.3g} > {tol:.3g}"


# ------------------------------------------------------------------------------------------------
# pooling
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pool2d(be, order, dtype):
    h, x64 = data((2, 3, 7, 6), dtype, 1)
    g = F.pool2d_geometry(h.shape, 3, stride=2, padding=1)
    y, am = be.max_pool2d_forward(dev(h), g)
    y_ref, am_ref = ref.max_pool2d_forward(x64, g)
    check(y, y_ref, dtype, "max_pool fwd")
    assert np.array_equal(cupy_api.asnumpy(am), am_ref)
    dyh, dy64 = data(y_ref.shape, dtype, 2)
    check(be.max_pool2d_backward(dev(dyh), am, g), ref.max_pool2d_backward(dy64, am_ref, g), dtype, "max_pool bwd")
    check(be.avg_pool2d_forward(dev(h), g, False), ref.avg_pool2d_forward(x64, g, False), dtype, "avg_pool fwd")
    check(be.avg_pool2d_backward(dev(dyh), g, True), ref.avg_pool2d_backward(dy64, g, True), dtype, "avg_pool bwd")


# ------------------------------------------------------------------------------------------------
# norms
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batch_norm(be, order, dtype):
    C = 3
    h, x64 = data((2, C, 5, 4), dtype, 3)
    w, b = np.linspace(0.5, 1.5, C).astype(np.float32), np.linspace(-0.2, 0.3, C).astype(np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    y, mean, invstd = be.batch_norm_forward(dev(h), dev(w), dev(b), dev(rm), dev(rv), True, 0.1, 1e-5, True)
    rm64, rv64 = rm.astype(np.float64), rv.astype(np.float64)
    y_ref, mean_ref, invstd_ref = ref.batch_norm_forward(x64, w.astype(np.float64), b.astype(np.float64), rm64, rv64,
                                                         True, 0.1, 1e-5, True)
    check(y, y_ref, dtype, "bn fwd")
    check(mean, mean_ref, "float32", "bn mean")
    dyh, dy64 = data(h.shape, dtype, 4)
    # the reference backward takes the device's own y (the ReLU mask) and statistics
    y_dev = cupy_api.asnumpy(y).astype(np.float64)
    got = be.batch_norm_backward(dev(dyh), dev(h), y, dev(w), mean, invstd, True, True)
    want = ref.batch_norm_backward(dy64, x64, y_dev, w.astype(np.float64), cupy_api.asnumpy(mean).astype(np.float64),
                                   cupy_api.asnumpy(invstd).astype(np.float64), True, True)
    for gv, wv, name in zip(got, want, ("dx", "dweight", "dbias")):
        check(gv, wv, dtype, f"bn {name}", scale=4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("D", [24, 1500])  # a warp per row / a block per row
def test_layer_norm(be, order, dtype, D):
    h, x64 = data((3, D), dtype, 5)
    w, b = np.linspace(0.5, 1.5, D).astype(np.float32), np.linspace(-0.2, 0.3, D).astype(np.float32)
    y, mean, rstd = be.layer_norm_forward(dev(h), 1, dev(w), dev(b), 1e-5)
    y_ref, mean_ref, rstd_ref = ref.layer_norm_forward(x64, 1, w.astype(np.float64), b.astype(np.float64), 1e-5)
    check(y, y_ref, dtype, "ln fwd")
    dyh, dy64 = data(h.shape, dtype, 6)
    got = be.layer_norm_backward(dev(dyh), dev(h), dev(w), mean, rstd, 1)
    want = ref.layer_norm_backward(dy64, x64, w.astype(np.float64), mean_ref, rstd_ref, 1)
    for gv, wv, name in zip(got, want, ("dx", "dweight", "dbias")):
        check(gv, wv, dtype, f"ln {name}", scale=4)


# ------------------------------------------------------------------------------------------------
# conv2d: implicit GEMM (mma.sync + ldmatrix for 16-bit, FFMA for fp32) and direct kernels
# ------------------------------------------------------------------------------------------------
# (id, x shape, w shape, stride, padding, dilation, groups)
CONV = [
    ("c8_3x3", (2, 8, 6, 5), (16, 8, 3, 3), 1, 1, 1, 1),      # VEC 8 / 4 loads, one tile
    ("c3_s2", (1, 3, 7, 6), (9, 3, 3, 2), 2, 1, 1, 1),        # VEC 1, stride 2, R != S, residue classes
    ("g2_d2", (1, 4, 7, 7), (10, 2, 3, 3), 1, 2, 2, 2),       # groups, dilation
    ("depthwise", (1, 3, 6, 5), (3, 1, 3, 3), 1, 1, 1, 3),    # K/groups = 1: direct_1ch
]


def _conv_case(case, dtype, seed):
    _, xs, ws, stride, pad, dil, groups = case
    g = F.conv2d_geometry(xs, ws, stride=stride, padding=pad, dilation=dil, groups=groups)
    xh, x64 = data(xs, dtype, seed)
    wh, w64 = data(ws, dtype, seed + 1, 0.3)
    bh, b64 = data((ws[0],), dtype, seed + 2)
    return g, xh, x64, wh, w64, bh, b64


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", CONV, ids=[c[0] for c in CONV])
@pytest.mark.parametrize("algo", ["implicit_gemm", "direct"])
def test_conv2d_forward(be, order, dtype, case, algo):
    g, xh, x64, wh, w64, bh, b64 = _conv_case(case, dtype, 10)
    be.LAUNCHES.clear()
    y = be.conv2d_forward(dev(xh), dev(wh), dev(bh), g, algo=algo)
    assert be.LAUNCHES[f"conv2d_fwd_{algo}"] == 1
    red = g.c_per_group * g.R * g.S
    check(y, ref.conv2d_forward(x64, w64, b64, g), dtype, f"conv fwd {algo}", scale=red / 8)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("case", CONV, ids=[c[0] for c in CONV])
@pytest.mark.parametrize("algo", ["implicit_gemm", "direct"])
def test_conv2d_backward(be, order, dtype, case, algo):
    g, xh, x64, wh, w64, bh, b64 = _conv_case(case, dtype, 20)
    dyh, dy64 = data((g.N, g.K, g.P, g.Q), dtype, 23)
    be.LAUNCHES.clear()
    dx, dw, db = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, algo=algo)
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(dy64, x64, w64, g)
    dx_algo, dw_algo = be.conv.policy.choose_bwd_algos(g, algo, dx_gemm_fits=be.conv.dx_igemm_grid(g) is not None,
                                                       dw_gemm_fits=g.groups <= be.conv.GRID_YZ_MAX)
    assert be.LAUNCHES[f"conv2d_bwd_dx_{dx_algo}"] == 1 and be.LAUNCHES[f"conv2d_bwd_dw_{dw_algo}"] == 1
    scale = max(g.k_per_group * g.R * g.S, g.N * g.P * g.Q) / 8
    check(dx, dx_ref, dtype, f"conv dX {dx_algo}", scale=scale)
    check(dw, dw_ref, dtype, f"conv dW {dw_algo}", scale=scale)
    check(db, db_ref, dtype, "conv db", scale=scale)


def test_conv2d_dw_split_k(be, order):
    """dW implicit GEMM with split-K (N*P*Q >= 2 * SPLIT_MIN_LEN) and the deterministic split sum."""
    case = ("split", (4, 8, 33, 33), (8, 8, 1, 1), 1, 0, 1, 1)  # N*P*Q = 4356: 2 splits
    g, xh, x64, wh, w64, bh, b64 = _conv_case(case, "bfloat16", 30)
    dyh, dy64 = data((g.N, g.K, g.P, g.Q), "bfloat16", 33)
    be.LAUNCHES.clear()
    _, dw, _ = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, need_dx=False, need_db=False, algo="implicit_gemm")
    assert any(k.startswith("conv2d_bwd_dw_implicit_gemm[split=") and k != "conv2d_bwd_dw_implicit_gemm[split=1]"
               for k in be.LAUNCHES), dict(be.LAUNCHES)
    assert be.LAUNCHES["conv2d_bwd_sum_splits"] == 1
    check(dw, ref.conv2d_backward(dy64, x64, w64, g)[1], "bfloat16", "conv dW split-K", scale=g.N * g.P * g.Q / 8)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_group_norm(be, order, dtype):
    h, x64 = data((2, 6, 3, 5), dtype, 40)
    w, b = np.linspace(0.5, 1.5, 6).astype(np.float32), np.linspace(-0.2, 0.3, 6).astype(np.float32)
    y, mean, rstd = be.group_norm_forward(dev(h), 3, dev(w), dev(b), 1e-5)
    y_ref, mean_ref, rstd_ref = ref.group_norm_forward(x64, 3, w.astype(np.float64), b.astype(np.float64), 1e-5)
    check(y, y_ref, dtype, "gn fwd")
    dyh, dy64 = data(h.shape, dtype, 41)
    got = be.group_norm_backward(dev(dyh), dev(h), 3, dev(w), mean, rstd)
    want = ref.group_norm_backward(dy64, x64, 3, w.astype(np.float64), mean_ref, rstd_ref)
    for gv, wv, name in zip(got, want, ("dx", "dweight", "dbias")):
        check(gv, wv, dtype, f"gn {name}", scale=4)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batch_norm_eval(be, order, dtype):
    C = 4
    h, x64 = data((3, C), dtype, 42)   # 2-D input (HW = 1)
    w, b = np.linspace(0.5, 1.5, C).astype(np.float32), np.linspace(-0.2, 0.3, C).astype(np.float32)
    rm, rv = np.linspace(-1, 1, C).astype(np.float32), np.linspace(0.5, 2, C).astype(np.float32)
    y, mean, invstd = be.batch_norm_forward(dev(h), dev(w), dev(b), dev(rm), dev(rv), False, 0.1, 1e-5, False)
    w64, b64, rm64, rv64 = (a.astype(np.float64) for a in (w, b, rm, rv))
    check(y, ref.batch_norm_forward(x64, w64, b64, rm64, rv64, False, 0.1, 1e-5, False)[0], dtype, "bn eval")
    dyh, dy64 = data(h.shape, dtype, 43)
    got = be.batch_norm_backward(dev(dyh), dev(h), y, dev(w), mean, invstd, False, False)
    want = ref.batch_norm_backward(dy64, x64, cupy_api.asnumpy(y).astype(np.float64), w64,
                                   cupy_api.asnumpy(mean).astype(np.float64),
                                   cupy_api.asnumpy(invstd).astype(np.float64), False, False)
    check(got[0], want[0], dtype, "bn eval dx")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_relu_linear_cross_entropy(be, order, dtype):
    xh, x64 = data((5, 7), dtype, 50)
    y = be.relu_forward(dev(xh))
    check(y, ref.relu_forward(x64), dtype, "relu fwd")
    dyh, dy64 = data((5, 7), dtype, 51)
    check(be.relu_backward(dev(dyh), y), ref.relu_backward(dy64, cupy_api.asnumpy(y).astype(np.float64)), dtype,
          "relu bwd")
    wh, w64 = data((3, 7), dtype, 52)
    bh, b64 = data((3,), dtype, 53)
    check(be.linear_forward(dev(xh), dev(wh), dev(bh)), ref.linear_forward(x64, w64, b64), dtype, "linear fwd", 2)
    gh, g64 = data((5, 3), dtype, 54)
    for gv, wv, name in zip(be.linear_backward(dev(gh), dev(xh), dev(wh)), ref.linear_backward(g64, x64, w64),
                            ("dx", "dw", "db")):
        check(gv, wv, dtype, f"linear {name}", 2)
    labels = np.array([0, 2, 1, 6, 3], np.int64)
    loss, probs = be.cross_entropy_forward(dev(xh), dev(labels))
    loss_ref, probs_ref = ref.cross_entropy_forward(x64, labels)
    check(loss, loss_ref, dtype, "xent loss")
    check(probs, probs_ref, dtype, "xent probs")
    check(be.cross_entropy_backward(probs, dev(labels), 1.5),
          ref.cross_entropy_backward(cupy_api.asnumpy(probs).astype(np.float64), labels, 1.5), dtype, "xent bwd")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_conv2d_two_tiles_vectorised(be, order, dtype):
    """Two M tiles (N*P*Q = 160 > 128), K/groups = C/groups = 16 (VEC > 1 on every implicit GEMM)."""
    case = ("two_tiles", (2, 16, 8, 10), (16, 16, 3, 3), 1, 1, 1, 1)
    g, xh, x64, wh, w64, bh, b64 = _conv_case(case, dtype, 60)
    y = be.conv2d_forward(dev(xh), dev(wh), dev(bh), g, algo="implicit_gemm")
    check(y, ref.conv2d_forward(x64, w64, b64, g), dtype, "conv fwd 2 tiles", scale=16 * 9 / 8)
    dyh, dy64 = data((g.N, g.K, g.P, g.Q), dtype, 63)
    dx, dw, db = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, algo="implicit_gemm")
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(dy64, x64, w64, g)
    check(dx, dx_ref, dtype, "conv dX 2 tiles", scale=20)
    check(dw, dw_ref, dtype, "conv dW 2 tiles", scale=20)
    check(db, db_ref, dtype, "conv db 2 tiles", scale=20)


def _rel_err(got, want):
    g, w = cupy_api.asnumpy(got).astype(np.float64), np.asarray(want, dtype=np.float64)
    return np.max(np.abs(g - w) / (np.abs(w) + 1.0))


@pytest.mark.parametrize("kind", ["float16", "bfloat16", "float32", "tf32"])
def test_conv2d_wide_tiles_split_k(be, order, kind):
    """C/groups = K/groups = 72 > 64: the 128-column entry points of all three implicit GEMMs
    (cp.async pipeline for 16-bit, 16-byte loads; 'tf32': float32 with precision='tf32' on the
    m16n8k8 tf32 tensor cores); one pixel tile, so the forward and dX split their K loop (fp32
    partials summed in order by conv2d_bwd_sum_splits)."""
    dtype, precision = ("float32", "tf32") if kind == "tf32" else (kind, "ieee")
    case = ("wide", (1, 72, 6, 5), (72, 72, 3, 3), 1, 1, 1, 1)
    g, xh, x64, wh, w64, bh, b64 = _conv_case(case, dtype, 70)
    be.LAUNCHES.clear()
    y = be.conv2d_forward(dev(xh), dev(wh), dev(bh), g, algo="implicit_gemm", precision=precision)
    assert be.LAUNCHES["conv2d_fwd_implicit_gemm"] == 1 and be.LAUNCHES["conv2d_fwd_implicit_gemm_narrow"] == 0
    assert be.LAUNCHES["conv2d_fwd_implicit_gemm[split=1]"] == 0 and be.LAUNCHES["conv2d_bwd_sum_splits"] == 1
    y_ref = ref.conv2d_forward(x64, w64, b64, g)
    check(y, y_ref, kind, "conv fwd wide split-K", scale=72 * 9 / 8)
    dyh, dy64 = data((g.N, g.K, g.P, g.Q), dtype, 73)
    dx, dw, db = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, algo="implicit_gemm", precision=precision)
    for name in ("conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dw_implicit_gemm"):
        assert be.LAUNCHES[name] == 1 and be.LAUNCHES[name + "_narrow"] == 0
    assert be.LAUNCHES["conv2d_bwd_dx_implicit_gemm[split=1]"] == 0 and be.LAUNCHES["conv2d_bwd_sum_splits"] == 2
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(dy64, x64, w64, g)
    check(dx, dx_ref, kind, "conv dX wide split-K", scale=72 * 9 / 8)
    check(dw, dw_ref, kind, "conv dW wide", scale=30 / 8)
    check(db, db_ref, dtype, "conv db wide", scale=30 / 8)
    if kind in ("float32", "tf32"):   # tf32 operands really are rounded to 10 mantissa bits; fp32 FFMA is not
        errs = [_rel_err(y, y_ref), _rel_err(dx, dx_ref), _rel_err(dw, dw_ref)]
        assert all(e > 1e-5 for e in errs) if kind == "tf32" else all(e < 1e-5 for e in errs), errs


@pytest.mark.parametrize("kind", ["float16", "bfloat16", "float32", "tf32"])
def test_conv2d_1x1_reads_nchw_in_place(be, order, kind):
    """A 1x1 stride-1 unpadded conv on contiguous NCHW arrays: the three implicit GEMMs read x / dy
    in place (no NHWC copy; H*W = 16 allows 16-byte vectors along the pixels); a non-contiguous x
    takes the NHWC copy instead. Same results either way."""
    dtype, precision = ("float32", "tf32") if kind == "tf32" else (kind, "ieee")
    case = ("p1x1", (2, 16, 4, 4), (24, 16, 1, 1), 1, 0, 1, 1)
    g, xh, x64, wh, w64, bh, b64 = _conv_case(case, dtype, 80)
    dyh, dy64 = data((g.N, g.K, g.P, g.Q), dtype, 83)
    y_ref = ref.conv2d_forward(x64, w64, b64, g)
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(dy64, x64, w64, g)
    for contiguous in (True, False):
        be.LAUNCHES.clear()
        xd = dev(xh) if contiguous else dev(np.repeat(xh, 2, axis=1))[:, ::2]   # same values, strided
        y = be.conv2d_forward(xd, dev(wh), dev(bh), g, algo="implicit_gemm", precision=precision)
        dx, dw, db = be.conv2d_backward(dev(dyh), xd, dev(wh), g, algo="implicit_gemm", precision=precision)
        assert be.LAUNCHES["conv2d_fwd_implicit_gemm[nchw]"] == int(contiguous)
        assert be.LAUNCHES["conv2d_bwd_dx_implicit_gemm[nchw]"] == 1          # dy is contiguous either way
        assert be.LAUNCHES["conv2d_bwd_dw_implicit_gemm[nchw]"] == int(contiguous)
        check(y, y_ref, kind, f"1x1 fwd contiguous={contiguous}", scale=2)
        check(dx, dx_ref, kind, f"1x1 dX contiguous={contiguous}", scale=3)
        check(dw, dw_ref, kind, f"1x1 dW contiguous={contiguous}", scale=4)
        check(db, db_ref, dtype, "1x1 db", scale=4)


def test_conv2d_direct_dw_db_split(be, order):
    """Direct dW and db with split-K (N*P*Q = 4608) and the split sum, fp16."""
    case = ("dsplit", (2, 2, 48, 48), (2, 2, 3, 3), 1, 1, 1, 1)
    g, xh, x64, wh, w64, bh, b64 = _conv_case(case, "float16", 70)
    dyh, dy64 = data((g.N, g.K, g.P, g.Q), "float16", 73)
    be.LAUNCHES.clear()
    _, dw, db = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, need_dx=False, algo="direct")
    assert be.LAUNCHES["conv2d_bwd_sum_splits"] == 2, dict(be.LAUNCHES)
    _, dw_ref, db_ref = ref.conv2d_backward(dy64, x64, w64, g)
    check(dw, dw_ref, "float16", "direct dW split", scale=g.N * g.P * g.Q / 8)
    check(db, db_ref, "float16", "direct db split", scale=g.N * g.P * g.Q / 8)


def test_every_cuda_build_compiles_for_the_emulation(be):
    """Each specialisation a launcher can request (the modules' CUDA_BUILDS) builds under the
    emulation and registers its entry points with their signatures."""
    n = 0
    for fname, defines, entries in cuda_builds():     # every cupy_backend module's CUDA_BUILDS
        m = cudaemu.RawModule(code=be._module.source(fname), options=be._module.compile_options(defines))
        for e in entries:
            assert m.get_function(e).params, (fname, defines, e)
        n += 1
    assert n >= 20


def test_entry_points_found_in_the_sources_are_the_launchers(be):
    """The session-end coverage check (conftest) compares EXECUTED with ``cudaemu.entry_points()``:
    that list (parsed from kernels/cuda) must be exactly the entry points the launchers build."""
    builds = {e for _, _, es in cuda_builds() for e in es}
    assert cudaemu.entry_points() == builds
