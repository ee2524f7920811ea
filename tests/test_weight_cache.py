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
# the eval-mode fused block's folded weight (w * gamma / sqrt(running_var + eps)), triton backend
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def tb():
    return require("triton")


def fold_case(seed):
    """float32 NumPy x, w and BatchNorm parameters / statistics of the (8 -> 8, groups 2) block."""
    gen = rng(seed)
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return dict(x=f32(randn(gen, X_SHAPE)), w=f32(randn(gen, W_SHAPE, scale=0.5)),
                gamma=f32(1.0 + 0.3 * randn(gen, (8,))), beta=f32(randn(gen, (8,))), rm=f32(randn(gen, (8,), scale=0.3)),
                rv=f32(0.5 + np.abs(randn(gen, (8,)))))


def fold_reference(c, residual=None):
    f64 = {k: v.astype(np.float64) for k, v in c.items()}
    return F.conv2d_bn_relu(f64["x"], f64["w"], None, f64["gamma"], f64["beta"], f64["rm"], f64["rv"], residual,
                            training=False, backend="numpy", **OPTS)


def fold_run(be, t):
    return F.conv2d_bn_relu(t["x"], t["w"], None, t["gamma"], t["beta"], t["rm"], t["rv"], training=False,
                            algo="implicit_gemm", backend=be.name, **OPTS)


@pytest.mark.parametrize("change", ["w", "gamma", "rv", "beta", "rm"])
def test_fused_eval_fold_cached_and_invalidated(tb, change):
    """cnngpu.functional on torch tensors (their own version counters): the second eval call makes no
    relayout; an in-place change of the weight, gamma or running_var makes one (the fold depends on
    them), of beta or running_mean none (they only enter the folded bias, computed per call); the
    result matches the NumPy reference for the new values either way."""
    torch = _torch()
    c = fold_case(20)
    t = {k: torch.from_numpy(v.copy()).to(_dev()) for k, v in c.items()}
    n0 = relayouts(tb)
    assert_close(to_f64(fold_run(tb, t)), fold_reference(c), "float32", RED, what="first call")
    assert relayouts(tb) == n0 + 1, "the folded weight should be re-laid once"
    assert_close(to_f64(fold_run(tb, t)), fold_reference(c), "float32", RED, what="second call")
    assert relayouts(tb) == n0 + 1, "unchanged parameters: folded weight re-laid again"
    new = fold_case(21)[change]
    if change == "rv":
        new = np.abs(new) + 0.25
    t[change].copy_(torch.from_numpy(new))                     # in place: same tensor, version + 1
    c[change] = new
    out = fold_run(tb, t)
    assert relayouts(tb) == n0 + 1 + (change in ("w", "gamma", "rv")), f"after changing {change}"
    assert_close(to_f64(out), fold_reference(c), "float32", RED, what=f"after changing {change}")


def test_fused_eval_fold_new_input_tensor_misses(tb):
    """Another gamma tensor (same values, also at version 0) is another input: a new fold, not a hit
    on the entry made from the first one; a weight without a version (inference tensor) is folded on
    every call."""
    torch = _torch()
    c = fold_case(22)
    t = {k: torch.from_numpy(v.copy()).to(_dev()) for k, v in c.items()}
    fold_run(tb, t)
    n = relayouts(tb)
    t["gamma"] = t["gamma"].clone()
    assert_close(to_f64(fold_run(tb, t)), fold_reference(c), "float32", RED, what="new gamma tensor")
    assert relayouts(tb) == n + 1
    with torch.inference_mode():
        t["w"] = t["w"].clone()
    for _ in range(2):
        fold_run(tb, t)
    assert relayouts(tb) == n + 3


