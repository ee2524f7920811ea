"""The cupy backend's fused conv -> BatchNorm -> (+ residual) -> (ReLU) block on the implicit-GEMM
epilogue (kernels/cuda/conv2d_fwd_operands.cuh FwdBnEpilogue; entry points
conv2d_fwd_implicit_gemm_bn_relu[_narrow] and the sm_90a conv2d_fwd_implicit_gemm_sm90_bn_relu)
against the NumPy reference (numpy_backend/fused.py, the spec), on the CPU emulation of the CUDA
kernels (or a GPU): out, y, batch statistics, running statistics and every gradient; fp32/fp16/bf16,
train and eval, with and without residual, ReLU on and off; the split-K finish (statistics of the
summed output); the wgmma path forced with CNNGPU_CUPY_ARCH=90; |mean| >> std; NaN inputs.
Outputs are NaN-poisoned by the backend (conftest); the tests assert which kernels ran -- and, in
training, that no separate statistics pass over y did."""
import numpy as np
import pytest

import cnngpu.functional as cf
from harness import assert_close, backend_under_test, launches, native, seed_of
from test_fused_triton import check, make_case, run_block

pytestmark = pytest.mark.cupy

# (N, C, H, W, K, R, S, stride, pad, dilation, groups)
ODD = (2, 5, 6, 5, 8, 3, 3, 1, 1, 1, 1)          # scalar loads (C % 8 != 0), one M tile, _narrow
TILES = (2, 8, 9, 8, 12, 3, 3, 1, 1, 1, 1)       # 16-byte loads (cp.async for 16-bit), 2 M tiles (144 rows)
WIDE = (1, 8, 12, 11, 72, 1, 1, 1, 0, 1, 1)      # 72 channels: the 128-column entry point, 2 M tiles, 1x1 NCHW
GROUPED = (2, 4, 7, 6, 6, 3, 2, 2, (1, 0), 1, 2)  # groups, stride 2, R != S
SPLITK = (1, 64, 5, 4, 8, 3, 3, 1, 1, 1, 1)      # one small tile, long reduction: split-K on the emulated SMs
STATS = ("batch_norm_fwd_welford_partials",)      # the unfused statistics pass over y
# tolerance factor (harness.tolerance): the worst error seen over these cases is 1.3x the
# factor-1 bound (fp32 out); the shared check's default 16 would pass a bf16 split sum missing a split
FACTOR = 4.0


@pytest.fixture(scope="module", params=["cupy", "cupy-reverse"])
def be(request):
    yield from backend_under_test(request.param)


def _entry_ran(be, before):
    """Launches of the fused conv entry points since ``before`` (each records '<family>[split=S]' once)."""
    return sum(be.LAUNCHES[k] - before.get(k, 0) for k in be.LAUNCHES
               if k.startswith("conv2d_fwd_implicit_gemm_bn_relu[split="))


def _run(be, geom, dtype, training, residual, relu=True, offset=0.0, tag=""):
    c = make_case(geom, dtype, seed_of("cupy-epilogue", geom, dtype, training, residual, relu, tag), offset=offset)
    before = dict(be.LAUNCHES)
    path = "conv2d_bn_relu_fwd[train-fused]" if training else "conv2d_bn_relu_fwd[eval-fused]"
    with launches(be, path):
        got, want = run_block(be, c, dtype, training, residual, relu=relu, algo="implicit_gemm")
    assert _entry_ran(be, before) == 1
    ran = {k: be.LAUNCHES[k] - before.get(k, 0) for k in be.LAUNCHES}
    return c, got, want, ran


