"""conv2d parity: one body per check, run on every GPU backend against the NumPy reference (float64).

Backends: triton (torch tensors; on CPU under TRITON_INTERPRET=1) and cupy (whenever
``cnngpu.backends.is_available('cupy')``; skipped with the registry's reason otherwise). Forward
(direct and implicit GEMM) and backward (dX by stride-residue classes, dW with split-K, db), forced
algorithms through ``algo=``, many geometries (tests/conv_cases.py), channels-last and sliced
layouts, fp32 / fp16 (bf16 and real sizes on a GPU). Outputs are poisoned with NaN (conftest),
tolerances scale with the reduction length, and every test asserts which kernel ran (LAUNCHES).
Checks of one backend's launcher only (triton's tap-major variants and INT64 kernels) take that
backend alone. On a GPU machine: ``python -m pytest -q -m 'gpu or cupy' tests/test_conv_parity.py``.
"""
import numpy as np
import pytest

from cnngpu import functional as F
from cnngpu.backends import conv_policy, limits
from cnngpu.dtypes import dtype_name
from conv_cases import (BIG, GEOMETRIES, bwd_inputs, fwd_inputs, fwd_reduction, geometry, ids, permuted_storage,
                        pick, strided_vector)
from harness import PARITY_BACKENDS, assert_close, backend_under_test, launches, require, to_f64

ALGOS = ["direct", "implicit_gemm"]
# every geometry in float32, a sample in float16
DTYPE_CASES = ([pytest.param(c, "float32", id=f"{c[0]}-float32") for c in GEOMETRIES]
               + [pytest.param(c, "float16", id=f"{c[0]}-float16")
                  for c in pick("3x2_s2", "same_s2_d2", "depthwise", "1x1")])
LAYOUT_CASES = pick("3x2_s2", "depthwise", "1x1")
BWD_LAYOUT_CASES = pick("3x2_s2", "groups2", "depthwise")
GPU_BF16 = pick("3x2_s2", "groups2", "depthwise", "1x1")


@pytest.fixture(params=PARITY_BACKENDS)
def be(request):
    yield from backend_under_test(request.param)


@pytest.fixture
def tb():
    return require("triton")


def _ran(be, name: str, variant: str = "") -> str:
    """The LAUNCHES key of a kernel, with triton's reduction-variant tag where it records one."""
    return f"{name}[{variant}]" if variant and be.name == "triton" else name


def _check_layout(be, out, layout: str):
    if be.name == "triton" and layout == "channels_last":
        assert out.is_contiguous(memory_format=__import__("torch").channels_last)
    if be.name == "cupy":
        assert out.flags.c_contiguous


def _forward(be, case, dtype, seed, algo="auto", layout="nchw", launched=None, precision="ieee", tol=None,
             restride=False):
    (x, w, b), (nx, nw, nb), opts = fwd_inputs(be.name, case, dtype, seed, layout)
    if restride:                                                  # same values, other strides
        nw = permuted_storage(nw)
        nb = strided_vector(nb) if nb is not None else None
    ref = F.conv2d(x, w, b, backend="numpy", **opts)
    with launches(be, launched or f"conv2d_fwd_{algo}"):
        y = F.conv2d(nx, nw, nb, algo=algo, precision=precision, **opts)
    assert dtype_name(y) == dtype
    _check_layout(be, y, layout)
    assert_close(to_f64(y), ref, tol or dtype, fwd_reduction(case), what=f"y {algo} {dtype} {layout}")
    return y


def _check_bwd(got, ref, g, dtype, what):
    dx, dw, db = got
    rdx, rdw, rdb = ref
    npq = g.N * g.P * g.Q
    assert_close(to_f64(dx), rdx, dtype, g.k_per_group * g.R * g.S, what=f"dx {what}")
    assert_close(to_f64(dw), rdw, dtype, npq, what=f"dw {what}")
    assert_close(to_f64(db), rdb, dtype, npq, what=f"db {what}")


