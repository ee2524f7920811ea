"""cnngpu.torch's ``cnngpu::`` custom ops: torch.library.opcheck on every op (forward and backward),
meta tensors, vmap, fx tracing, relu(inplace=True) as torch's relu_, bfloat16 on CPU, and the
shapes torch accepts (unbatched images, (N, C) / (N, C, L) / 5-D batch norm) vs torch.

All on CPU tensors (numpy backend): the ops' registration is device independent.
"""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

import cnngpu.torch as ct  # noqa: E402
from cnngpu.torch import _ops  # noqa: E402

F64 = torch.float64


def _t(shape, seed, dtype=F64, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype).requires_grad_(grad)


# ----------------------------------------------------------------------------------------------
# opcheck (every test it offers): schema, fake kernels (incl. strides), autograd registration, AOT
# dispatch (static and dynamic shapes)
# ----------------------------------------------------------------------------------------------
def _samples():
    """(op name, args) pairs: every op, several argument combinations each."""
    x, w, b = _t((2, 3, 6, 5), 1, grad=True), _t((4, 3, 3, 3), 2, grad=True), _t((4,), 3, grad=True)
    cl = _t((2, 3, 6, 5), 4).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x3 = _t((3, 6, 5), 5, grad=True)
    g3, b3 = _t((3,), 6, grad=True), _t((3,), 7, grad=True)
    dy = _t((2, 4, 6, 5), 8)
    s = []
    for xx, bias in ((x, b), (cl, None), (x3, b)):
        s.append(("conv2d", (xx, w, bias, [1, 1], [1, 1], "", [1, 1], 1, "auto", "ieee", "")))
    s.append(("conv2d", (x, w, None, [2, 1], [], "valid", [1, 2], 1, "direct", "ieee", "numpy")))
    for mask in ([True, True, True], [True, False, False], [False, True, False]):
        s.append(("conv2d_backward", (dy, x.detach(), w.detach(), [1, 1], [1, 1], "", [1, 1], 1, mask, "auto",
                                      "ieee", "")))
    s.append(("linear", (_t((2, 3, 5), 9, grad=True), _t((4, 5), 10, grad=True), _t((4,), 11, grad=True), "")))
    s.append(("linear", (_t((5,), 12, grad=True), _t((4, 5), 10, grad=True), None, "")))
    s.append(("linear_backward", (_t((2, 3, 4), 13), _t((2, 3, 5), 9), _t((4, 5), 10), [True, True, False], "")))
    for xx in (x, cl, x3):
        s.append(("max_pool2d", (xx, [3, 2], [2, 1], [1, 1], [1, 1], True, "")))
        s.append(("avg_pool2d", (xx, [3, 2], [2, 1], [1, 0], False, False, None, "")))
    s.append(("avg_pool2d", (x, [2, 2], [2, 2], [0, 0], True, True, 3, "")))
    y, idx = _ops.max_pool2d(x.detach(), [2, 2], [2, 2], [0, 0], [1, 1], False, "")
    s.append(("max_pool2d_backward", (torch.randn_like(y), idx, [2, 3, 6, 5], [2, 2], [2, 2], [0, 0], [1, 1],
                                      False, "")))
    s.append(("avg_pool2d_backward", (_t((2, 3, 3, 2), 14), [2, 3, 6, 5], [2, 2], [2, 2], [0, 0], False, True,
                                      None, "")))
    rm, rv = _t((3,), 15), _t((3,), 16).abs() + 0.5
    for xx in (x, cl, _t((4, 3), 17, grad=True), _t((4, 3, 5), 18, grad=True), _t((2, 3, 2, 3, 2), 19, grad=True)):
        for relu in (False, True):
            s.append(("batch_norm", (xx, g3, b3, rm, rv, True, 0.1, 1e-5, relu, "")))
        s.append(("batch_norm", (xx, None, b3, rm, rv, False, 0.1, 1e-5, False, "")))
    s.append(("batch_norm", (x, None, None, None, None, True, 0.1, 1e-5, True, "")))
    with torch.no_grad():
        yb, mean, invstd, mask, _, _ = _ops.batch_norm(x, g3, b3, None, None, True, 0.1, 1e-5, True, "")
    s.append(("batch_norm_backward", (torch.randn_like(yb), x.detach(), mask, g3.detach(), mean, invstd, True, True,
                                      [True, True, True], "")))
    s.append(("batch_norm_backward", (torch.randn_like(yb), x.detach(), mask[:0], None, mean, invstd, True, False,
                                      [True, False, True], "")))
    s.append(("layer_norm", (x, [6, 5], _t((6, 5), 20, grad=True), _t((6, 5), 21, grad=True), 1e-5, "")))
    s.append(("layer_norm", (x3, [5], None, _t((5,), 22, grad=True), 1e-5, "")))
    yl, ml, rl = _ops.layer_norm(x.detach(), [5], None, None, 1e-5, "")
    s.append(("layer_norm_backward", (torch.randn_like(yl), x.detach(), None, ml, rl, [5], [True, False, True], "")))
    s.append(("group_norm", (x, 3, g3, b3, 1e-5, "")))
    s.append(("group_norm", (cl, 1, None, b3, 1e-5, "")))
    s.append(("group_norm", (_t((2, 3, 7), 23, grad=True), 3, None, None, 1e-5, "")))
    yg, mg, rg = _ops.group_norm(x.detach(), 3, g3.detach(), None, 1e-5, "")
    s.append(("group_norm_backward", (torch.randn_like(yg), x.detach(), 3, g3.detach(), mg, rg, [True, True, True],
                                      "")))
    rmi, rvi = _t((3,), 32), _t((3,), 33).abs() + 0.5
    s.append(("instance_norm", (x, g3, b3, rmi, rvi, 0.1, 1e-5, "")))
    s.append(("instance_norm", (cl, None, b3, None, None, 0.1, 1e-5, "")))
    s.append(("instance_norm", (_t((2, 3, 7), 34, grad=True), None, None, rmi, rvi, 0.3, 1e-5, "")))
    for xx in (x, cl, _t((7,), 24, grad=True)):
        s.append(("relu", (xx, "")))
    s.append(("relu_backward", (_t((2, 3), 25), torch.relu(_t((2, 3), 26)), "")))
    logits = _t((5, 4), 27, grad=True)
    tgt = torch.tensor([0, 1, 3, 2, 1])
    for red in ("mean", "sum", "none"):
        s.append(("cross_entropy", (logits, tgt, None, -100, red, 0.0, "")))
        s.append(("cross_entropy", (logits, tgt, torch.rand(4, dtype=F64) + 0.5, 1, red, 0.1, "")))
    s.append(("cross_entropy", (logits, torch.softmax(_t((5, 4), 28), 1), None, -100, "none", 0.0, "")))
    s.append(("cross_entropy", (_t((2, 4, 3), 29, grad=True), torch.tensor([[0, 1, 3], [2, 2, 0]]), None, -100,
                                "mean", 0.0, "")))
    s.append(("cross_entropy", (_t((4,), 30, grad=True), torch.tensor(2), None, -100, "mean", 0.0, "")))
    _, probs = _ops.cross_entropy(logits.detach(), tgt, None, -100, "none", 0.0, "")
    s.append(("cross_entropy_backward", (_t((5,), 31), probs, tgt, None, -100, "none", 0.0, "")))
    s.append(("cross_entropy_backward", (torch.tensor(1.5, dtype=F64), probs, tgt, None, -100, "mean", 0.1, "")))
    return s


