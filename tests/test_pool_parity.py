"""max/avg pooling, forward and backward, on every GPU backend against the NumPy reference (float64
on the same dtype-rounded inputs): triton (under TRITON_INTERPRET=1 on CPU) and cupy (whenever
``cnngpu.backends.is_available('cupy')``). Outputs are poisoned (conftest) and every test asserts
which kernel ran; real sizes are @gpu."""
import numpy as np
import pytest

import cnngpu.functional as F
from cnngpu.dtypes import dtype_name
from harness import (PARITY_BACKENDS, assert_close, backend_under_test, launches, native, randn, relayout, require,
                     rng, seed_of, to_f64)

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode)
GEOMS = [
    (2, 3, 8, 8, 2, 2, 0, 1, False),
    (2, 3, 7, 9, 2, 2, 0, 1, True),          # odd sizes, H != W, ceil_mode adds a partial window
    (1, 3, 9, 7, 3, 2, 1, 1, False),          # ResNet-stem pattern
    (2, 1, 11, 10, 3, 3, 1, 1, True),         # stride 3, ceil_mode, C = 1
    (1, 5, 6, 7, 3, 1, 1, 1, False),          # stride 1: every pixel in up to 9 windows
    (2, 3, 10, 9, 3, 2, 1, 2, False),         # dilation 2
    (1, 2, 12, 11, 2, 3, 1, 2, True),         # dilation 2, stride 3, ceil_mode
    (1, 3, 5, 9, (2, 3), (1, 2), (1, 0), 1, False),   # R != S, per-axis stride and padding
    (1, 2, 4, 4, 4, 1, 2, 1, True),           # padding = k/2, ceil_mode window starting in padding
]
# real sizes, on a GPU
GPU_GEOMS = [
    (32, 64, 112, 112, 3, 2, 1, 1, False),    # ResNet-50 stem max pool
    (4, 64, 56, 56, 3, 2, 1, 1, False),
    (64, 6, 28, 28, 2, 2, 0, 1, False),       # LeNet
    (16, 128, 57, 55, 3, 2, 1, 2, True),      # dilated, ceil_mode, odd sizes
]
DTYPES = ["float32", "float16", "bfloat16"]
# the kernels each backend runs: max fwd, max bwd, avg fwd, avg bwd
KERNELS = {
    "triton": ("max_pool2d_fwd_rows", "max_pool2d_bwd_rows", "avg_pool2d_fwd_rows",
               "avg_pool2d_bwd_rows"),
    "cupy": ("max_pool2d_fwd_window_argmax", "max_pool2d_bwd_gather_argmax", "avg_pool2d_fwd_window_mean",
             "avg_pool2d_bwd_gather_windows"),
}


def _ids(g):
    return "N{}C{}H{}W{}k{}s{}p{}d{}{}".format(*g[:8], "ceil" if g[8] else "")


@pytest.fixture(params=PARITY_BACKENDS)
def be(request):
    yield from backend_under_test(request.param)


def _window(k) -> int:
    return int(np.prod(np.broadcast_to(k, 2)))


def _max_pool(be, geom, dtype, seed):
    N, C, H, W, k, s, p, d, ceil = geom
    gen = rng(seed)
    x = randn(gen, (N, C, H, W), dtype)
    fwd, bwd = KERNELS[be.name][:2]
    with launches(be, fwd):
        y, idx = F.max_pool2d(native(be.name, x, dtype), k, s, p, d, ceil, return_indices=True)
    yr, ir = F.max_pool2d(x, k, s, p, d, ceil, backend="numpy", return_indices=True)
    assert dtype_name(y) == dtype and dtype_name(idx) == "int64"
    np.testing.assert_array_equal(to_f64(idx), ir)
    np.testing.assert_array_equal(to_f64(y), yr)          # a max of dtype values is exact
    dy = randn(gen, yr.shape, dtype)
    with launches(be, bwd):
        dx = F.max_pool2d_backward(native(be.name, dy, dtype), idx, (N, C, H, W), k, s, p, d, ceil)
    dxr = F.max_pool2d_backward(dy, ir, (N, C, H, W), k, s, p, d, ceil, backend="numpy")
    assert_close(to_f64(dx), dxr, dtype, reduction_len=_window(k), what="max_pool2d dx")


