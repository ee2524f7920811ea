"""The Hopper conv2d forward, dX and dW (kernels/cuda/conv2d_fwd_sm90.cu, conv2d_bwd_dx_sm90.cu,
conv2d_bwd_dw_sm90.cu on conv2d_igemm_sm90.cuh: wgmma.mma_async (K-major; MN-major for dW) from 128-byte
swizzled shared memory, 4-stage pipeline: cp.async for channels-last activations and the weights,
register-staged loads for NCHW activations read in place) against the NumPy reference, on the CPU
emulation built with -arch=sm_90a, launched by the real cupy launcher with the sm_90 plan forced
through its test hook (CNNGPU_CUPY_ARCH=90, cupy_backend/conv.py ARCH_ENV).

Geometries from tests/conv_cases.py (BIG: several M tiles, C/groups a multiple of 8); fp16 and
bf16; both thread orders (a race between the copies, the barrier and the asynchronous wgmma shows
as a difference, and the emulator fails a wgmma whose shared memory changes before its wait).
Outputs are poisoned with NaN (conftest), inputs fresh random values.
"""
import numpy as np
import pytest

pytest.importorskip("ml_dtypes")
from ml_dtypes import bfloat16  # noqa: E402

import cnngpu.functional as F  # noqa: E402
from cnngpu.backends import conv_policy as policy  # noqa: E402
from cnngpu.backends import numpy_backend as ref  # noqa: E402
from cnngpu.testing import cudaemu  # noqa: E402
from cnngpu.testing.cudaemu import cupy_api  # noqa: E402
from conv_cases import BIG  # noqa: E402
from harness import assert_close  # noqa: E402