_SAMPLES = _samples()


def test_every_op_has_samples():
    assert {name for name, _ in _SAMPLES} == set(_ops.OPS)


@pytest.mark.parametrize("i", range(len(_SAMPLES)), ids=[f"{n}-{i}" for i, (n, _) in enumerate(_SAMPLES)])
def test_opcheck(i):
    name, args = _SAMPLES[i]
    from torch.testing._internal.optests.generate_tests import ALL_TEST_UTILS
    assert set(ALL_TEST_UTILS) >= {"test_schema", "test_autograd_registration", "test_faketensor",
                                   "test_aot_dispatch_static", "test_aot_dispatch_dynamic"}
    torch.library.opcheck(_ops.OPS[name], args, test_utils=tuple(ALL_TEST_UTILS))


# ----------------------------------------------------------------------------------------------
# meta tensors: the fake kernels give torch's shapes; modules built on meta run forward
# ----------------------------------------------------------------------------------------------
def test_meta_modules_forward_shapes_match_torch():
    nn = torch.nn
    x = torch.empty(2, 3, 9, 8, device="meta")
    cases = [(ct.Conv2d(3, 4, 3, 2, 1, device="meta"), nn.Conv2d(3, 4, 3, 2, 1, device="meta")),
             (ct.MaxPool2d(3, 2, 1, ceil_mode=True), nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
             (ct.AvgPool2d(2), nn.AvgPool2d(2)),
             (ct.BatchNorm2d(3, device="meta"), nn.BatchNorm2d(3, device="meta")),
             (ct.GroupNorm(3, 3, device="meta"), nn.GroupNorm(3, 3, device="meta")),
             (ct.LayerNorm(8, device="meta"), nn.LayerNorm(8, device="meta")),
             (ct.ReLU(), nn.ReLU()), (ct.Linear(8, 5, device="meta"), nn.Linear(8, 5, device="meta"))]
    for ours, ref in cases:
        y, yr = ours(x), ref(x)
        assert y.device.type == "meta" and y.shape == yr.shape and y.dtype == yr.dtype, ours
    y, idx = ct.max_pool2d(x, 2, return_indices=True)
    assert idx.dtype == torch.int64 and idx.shape == (2, 3, 4, 4) and idx.device.type == "meta"
    loss = ct.cross_entropy(torch.empty(4, 5, device="meta"), torch.empty(4, dtype=torch.long, device="meta"))
    assert loss.shape == () and loss.device.type == "meta"
    bn1 = ct.BatchNorm1d(3, device="meta")
    assert bn1(torch.empty(4, 3, 7, device="meta")).shape == (4, 3, 7)


def test_meta_backward_gives_meta_grads():
    x = torch.empty(2, 3, 6, 6, device="meta", requires_grad=True)
    net = torch.nn.Sequential(ct.Conv2d(3, 4, 3, padding=1, device="meta"), ct.BatchNorm2d(4, device="meta"),
                              ct.ReLU(), ct.MaxPool2d(2), torch.nn.Flatten(), ct.Linear(36, 2, device="meta"))
    net(x).sum().backward()
    assert x.grad.shape == x.shape and x.grad.device.type == "meta"
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())