def _avg_pool(be, geom, dtype, count_include_pad, seed):
    N, C, H, W, k, s, p, _, ceil = geom
    gen = rng(seed)
    x = randn(gen, (N, C, H, W), dtype)
    fwd, bwd = KERNELS[be.name][2:]
    with launches(be, fwd):
        y = F.avg_pool2d(native(be.name, x, dtype), k, s, p, ceil, count_include_pad)
    yr = F.avg_pool2d(x, k, s, p, ceil, count_include_pad, backend="numpy")
    assert dtype_name(y) == dtype
    assert_close(to_f64(y), yr, dtype, reduction_len=_window(k), what="avg_pool2d y")
    dy = randn(gen, yr.shape, dtype)
    with launches(be, bwd):
        dx = F.avg_pool2d_backward(native(be.name, dy, dtype), (N, C, H, W), k, s, p, ceil, count_include_pad)
    dxr = F.avg_pool2d_backward(dy, (N, C, H, W), k, s, p, ceil, count_include_pad, backend="numpy")
    assert_close(to_f64(dx), dxr, dtype, reduction_len=_window(k), what="avg_pool2d dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", GEOMS, ids=_ids)
def test_max_pool2d_fwd_bwd(be, geom, dtype):
    _max_pool(be, geom, dtype, seed_of(geom, dtype))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [g for g in GEOMS if g[7] == 1], ids=_ids)
def test_avg_pool2d_fwd_bwd(be, geom, dtype, count_include_pad):
    _avg_pool(be, geom, dtype, count_include_pad, seed_of(geom, dtype, count_include_pad))


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_pool_strided_inputs(be, layout):
    """Channels-last and sliced x / dy / argmax give the values of contiguous ones."""
    N, C, H, W = 2, 3, 9, 8
    gen = rng(7)
    x = randn(gen, (N, C, H, W), "float32")
    xt = relayout(native(be.name, x, "float32"), layout)
    y, idx = F.max_pool2d(xt, 3, 2, 1, return_indices=True)
    yr, ir = F.max_pool2d(x, 3, 2, 1, backend="numpy", return_indices=True)
    np.testing.assert_array_equal(to_f64(idx), ir)
    np.testing.assert_array_equal(to_f64(y), yr)
    dy = randn(gen, yr.shape, "float32")
    dyt = relayout(native(be.name, dy, "float32"), layout)
    idxt = relayout(idx, layout)
    dx = F.max_pool2d_backward(dyt, idxt, (N, C, H, W), 3, 2, 1)
    assert_close(to_f64(dx), F.max_pool2d_backward(dy, ir, (N, C, H, W), 3, 2, 1, backend="numpy"),
                 "float32", 9, what="max dx")
    ya = F.avg_pool2d(xt, 3, 2, 1)
    assert_close(to_f64(ya), F.avg_pool2d(x, 3, 2, 1, backend="numpy"), "float32", 9, what="avg y")
    dxa = F.avg_pool2d_backward(dyt, (N, C, H, W), 3, 2, 1)
    assert_close(to_f64(dxa), F.avg_pool2d_backward(dy, (N, C, H, W), 3, 2, 1, backend="numpy"),
                 "float32", 9, what="avg dx")


def test_max_pool2d_ties_nan_and_neg_inf(be):
    """Ties: first max in row-major window order; NaN propagates (last NaN); all -inf: first real pixel."""
    x = np.array([[1.0, 1.0, 0.0, 2.0],
                  [1.0, 0.0, 2.0, 2.0],
                  [-np.inf, -np.inf, np.nan, 0.0],
                  [-np.inf, -np.inf, 5.0, np.nan]]).reshape(1, 1, 4, 4)
    for k, s, p in ((2, 2, 0), (3, 1, 1), (2, 1, 1)):
        y, idx = F.max_pool2d(native(be.name, x, "float32"), k, s, p, return_indices=True)
        yr, ir = F.max_pool2d(x, k, s, p, backend="numpy", return_indices=True)
        np.testing.assert_array_equal(to_f64(idx), ir)
        np.testing.assert_array_equal(to_f64(y), yr)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", GPU_GEOMS, ids=_ids)
def test_pool_gpu_real_sizes(be, geom, dtype):
    _max_pool(be, geom, dtype, 11)
    if geom[7] == 1:
        _avg_pool(be, geom, dtype, False, 12)


# the triton kernels' vector paths (kernels/triton/pool2d.py): W (NCHW) or C (channels-last)
# a multiple of 8 elements, so rows start 16-byte aligned for 16-bit data
VECTOR_GEOMS = [
    (2, 8, 16, 16, 3, 2, 1, 1, False),        # ResNet-stem pattern
    (2, 8, 12, 24, 2, 2, 0, 1, False),        # 2x2 stride 2
    (1, 16, 15, 16, 3, 2, 1, 2, True),        # dilation 2, ceil_mode, odd H
    (2, 8, 9, 32, 3, 1, 1, 1, True),          # stride 1
    (1, 8, 8, 14, (2, 3), (1, 2), (1, 1), 1, True),  # per-axis window, stride, padding; W 14: VEC 2
]