def _backward(be, case, dtype, seed, algo="auto", layout="nchw", launched=None, precision="ieee", tol=None,
              restride=False):
    (dy, x, w), (ndy, nx, nw), opts, g = bwd_inputs(be.name, case, dtype, seed, layout)
    if restride:
        nw = permuted_storage(nw)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    if launched is None:
        launched = (f"conv2d_bwd_dx_{algo}", f"conv2d_bwd_dw_{algo}", "conv2d_bwd_db")
    with launches(be, *launched):
        got = F.conv2d_backward(ndy, nx, nw, algo=algo, precision=precision, **opts)
    assert all(dtype_name(t) == dtype for t in got)
    _check_layout(be, got[0], layout)
    _check_bwd(got, ref, g, tol or dtype, f"{algo} {dtype} {layout}")
    return got


# ------------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case,dtype", DTYPE_CASES)
def test_forward(be, case, dtype, algo):
    _forward(be, case, dtype, 1, algo)


def test_forward_many_channel_blocks(be):
    """C/groups = 20 > BLOCK_K (interpreter config): several channel chunks per tap, tap-major path."""
    case = ("c20", 1, 20, 5, 4, 9, 3, 2, 1, 1, 1, 1, True)
    _forward(be, case, "float32", 4, "implicit_gemm", launched=_ran(be, "conv2d_fwd_implicit_gemm", "taps"))


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", LAYOUT_CASES, ids=ids(LAYOUT_CASES))
def test_forward_layouts(be, case, algo, layout):
    """Channels-last and sliced (non-contiguous) x, a weight with permuted storage and a strided
    bias: the same values must come out (triton reads every stride; cupy copies what it needs)."""
    _forward(be, case, "float32", 5, algo, layout, restride=True)


def test_forward_tf32_precision(be):
    """precision='tf32' reaches the dot (on a GPU: TF32 tensor cores; in the triton interpreter:
    fp32; on cupy: mma.sync m16n8k8 .tf32, on the CPU emulation too)."""
    _forward(be, GEOMETRIES[0], "float32", 6, "implicit_gemm", precision="tf32", tol="tf32")


@pytest.mark.parametrize("case,expected", [
    (GEOMETRIES[0], "direct"),           # C/g*R*S = 18 but K/g = 5 < 8
    (GEOMETRIES[5], "direct"),           # depthwise
    (("wide", 1, 6, 5, 5, 8, 3, 3, 1, 1, 1, 1, False), "implicit_gemm"),
    (("1x1_small", 1, 8, 4, 4, 8, 1, 1, 1, 0, 1, 1, False), "direct"),   # reduction 8 < 16
], ids=["k5", "depthwise", "wide", "1x1_small"])
def test_forward_auto_heuristic(be, case, expected):
    assert conv_policy.choose_algo(geometry(case)) == expected
    _forward(be, case, "float32", 7, "auto", launched=f"conv2d_fwd_{expected}")


# ------------------------------------------------------------------------------------------------
# backward: dX (stride-residue implicit GEMM / direct), dW (split-K), db
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case,dtype", DTYPE_CASES)
def test_backward(be, case, dtype, algo):
    _backward(be, case, dtype, 11, algo)


@pytest.mark.parametrize("case,expected", [
    (GEOMETRIES[0], ("direct", "direct")),              # Cg = 3 < 8; Kg = 5 < 8
    (GEOMETRIES[5], ("direct", "direct")),              # depthwise
    (("wide", 1, 8, 5, 4, 8, 3, 3, 1, 1, 1, 1, True), ("implicit_gemm", "implicit_gemm")),
    (("rgb_stem", 1, 3, 7, 6, 8, 3, 3, 2, 1, 1, 1, True), ("direct", "implicit_gemm")),   # Cg=3, Cg*R*S=27
], ids=["k5", "depthwise", "wide", "rgb_stem"])
def test_backward_auto_heuristic(be, case, expected):
    assert conv_policy.choose_bwd_algos(geometry(case)) == expected
    _backward(be, case, "float32", 13, "auto",
              launched=(f"conv2d_bwd_dx_{expected[0]}", f"conv2d_bwd_dw_{expected[1]}", "conv2d_bwd_db"))