# ----------------------------------------------------------------------------------------------
# vmap
# ----------------------------------------------------------------------------------------------
def test_vmap_conv_relu_linear_fold_into_batch():
    vmap = torch.func.vmap
    x = _t((3, 2, 3, 6, 5), 40)             # vmapped dim 0 over (N, C, H, W) batches
    w, b = _t((4, 3, 3, 3), 41), _t((4,), 42)
    y = vmap(lambda x: ct.conv2d(x, w, b, padding=1))(x)
    torch.testing.assert_close(y, torch.stack([TF.conv2d(xi, w, b, padding=1) for xi in x]))
    y = vmap(lambda x: ct.conv2d(x, w, b), in_dims=1)(x)        # vmapped dim elsewhere, (C, H, W) images
    torch.testing.assert_close(y, torch.stack([TF.conv2d(x[:, i], w, b) for i in range(x.shape[1])]))
    torch.testing.assert_close(vmap(ct.relu)(x), torch.relu(x))
    lw = _t((2, 5), 43)
    torch.testing.assert_close(vmap(lambda x: ct.linear(x, lw))(x), TF.linear(x, lw))


def test_vmap_batched_weights_and_other_ops_loop():
    """Batched weights (and ops without a cheaper rule) run once per vmapped entry."""
    vmap = torch.func.vmap
    x, ws = _t((2, 3, 6, 5), 44), _t((3, 4, 3, 3, 3), 45)
    y = vmap(lambda w: ct.conv2d(x, w, padding=1))(ws)
    torch.testing.assert_close(y, torch.stack([TF.conv2d(x, w, padding=1) for w in ws]))
    xs = _t((2, 2, 3, 6, 5), 46)
    torch.testing.assert_close(vmap(lambda x: ct.max_pool2d(x, 2))(xs), torch.stack([TF.max_pool2d(v, 2) for v in xs]))
    torch.testing.assert_close(vmap(lambda x: ct.group_norm(x, 3))(xs), torch.stack([TF.group_norm(v, 3) for v in xs]))
    torch.testing.assert_close(vmap(lambda x: ct.batch_norm(x, None, None, training=True))(xs),
                               torch.stack([TF.batch_norm(v, None, None, training=True) for v in xs]))