def test_torch_fused_eval_fold_cached_and_invalidated(tb):
    """cnngpu.torch.Conv2dBNReLU in eval (declared versions of the conv weight, bn.weight and
    bn.running_var): no relayout on the second call; a training step (running statistics updated
    by the kernels, written back with copy_), then bn.weight / running_var / conv weight changed
    in place: a new fold each time, matching torch's Conv2d + BatchNorm2d + ReLU."""
    torch = _torch()
    ct = _ct()
    gen = rng(23)
    m = ct.Conv2dBNReLU(8, 8, 3, padding=1, groups=2, algo="implicit_gemm", backend=tb.name).to(_dev())
    ref = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False), torch.nn.BatchNorm2d(8),
                              torch.nn.ReLU()).to(_dev())
    x = torch.from_numpy(randn(gen, X_SHAPE).astype(np.float32)).to(_dev())
    with torch.no_grad():
        m.bn.running_var.copy_(torch.from_numpy(0.5 + np.abs(randn(gen, (8,))).astype(np.float32)))
    m.eval()
    ref.eval()

    def compare(what):
        ref[0].weight.data.copy_(m.conv.weight.detach())
        ref[1].load_state_dict(m.bn.state_dict())
        with torch.no_grad():
            out = m(x)
        assert_close(_np(out), _np(ref(x)).astype(np.float64), "float32", RED, what=what)
    compare("first call")
    n = relayouts(tb)
    compare("second call")
    assert relayouts(tb) == n, "unchanged parameters: folded weight re-laid again"
    m.train()
    m(x)                                                       # running statistics move
    m.eval()
    compare("after a training step")
    assert relayouts(tb) > n
    for i, update in enumerate((lambda: m.bn.weight.mul_(1.5), lambda: m.bn.running_var.add_(0.75),
                                lambda: m.conv.weight.mul_(-2.0))):
        n = relayouts(tb)
        with torch.no_grad():
            update()
        compare(f"update {i}")
        assert relayouts(tb) > n, f"update {i}: stale fold"


def test_nn_fused_eval_fold_after_training_step(tb):
    """cnngpu.nn.Conv2dBNReLU: the training step's kernels update bn.running_var in place (the
    backend bumps its torch version), so the eval fold made before it is not reused; unchanged,
    the second eval call makes no relayout."""
    from cnngpu import nn
    kw = dict(padding=1, groups=2, algo="implicit_gemm", seed=24)
    m = nn.Conv2dBNReLU(8, 8, 3, backend=tb.name, **kw)
    ref = nn.Conv2dBNReLU(8, 8, 3, backend="numpy", dtype="float64", **kw)
    x = randn(rng(24), X_SHAPE)
    nx = native(tb.name, x, "float32")
    m.eval()
    ref.eval()
    m(nx)
    n = relayouts(tb)
    m(nx)
    assert relayouts(tb) == n
    m.train()
    m(nx)
    m.eval()
    out = m(nx)
    assert relayouts(tb) > n, "stale fold after the running statistics changed"
    ref.load_state_dict(m.state_dict())
    assert_close(to_f64(out), ref(x), "float32", RED, what="eval after a training step")


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


def test_cache_inputs_versions_and_sources():
    """relaid(..., inputs=): a hit needs every input at the same source, version and signature; a
    None input is part of the key; an input without a version: no caching."""
    a, g = np.arange(4.0), np.ones(4)
    src, gsrc = _Source(), _Source()
    made = []
    make = lambda: made.append(1)  # noqa: E731
    with weight_cache.versioned(a, src, 0):
        with weight_cache.versioned(g, gsrc, 0):
            weight_cache.relaid(a, "fold", make, inputs=(g, None))
            weight_cache.relaid(a, "fold", make, inputs=(g, None))
            assert len(made) == 1
        with weight_cache.versioned(g, gsrc, 1):                  # input's new version
            weight_cache.relaid(a, "fold", make, inputs=(g, None))
        assert len(made) == 2
        with weight_cache.versioned(g, _Source(), 1):             # another input source, same version
            weight_cache.relaid(a, "fold", make, inputs=(g, None))
        assert len(made) == 3
        weight_cache.relaid(a, "fold", make, inputs=(g, None))    # g undeclared: no version, no caching
        weight_cache.relaid(a, "fold", make, inputs=(g, None))
        assert len(made) == 5
        assert len(weight_cache.cached_layouts(src)) == 1