def test_backward_many_channel_blocks(be):
    """K/groups = C/groups = 20 > the interpreter's BLOCK_K / BLOCK_N: several chunks per tap."""
    case = ("c20", 1, 20, 5, 4, 20, 3, 2, 2, 1, 1, 1, False)
    _backward(be, case, "float32", 15, "implicit_gemm",
              launched=(_ran(be, "conv2d_bwd_dx_implicit_gemm", "taps"), _ran(be, "conv2d_bwd_dw_implicit_gemm", "taps")))


@pytest.fixture
def small_splits(be, monkeypatch):
    """Split-K at tiny sizes: a short minimum split length, a GPU's SM count (132) wherever the
    device reports another, and triton's split granule lowered. Returns (case, expected splits or
    None when the backend's granules decide)."""
    monkeypatch.setattr(conv_policy, "SPLIT_MIN_LEN", 16)
    if be.name == "triton":
        from cnngpu.backends.triton_backend import conv
        monkeypatch.setattr(conv, "SPLIT_GRANULE", 16)
        monkeypatch.setattr(limits, "OFF_GPU_SMS", 132)
        return ("split", 2, 4, 9, 8, 6, 3, 3, 1, 1, 1, 2, True), 9      # N*P*Q = 144 -> 9 splits of 16
    from cnngpu.backends.cupy_backend import conv
    monkeypatch.setattr(conv, "sm_count", lambda: 132)
    return ("split", 4, 4, 16, 16, 6, 3, 3, 1, 1, 1, 2, True), None     # N*P*Q = 1024: cupy's granules


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_backward_split_k(be, small_splits, algo, dtype):
    """dW and db with the N*P*Q reduction split several ways (fp32 workspace + ordered sum), and
    bit-identical on a second run (deterministic)."""
    case, splits = small_splits
    tags = (f"conv2d_bwd_dw_{algo}[split={splits}]", f"conv2d_bwd_db[split={splits}]") if splits else ()
    got = _backward(be, case, dtype, 16, algo, launched=(*tags, "conv2d_bwd_sum_splits"))
    (_, _, _), (ndy, nx, nw), opts, _ = bwd_inputs(be.name, case, dtype, 16)
    again = F.conv2d_backward(ndy, nx, nw, need_dx=False, algo=algo, **opts)
    assert np.array_equal(to_f64(again[1]), to_f64(got[1])) and np.array_equal(to_f64(again[2]), to_f64(got[2]))


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", BWD_LAYOUT_CASES, ids=ids(BWD_LAYOUT_CASES))
def test_backward_layouts(be, case, algo, layout):
    """Channels-last / sliced x and dy, weight with permuted storage: same values."""
    _backward(be, case, "float32", 17, algo, layout, restride=True,
              launched=(f"conv2d_bwd_dx_{algo}", f"conv2d_bwd_dw_{algo}"))


def test_backward_tf32_precision(be):
    _backward(be, GEOMETRIES[4], "float32", 18, "implicit_gemm", precision="tf32", tol="tf32",
              launched=("conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dw_implicit_gemm"))


def test_backward_partial_requests(be):
    """need_dx / need_db = False return None and launch nothing for those gradients."""
    (dy, x, w), (ndy, nx, nw), opts, g = bwd_inputs(be.name, GEOMETRIES[0], "float32", 20)
    ref = F.conv2d_backward(dy, x, w, backend="numpy", **opts)
    keys = ("conv2d_bwd_dx_direct", "conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_db")
    before = {k: be.LAUNCHES[k] for k in keys}
    dx, dw, db = F.conv2d_backward(ndy, nx, nw, need_dx=False, need_db=False, **opts)
    assert dx is None and db is None
    assert all(be.LAUNCHES[k] == v for k, v in before.items())
    assert_close(to_f64(dw), ref[1], "float32", g.N * g.P * g.Q, what="dw only")


# ------------------------------------------------------------------------------------------------
# triton's launcher alone: tap-major reduction variants and INT64 kernels
# ------------------------------------------------------------------------------------------------
TAPS_FWD = pick("3x2_s2", "same_asym", "groups2", "1x1_s2_g2")
TAPS_BWD = pick("3x2_s2", "same_s2_d2", "groups2", "1x1_s2_g2")