def test_vmap_forward_then_autograd_backward():
    """Ordinary autograd through a vmapped forward (the vmap rules call the ops, whose autograd
    formulas record the graph); torch.func.grad itself is refused by torch for custom ops (their
    generated autograd.Function has no setup_context in torch 2.13): a clear RuntimeError."""
    from torch.func import grad, vmap
    w, lw = _t((4, 3, 3, 3), 47, grad=True), _t((2, 5), 48, grad=True)
    xs = _t((3, 2, 3, 6, 5), 49, grad=True)

    def f(x, conv, relu, lin):
        return lin(relu(conv(x, w, padding=1)), lw)

    y = vmap(lambda x: f(x, ct.conv2d, ct.relu, ct.linear))(xs)
    yr = vmap(lambda x: f(x, TF.conv2d, torch.relu, TF.linear))(xs)
    torch.testing.assert_close(y, yr)
    g = torch.autograd.grad(y.pow(2).sum(), (xs, w, lw))
    gr = torch.autograd.grad(yr.pow(2).sum(), (xs, w, lw))
    for a, b in zip(g, gr):
        torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="setup_context"):
        grad(lambda w: ct.conv2d(xs[0].detach(), w).sum())(w.detach())


# ----------------------------------------------------------------------------------------------
# fx symbolic tracing
# ----------------------------------------------------------------------------------------------
def test_fx_symbolic_trace_shows_our_ops_and_runs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(ct.Conv2d(3, 4, 3, padding=1), ct.BatchNorm2d(4, relu=True), ct.MaxPool2d(2),
                              ct.AvgPool2d(1), ct.GroupNorm(2, 4),
                              ct.InstanceNorm2d(4, affine=True, track_running_stats=True), torch.nn.Flatten(),
                              ct.LayerNorm(36), ct.Linear(36, 5), ct.ReLU(inplace=True)).double()
    gm = torch.fx.symbolic_trace(net)
    code = gm.code
    for op in ("conv2d", "batch_norm", "max_pool2d", "avg_pool2d", "group_norm", "instance_norm", "layer_norm",
               "linear", "relu"):
        assert f"torch.ops.cnngpu.{op}.default" in code, op
    x = _t((2, 3, 6, 6), 50)
    net_copy = copy.deepcopy(net)
    torch.testing.assert_close(gm(x), net_copy(x))
    for i in ("1", "5"):                                           # buffers updated as eager
        torch.testing.assert_close(gm.get_submodule(i).running_mean, net_copy[int(i)].running_mean)


# ----------------------------------------------------------------------------------------------
# relu(inplace=True) as torch's relu_
# ----------------------------------------------------------------------------------------------
def test_relu_inplace_version_counter_and_autograd_like_torch():
    a = _t((3, 4), 60, grad=True)
    h, hr = a * 2, a * 2
    v = h._version
    out, outr = ct.relu(h, inplace=True), TF.relu(hr, inplace=True)
    assert out is h and h._version > v
    torch.testing.assert_close(out, outr)
    torch.testing.assert_close(torch.autograd.grad(out.pow(3).sum(), a), torch.autograd.grad(outr.pow(3).sum(), a))
    leaf = _t((3,), 61, grad=True)
    for f in (lambda t: ct.relu(t, inplace=True), lambda t: TF.relu(t, inplace=True)):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            f(leaf)
    with torch.no_grad():
        t = _t((5,), 62)
        assert ct.relu(t, inplace=True) is t and bool((t >= 0).all())


# ----------------------------------------------------------------------------------------------
# bfloat16 on CPU (float32 compute on the numpy backend, rounded to bfloat16 as torch)
# ----------------------------------------------------------------------------------------------
def _bf16_check(ours, ref, inputs, atol=2e-2, rtol=2e-2):
    """Values and gradients in bfloat16 vs torch's own CPU bfloat16 ops (bfloat16 tolerances)."""
    ins = [t.detach().bfloat16().requires_grad_(t.is_floating_point()) if isinstance(t, torch.Tensor) else t
           for t in inputs]
    ins_r = [t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in ins]
    y, yr = ours(*ins), ref(*ins_r)
    assert y.dtype == torch.bfloat16 == yr.dtype
    torch.testing.assert_close(y, yr, atol=atol, rtol=rtol)
    wgt = torch.randn(y.shape, generator=torch.Generator().manual_seed(9)).bfloat16()
    diff = [t for t in ins if isinstance(t, torch.Tensor) and t.requires_grad]
    diff_r = [t for t in ins_r if isinstance(t, torch.Tensor) and t.requires_grad]
    for g, gr in zip(torch.autograd.grad((y * wgt).float().sum(), diff),
                     torch.autograd.grad((yr * wgt).float().sum(), diff_r)):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g, gr, atol=atol * 4, rtol=rtol * 2)


