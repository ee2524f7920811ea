"""Conv weights re-laid once per parameter version (cnngpu.backends.weight_cache), on the triton backend
(interpreter on CPU) and the cupy backend (CPU emulation of the CUDA kernels, or a GPU).

For each way a weight reaches a conv -- cnngpu.torch (conv2d, the fused block: torch's in-place
version counter), cnngpu.nn (Conv2d, Conv2dBNReLU: ``Parameter.version``) -- a second forward /
backward with an unchanged weight makes no ``conv2d_weight_relayout``; every in-place update cnngpu
or torch makes (``w.add_()``, torch.optim.SGD, ``load_state_dict``, cnngpu.nn SGD, assignment,
``bump_version``) makes a new copy, and the results then equal the NumPy reference for the NEW
weight (a stale copy would give the old weight's result); a new tensor at a recycled address does
not hit. Also the cache itself (one entry per (source, layout), dropped with its source) and the
cupy layouts (used in place when the weight already has them; a bare cupy array is re-laid on
every call). Small shapes: the emulation is slow.
"""
import gc

import numpy as np
import pytest

from cnngpu import functional as F
from cnngpu.backends import weight_cache
from harness import assert_close, native, randn, require, rng, to_f64

RELAYOUT = "conv2d_weight_relayout"
# x (1, 8, 5, 5), w (8, 4, 3, 3): groups 2 (the cupy dX layout (G, R, S, C/g, K/g) is then no view of w)
X_SHAPE, W_SHAPE = (1, 8, 5, 5), (8, 4, 3, 3)
OPTS = dict(stride=1, padding=1, groups=2)
RED = 4 * 9

BACKENDS = ["triton", pytest.param("cupy", marks=pytest.mark.cupy)]


@pytest.fixture(params=BACKENDS)
def be(request):
    return require(request.param)


@pytest.fixture(autouse=True)
def _fresh_cache():
    weight_cache.clear()
    yield
    weight_cache.clear()


def relayouts(be) -> int:
    return be.LAUNCHES[RELAYOUT]


def reference(x, w, dy):
    """(y, dx, dw) of the NumPy backend in float64."""
    x, w, dy = (np.asarray(a, dtype=np.float64) for a in (x, w, dy))
    y = F.conv2d(x, w, backend="numpy", **OPTS)
    dx, dw, _ = F.conv2d_backward(dy, x, w, need_db=False, backend="numpy", **OPTS)
    return y, dx, dw


def check(got, want, what):
    for name, g, r, red in zip(("y", "dx", "dw"), got, want, (RED, 2 * 9, 25)):
        assert_close(to_f64(g), r, "float32", red, what=f"{what}: {name}")


# ------------------------------------------------------------------------------------------------
# cnngpu.torch (torch's in-place version counter)
# ------------------------------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def _ct():
    return pytest.importorskip("cnngpu.torch")


def _dev() -> str:
    """Where both GPU backends take torch tensors: CUDA, or CPU under the interpreter / emulation."""
    return "cuda" if _torch().cuda.is_available() else "cpu"


def _np(t):
    return t.detach().cpu().numpy()


def torch_step(be, x, w, dy):
    """Forward + backward through cnngpu.torch's conv2d (implicit GEMMs: they read re-laid weights)."""
    xr = x.clone().requires_grad_(True)
    if w.grad is not None:
        w.grad = None
    y = _ct().conv2d(xr, w, None, algo="implicit_gemm", backend=be.name, **OPTS)
    y.backward(dy)
    return y.detach(), xr.grad, w.grad


def torch_inputs(seed):
    torch = _torch()
    gen = rng(seed)
    x, w, dy = randn(gen, X_SHAPE), randn(gen, W_SHAPE), randn(gen, (1, 8, 5, 5))
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(_dev())  # noqa: E731
    return t(x), torch.nn.Parameter(t(w)), t(dy)


def test_torch_second_call_reuses_the_copy(be):
    x, w, dy = torch_inputs(1)
    want = reference(_np(x), _np(w), _np(dy))
    n0 = relayouts(be)
    check(torch_step(be, x, w, dy), want, "first step")
    assert relayouts(be) > n0, "the implicit GEMMs should read a re-laid weight"
    n1 = relayouts(be)
    check(torch_step(be, x, w, dy), want, "second step")
    assert relayouts(be) == n1, "unchanged weight re-laid again"


def _update_add(w, new):
    torch = _torch()
    with torch.no_grad():
        w.add_(new - w)


def _update_optimizer(w, new):
    torch = _torch()
    opt = torch.optim.SGD([w], lr=1.0)
    w.grad = (w - new).detach()             # one step of lr 1 lands on ``new``
    opt.step()