@pytest.mark.parametrize("case", TAPS_FWD, ids=ids(TAPS_FWD))
def test_triton_forward_taps_variant(tb, case, monkeypatch):
    """The tap-major reduction (used for C/groups >= 16) on small shapes, by lowering the switch."""
    from cnngpu.backends.triton_backend import conv
    monkeypatch.setattr(conv, "FLAT_K_MAX_C", 0)
    _forward(tb, case, "float32", 3, "implicit_gemm", launched="conv2d_fwd_implicit_gemm[taps]")


@pytest.mark.parametrize("case", TAPS_BWD, ids=ids(TAPS_BWD))
def test_triton_backward_taps_variant(tb, case, monkeypatch):
    """The tap-major reductions (used for K/groups resp. C/groups >= 16) on small shapes."""
    from cnngpu.backends.triton_backend import conv
    monkeypatch.setattr(conv, "FLAT_K_MAX_C", 0)
    _backward(tb, case, "float32", 14, "implicit_gemm",
              launched=("conv2d_bwd_dx_implicit_gemm[taps]", "conv2d_bwd_dw_implicit_gemm[taps]"))


BIG_TILE_CASE = ("c128_big_tile", 2, 128, 7, 6, 128, 3, 3, 1, 1, 1, 1, True)   # 84 rows: partial tiles


@pytest.mark.parametrize("tile", [(128, 256), (256, 128)], ids=["128x256", "256x128"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_triton_big_tiles(tb, tile, layout, monkeypatch):
    """The sm_90 tables' 128x256 / 256x128 tiles (8 warps) of the forward and dX GEMMs, forced as the
    only candidate (the picker takes them on a GPU only where they fill two waves), against the
    NumPy reference under the interpreter (fp16 operands, fp32 accumulation)."""
    from cnngpu.backends.triton_backend import _tuning
    from cnngpu.kernels.triton._config import gemm_config
    big = gemm_config(*tile, 64, 3, 8)
    orig, used = _tuning.config_table, []

    def table(kernel, arch):
        if kernel.fn.__name__ in ("conv2d_fwd_implicit_gemm", "conv2d_bwd_dx_implicit_gemm"):
            used.append(kernel.fn.__name__)
            return [big]
        return orig(kernel, arch)

    monkeypatch.setattr(_tuning, "config_table", table)
    _forward(tb, BIG_TILE_CASE, "float16", 21, "implicit_gemm", layout=layout)
    (dy, x, w), (ndy, nx, nw), opts, g = bwd_inputs("triton", BIG_TILE_CASE, "float16", 22, layout)
    with launches(tb, "conv2d_bwd_dx_implicit_gemm[taps]"):      # dX only: dW keeps its own tables
        dx, _, _ = F.conv2d_backward(ndy, nx, nw, need_dw=False, need_db=False, algo="implicit_gemm", **opts)
    rdx = F.conv2d_backward(dy, x, w, need_dw=False, need_db=False, backend="numpy", **opts)[0]
    assert_close(to_f64(dx), rdx, "float16", g.k_per_group * g.R * g.S, what=f"dx big tile {tile}")
    assert set(used) == {"conv2d_fwd_implicit_gemm", "conv2d_bwd_dx_implicit_gemm"}


@pytest.mark.parametrize("algo", ALGOS)
def test_triton_forward_int64_variant(tb, algo, monkeypatch):
    """The INT64 variant computes the same result (the limit is lowered so a tiny conv takes it)."""
    monkeypatch.setattr(limits, "INT32_LIMIT", 64)
    _forward(tb, GEOMETRIES[4], "float32", 8, algo, "channels_last", launched=f"conv2d_fwd_{algo}[int64]")


@pytest.mark.parametrize("algo", ALGOS)
def test_triton_backward_int64_variant(tb, algo, monkeypatch):
    """The INT64 variants (and the int64 split sum) give the same gradients (lowered limit)."""
    from cnngpu.backends.triton_backend import conv
    monkeypatch.setattr(limits, "INT32_LIMIT", 64)
    monkeypatch.setattr(limits, "OFF_GPU_SMS", 132)
    monkeypatch.setattr(conv_policy, "SPLIT_MIN_LEN", 8)
    monkeypatch.setattr(conv, "SPLIT_GRANULE", 8)
    _backward(tb, GEOMETRIES[4], "float32", 19, algo, "channels_last",
              launched=(f"conv2d_bwd_dx_{algo}[int64]", f"conv2d_bwd_dw_{algo}[int64]", "conv2d_bwd_db[int64]",
                        "conv2d_bwd_sum_splits[int64]"))


# ------------------------------------------------------------------------------------------------
# GPU: bfloat16 (the interpreter's tl.dot on bf16 operands is wrong), larger shapes, real sizes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", [pytest.param("triton", marks=pytest.mark.gpu),
                                     pytest.param("cupy", marks=pytest.mark.cupy)])
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", GPU_BF16, ids=ids(GPU_BF16))
def test_bf16_forward_backward(backend, case, algo):
    """bf16 operands with fp32 accumulation, forward and backward (triton on a GPU only: Triton's
    interpreter computes tl.dot on bfloat16 operands wrongly, so a CPU run cannot judge it)."""
    be = require(backend)
    _forward(be, case, "bfloat16", 21, algo)
    _backward(be, case, "bfloat16", 22, algo)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=pytest.mark.gpu),
                                     pytest.param("cupy", marks=pytest.mark.cupy)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", BIG, ids=ids(BIG))