@pytest.mark.parametrize("op", ["conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm", "group_norm",
                                "linear", "relu", "cross_entropy"])
def test_bfloat16_cpu_vs_torch(op):
    x, w, b = _t((2, 3, 6, 5), 70, torch.float32), _t((4, 3, 3, 3), 71, torch.float32), _t((4,), 72, torch.float32)
    g3, b3 = _t((3,), 73, torch.float32), _t((3,), 74, torch.float32)
    tgt = torch.tensor([1, 0, 3])
    cases = {
        "conv2d": (lambda x, w, b: ct.conv2d(x, w, b, padding=1), lambda x, w, b: TF.conv2d(x, w, b, padding=1),
                   (x, w, b)),
        "max_pool2d": (lambda x: ct.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), (x,)),
        "avg_pool2d": (lambda x: ct.avg_pool2d(x, 3, 1, 1), lambda x: TF.avg_pool2d(x, 3, 1, 1), (x,)),
        "batch_norm": (lambda x, g, b: ct.batch_norm(x, None, None, g, b, True),
                       lambda x, g, b: TF.batch_norm(x, None, None, g, b, True), (x, g3, b3)),
        "layer_norm": (lambda x: ct.layer_norm(x, (6, 5)), lambda x: TF.layer_norm(x, (6, 5)), (x,)),
        "group_norm": (lambda x, g, b: ct.group_norm(x, 3, g, b), lambda x, g, b: TF.group_norm(x, 3, g, b),
                       (x, g3, b3)),
        "linear": (lambda x, w: ct.linear(x, w), lambda x, w: TF.linear(x, w), (x, _t((4, 5), 75, torch.float32))),
        "relu": (ct.relu, torch.relu, (x,)),
        "cross_entropy": (lambda z: ct.cross_entropy(z, tgt, label_smoothing=0.1),
                          lambda z: TF.cross_entropy(z, tgt, label_smoothing=0.1), (_t((3, 4), 76, torch.float32),)),
    }
    ours, ref, inputs = cases[op]
    _bf16_check(ours, ref, inputs)


def test_bfloat16_batchnorm_module_running_stats():
    ours, ref = ct.BatchNorm2d(3).bfloat16(), torch.nn.BatchNorm2d(3).bfloat16()
    for s in range(2):
        x = _t((4, 3, 3, 3), 77 + s, torch.float32).bfloat16() * (s + 1)
        torch.testing.assert_close(ours(x), ref(x), atol=2e-2, rtol=2e-2)
    assert ours.running_mean.dtype == torch.bfloat16
    torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-2, rtol=1e-2)


# ----------------------------------------------------------------------------------------------
# shapes torch accepts
# ----------------------------------------------------------------------------------------------
def _check(ours, ref, inputs, tol=1e-10):
    y, yr = ours(*inputs), ref(*inputs)
    assert y.shape == yr.shape
    torch.testing.assert_close(y, yr, rtol=tol, atol=tol)
    wgt = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    diff = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    for a, r in zip(torch.autograd.grad((y * wgt).sum(), diff), torch.autograd.grad((yr * wgt).sum(), diff)):
        torch.testing.assert_close(a, r, rtol=tol, atol=tol)


