"""The CUDA implicit GEMMs reading NCHW activations in place (issue 15: no per-call re-layout), on the
CPU emulation against the NumPy reference: conv2d_fwd.cu's FwdNchwOpA (rows (n, p, q), reduction
(c, r, s) on the weights as given), conv2d_bwd.cu's DxNchwOpA (dY per residue class) and
DwNchwOpA / DwNchwOpB (x and dY along (n, p, q)), launched by the real cupy launcher.

Small geometries (a few hundred output pixels; the emulator is slow) that cover padding, stride 2
(and 2 x 1), dilation, groups, C not a multiple of 8, odd W, N > 1, a 7x7 stem, a second partial
M tile, 1x1 convs with and without 16-byte vectors, the mixed cp.async ring (scalar activations,
16-byte weights / dy); fp32 / fp16 / bf16; outputs poisoned with NaN
(conftest). Each pass asserts that it read NCHW in place (``'<family>[nchw]'``) and that no
``conv2d_input_relayout`` happened; channels-last input takes the NHWC kernels without a copy, and
the policy switch (conv_policy.RELAYOUT_ENV) brings the copy back, recorded.
"""
import numpy as np
import pytest

pytest.importorskip("ml_dtypes")
from ml_dtypes import bfloat16  # noqa: E402

import cnngpu.functional as F  # noqa: E402
from cnngpu.backends import conv_policy as policy  # noqa: E402
from cnngpu.backends import numpy_backend as ref  # noqa: E402
from cnngpu.testing.cudaemu import cupy_api  # noqa: E402
from harness import assert_close  # noqa: E402

DT = {"float32": np.float32, "float16": np.float16, "bfloat16": bfloat16}
RELAYOUT = "conv2d_input_relayout"
FAMILIES = ("conv2d_fwd_implicit_gemm", "conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dw_implicit_gemm")

# (id, N, C, H, W, K, R, S, stride, padding, dilation, groups)
CASES = [
    ("s2_pad_c6", 3, 6, 15, 13, 12, 3, 3, 2, 1, 1, 1),           # 8 x 7 x 3 = 168 rows: a 2nd, partial M tile
    ("d2_g2", 2, 8, 9, 11, 16, 3, 3, 1, 2, 2, 2),                  # dilation 2, groups, odd W
    ("stem7x7_c3", 1, 3, 17, 15, 16, 7, 7, 2, 3, 1, 1),            # the RGB stem: C = 3, 7x7, stride 2
    ("s21_asym", 2, 5, 7, 9, 10, 3, 2, (2, 1), (1, 0), 1, 1),      # stride 2 x 1, R != S, C = 5
    ("1x1_hw35", 2, 16, 5, 7, 24, 1, 1, 1, 0, 1, 1),               # 1x1, H*W = 35: scalar loads
    ("1x1_hw24", 2, 16, 4, 6, 16, 1, 1, 1, 0, 1, 1),               # 1x1, H*W = 24: 16-byte vectors
    ("s2_pad_c8_pq64", 3, 8, 16, 15, 16, 3, 3, 2, 1, 1, 1),       # 16-bit: the mixed cp.async ring in fwd, dX, dW
]
MIXED = CASES[6]  # C*R*S = 72, K = 16, P*Q = 64: scalar activations, 16-byte w / dy (VEC_A = 1, VEC_B = 8)


@pytest.fixture(scope="module")
def be(emulated_cupy):
    return emulated_cupy