@pytest.mark.parametrize("geom", [ODD, TILES, WIDE, GROUPED], ids=["odd", "tiles", "wide", "grouped"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("residual", [False, True], ids=["nores", "res"])
def test_epilogue_matches_reference(be, geom, dtype, training, residual):
    c, got, want, ran = _run(be, geom, dtype, training, residual)
    check(got, want, dtype, c["w"][0].size, got["out"].size // got["out"].shape[1], factor=FACTOR)
    narrow = geom[4] // geom[10] <= 64           # K/groups: the 64-column entry point
    assert bool(ran.get("conv2d_fwd_implicit_gemm_bn_relu_narrow", 0)) == narrow, ran
    if training:   # statistics from the epilogue: finalized, never recomputed from y
        assert ran.get("batch_norm_fwd_finalize_stats", 0) == 1
        assert not any(ran.get(k, 0) for k in STATS), ran
        assert ran.get("conv_bn_apply_residual_relu", 0) == 1
    else:          # one kernel writes out: nothing after the conv
        assert ran.get("conv_bn_apply_residual_relu", 0) == 0
    # backward: the residual gradient comes out of the BN dx pass (no separate ReLU-mask pass)
    assert ran.get("batch_norm_bwd_dx", 0) == 1 and not ran.get("relu_bwd_mask", 0), ran


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_no_relu(be, training, dtype):
    c, got, want, _ = _run(be, TILES, dtype, training, True, relu=False)
    assert (got["out"] < 0).any()
    check(got, want, dtype, c["w"][0].size, got["out"].size // got["out"].shape[1], factor=FACTOR)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_split_k_finish(be, training, dtype):
    """Split-K: the epilogue writes fp32 partials only; the split sum is the fused pass (eval: +
    residual + ReLU; training: y and the Welford partials of the summed values)."""
    c, got, want, ran = _run(be, SPLITK, dtype, training, True, tag="split")
    splits = [k for k, v in ran.items() if v and k.startswith("conv2d_fwd_implicit_gemm_bn_relu[split=")]
    assert splits and splits[0] != "conv2d_fwd_implicit_gemm_bn_relu[split=1]", ran
    entry = "conv_bn_sum_splits_welford_partials" if training else "conv_bn_sum_splits_residual_relu"
    assert ran.get(entry, 0) == 1, ran   # (conv2d_bwd_sum_splits may run: the backward's own split-K)
    assert not any(ran.get(k, 0) for k in STATS), ran
    check(got, want, dtype, c["w"][0].size, got["out"].size // got["out"].shape[1], factor=FACTOR)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_channels_last_inputs(be, training):
    """x, residual and dout channels-last (strided NCHW views): read in place / copied by the launcher."""
    c = make_case(TILES, "float16", seed_of("cupy-epilogue-cl", training))
    with launches(be, "conv2d_bn_relu_fwd[train-fused]" if training else "conv2d_bn_relu_fwd[eval-fused]"):
        got, want = run_block(be, c, "float16", training, True, algo="implicit_gemm", layout="channels_last")
    check(got, want, "float16", c["w"][0].size, got["out"].size // got["out"].shape[1], factor=FACTOR)


def test_statistics_stable_under_offset(be):
    """|mean| >> std of the conv output (bias 300, std ~1): per-tile two-pass partials + Chan merge
    keep the variance (sum / sum of squares would lose it in fp32)."""
    c, got, want, _ = _run(be, TILES, "float32", True, False, offset=300.0, tag="offset")
    assert_close(got["invstd"], want["invstd"], "float32", 4096, "invstd")
    assert_close(got["rv"], want["rv"], "float32", 4096, "running_var")
    assert_close(got["out"], want["out"], "float32", 4096, "out")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_nan_input_propagates(be, training):
    """A NaN in x reaches exactly the outputs torch's block would make NaN: eval, the pixels whose
    window holds it (every channel); training, whole channels (the batch statistics turn NaN)."""
    c = make_case(TILES, "float32", seed_of("cupy-epilogue-nan", training))
    c["x"][0, 0, 4, 4] = np.nan
    d = {k: native(be.name, c[k], "float32") for k in ("x", "w", "b", "gamma", "beta", "rm", "rv")}
    out = be.to_numpy(cf.conv2d_bn_relu(d["x"], d["w"], d["b"], d["gamma"], d["beta"], d["rm"], d["rv"],
                                        padding=1, training=training, algo="implicit_gemm"))
    if training:
        assert np.isnan(out).all()
    else:
        assert np.isnan(out[0, :, 3:6, 3:6]).all()
        assert not np.isnan(out[1]).any() and np.isnan(out[0]).sum() == out.shape[1] * 9


@pytest.fixture
def sm90(monkeypatch):
    from cnngpu.backends.cupy_backend.conv import ARCH_ENV
    monkeypatch.setenv(ARCH_ENV, "90")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_sm90_wgmma_epilogue(be, sm90, dtype, training):
    """The sm_90a wgmma kernel with the same epilogue (CNNGPU_CUPY_ARCH=90 forces its plan)."""
    before = be.LAUNCHES["conv2d_fwd_implicit_gemm_sm90_bn_relu"]
    c, got, want, ran = _run(be, TILES, dtype, training, True, tag="sm90")
    assert be.LAUNCHES["conv2d_fwd_implicit_gemm_sm90_bn_relu"] == before + 1
    if training:
        assert not any(ran.get(k, 0) for k in STATS), ran
    check(got, want, dtype, c["w"][0].size, got["out"].size // got["out"].shape[1], factor=FACTOR)