def test_big_geometries(backend, case, algo, dtype):
    """Several M/N tiles, 16-byte loads, split-K on the auto path: forward and backward (triton on a
    GPU only, the interpreter is too slow; cupy also on the CPU emulation, forward thread order)."""
    be = require(backend)
    _forward(be, case, dtype, 3, algo)
    _backward(be, case, dtype, 4, algo)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_real_size_gpu(be, dtype):
    """A ResNet-like 3x3 layer at a real size (auto algorithms, split-K active) on the GPU."""
    case = ("resnet3x3", 8, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1, True)
    _forward(be, case, dtype, 23, layout="channels_last", launched="conv2d_fwd_implicit_gemm")
    _backward(be, case, dtype, 24, layout="channels_last",
              launched=("conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dw_implicit_gemm", "conv2d_bwd_sum_splits"))


@pytest.mark.gpu
def test_cupy_takes_torch_tensors_via_dlpack():
    """torch CUDA tensors -> cupy zero-copy (DLPack), conv2d on them, the result back to torch."""
    cb = require("cupy")
    torch = pytest.importorskip("torch")
    (x, w, _), _, opts = fwd_inputs("cupy", GEOMETRIES[4], "float32", 6)
    tx, tw = (torch.from_numpy(a.astype(np.float32)).cuda() for a in (x, w))
    cx, cw = cb.asarray(tx), cb.asarray(tw)
    assert cx.data.ptr == tx.data_ptr()
    with launches(cb, "conv2d_fwd_implicit_gemm"):
        y = F.conv2d(cx, cw, None, algo="implicit_gemm", **opts)
    ref = F.conv2d(x, w, None, backend="numpy", **opts)
    assert_close(to_f64(y), ref, "float32", fwd_reduction(GEOMETRIES[4]), what="y from torch tensors")
    ty = torch.from_dlpack(y)
    assert ty.device.type == "cuda" and tuple(ty.shape) == y.shape


# ------------------------------------------------------------------------------------------------
# triton: the GEMMs' internal channels-last layout (issue 12)
# ------------------------------------------------------------------------------------------------
# C=3 (fp16: channels zero-padded to 16), C=20 (plain relayout), a 1x1 (size-1 weight strides)
INTERNAL_CL = [("stem_like", 2, 3, 9, 8, 16, 3, 3, 2, 1, 1, 1, True),
               ("c20", 1, 20, 5, 4, 16, 3, 2, 1, 1, 1, 1, True),
               ("c16_1x1", 2, 16, 4, 5, 16, 1, 1, 1, 0, 1, 1, False)]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", INTERNAL_CL, ids=ids(INTERNAL_CL))