def test_unbatched_images_vs_torch():
    x = _t((3, 7, 6), 80, grad=True)
    w, b = _t((4, 3, 3, 2), 81, grad=True), _t((4,), 82, grad=True)
    _check(lambda x, w, b: ct.conv2d(x, w, b, 2, 1), lambda x, w, b: TF.conv2d(x, w, b, 2, 1), (x, w, b))
    _check(lambda x: ct.max_pool2d(x, 3, 2, 1, ceil_mode=True), lambda x: TF.max_pool2d(x, 3, 2, 1, ceil_mode=True),
           (x,))
    _check(lambda x: ct.avg_pool2d(x, 2, 1, 1, count_include_pad=False),
           lambda x: TF.avg_pool2d(x, 2, 1, 1, count_include_pad=False), (x,))
    _, idx = ct.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(idx, TF.max_pool2d(x, 2, return_indices=True)[1])
    for ours, ref in ((ct.Conv2d(3, 2, 3), torch.nn.Conv2d(3, 2, 3)), (ct.MaxPool2d(2), torch.nn.MaxPool2d(2)),
                      (ct.AvgPool2d(2), torch.nn.AvgPool2d(2)), (ct.LayerNorm(6), torch.nn.LayerNorm(6)),
                      (ct.InstanceNorm2d(3), torch.nn.InstanceNorm2d(3)), (ct.Linear(6, 2), torch.nn.Linear(6, 2))):
        ours, ref = ours.double(), ref.double()
        ours.load_state_dict(ref.state_dict())
        _check(ours, ref, (x,))
    _check(lambda z: ct.cross_entropy(z, torch.tensor(2)), lambda z: TF.cross_entropy(z, torch.tensor(2)),
           (_t((4,), 83, grad=True),))


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 7), (2, 3, 2, 3, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_nc_ncl_ncdhw_vs_torch(shape, training):
    x = _t(shape, 84, grad=True)
    g, b = _t((3,), 85, grad=True), _t((3,), 86, grad=True)
    rm, rv = _t((3,), 87), _t((3,), 88).abs() + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    _check(lambda x, g, b: ct.batch_norm(x, rm, rv, g, b, training, 0.2),
           lambda x, g, b: TF.batch_norm(x, rm2, rv2, g, b, training, 0.2), (x, g, b))
    torch.testing.assert_close(rm, rm2)
    torch.testing.assert_close(rv, rv2)


def test_batchnorm1d_module_vs_torch():
    ours, ref = ct.BatchNorm1d(3, momentum=None).double(), torch.nn.BatchNorm1d(3, momentum=None).double()
    assert isinstance(ours, torch.nn.BatchNorm1d)
    for shape in ((6, 3), (4, 3, 5), (6, 3)):
        x = _t(shape, 89 + len(shape), grad=True)
        _check(ours, ref, (x,))
    for n, b in ours.named_buffers():
        torch.testing.assert_close(b, dict(ref.named_buffers())[n])
    ours.eval(), ref.eval()
    _check(ours, ref, (_t((4, 3, 5), 92, grad=True),))
    with pytest.raises(ValueError, match="2D or 3D"):
        ours(_t((2, 3, 4, 4), 93))
    relu_bn = ct.BatchNorm1d(3, relu=True).double()
    x = _t((5, 3), 94, grad=True)
    _check(relu_bn, lambda x: torch.relu(torch.nn.BatchNorm1d(3).double()(x)), (x,))
    report = ct.convert(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)))
    assert isinstance(report.model[1], ct.BatchNorm1d) and ("1", "BatchNorm1d") in report.swapped


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.2)])
@pytest.mark.parametrize("shape", [(4, 5), (2, 5, 3), (5,)])
def test_cross_entropy_probability_target_gets_its_gradient(reduction, weighted, smoothing, shape):
    x = _t(shape, 95, grad=True)
    tgt = torch.softmax(_t(shape, 96), dim=1 if len(shape) > 1 else 0).requires_grad_(True)
    kw = dict(weight=torch.rand(5, dtype=F64) + 0.5 if weighted else None, reduction=reduction,
              label_smoothing=smoothing)
    from torch.autograd import gradcheck
    assert gradcheck(lambda x, t: ct.cross_entropy(x, t, **kw), (x, tgt))
    _check(lambda x, t: ct.cross_entropy(x, t, **kw), lambda x, t: TF.cross_entropy(x, t, **kw), (x, tgt))


@pytest.mark.parametrize("shape", [(4, 6), (3, 6, 5), (2, 6, 2, 3, 2)])
def test_group_and_layer_norm_any_rank_vs_torch(shape):
    x = _t(shape, 97, grad=True)
    g, b = _t((6,), 98, grad=True), _t((6,), 99, grad=True)
    _check(lambda x, g, b: ct.group_norm(x, 3, g, b), lambda x, g, b: TF.group_norm(x, 3, g, b), (x, g, b))
    ns = shape[-1:]
    _check(lambda x: ct.layer_norm(x, ns), lambda x: TF.layer_norm(x, ns), (x,))
    if len(shape) >= 3:
        _check(lambda x: ct.instance_norm(x), lambda x: TF.instance_norm(x), (x,))
    v = _t((7,), 100, grad=True)
    _check(lambda v: ct.layer_norm(v, 7), lambda v: TF.layer_norm(v, (7,)), (v,))