class _Spy:
    """Wraps a triton kernel: records the constexpr tile of each launch, then launches it."""

    def __init__(self, kernel):
        self.kernel, self.tiles = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.tiles.append({k: v for k, v in kwargs.items() if k.isupper()})
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", VECTOR_GEOMS, ids=_ids)
def test_pool_vector_paths(geom, dtype, layout, monkeypatch):
    """The triton pool kernels' vector paths against the NumPy reference: NCHW forward and the
    backward of NCHW dy / argmax read contiguous spans (SPAN > 0, VEC > 1) and pick taps with
    tl.gather; channels-last forward reads runs of channels (VEC > 1) and returns channels-last
    outputs (whose argmax the backward then reads tap by tap)."""
    be = require("triton")
    from cnngpu.kernels.triton import pool2d as K
    spies = {n: _Spy(getattr(K, n)) for n in ("max_pool2d_fwd_rows", "max_pool2d_fwd_channels", "max_pool2d_bwd_rows",
                                              "avg_pool2d_fwd_rows", "avg_pool2d_fwd_channels", "avg_pool2d_bwd_rows")}
    for n, s in spies.items():
        monkeypatch.setattr(K, n, s)
    N, C, H, W, k, s, p, d, ceil = geom
    gen = rng(seed_of(geom, dtype, layout))
    x = randn(gen, (N, C, H, W), dtype)
    xt = relayout(native("triton", x, dtype), layout)
    y, idx = F.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
    yr, ir = F.max_pool2d(x, k, s, p, d, ceil, backend="numpy", return_indices=True)
    np.testing.assert_array_equal(to_f64(idx), ir)
    np.testing.assert_array_equal(to_f64(y), yr)
    dy = randn(gen, yr.shape, dtype)
    dx = F.max_pool2d_backward(native("triton", dy, dtype), idx, (N, C, H, W), k, s, p, d, ceil)
    assert_close(to_f64(dx), F.max_pool2d_backward(dy, ir, (N, C, H, W), k, s, p, d, ceil, backend="numpy"),
                 dtype, reduction_len=_window(k), what="max dx")
    if d == 1:
        for cip in (True, False):
            ya = F.avg_pool2d(xt, k, s, p, ceil, cip)
            assert_close(to_f64(ya), F.avg_pool2d(x, k, s, p, ceil, cip, backend="numpy"), dtype,
                         reduction_len=_window(k), what="avg y")
            dxa = F.avg_pool2d_backward(native("triton", dy, dtype), (N, C, H, W), k, s, p, ceil, cip)
            assert_close(to_f64(dxa), F.avg_pool2d_backward(dy, (N, C, H, W), k, s, p, ceil, cip, backend="numpy"),
                         dtype, reduction_len=_window(k), what="avg dx")
    fwd = "channels" if layout == "channels_last" else "rows"
    ran = {n for n, sp in spies.items() if sp.tiles}
    assert ran == {f"max_pool2d_fwd_{fwd}", "max_pool2d_bwd_rows"} | (
        {f"avg_pool2d_fwd_{fwd}", "avg_pool2d_bwd_rows"} if d == 1 else set()), ran
    for n in ran:
        if layout == "channels_last" and n.endswith("bwd_rows"):
            continue    # the channels-last argmax has a strided W axis: direct tap loads (SPAN 0)
        for tile in spies[n].tiles:
            assert tile["VEC"] > 1 and tile.get("SPAN", 1) > 0, (n, tile)
    if layout == "channels_last":
        assert y.stride(1) == 1 and idx.stride(1) == 1, "channels-last input, channels-last outputs (as torch)"
    assert be.LAUNCHES[f"max_pool2d_fwd_{fwd}"] > 0


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_max_pool2d_ties_nan_and_neg_inf_vector_paths(layout):
    """The ties / NaN / -inf rules on the vector paths (span + tl.gather; channel runs): 8 channels,
    each a different signed multiple of the plane, planes 8 wide (W, C multiples of 8)."""
    require("triton")
    base = np.array([[1.0, 1.0, 0.0, 2.0, 2.0, -1.0, 3.0, 3.0],
                     [1.0, 0.0, 2.0, 2.0, np.nan, 0.0, 3.0, -np.inf],
                     [-np.inf, -np.inf, np.nan, 0.0, -np.inf, -np.inf, -np.inf, -np.inf],
                     [-np.inf, -np.inf, 5.0, np.nan, 1.0, 1.0, 1.0, 1.0]])
    x = np.stack([base * m for m in (1.0, -1.0, 2.0, 0.5, -3.0, 1.0, 4.0, -0.25)])[None]
    for k, s, p in ((2, 2, 0), (3, 1, 1), (2, 1, 1), (3, 2, 1)):
        xt = relayout(native("triton", x, "float32"), layout)
        y, idx = F.max_pool2d(xt, k, s, p, return_indices=True)
        yr, ir = F.max_pool2d(x, k, s, p, backend="numpy", return_indices=True)
        np.testing.assert_array_equal(to_f64(idx), ir)
        np.testing.assert_array_equal(to_f64(y), yr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", GEOMS + VECTOR_GEOMS, ids=_ids)
def test_pool_backward_channels_last(geom, dtype, monkeypatch):
    """Channels-last dy (and argmax) -> the *_bwd_channels gathers (runs of channels; VEC > 1 where
    C and the strides allow) and a channels-last dx, as torch; values as the NumPy reference. A 1x1
    dy (both layouts at once) and C = 1 stay on the *_rows path."""
    require("triton")
    import torch
    from cnngpu.kernels.triton import pool2d as K
    spies = {n: _Spy(getattr(K, n)) for n in ("max_pool2d_bwd_channels", "avg_pool2d_bwd_channels",
                                              "max_pool2d_bwd_rows", "avg_pool2d_bwd_rows")}
    for n, s in spies.items():
        monkeypatch.setattr(K, n, s)
    N, C, H, W, k, s, p, d, ceil = geom
    gen = rng(seed_of("bwd_channels", geom, dtype))
    x = randn(gen, (N, C, H, W), dtype)
    yr, ir = F.max_pool2d(x, k, s, p, d, ceil, backend="numpy", return_indices=True)
    dy = randn(gen, yr.shape, dtype)
    dyt = relayout(native("triton", dy, dtype), "channels_last")
    it = relayout(torch.from_numpy(ir.astype(np.int64)), "channels_last")
    chan = C > 1 and yr.shape[2] * yr.shape[3] > 1
    dx = F.max_pool2d_backward(dyt, it, (N, C, H, W), k, s, p, d, ceil)
    assert_close(to_f64(dx), F.max_pool2d_backward(dy, ir, (N, C, H, W), k, s, p, d, ceil, backend="numpy"),
                 dtype, reduction_len=_window(k), what="max dx")
    assert bool(spies["max_pool2d_bwd_channels"].tiles) == chan
    if d == 1:
        for cip in (True, False):
            dxa = F.avg_pool2d_backward(dyt, (N, C, H, W), k, s, p, ceil, cip)
            assert_close(to_f64(dxa), F.avg_pool2d_backward(dy, (N, C, H, W), k, s, p, ceil, cip, backend="numpy"),
                         dtype, reduction_len=_window(k), what="avg dx")
            assert (dxa.stride(1) == 1) == chan
        assert bool(spies["avg_pool2d_bwd_channels"].tiles) == chan
    if chan:
        assert dx.stride(1) == 1 and dx.is_contiguous(memory_format=torch.channels_last)
        if C % 8 == 0:
            assert all(t["VEC"] > 1 for n in ("max_pool2d_bwd_channels", "avg_pool2d_bwd_channels")
                       for t in spies[n].tiles), "aligned channel runs: vector path"


def test_torch_channels_last_backward_runs_channels_gathers():
    """cnngpu.torch on the triton backend hands a channels-last dy / indices to the backend as they
    are: the *_bwd_channels gathers run, and the gradients equal torch's (channels-last, as torch)."""
    be = require("triton")
    import torch
    import torch.nn.functional as TF
    ct = pytest.importorskip("cnngpu.torch")
    gen = rng(seed_of("torch_bwd_channels"))
    x0 = torch.from_numpy(randn(gen, (2, 8, 9, 10), "float32").astype(np.float32))
    for name, op, ref in (("max", lambda t: ct.max_pool2d(t, 3, 2, 1, backend="triton"),
                           lambda t: TF.max_pool2d(t, 3, 2, 1)),
                          ("avg", lambda t: ct.avg_pool2d(t, 3, 2, 1, backend="triton"),
                           lambda t: TF.avg_pool2d(t, 3, 2, 1))):
        x = x0.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        xr = x0.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        dy = torch.from_numpy(randn(gen, (2, 8, 5, 5), "float32").astype(np.float32))
        n = be.LAUNCHES[f"{name}_pool2d_bwd_channels"]
        op(x).backward(dy.contiguous(memory_format=torch.channels_last))
        ref(xr).backward(dy.contiguous(memory_format=torch.channels_last))
        assert be.LAUNCHES[f"{name}_pool2d_bwd_channels"] == n + 1, name
        assert x.grad.is_contiguous(memory_format=torch.channels_last)
        assert_close(to_f64(x.grad), to_f64(xr.grad), "float32", 9, what=f"{name} dx")