def test_triton_internal_channels_last(tb, case, dtype, layout):
    """The implicit GEMMs run on channels-last copies of NCHW activations and weights (fp16 with
    fewer than 16 input channels: zero-padded to 16); outputs come back in x's layout, same values."""
    pad = ("conv2d_channel_pad",) if dtype == "float16" and case[2] < 16 else ()
    relayout = ("conv2d_input_relayout",) if layout == "nchw" else ()
    with launches(tb, *(pad or relayout)):       # x is padded (a channels-last copy) or re-laid
        _forward(tb, case, dtype, 31, "implicit_gemm", layout, launched="conv2d_fwd_implicit_gemm")
    _backward(tb, case, dtype, 32, "implicit_gemm", layout,
              launched=("conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dw_implicit_gemm") + pad + relayout)


def test_triton_weight_relayout_cached(tb):
    """A weight is re-laid once per (tensor, version): a second call reuses the copy, an in-place
    update makes a new one."""
    import torch
    from cnngpu.backends.triton_backend import conv
    w = torch.randn(16, 20, 3, 3)
    a = conv.channels_last_weight(w)
    assert a.is_contiguous(memory_format=torch.channels_last) and torch.equal(a, w)
    assert conv.channels_last_weight(w) is a
    w.mul_(2)
    b = conv.channels_last_weight(w)
    assert b is not a and torch.equal(b, w)
    p = conv.channels_last_weight(w, 32)
    assert p.shape == (16, 32, 3, 3) and torch.equal(p[:, :20], w) and not p[:, 20:].any()


SPLIT_FWD = [("c32_7x7", 1, 32, 3, 3, 8, 3, 3, 1, 1, 1, 1, True),        # one tile, 18 K steps
             ("c48_1x1", 1, 48, 3, 2, 8, 1, 1, 1, 0, 1, 1, True)]        # 1x1: 3 K steps of 16


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", SPLIT_FWD, ids=ids(SPLIT_FWD))
def test_triton_forward_split_k(tb, case, dtype, layout, monkeypatch):
    """Forward split-K (tiles < 2 waves): fp32 partials summed in a fixed order (bias once)."""
    monkeypatch.setattr(conv_policy, "GEMM_SPLIT_MIN_STEPS", 1)
    splits = {"c32_7x7": 4, "c48_1x1": 3}[case[0]]           # 2 off-GPU SMs, one 16x16 tile
    with launches(tb, "conv2d_bwd_sum_splits"):
        y = _forward(tb, case, dtype, 33, "implicit_gemm", layout,
                     launched=f"conv2d_fwd_implicit_gemm[split={splits}]")
    again = _forward(tb, case, dtype, 33, "implicit_gemm", layout, launched="conv2d_fwd_implicit_gemm")
    assert bool((y == again).all()), "split-K forward is not deterministic"


SPLIT_DX = [("k32_s2", 1, 8, 5, 5, 32, 3, 3, 2, 1, 1, 1, False),         # 4 classes, 32 output channels
            ("k48_1x1", 1, 8, 3, 3, 48, 1, 1, 1, 0, 1, 1, False)]        # 1 class, 3 K steps of 16


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", SPLIT_DX, ids=ids(SPLIT_DX))
def test_triton_backward_dx_split_k(tb, case, dtype, layout, monkeypatch):
    """dX split-K per residue class (tiles < 2 waves): fp32 partials summed in a fixed order, empty
    ranges store zeros; deterministic. (8 SMs assumed: the stride-2 case's 4 classes x 1 tile split.)"""
    monkeypatch.setattr(conv_policy, "GEMM_SPLIT_MIN_STEPS", 1)
    monkeypatch.setattr(limits, "OFF_GPU_SMS", 8)
    with launches(tb, "conv2d_bwd_sum_splits"):
        got = _backward(tb, case, dtype, 34, "implicit_gemm", layout,
                        launched=("conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dw_implicit_gemm"))
    assert any(k.startswith("conv2d_bwd_dx_implicit_gemm[split=") and not k.endswith("=1]") and v
               for k, v in tb.LAUNCHES.items())
    again = _backward(tb, case, dtype, 34, "implicit_gemm", layout,
                      launched=("conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dw_implicit_gemm"))
    assert bool((got[0] == again[0]).all()), "split-K dX is not deterministic"
