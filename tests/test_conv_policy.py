"""The conv2d launch policy both GPU backends share (cnngpu/backends/conv_policy.py, limits.py):
algorithm choice forward and backward, split-K sizing, the dX stride-residue classes, the int32
index decision and extent checks. Pure functions: no kernel runs here."""
import pytest

from cnngpu import functional as F
from cnngpu.backends import conv_policy as P
from cnngpu.backends import limits
from cnngpu.geometry import ConvGeometry, conv_output_size
from conv_cases import BIG, GEOMETRIES, geometry, ids


@pytest.mark.parametrize("case", GEOMETRIES + BIG, ids=ids(GEOMETRIES + BIG))
def test_algo_rules(case):
    """Forward: direct iff the GEMM is too small for tensor cores; backward: the same rule per pass."""
    g = geometry(case)
    small = g.c_per_group * g.R * g.S < 16 or g.k_per_group < 8
    assert P.choose_algo(g) == ("direct" if small else "implicit_gemm")
    assert P.choose_algo(g, direct_fits=False) == "implicit_gemm"
    dx, dw = P.choose_bwd_algos(g)
    assert dx == ("direct" if (g.c_per_group < 8 or g.k_per_group * g.R * g.S < 16) else "implicit_gemm")
    assert dw == ("direct" if (g.k_per_group < 8 or g.c_per_group * g.R * g.S < 16) else "implicit_gemm")


def test_bwd_algo_forced_and_fallbacks():
    g = F.conv2d_geometry((1, 16, 8, 8), (16, 16, 3, 3), padding=1)
    assert P.choose_bwd_algos(g) == ("implicit_gemm", "implicit_gemm")
    assert P.choose_bwd_algos(g, "direct") == ("direct", "direct")
    small = geometry(GEOMETRIES[5])                                       # depthwise: auto picks direct
    assert P.choose_bwd_algos(small, "implicit_gemm") == ("implicit_gemm", "implicit_gemm")
    # where a backend's implicit GEMM cannot run, even a forced one takes the direct kernel
    assert P.choose_bwd_algos(g, "implicit_gemm", dx_gemm_fits=False) == ("direct", "implicit_gemm")
    assert P.choose_bwd_algos(g, "auto", dw_gemm_fits=False) == ("implicit_gemm", "direct")
    with pytest.raises(ValueError, match="algo must be one of"):
        P.choose_bwd_algos(g, "winograd")


def test_backward_algo_decision_many_groups():
    """More groups than CUDA's grid axis 1 allows: the triton launcher reports that its implicit
    GEMMs do not fit, and 'auto' takes the direct kernels for dX and dW."""
    from cnngpu.backends.triton_backend import conv
    n = limits.GRID_YZ_MAX + 1
    many = ConvGeometry(1, 16 * n, 4, 4, 16 * n, 3, 3, 4, 4, (1, 1), (1, 1), (1, 1), (1, 1), n)
    fits = conv._gemm_fits(many)
    assert P.choose_bwd_algos(many, dx_gemm_fits=fits, dw_gemm_fits=fits) == ("direct", "direct")
    few = ConvGeometry(1, 16 * 4, 4, 4, 16 * 4, 3, 3, 4, 4, (1, 1), (1, 1), (1, 1), (1, 1), 4)
    fits = conv._gemm_fits(few)
    assert P.choose_bwd_algos(few, dx_gemm_fits=fits, dw_gemm_fits=fits) == ("implicit_gemm", "implicit_gemm")


def test_split_k_decision():
    # few output tiles and a long reduction: many splits, each a multiple of the granule long
    split, length = P.split_k(64 * 56 * 56, 4, 132, granule=128)
    assert split > 1 and length % 128 == 0
    assert (split - 1) * length < 64 * 56 * 56 <= split * length
    assert split <= P.MAX_SPLIT
    # enough output tiles to fill the GPU, or a short reduction: no split
    assert P.split_k(64 * 56 * 56, 10_000, 132, granule=128)[0] == 1
    assert P.split_k(1000, 1, 132, granule=128)[0] == 1
    # never an empty split
    for rows in (2049, 4097, 10_000, 123_457):
        s, n = P.split_k(rows, 1, 132, granule=128)
        assert (s - 1) * n < rows <= s * n


@pytest.mark.parametrize("length,blocks,sms,granule,numel", [
    (1, 1, 132, 1, 1), (100, 4, 132, 16, 10), (4096, 1, 132, 256, 9), (10 ** 6, 1, 132, 32, 100),
    (10 ** 6, 10 ** 4, 132, 32, 10), (123457, 3, 108, 256, 7), (2 ** 30, 1, 132, 256, 2 ** 24),
])
def test_split_k_with_workspace_budget(length, blocks, sms, granule, numel):
    budget = 256 * 2 ** 20
    splits, chunk = P.split_k(length, blocks, sms, granule=granule, out_numel=numel, ws_max_bytes=budget)
    assert 1 <= splits <= P.MAX_SPLIT
    assert chunk % granule == 0
    assert splits * chunk >= length > (splits - 1) * chunk       # covers, and no split is empty
    if splits > 1:
        assert chunk >= P.SPLIT_MIN_LEN and splits * numel * 4 <= budget
    if length >= 2 * P.SPLIT_MIN_LEN * 2 and blocks == 1 and numel * 4 * 4 <= budget:
        assert splits > 1                                          # few blocks + long reduction: split