def _update_load_state_dict(w, new):
    torch = _torch()
    holder = torch.nn.Module()
    holder.weight = w
    holder.load_state_dict({"weight": new.clone()})


@pytest.mark.parametrize("update", [_update_add, _update_optimizer, _update_load_state_dict],
                         ids=["add_", "optim.SGD", "load_state_dict"])
def test_torch_inplace_update_makes_a_new_copy(be, update):
    torch = _torch()
    x, w, dy = torch_inputs(2)
    torch_step(be, x, w, dy)                                    # cache the old weight's copies
    new = torch_inputs(3)[1].detach()
    v = w._version
    update(w, new)
    assert w._version > v and torch.allclose(w.detach(), new)
    n = relayouts(be)
    check(torch_step(be, x, w, dy), reference(_np(x), _np(new), _np(dy)), f"after {update.__name__}")
    assert relayouts(be) > n


def test_torch_recycled_address_does_not_hit(be):
    """Two tensors over the same memory, both at version 0, with other values in between: the second
    is a new source (the first died), so the cached copy of the first is not used."""
    torch = _torch()
    if _dev() != "cpu":
        pytest.skip("builds the recycled address from host memory (torch.from_numpy); the cache logic is "
                    "device-independent (test_cache_new_source_at_recycled_id_and_address_does_not_hit)")
    x, w0, dy = torch_inputs(4)
    buf = w0.detach().numpy().copy()
    w = torch.from_numpy(buf).requires_grad_()
    torch_step(be, x, w, dy)
    addr, version = w.data_ptr(), w._version
    del w
    gc.collect()
    buf[...] = torch_inputs(5)[1].detach().numpy()              # other values, written behind torch's back
    w2 = torch.from_numpy(buf).requires_grad_()                 # (often at the dead tensor's id, too)
    assert (w2.data_ptr(), w2._version) == (addr, version)
    n = relayouts(be)
    check(torch_step(be, x, w2, dy), reference(_np(x), buf, _np(dy)), "recycled address")
    assert relayouts(be) > n


def test_torch_inference_tensor_weight(be):
    """A weight made under torch.inference_mode has no version counter: re-laid on every call (also
    after an in-place update there), never cached, results right."""
    torch = _torch()
    x, w0, dy = torch_inputs(15)
    x = x.contiguous(memory_format=torch.channels_last)   # (cupy reads NCHW x with w as it is: no copy)
    with torch.inference_mode():
        w = w0.detach().clone()
        for step in range(2):
            n = relayouts(be)
            y = _ct().conv2d(x, w, None, algo="implicit_gemm", backend=be.name, **OPTS)
            assert relayouts(be) == n + 1
            assert_close(_np(y), reference(_np(x), _np(w), _np(dy))[0], "float32", RED,
                         what=f"inference step {step}")
            w.mul_(-3.0)


def test_torch_fused_block_reuses_and_invalidates(be):
    """The fused conv+BN+ReLU op (cnngpu.torch.Conv2dBNReLU, training) declares its conv weight too."""
    torch = _torch()
    ct = _ct()
    gen = rng(6)
    m = ct.Conv2dBNReLU(8, 8, 3, padding=1, groups=2, algo="implicit_gemm", backend=be.name).to(_dev())
    x = torch.from_numpy(randn(gen, X_SHAPE).astype(np.float32)).to(_dev())

    def run():
        out = m(x)
        out.backward(torch.ones_like(out))
        return out.detach()
    run()
    n = relayouts(be)
    run()
    assert relayouts(be) == n, "unchanged weight re-laid again"
    with torch.no_grad():
        m.conv.weight.mul_(-2.0)
    out = run()
    assert relayouts(be) > n
    ref = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False), torch.nn.BatchNorm2d(8),
                              torch.nn.ReLU())
    ref[0].weight.data.copy_(m.conv.weight.detach().cpu())
    assert_close(_np(out), _np(ref(x.cpu())).astype(np.float64), "float32", RED, what="fused out, new weight")


# ------------------------------------------------------------------------------------------------
# cnngpu.nn (Parameter.version)
# ------------------------------------------------------------------------------------------------
def nn_step(m, x, dy):
    y = m(x)
    dx = m.backward(dy)
    dw = m.weight.grad
    m.zero_grad()
    return y, dx, dw


def nn_case(be, seed):
    from cnngpu import nn
    m = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False, algo="implicit_gemm", backend=be.name, seed=seed)
    gen = rng(seed)
    x, dy = randn(gen, X_SHAPE), randn(gen, (1, 8, 5, 5))
    return m, x, dy, native(be.name, x, "float32"), native(be.name, dy, "float32")


