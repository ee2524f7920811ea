"""The triton backend's opt-in TMA conv forward (``algo='tma'``: 1x1, stride 1, no padding, NCHW),
against the NumPy reference under the interpreter (device-side tensor descriptors run there), fp32
and fp16 (bf16 dots on a GPU only): tiles overhanging K, C and H*W (zero-filled loads, clipped
stores), with and without bias; outputs poisoned (conftest); the kernel that ran is asserted. Its
backward runs the 'auto' algorithms. Unsupported geometries and layouts raise ValueError.
Nothing here is timed: the path is unmeasured."""
import numpy as np
import pytest

from cnngpu import functional as F
from cnngpu.dtypes import dtype_name
from harness import assert_close, launches, native, randn, require, rng, seed_of, to_f64

torch = pytest.importorskip("torch")

# (N, C, H, W, K): L = H*W and C multiples of 8 (16-byte rows in fp16); edges in every dimension
SHAPES = [(2, 24, 4, 6, 20), (1, 16, 4, 4, 16), (3, 40, 2, 12, 7)]


@pytest.fixture
def tb():
    return require("triton")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_tma_forward_matches_reference(tb, shape, dtype, bias):
    N, C, H, W, K = shape
    g = rng(seed_of("tma", shape, dtype, bias))
    x, w = randn(g, (N, C, H, W), dtype), randn(g, (K, C, 1, 1), dtype)
    b = randn(g, (K,), dtype) if bias else None
    ref = F.conv2d(x, w, b, backend="numpy")
    nx, nw = native("triton", x, dtype), native("triton", w, dtype)
    nb = native("triton", b, dtype) if bias else None
    with launches(tb, "conv2d_fwd_1x1_tma"):
        y = F.conv2d(nx, nw, nb, algo="tma")
    assert dtype_name(y) == dtype and y.is_contiguous()
    assert_close(to_f64(y), ref, dtype, C, what=f"y tma {dtype}")


def test_tma_backward_runs_auto(tb):
    g = rng(seed_of("tma-bwd"))
    x, w, dy = randn(g, (2, 16, 4, 4)), randn(g, (8, 16, 1, 1)), randn(g, (2, 8, 4, 4))
    ref = F.conv2d_backward(dy, x, w, backend="numpy")
    got = F.conv2d_backward(*(native("triton", a, "float32") for a in (dy, x, w)), algo="tma")
    for a, r, n in zip(got, ref, (8, 32, 32)):
        assert_close(to_f64(a), r, "float32", n, what="tma backward (auto)")


@pytest.mark.parametrize("what,x_shape,w_shape,kw", [
    ("3x3", (1, 16, 4, 4), (8, 16, 3, 3), dict(padding=1)),
    ("stride", (1, 16, 4, 4), (8, 16, 1, 1), dict(stride=2)),
    ("groups", (1, 16, 4, 4), (8, 8, 1, 1), dict(groups=2)),
    ("unaligned plane", (1, 16, 3, 3), (8, 16, 1, 1), {}),
    ("unaligned channels", (1, 12, 4, 4), (8, 12, 1, 1), {}),
])
def test_tma_rejects_what_it_cannot_run(tb, what, x_shape, w_shape, kw):
    g = rng(seed_of("tma-bad", what))
    x = native("triton", randn(g, x_shape), "float16")
    w = native("triton", randn(g, w_shape), "float16")
    with pytest.raises(ValueError, match="algo='tma'"):
        F.conv2d(x, w, algo="tma", **kw)


def test_tma_rejects_channels_last(tb):
    g = rng(seed_of("tma-cl"))
    x = native("triton", randn(g, (1, 16, 4, 4)), "float16").contiguous(memory_format=torch.channels_last)
    w = native("triton", randn(g, (8, 16, 1, 1)), "float16")
    with pytest.raises(ValueError, match="NCHW-contiguous"):
        F.conv2d(x, w, algo="tma")


def test_auto_never_picks_tma(tb):
    x = native("triton", np.ones((1, 16, 4, 4)) * 0.5, "float16")
    w = native("triton", np.ones((8, 16, 1, 1)) * 0.25, "float16")
    before = tb.LAUNCHES["conv2d_fwd_1x1_tma"]
    F.conv2d(x, w)
    assert tb.LAUNCHES["conv2d_fwd_1x1_tma"] == before


def test_policy_backward_of_tma_is_auto():
    from cnngpu.backends import conv_policy
    g = F.conv2d_geometry((2, 16, 4, 4), (8, 16, 1, 1))
    assert "tma" in conv_policy.ALGOS
    assert conv_policy.choose_bwd_algos(g, "tma") == conv_policy.choose_bwd_algos(g, "auto")


def test_allocator_installed_only_when_none_is_set():
    """Device-side descriptors need triton's allocator on a GPU: the launcher installs its torch one
    when none is set and keeps a caller's (run in a copied context: triton keeps it in a ContextVar)."""
    import contextvars

    import triton
    from triton.runtime import _allocation

    from cnngpu.backends.triton_backend import conv_tma

    def body():
        conv_tma._ensure_allocator()
        assert _allocation._allocator.get() is conv_tma._alloc

        def mine(size, alignment, stream):
            return None

        triton.set_allocator(mine)
        conv_tma._ensure_allocator()
        assert _allocation._allocator.get() is mine

    contextvars.copy_context().run(body)


@pytest.mark.cupy
def test_cupy_refuses_tma():
    """'tma' is the triton backend's path: the cupy backend refuses it with a ValueError naming algo."""
    require("cupy")
    g = rng(seed_of("tma-cupy"))
    x = native("cupy", randn(g, (1, 16, 4, 4)), "float16")
    w = native("cupy", randn(g, (8, 16, 1, 1)), "float16")
    with pytest.raises(ValueError, match="algo"):
        F.conv2d(x, w, algo="tma")