def _case(case, dtype, seed):
    _, N, C, H, W, K, R, S, stride, pad, dil, groups = case
    g = F.conv2d_geometry((N, C, H, W), (K, C // groups, R, S), stride=stride, padding=pad, dilation=dil,
                          groups=groups)
    r = np.random.default_rng(seed)
    xh = r.standard_normal((N, C, H, W)).astype(DT[dtype])
    wh = (r.standard_normal((K, C // groups, R, S)) * 0.3).astype(DT[dtype])
    bh = r.standard_normal((K,)).astype(DT[dtype])
    dyh = r.standard_normal((g.N, g.K, g.P, g.Q)).astype(DT[dtype])
    return g, xh, wh, bh, dyh


def _run(be, g, xh, wh, bh, dyh, dtype, layout):
    """Forward and backward (implicit GEMM forced) with x / dy in ``layout``; checks every result
    against the NumPy reference. Returns the LAUNCHES counts taken during the calls."""
    def dev(h):
        a = cupy_api.asarray(h)
        return a if layout == "nchw" else cupy_api.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    before = dict(be.LAUNCHES)
    y = be.conv2d_forward(dev(xh), cupy_api.asarray(wh), cupy_api.asarray(bh), g, algo="implicit_gemm")
    dx, dw, db = be.conv2d_backward(dev(dyh), dev(xh), cupy_api.asarray(wh), g, algo="implicit_gemm")
    ran = {k: v - before.get(k, 0) for k, v in be.LAUNCHES.items() if v != before.get(k, 0)}
    x64, w64, dy64 = xh.astype(np.float64), wh.astype(np.float64), dyh.astype(np.float64)
    want_y = ref.conv2d_forward(x64, w64, bh.astype(np.float64), g)
    want_dx, want_dw, want_db = ref.conv2d_backward(dy64, x64, w64, g)
    npq = g.N * g.P * g.Q
    for got, want, red, what in ((y, want_y, g.c_per_group * g.R * g.S, "y"),
                                 (dx, want_dx, g.k_per_group * g.R * g.S, "dx"),
                                 (dw, want_dw, npq, "dw"), (db, want_db, npq, "db")):
        assert_close(cupy_api.asnumpy(got).astype(np.float64), want, dtype, reduction_len=red,
                     what=f"{what} {layout} {dtype}")
    return ran


@pytest.mark.parametrize("dtype", list(DT))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_nchw_read_in_place(be, case, dtype, monkeypatch):
    """NCHW-contiguous x and dy: fwd, dX and dW read them in place, no re-layout, same results."""
    monkeypatch.delenv(policy.RELAYOUT_ENV, raising=False)
    g, xh, wh, bh, dyh = _case(case, dtype, 3)
    ran = _run(be, g, xh, wh, bh, dyh, dtype, "nchw")
    assert RELAYOUT not in ran, ran
    for fam in FAMILIES:
        assert ran.get(fam) == 1 and ran.get(f"{fam}[nchw]") == 1, (fam, ran)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_nchw_mixed_ring_specialisation(be, dtype, monkeypatch):
    """A padded, strided 3x3 conv on NCHW arrays whose weights (C*R*S, K) and dy (P*Q) allow
    16-byte loads: for fp16 / bf16 every implicit GEMM (fwd, dX, dW) is built as the mixed cp.async
    ring (VEC_A = 1 register-staged activations, VEC_B = 8 by cp.async, IG_ASYNC with >= 3 stages,
    conv2d_igemm.cuh) and matches the reference; float32 keeps the 2-stage register path."""
    from cnngpu.backends.cupy_backend import _module
    monkeypatch.delenv(policy.RELAYOUT_ENV, raising=False)
    built = []
    real = _module.get_function

    def spy(fname, entry, defines, *a, **k):
        built.append((entry, dict(defines)))
        return real(fname, entry, defines, *a, **k)

    monkeypatch.setattr(_module, "get_function", spy)
    g, xh, wh, bh, dyh = _case(MIXED, dtype, 6)
    ran = _run(be, g, xh, wh, bh, dyh, dtype, "nchw")
    for fam in FAMILIES:
        assert ran.get(f"{fam}[nchw]") == 1, (fam, ran)
        (defs,) = [d for e, d in built if e.startswith(fam)]
        if dtype == "float32":
            assert (defs["VEC_A"], defs["VEC_B"], defs["IG_ASYNC"], defs["IG_STAGES"]) == (1, 1, 0, 2), (fam, defs)
        else:
            assert (defs["VEC_A"], defs["VEC_B"], defs["IG_ASYNC"]) == (1, 8, 1) and defs["IG_STAGES"] >= 3, \
                (fam, defs)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("case", [CASES[0], CASES[5]], ids=[CASES[0][0], CASES[5][0]])
def test_channels_last_takes_the_nhwc_kernels(be, case, dtype, monkeypatch):
    """Channels-last x and dy: the NHWC operands (cp.async where channels allow), no copy, no
    in-place NCHW read."""
    monkeypatch.delenv(policy.RELAYOUT_ENV, raising=False)
    g, xh, wh, bh, dyh = _case(case, dtype, 4)
    ran = _run(be, g, xh, wh, bh, dyh, dtype, "channels_last")
    assert RELAYOUT not in ran, ran
    for fam in FAMILIES:
        assert ran.get(fam) == 1 and f"{fam}[nchw]" not in ran, (fam, ran)


def test_relayout_switch_copies_and_records(be, monkeypatch):
    """conv_policy.RELAYOUT_ENV=1: NCHW activations are copied to NHWC (recorded once per copy: x
    for the forward, then dy and x once each for the backward), and the results stay right."""
    monkeypatch.setenv(policy.RELAYOUT_ENV, "1")
    g, xh, wh, bh, dyh = _case(CASES[1], "float16", 5)
    ran = _run(be, g, xh, wh, bh, dyh, "float16", "nchw")
    assert ran.get(RELAYOUT) == 3, ran
    assert not any(k.endswith("[nchw]") for k in ran), ran


SM90_ENTRIES = {"conv2d_fwd_implicit_gemm": "conv2d_fwd_implicit_gemm_sm90",
                "conv2d_bwd_dx_implicit_gemm": "conv2d_bwd_dx_implicit_gemm_sm90",
                "conv2d_bwd_dw_implicit_gemm": "conv2d_bwd_dw_implicit_gemm_sm90"}


@pytest.mark.parametrize("order", ["forward", "reverse"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_nchw_read_in_place_sm90(be, case, dtype, order, monkeypatch):
    """The sm_90a wgmma kernels (forced: CNNGPU_CUPY_ARCH=90) read NCHW x / dy in place too:
    register-staged scalar loads into the swizzled layouts (MN-major for the forward's and dX's A,
    K-major for dW's A and B); the weights stay 16-byte cp.async, so the forward takes wgmma when
    C/groups*R*S is a multiple of 8, dX when K/groups is, dW always; the others run mma.sync, also
    in place. No re-layout anywhere; both thread orders (races between the register stores, the
    proxy fence and the asynchronous wgmma show as differences or emulator faults)."""
    from cnngpu.backends.cupy_backend import conv
    from cnngpu.testing import cudaemu
    monkeypatch.setenv(conv.ARCH_ENV, "90")
    monkeypatch.delenv(policy.RELAYOUT_ENV, raising=False)
    g, xh, wh, bh, dyh = _case(case, dtype, 6)
    with cudaemu.schedule(order):
        ran = _run(be, g, xh, wh, bh, dyh, dtype, "nchw")
    wgmma = {"conv2d_fwd_implicit_gemm": (g.c_per_group * g.R * g.S) % 8 == 0,
             "conv2d_bwd_dx_implicit_gemm": g.k_per_group % 8 == 0, "conv2d_bwd_dw_implicit_gemm": True}
    assert RELAYOUT not in ran, ran
    for fam in FAMILIES:
        assert ran.get(fam) == 1 and ran.get(f"{fam}[nchw]") == 1, (fam, ran)
        assert (ran.get(SM90_ENTRIES[fam]) == 1) == wgmma[fam], (fam, ran)