def test_nn_second_call_reuses_the_copy(be):
    m, x, dy, nx, ndy = nn_case(be, 7)
    want = reference(x, to_f64(m.weight.data), dy)
    n0 = relayouts(be)
    check(nn_step(m, nx, ndy), want, "first step")
    assert relayouts(be) > n0
    n1 = relayouts(be)
    check(nn_step(m, nx, ndy), want, "second step")
    assert relayouts(be) == n1, "unchanged weight re-laid again"


def _nn_sgd(m, be, new):
    from cnngpu import nn
    m.weight.grad = native(be.name, to_f64(m.weight.data) - new, "float32")
    nn.SGD(m.parameters(), lr=1.0).step()
    m.zero_grad()


def _nn_load_state_dict(m, be, new):
    m.load_state_dict({"weight": new})


def _nn_element_write_and_bump(m, be, new):
    m.weight.data[...] = native(be.name, new, "float32")
    m.weight.bump_version()


@pytest.mark.parametrize("update", [_nn_sgd, _nn_load_state_dict, _nn_element_write_and_bump],
                         ids=["SGD.step", "load_state_dict", "element_write+bump_version"])
def test_nn_update_makes_a_new_copy(be, update):
    m, x, dy, nx, ndy = nn_case(be, 8)
    nn_step(m, nx, ndy)
    new = randn(rng(9), W_SHAPE).astype(np.float32).astype(np.float64)
    v = m.weight.version
    update(m, be, new)
    assert m.weight.version > v
    assert_close(to_f64(m.weight.data), new, "float32", what="updated weight")
    n = relayouts(be)
    check(nn_step(m, nx, ndy), reference(x, new, dy), f"after {update.__name__}")
    assert relayouts(be) > n


def test_nn_element_write_without_bump(be):
    """The documented limit: ``p.data[...] = v`` is no assignment to ``data``, so Parameter.version
    stays; on cupy the copy of the old values is then reused (until ``bump_version()``), on triton
    the array is a torch tensor whose own in-place counter still sees the write."""
    m, x, dy, nx, ndy = nn_case(be, 10)
    nn_step(m, nx, ndy)
    v, n = m.weight.version, relayouts(be)
    new = randn(rng(11), W_SHAPE)
    m.weight.data[...] = native(be.name, new, "float32")
    assert m.weight.version == v
    y = m(nx)
    if be.name == "triton":
        assert relayouts(be) == n + 1
        assert_close(to_f64(y), reference(x, new, dy)[0], "float32", RED, what="y after element write")
    else:
        assert relayouts(be) == n


def test_nn_fused_block_reuses_and_invalidates(be):
    """cnngpu.nn.Conv2dBNReLU (its conv weight's Parameter.version) against a NumPy-backend copy."""
    from cnngpu import nn
    kw = dict(padding=1, groups=2, algo="implicit_gemm", seed=12)
    m = nn.Conv2dBNReLU(8, 8, 3, backend=be.name, **kw)
    ref = nn.Conv2dBNReLU(8, 8, 3, backend="numpy", dtype="float64", **kw)
    gen = rng(12)
    x, dy = randn(gen, X_SHAPE), randn(gen, (1, 8, 5, 5))
    nx, ndy = native(be.name, x, "float32"), native(be.name, dy, "float32")
    m(nx), m.backward(ndy)
    n = relayouts(be)
    m(nx), m.backward(ndy)
    assert relayouts(be) == n, "unchanged weight re-laid again"
    opt = nn.SGD(m.parameters(), lr=0.5)
    opt.step()
    m.zero_grad()
    out = m(nx)
    m.backward(ndy)                         # dX reads the re-laid weight on both backends
    assert relayouts(be) > n
    ref.load_state_dict(m.state_dict())
    assert_close(to_f64(out), ref(x), "float32", RED, what="fused out after SGD.step")


# ------------------------------------------------------------------------------------------------
# the cupy layouts; the cache itself
# ------------------------------------------------------------------------------------------------
@pytest.mark.cupy
def test_cupy_bare_array_relaid_every_call_and_layouts_in_place():
    """A cupy array passed straight to functional has no version: re-laid on every call. A weight
    that has the layout already is used in place (channels-last for the forward GEMM on channels-last
    x; the contiguous weight itself for the forward GEMM on NCHW x, whose reduction runs (c, r, s))."""
    be = require("cupy")
    gen = rng(13)
    x, w = randn(gen, X_SHAPE), randn(gen, W_SHAPE)
    nchw, nw = native("cupy", x, "float32"), native("cupy", w, "float32")
    want = F.conv2d(x, w, backend="numpy", **OPTS)
    n = relayouts(be)
    assert_close(to_f64(F.conv2d(nchw, nw, algo="implicit_gemm", **OPTS)), want, "float32", RED, what="nchw")
    assert relayouts(be) == n
    from cnngpu.backends.cupy_backend._cupy import cupy as _cp
    nx = _cp.ascontiguousarray(nchw.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)   # channels-last x
    for _ in range(2):
        n = relayouts(be)
        assert_close(to_f64(F.conv2d(nx, nw, algo="implicit_gemm", **OPTS)), want, "float32", RED, what="bare")
        assert relayouts(be) == n + 1
    from cnngpu.backends.cupy_backend._cupy import cupy
    cl = cupy.ascontiguousarray(nw.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)   # (K, C/g, R, S) view, KRSC memory
    n = relayouts(be)
    assert_close(to_f64(F.conv2d(nx, cl, algo="implicit_gemm", **OPTS)), want, "float32", RED, what="in place")
    assert relayouts(be) == n