@pytest.mark.parametrize("hw,R,stride,pad,dil", [
    ((9, 8), (3, 2), (2, 3), ((1, 1), (0, 2)), (1, 1)),
    ((7, 11), (3, 3), (2, 2), ((2, 2), (1, 1)), (2, 3)),
    ((10, 5), (5, 1), (3, 1), ((4, 3), (0, 0)), (2, 1)),
    ((4, 4), (2, 2), (4, 3), ((0, 0), (0, 0)), (3, 2)),    # stride > some sizes: empty classes
])
def test_residue_classes_cover_exactly_the_taps(hw, R, stride, pad, dil):
    """The dX residue-class table yields, for every input pixel, exactly the (tap, output) pairs of
    the definition h = p*stride - pad + r*dil with 0 <= p < P (checked by enumeration per axis)."""
    H, W = hw
    Pn = conv_output_size(H, R[0], stride[0], pad[0][0], dil[0], pad_end=pad[0][1])
    Q = conv_output_size(W, R[1], stride[1], pad[1][0], dil[1], pad_end=pad[1][1])
    g = ConvGeometry(1, 1, H, W, 1, R[0], R[1], Pn, Q, stride, (pad[0][0], pad[1][0]), (pad[0][1], pad[1][1]), dil, 1)
    rows, (r_step, s_step, dp_r, dq_s) = P.residue_classes(g)
    assert len(rows) == stride[0] * stride[1]
    got_h, got_w = {}, {}
    for a, b, hc, wc, r0, nr, p0, s0, ns, q0 in rows:
        for i in range(hc):
            got_h[a + stride[0] * i] = {(r0 + t * r_step, i + p0 - t * dp_r) for t in range(nr)
                                        if 0 <= i + p0 - t * dp_r < Pn}
        for j in range(wc):
            got_w[b + stride[1] * j] = {(s0 + t * s_step, j + q0 - t * dq_s) for t in range(ns)
                                        if 0 <= j + q0 - t * dq_s < Q}
    for size, taps, out, st, pb, d, got in ((H, R[0], Pn, stride[0], pad[0][0], dil[0], got_h),
                                             (W, R[1], Q, stride[1], pad[1][0], dil[1], got_w)):
        want = {h: {(r, p) for r in range(taps) for p in range(out) if p * st - pb + r * d == h}
                for h in range(size)}
        assert got == want
        assert all(r < taps for pairs in got.values() for r, _ in pairs)


def test_residue_classes_without_taps():
    # 1x1 stride 2: only class (0, 0) has a tap; the others are all-zero rows of dX
    g = F.conv2d_geometry((1, 2, 5, 5), (2, 2, 1, 1), stride=2)
    rows, _ = P.residue_classes(g)
    assert [(r[0], r[1]) for r in rows if r[5] and r[8]] == [(0, 0)]


def test_needs_int64_decision():
    L = limits.INT32_LIMIT
    assert limits.max_offset((2, 3, 4, 5), (60, 20, 5, 1)) == 119
    assert limits.max_offset((2, 0, 4), (1, 1, 1)) == 0
    # a contiguous tensor with exactly 2**31 elements reaches offset 2**31 - 1: still int32-safe
    assert not limits.needs_int64([((2, 2 ** 30), (2 ** 30, 1))])
    assert limits.needs_int64([((2, 2 ** 30 + 1), (2 ** 30 + 1, 1))])
    # ... unless the kernel's masked lanes need headroom past the last element
    assert limits.needs_int64([((2, 2 ** 30), (2 ** 30, 1))], offset_headroom=limits.EXTENT_HEADROOM)
    # a small view of a huge buffer (large strides) needs int64 even with few elements
    assert limits.needs_int64([((2, 3, 2, 2), (2 ** 31, 1, 2, 1))])
    # channels-last strides: the largest offset is what counts, not the logical shape order
    n, c, h, w = 64, 256, 512, 256                                   # 2**31 elements
    assert not limits.needs_int64([((n, c, h, w), (c * h * w, 1, w * c, c))])
    assert limits.needs_int64([((n + 1, c, h, w), (c * h * w, 1, w * c, c))])
    # a flattened GEMM extent (N*P*Q) close to the limit needs int64 (tile rounding headroom)
    assert limits.needs_int64([], extents=(L - 1,))
    assert not limits.needs_int64([], extents=(L // 2,))


def test_check_extents():
    g = ConvGeometry(N=2 ** 16, C=1, H=2 ** 8, W=2 ** 8, K=1, R=1, S=1, P=2 ** 8, Q=2 ** 8, stride=(1, 1),
                     pad=(0, 0), pad_end=(0, 0), dilation=(1, 1), groups=1)
    with pytest.raises(ValueError, match="cupy backend: N\\*P\\*Q"):
        P.check_extents(g, "cupy")
    P.check_extents(geometry(GEOMETRIES[0]), "cupy")


def test_gemm_activation_layout(monkeypatch):
    """NCHW activations are read in place unless a pass has another layout, the kernels cannot read
    NCHW, or the relayout switch is set ('0' or empty: off)."""
    monkeypatch.delenv(P.RELAYOUT_ENV, raising=False)
    f = P.gemm_activation_layout
    assert f(["nchw"]) == "nchw" and f(["nchw", "nchw"]) == "nchw"
    assert f(["channels_last"]) == f(["other"]) == f(["nchw", "channels_last"]) == "nhwc"
    assert f(["nchw"], reads_nchw=False) == "nhwc"
    for value, want in (("1", "nhwc"), ("0", "nchw"), ("", "nchw")):
        monkeypatch.setenv(P.RELAYOUT_ENV, value)
        assert f(["nchw"]) == want, value