DT = {"float16": np.float16, "bfloat16": bfloat16}
ENTRY = "conv2d_fwd_implicit_gemm_sm90"
DX_ENTRY = "conv2d_bwd_dx_implicit_gemm_sm90"
DW_ENTRY = "conv2d_bwd_dw_implicit_gemm_sm90"
ELIGIBLE = [c for c in BIG if (c[2] // c[11]) % policy.WGMMA_CHUNK == 0]       # C/groups % 8
DX_ELIGIBLE = [c for c in BIG if (c[5] // c[11]) % policy.WGMMA_CHUNK == 0]    # K/groups % 8
DW_ELIGIBLE = [c for c in ELIGIBLE if c in DX_ELIGIBLE]                         # both


@pytest.fixture(scope="module")
def be(emulated_cupy):
    return emulated_cupy


@pytest.fixture
def sm90(be, monkeypatch):
    from cnngpu.backends.cupy_backend import conv
    monkeypatch.setenv(conv.ARCH_ENV, "90")
    return conv


@pytest.fixture(params=["nchw", "channels_last"])
def layout(request):
    """Activations C-contiguous (read in place: register-staged loads into the swizzled layouts) or
    channels-last (NHWC, 16-byte cp.async); neither is copied."""
    return request.param


def _dev(h, layout="nchw"):
    a = cupy_api.asarray(h)
    return a if layout == "nchw" else cupy_api.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _ran_as(be, before, layout):
    """The launch counts since ``before``: no activation re-layout, '[nchw]' iff NCHW."""
    ran = {k: v - before.get(k, 0) for k, v in be.LAUNCHES.items() if v != before.get(k, 0)}
    assert "conv2d_input_relayout" not in ran, ran
    assert any(k.endswith("[nchw]") for k in ran) == (layout == "nchw"), ran
    return ran


@pytest.fixture(params=["forward", "reverse"])
def order(request):
    with cudaemu.schedule(request.param):
        yield request.param


def _case(case, dtype, seed):
    _, N, C, H, W, K, R, S, stride, pad, dil, groups, bias = case
    g = F.conv2d_geometry((N, C, H, W), (K, C // groups, R, S), stride=stride, padding=pad, dilation=dil,
                          groups=groups)
    r = np.random.default_rng(seed)
    xh = r.standard_normal((N, C, H, W)).astype(DT[dtype])
    wh = (r.standard_normal((K, C // groups, R, S)) * 0.3).astype(DT[dtype])
    bh = r.standard_normal((K,)).astype(DT[dtype]) if bias else None
    return g, xh, wh, bh


@pytest.mark.parametrize("dtype", list(DT))
@pytest.mark.parametrize("case", ELIGIBLE, ids=[c[0] for c in ELIGIBLE])
def test_conv2d_forward_wgmma_parity(be, sm90, order, layout, dtype, case):
    g, xh, wh, bh = _case(case, dtype, 11)
    before = dict(be.LAUNCHES)
    y = be.conv2d_forward(_dev(xh, layout), cupy_api.asarray(wh),
                          None if bh is None else cupy_api.asarray(bh), g, algo="implicit_gemm")
    assert _ran_as(be, before, layout).get(ENTRY) == 1, "the sm_90a wgmma kernel did not run"
    want = ref.conv2d_forward(xh.astype(np.float64), wh.astype(np.float64),
                              None if bh is None else bh.astype(np.float64), g)
    assert_close(cupy_api.asnumpy(y).astype(np.float64), want, dtype, reduction_len=g.c_per_group * g.R * g.S,
                 what=f"wgmma conv fwd {case[0]}")


@pytest.mark.parametrize("dtype", list(DT))
@pytest.mark.parametrize("case", DX_ELIGIBLE, ids=[c[0] for c in DX_ELIGIBLE])
def test_conv2d_dx_wgmma_parity(be, sm90, order, layout, dtype, case):
    g, xh, wh, _ = _case(case, dtype, 21)
    dyh = np.random.default_rng(22).standard_normal((g.N, g.K, g.P, g.Q)).astype(DT[dtype])
    before = dict(be.LAUNCHES)
    dx, _, _ = be.conv2d_backward(_dev(dyh, layout), _dev(xh, layout), cupy_api.asarray(wh), g,
                                  need_dx=True, need_dw=False, need_db=False, algo="implicit_gemm")
    assert _ran_as(be, before, layout).get(DX_ENTRY) == 1, "the sm_90a wgmma dX kernel did not run"
    want, _, _ = ref.conv2d_backward(dyh.astype(np.float64), xh.astype(np.float64), wh.astype(np.float64), g)
    assert_close(cupy_api.asnumpy(dx).astype(np.float64), want, dtype, reduction_len=g.k_per_group * g.R * g.S,
                 what=f"wgmma conv dX {case[0]}")


@pytest.mark.parametrize("dtype", list(DT))
@pytest.mark.parametrize("case", DW_ELIGIBLE, ids=[c[0] for c in DW_ELIGIBLE])
def test_conv2d_dw_wgmma_parity(be, sm90, order, layout, dtype, case):
    """dW (split-K over N*P*Q where the plan splits: fp32 partials, fixed-order sum)."""
    g, xh, wh, _ = _case(case, dtype, 31)
    dyh = np.random.default_rng(32).standard_normal((g.N, g.K, g.P, g.Q)).astype(DT[dtype])
    before = dict(be.LAUNCHES)
    _, dw, _ = be.conv2d_backward(_dev(dyh, layout), _dev(xh, layout), cupy_api.asarray(wh), g,
                                  need_dx=False, need_dw=True, need_db=False, algo="implicit_gemm")
    assert _ran_as(be, before, layout).get(DW_ENTRY) == 1, "the sm_90a wgmma dW kernel did not run"
    _, want, _ = ref.conv2d_backward(dyh.astype(np.float64), xh.astype(np.float64), wh.astype(np.float64), g)
    assert_close(cupy_api.asnumpy(dw).astype(np.float64), want, dtype, reduction_len=g.N * g.P * g.Q,
                 what=f"wgmma conv dW {case[0]}")


def test_wgmma_dw_splits_the_reduction(be, sm90):
    """A small-output, long-reduction dW runs split-K on the wgmma kernel (several splits)."""
    from cnngpu.backends.cupy_backend import conv
    case = next(c for c in DW_ELIGIBLE if c[0] == "c24_1x1_split")
    g, xh, wh, _ = _case(case, "float16", 41)
    _, splits, _ = conv.dw_w90_plan(g, conv.sm_count())
    assert splits > 1
    dyh = np.random.default_rng(42).standard_normal((g.N, g.K, g.P, g.Q)).astype(np.float16)
    key = f"conv2d_bwd_dw_implicit_gemm[split={splits}]"
    before = be.LAUNCHES[key]
    _, dw, _ = be.conv2d_backward(cupy_api.asarray(dyh), cupy_api.asarray(xh), cupy_api.asarray(wh), g,
                                  need_dx=False, need_dw=True, need_db=False, algo="implicit_gemm")
    assert be.LAUNCHES[key] == before + 1
    _, want, _ = ref.conv2d_backward(dyh.astype(np.float64), xh.astype(np.float64), wh.astype(np.float64), g)
    assert_close(cupy_api.asnumpy(dw).astype(np.float64), want, "float16", reduction_len=g.N * g.P * g.Q)


# few output tiles, a long reduction: the forward / dX GEMMs split K (conv_policy.gemm_split_k)
SPLIT_CASE = ("c128_split", 1, 128, 6, 6, 128, 3, 3, 1, 1, 1, 1, True)


@pytest.mark.parametrize("dtype", list(DT))
def test_wgmma_forward_and_dx_split_k(be, sm90, order, dtype):
    from cnngpu.backends.cupy_backend import conv
    g, xh, wh, bh = _case(SPLIT_CASE, dtype, 51)
    (_, fsplits, _), (_, dsplits, _) = conv.fwd_w90_plan(g, conv.sm_count()), conv.dx_w90_plan(g, conv.sm_count())
    assert fsplits > 1 and dsplits > 1
    before = {k: be.LAUNCHES[k] for k in (ENTRY, DX_ENTRY, f"conv2d_fwd_implicit_gemm[split={fsplits}]",
                                          f"conv2d_bwd_dx_implicit_gemm[split={dsplits}]")}
    y = be.conv2d_forward(cupy_api.asarray(xh), cupy_api.asarray(wh), cupy_api.asarray(bh), g, algo="implicit_gemm")
    dyh = np.random.default_rng(52).standard_normal((g.N, g.K, g.P, g.Q)).astype(DT[dtype])
    dx, _, _ = be.conv2d_backward(cupy_api.asarray(dyh), cupy_api.asarray(xh), cupy_api.asarray(wh), g,
                                  need_dx=True, need_dw=False, need_db=False, algo="implicit_gemm")
    assert all(be.LAUNCHES[k] == v + 1 for k, v in before.items()), dict(be.LAUNCHES)
    x64, w64 = xh.astype(np.float64), wh.astype(np.float64)
    assert_close(cupy_api.asnumpy(y).astype(np.float64), ref.conv2d_forward(x64, w64, bh.astype(np.float64), g),
                 dtype, reduction_len=g.c_per_group * g.R * g.S, what="wgmma fwd split-K")
    want, _, _ = ref.conv2d_backward(dyh.astype(np.float64), x64, w64, g)
    assert_close(cupy_api.asnumpy(dx).astype(np.float64), want, dtype, reduction_len=g.k_per_group * g.R * g.S,
                 what="wgmma dX split-K")


def test_wgmma_needs_whole_16_byte_chunks(be, sm90):
    """C/groups not a multiple of 8 (or fp32, or another arch): the mma.sync / FFMA kernel runs."""
    c = next(c for c in BIG if (c[2] // c[11]) % 8)          # depthwise: 1 channel per group
    g, xh, wh, bh = _case(c, "float16", 3)
    before = be.LAUNCHES[ENTRY]
    y = be.conv2d_forward(cupy_api.asarray(xh), cupy_api.asarray(wh), cupy_api.asarray(bh), g,
                          algo="implicit_gemm")
    assert be.LAUNCHES[ENTRY] == before
    want = ref.conv2d_forward(xh.astype(np.float64), wh.astype(np.float64), bh.astype(np.float64), g)
    assert_close(cupy_api.asnumpy(y).astype(np.float64), want, "float16", reduction_len=g.c_per_group * g.R * g.S)


def test_use_wgmma_policy():
    assert policy.use_wgmma("float16", 90, 64)
    assert policy.use_wgmma("bfloat16", 90, 8)
    assert not policy.use_wgmma("float32", 90, 64)       # fp32 keeps the FFMA kernel
    assert not policy.use_wgmma("float16", 80, 64)       # only sm_90 runs the sm_90a build
    assert not policy.use_wgmma("float16", 100, 64)      # nor sm_100 (wgmma is sm_90a-specific)
    assert not policy.use_wgmma("float16", 90, 12)       # a 16-byte chunk would straddle two taps
    assert not policy.use_wgmma("float16", 90, 64, aligned=False)
    assert policy.use_wgmma("float16", 90, 64, 16)        # dW: C/groups and K/groups
    assert not policy.use_wgmma("float16", 90, 64, 12)


def test_emulation_plans_for_sm80_unless_asked(be, monkeypatch):
    from cnngpu.backends.cupy_backend import conv
    monkeypatch.delenv(conv.ARCH_ENV, raising=False)
    assert conv.device_arch() == 80
    monkeypatch.setenv(conv.ARCH_ENV, "90")
    assert conv.device_arch() == 90