@pytest.mark.cupy
def test_cupy_layouts_values():
    """The three layouts hold w's values in the order their docstrings state (16-bit as raw bits)."""
    require("cupy")
    from cnngpu.backends.cupy_backend import conv_weights as cw
    w = randn(rng(14), W_SHAPE)
    for dt in ("float32", "float16"):
        nw = native("cupy", w, dt)
        bits = np.asarray(to_f64(nw).astype(dt)).view(np.uint16 if dt == "float16" else np.float32)
        G, (K, Cg, R, S) = 2, W_SHAPE
        np.testing.assert_array_equal(np.asarray(cw.weight_kcrs(nw).get()), bits)
        np.testing.assert_array_equal(np.asarray(cw.weight_krsc(nw).get()), bits.transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(np.asarray(cw.weight_grsck(nw, G).get()),
                                      bits.reshape(G, K // G, Cg, R, S).transpose(0, 3, 4, 2, 1))


class _Source:
    """A weak-referenceable stand-in for a parameter."""


def test_cache_one_entry_per_source_and_layout_dropped_with_source():
    a = np.arange(6.0)
    src = _Source()
    made = []

    def make():
        made.append(1)
        return a[::-1].copy()
    with weight_cache.versioned(a, src, 0):
        first = weight_cache.relaid(a, "rev", make)
        assert weight_cache.relaid(a, "rev", make) is first and len(made) == 1
    # numpy arrays have no version of their own: outside the declaration, no caching
    weight_cache.relaid(a, "rev", make)
    assert len(made) == 2
    with weight_cache.versioned(a, src, 1):
        weight_cache.relaid(a, "rev", make)
    assert len(made) == 3
    assert list(weight_cache.cached_layouts(src)) == ["rev"]         # the version-0 copy was replaced
    n = len(weight_cache._CACHE)
    del src
    gc.collect()
    assert len(weight_cache._CACHE) == n - 1                         # dropped with its source


def test_cache_new_source_at_recycled_id_and_address_does_not_hit(monkeypatch):
    """Same array (address, shape, strides), same version, and another source object with the same
    id (hence the same cache key; CPython reuses a dead object's id, forced here so the case always
    arises): no hit -- the entry's weak reference names another object."""
    monkeypatch.setattr(weight_cache, "id", lambda obj: 42, raising=False)
    a = np.arange(4.0)
    made = []
    s1, s2 = _Source(), _Source()
    for s in (s1, s2, s1):
        with weight_cache.versioned(a, s, 0):
            weight_cache.relaid(a, "x", lambda: made.append(1))
    assert len(made) == 3


def test_cache_versioned_nests_and_restores():
    a = np.zeros(2)
    s1, s2 = _Source(), _Source()
    with weight_cache.versioned(a, s1, 3):
        with weight_cache.versioned(a, s2, 4):
            assert weight_cache.version_of(a) == (s2, (4, None))
        assert weight_cache.version_of(a) == (s1, (3, None))
    assert weight_cache.version_of(a) is None


def test_cache_torch_tensor_versions():
    """A torch tensor is its own source and version; a declared source takes precedence, with the
    tensor's own counter still part of the version (so either update misses)."""
    torch = _torch()
    t = torch.zeros(3)
    assert weight_cache.version_of(t) == (t, 0)
    t.add_(1)
    assert weight_cache.version_of(t) == (t, 1)
    s = _Source()
    d = t.detach()                          # shares t's version counter
    with weight_cache.versioned(d, s, 7):
        assert weight_cache.version_of(d) == (s, (7, 1))


def test_cache_bounded(monkeypatch):
    monkeypatch.setattr(weight_cache, "MAX_ENTRIES", 3)
    srcs = [_Source() for _ in range(5)]
    a = np.zeros(1)
    for s in srcs:
        with weight_cache.versioned(a, s, 0):
            weight_cache.relaid(a, "x", lambda: 1)
    assert len(weight_cache._CACHE) == 3
    assert not weight_cache.cached_layouts(srcs[0]) and weight_cache.cached_layouts(srcs[-1])
