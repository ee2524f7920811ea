"""cnngpu.torch: the functional forms (cnngpu:: custom ops) and nn.Modules on our kernels.

- numpy-backed path (CPU tensors): torch.autograd.gradcheck in float64 on every wrapper, values and
  gradients against torch's own ops, modules vs torch.nn (state_dict, running stats), and the same
  small net trained with torch.optim through our modules and through torch.nn.
- triton-backed path (CPU tensors under TRITON_INTERPRET=1 here, CUDA on a GPU): fp32 vs torch ops.
- cupy path via DLPack: CUDA only (gpu marker).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402
from torch.autograd import gradcheck  # noqa: E402

from cnngpu import backends  # noqa: E402
import cnngpu.torch as ct  # noqa: E402
from harness import launches, tolerance  # noqa: E402

F64 = torch.float64


def _t(shape, seed, dtype=F64, grad=True, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype).to(device).requires_grad_(grad)


def _numpy_be():
    return backends.get_backend("numpy")


def _triton_or_skip():
    try:
        return backends.get_backend("triton")
    except Exception as e:  # unavailable, or its op modules still missing
        pytest.skip(f"triton backend cannot be used here: {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------------------------
# gradcheck (float64, numpy-backed) + forward/backward against torch's own ops
# ----------------------------------------------------------------------------------------------
def _check_vs_torch(ours, ref, inputs, rtol=1e-10, atol=1e-10):
    """Forward values and the gradients of a random projection agree with torch's implementation."""
    y, yr = ours(*inputs), ref(*inputs)
    torch.testing.assert_close(y, yr, rtol=rtol, atol=atol)
    w = _t(tuple(y.shape), 99, dtype=y.dtype, grad=False)
    diff = [i for i in inputs if isinstance(i, torch.Tensor) and i.requires_grad]
    g = torch.autograd.grad((y * w).sum(), diff)
    gr = torch.autograd.grad((yr * w).sum(), diff)
    for a, b in zip(g, gr):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


CONV_CASES = [  # (x shape, w shape, stride, padding, dilation, groups, bias)
    ((2, 3, 6, 5), (4, 3, 3, 2), 1, 1, 1, 1, True),
    ((1, 4, 7, 7), (4, 2, 3, 3), 2, (1, 0), 1, 2, False),
    ((2, 2, 7, 6), (3, 2, 3, 3), 1, "same", (2, 1), 1, True),
    ((1, 3, 5, 5), (6, 1, 2, 2), (2, 1), 0, 1, 3, True),
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups,bias", CONV_CASES)
def test_conv2d_gradcheck_and_torch(xs, ws, stride, padding, dilation, groups, bias):
    x, w = _t(xs, 1), _t(ws, 2)
    b = _t((ws[0],), 3) if bias else None
    inputs = (x, w, b) if bias else (x, w)

    def ours(x, w, b=None):
        return ct.conv2d(x, w, b, stride, padding, dilation, groups)

    def ref(x, w, b=None):
        return TF.conv2d(x, w, b, stride, padding, dilation, groups)

    with launches(_numpy_be(), "conv2d_fwd_im2col_gemm", "conv2d_bwd_dx_col2im", "conv2d_bwd_dw_im2col_gemm"):
        assert gradcheck(ours, inputs)
    _check_vs_torch(ours, ref, inputs)


def test_conv2d_only_needed_grads():
    """needs_input_grad is honoured: a frozen weight gets no gradient, x still does."""
    x, w = _t((1, 2, 5, 5), 4), _t((3, 2, 3, 3), 5, grad=False)
    y = ct.conv2d(x, w, padding=1)
    y.sum().backward()
    assert w.grad is None and x.grad is not None
    torch.testing.assert_close(x.grad, torch.autograd.grad(TF.conv2d(x, w, padding=1).sum(), x)[0])


@pytest.mark.parametrize("k,stride,padding,dilation,ceil", [(2, None, 0, 1, False), (3, 2, 1, 1, True),
                                                            ((2, 3), (1, 2), (1, 1), (2, 1), False)])
def test_max_pool2d_gradcheck_and_torch(k, stride, padding, dilation, ceil):
    x = _t((2, 3, 7, 8), 6)

    def ours(x):
        return ct.max_pool2d(x, k, stride, padding, dilation, ceil)

    def ref(x):
        return TF.max_pool2d(x, k, stride, padding, dilation, ceil)

    with launches(_numpy_be(), "max_pool2d_fwd", "max_pool2d_bwd_scatter"):
        assert gradcheck(ours, (x,))
    _check_vs_torch(ours, ref, (x,))
    y, idx = ct.max_pool2d(x, k, stride, padding, dilation, ceil, return_indices=True)
    _, idx_ref = TF.max_pool2d(x, k, stride, padding, dilation, ceil, return_indices=True)
    assert idx.dtype == torch.int64 and not idx.requires_grad
    assert torch.equal(idx, idx_ref)


@pytest.mark.parametrize("k,stride,padding,ceil,cip", [(2, None, 0, False, True), (3, 2, 1, True, True),
                                                       (3, 2, 1, False, False)])
def test_avg_pool2d_gradcheck_and_torch(k, stride, padding, ceil, cip):
    x = _t((2, 2, 7, 6), 7)

    def ours(x):
        return ct.avg_pool2d(x, k, stride, padding, ceil, cip)

    def ref(x):
        return TF.avg_pool2d(x, k, stride, padding, ceil, cip)

    with launches(_numpy_be(), "avg_pool2d_fwd", "avg_pool2d_bwd"):
        assert gradcheck(ours, (x,))
    _check_vs_torch(ours, ref, (x,))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_gradcheck_and_torch(training, relu, affine):
    x = _t((3, 4, 3, 2), 8) * 2 + 0.5
    x = x.detach().requires_grad_(True)
    w, b = (_t((4,), 9), _t((4,), 10)) if affine else (None, None)
    rm, rv = _t((4,), 11, grad=False), _t((4,), 12, grad=False).abs() + 0.5
    inputs = (x, w, b) if affine else (x,)

    def ours(x, w=None, b=None):
        return ct.batch_norm(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5, relu=relu)

    def ref(x, w=None, b=None):
        y = TF.batch_norm(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5)
        return torch.relu(y) if relu else y

    with launches(_numpy_be(), "batch_norm_forward", "batch_norm_backward"):
        assert gradcheck(ours, inputs)
    _check_vs_torch(ours, ref, inputs)


def test_batch_norm_updates_running_stats_like_torch():
    x = _t((4, 3, 2, 3), 13, grad=False)
    rm, rv = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
    rm2, rv2 = rm.clone(), rv.clone()
    for _ in range(3):
        ct.batch_norm(x, rm, rv, None, None, True, 0.2, 1e-5)
        TF.batch_norm(x, rm2, rv2, None, None, True, 0.2, 1e-5)
    torch.testing.assert_close(rm, rm2)
    torch.testing.assert_close(rv, rv2)


@pytest.mark.parametrize("ns,affine,bias", [((5,), True, True), ((3, 5), True, False), ((3, 5), False, False)])
def test_layer_norm_gradcheck_and_torch(ns, affine, bias):
    x = _t((2, 3, 5), 14)
    w = _t(ns, 15) if affine else None
    b = _t(ns, 16) if affine and bias else None
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def split(args):
        it = iter(args[1:])
        return (next(it) if affine else None), (next(it) if affine and bias else None)

    def ours(*args):
        return ct.layer_norm(args[0], ns, *split(args))

    def ref(*args):
        return TF.layer_norm(args[0], ns, *split(args))

    with launches(_numpy_be(), "layer_norm_forward", "layer_norm_backward"):
        assert gradcheck(ours, inputs)
    _check_vs_torch(ours, ref, inputs)


@pytest.mark.parametrize("groups,affine,shape", [(2, True, (2, 4, 3, 2)), (3, True, (2, 3, 5)),
                                                 (1, False, (3, 2, 2, 2))])
def test_group_norm_gradcheck_and_torch(groups, affine, shape):
    x = _t(shape, 17)
    C = shape[1]
    inputs = (x, _t((C,), 18), _t((C,), 19)) if affine else (x,)

    def ours(x, w=None, b=None):
        return ct.group_norm(x, groups, w, b)

    def ref(x, w=None, b=None):
        return TF.group_norm(x, groups, w, b)

    with launches(_numpy_be(), "group_norm_forward", "group_norm_backward"):
        assert gradcheck(ours, inputs)
    _check_vs_torch(ours, ref, inputs)


# ----------------------------------------------------------------------------------------------
# modules vs torch.nn
# ----------------------------------------------------------------------------------------------
def test_modules_match_torch_names_and_init():
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(3, 8, 3, padding=1, groups=1)
    torch.manual_seed(0)
    ours = ct.Conv2d(3, 8, 3, padding=1)
    assert list(dict(ours.named_parameters())) == ["weight", "bias"]
    torch.testing.assert_close(ours.weight, ref.weight)  # same init sequence as torch
    torch.testing.assert_close(ours.bias, ref.bias)
    assert isinstance(ours.weight, torch.nn.Parameter)
    bn, bn_ref = ct.BatchNorm2d(5, relu=True), torch.nn.BatchNorm2d(5)
    assert list(bn.state_dict()) == list(bn_ref.state_dict())
    bn.load_state_dict(bn_ref.state_dict())
    assert dict(bn.named_buffers()).keys() == {"running_mean", "running_var", "num_batches_tracked"}
    ln, gn = ct.LayerNorm((4, 4)), ct.GroupNorm(2, 6)
    assert list(ln.state_dict()) == list(torch.nn.LayerNorm((4, 4)).state_dict())
    assert list(gn.state_dict()) == list(torch.nn.GroupNorm(2, 6).state_dict())
    assert "relu=True" in repr(bn)


def test_batchnorm_module_train_eval_vs_torch():
    bn = ct.BatchNorm2d(3, momentum=0.3, relu=True, dtype=F64)
    ref = torch.nn.BatchNorm2d(3, momentum=0.3, dtype=F64)
    with torch.no_grad():
        for p in (bn.weight, ref.weight):
            p.copy_(torch.tensor([0.5, -1.0, 2.0]))
    for s in range(3):
        x = _t((4, 3, 3, 3), 20 + s, grad=False) * (s + 1)
        torch.testing.assert_close(bn(x), torch.relu(ref(x)))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 3
    bn.eval()
    ref.eval()
    x = _t((2, 3, 3, 3), 30)
    _check_vs_torch(bn, lambda x: torch.relu(ref(x)), (x,))
    assert int(bn.num_batches_tracked) == 3  # eval does not count
    free = ct.BatchNorm2d(3, track_running_stats=False, dtype=F64).eval()  # batch stats even in eval
    torch.testing.assert_close(free(x), torch.nn.BatchNorm2d(3, track_running_stats=False, dtype=F64).eval()(x))


def _nets(ours: bool, dtype):
    """The same small CNN from our modules or torch.nn (BN+ReLU fused in ours)."""
    if ours:
        layers = [ct.Conv2d(1, 4, 3, padding=1), ct.BatchNorm2d(4, relu=True), ct.MaxPool2d(2),
                  ct.Conv2d(4, 6, 3, padding=1, bias=False), ct.GroupNorm(2, 6), ct.AvgPool2d(2),
                  torch.nn.Flatten(), ct.LayerNorm(24), torch.nn.Linear(24, 5)]
    else:
        layers = [torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.ReLU()),
                  torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 6, 3, padding=1, bias=False), torch.nn.GroupNorm(2, 6),
                  torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.LayerNorm(24), torch.nn.Linear(24, 5)]
    return torch.nn.Sequential(*layers).to(dtype)


def _train_pair(dtype, steps, backend_kw=None, device="cpu"):
    torch.manual_seed(0)
    ref = _nets(False, dtype).to(device)
    ours = _nets(True, dtype).to(device)
    if backend_kw:
        for m in ours.modules():
            if hasattr(m, "backend"):
                m.backend = backend_kw
    sd = {k.replace("1.0.", "1."): v for k, v in ref.state_dict().items()}  # ref wraps BN+ReLU in a Sequential
    ours.load_state_dict(sd)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=dtype).to(device)  # one fixed batch: the loss must fall
    y = torch.randint(0, 5, (6,), generator=g).to(device)
    losses = []
    for _ in range(steps):
        pair = []
        for net, opt in ((ref, opt_r), (ours, opt_o)):
            opt.zero_grad()
            loss = TF.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            pair.append(loss.item())
        losses.append(pair)
    return np.array(losses), ref, ours


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_training_with_torch_optim_matches_torch_nn(dtype, rtol):
    """Five SGD+momentum steps: our modules and torch.nn give the same losses, parameters and
    running statistics."""
    losses, ref, ours = _train_pair(dtype, 5)
    np.testing.assert_allclose(losses[:, 1], losses[:, 0], rtol=rtol)
    assert losses[-1, 1] < 0.8 * losses[0, 1]  # it did train
    sd_ref = {k.replace("1.0.", "1."): v for k, v in ref.state_dict().items()}
    sd = ours.state_dict()
    assert sd.keys() == sd_ref.keys()
    for k in sd:
        torch.testing.assert_close(sd[k], sd_ref[k], rtol=rtol, atol=rtol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("op", ["batch_norm", "layer_norm", "group_norm"])
def test_norms_bias_gets_its_gradient_without_weight(op):
    """weight=None with a bias: the bias gets torch's gradient (gradcheck too)."""
    x = _t((3, 4, 2, 3), 31)
    b = _t((4,) if op != "layer_norm" else (2, 3), 32)
    ours = {"batch_norm": lambda x, b: ct.batch_norm(x, None, None, None, b, True),
            "layer_norm": lambda x, b: ct.layer_norm(x, (2, 3), None, b),
            "group_norm": lambda x, b: ct.group_norm(x, 2, None, b)}[op]
    ref = {"batch_norm": lambda x, b: TF.batch_norm(x, None, None, None, b, True),
           "layer_norm": lambda x, b: TF.layer_norm(x, (2, 3), None, b),
           # torch's own group_norm backward fails with weight=None and a bias ("tensor does not
           # have a device", torch 2.x): its weight of ones is the same function
           "group_norm": lambda x, b: TF.group_norm(x, 2, torch.ones_like(b), b)}[op]
    assert gradcheck(ours, (x, b))
    _check_vs_torch(ours, ref, (x, b))
    assert torch.autograd.grad((ours(x, b) ** 3).sum(), b)[0].abs().sum() > 0


class _BasicBlock(torch.nn.Module):
    """torchvision's ResNet BasicBlock (with a downsample branch), built from ``ns`` = torch.nn or cnngpu.torch:
    inplace ReLU right after a BatchNorm and ``out += identity`` on a BatchNorm output."""

    def __init__(self, ns, cin=3, cout=4, stride=2):
        super().__init__()
        nn = torch.nn
        self.conv1 = ns.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = ns.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = ns.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = ns.BatchNorm2d(cout)
        self.downsample = nn.Sequential(ns.Conv2d(cin, cout, 1, stride, bias=False), ns.BatchNorm2d(cout))

    def forward(self, x):
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


def test_basic_block_inplace_relu_and_residual_add_train_like_torch_nn():
    """BatchNorm keeps no reference to its output, so torchvision's inplace ReLU and residual add
    after it leave the backward valid; three SGD steps equal torch.nn's (float64)."""
    torch.manual_seed(0)
    ref = _BasicBlock(torch.nn).double()
    ours = _BasicBlock(ct).double()
    ours.load_state_dict(ref.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ref, ours)]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 6, 6, generator=g, dtype=F64)
    target = torch.randn(4, 4, 3, 3, generator=g, dtype=F64)
    for _ in range(3):
        losses = []
        for net, opt in zip((ref, ours), opts):
            opt.zero_grad()
            loss = ((net(x) - target) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-12)
    for (k, a), (_, b) in zip(ref.state_dict().items(), ours.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-11, atol=1e-12, msg=lambda m: f"{k}: {m}")


def test_batch_norm_fused_relu_then_inplace_op():
    """With the fused ReLU only a bool mask is saved: an inplace op on the output is fine."""
    x = _t((2, 3, 2, 2), 21)
    w, b = _t((3,), 22), _t((3,), 23)
    y = ct.batch_norm(x, None, None, w, b, True, relu=True)
    y.mul_(2)
    y.sum().backward()
    xr, wr, br = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    (2 * torch.relu(TF.batch_norm(xr, None, None, wr, br, True))).sum().backward()
    for a, r in ((x, xr), (w, wr), (b, br)):
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------
def test_backend_choice_and_errors():
    x = _t((1, 1, 4, 4), 40, dtype=torch.float32, grad=False)
    assert ct.pick_backend(x) == "numpy"
    with pytest.raises(ValueError, match="unknown backend"):
        ct.max_pool2d(x, 2, backend="cudnn")
    with pytest.raises(TypeError, match="floating-point"):
        ct.avg_pool2d(x.to(torch.int32), 2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        ct.conv2d(np.zeros((1, 1, 4, 4)), x)
    if not backends.is_available("cupy"):
        with pytest.raises(backends.BackendUnavailableError):
            ct.avg_pool2d(x, 2, backend="cupy")
    with pytest.raises(ValueError, match="strided"):   # torch refuses 'same' with stride > 1; so does cnngpu.torch
        ct.conv2d(x, torch.ones(1, 1, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="stride"):  # functional.py's validation reaches torch users
        ct.conv2d(x, torch.ones(1, 1, 3, 3), stride=0)
    with pytest.raises(ValueError, match="divisible"):
        ct.Conv2d(3, 4, 3, groups=2)


def test_batchnorm_momentum_none_is_torchs_cumulative_average():
    torch.manual_seed(0)
    ours, ref = ct.BatchNorm2d(3, momentum=None).double(), torch.nn.BatchNorm2d(3, momentum=None).double()
    for step in range(3):
        x = torch.randn(4, 3, 2, 2, dtype=torch.float64) * (step + 1) + step
        torch.testing.assert_close(ours(x), ref(x))
        torch.testing.assert_close(ours.running_mean, ref.running_mean)
        torch.testing.assert_close(ours.running_var, ref.running_var)


# ----------------------------------------------------------------------------------------------
# triton-backed path: interpreter on CPU here (fp32), CUDA on a GPU
# ----------------------------------------------------------------------------------------------
def _triton_device():
    be = _triton_or_skip()
    return be, be.device()


def test_triton_path_ops_match_torch():
    be, dev = _triton_device()
    f32 = torch.float32
    x = _t((2, 3, 6, 6), 50, dtype=f32, device=dev)
    w, b = _t((4, 3, 3, 3), 51, dtype=f32, device=dev), _t((4,), 52, dtype=f32, device=dev)
    g1, b1 = _t((3,), 53, dtype=f32, device=dev), _t((3,), 54, dtype=f32, device=dev)
    lw, logits = _t((5, 6), 55, dtype=f32, device=dev), _t((4, 5), 56, dtype=f32, device=dev)
    tgt = torch.tensor([0, 4, 2, 1]).to(dev)
    tol = dict(rtol=tolerance("float32", 27 * 36 * 2, factor=32), atol=1e-4)
    cases = [
        ("conv2d", lambda x, w, b: ct.conv2d(x, w, b, 1, 1, backend="triton"),
         lambda x, w, b: TF.conv2d(x, w, b, 1, 1), (x, w, b)),
        ("max_pool2d", lambda x: ct.max_pool2d(x, 3, 2, 1, backend="triton"),
         lambda x: TF.max_pool2d(x, 3, 2, 1), (x,)),
        ("avg_pool2d", lambda x: ct.avg_pool2d(x, 2, backend="triton"), lambda x: TF.avg_pool2d(x, 2), (x,)),
        ("batch_norm", lambda x, g, b: ct.batch_norm(x, None, None, g, b, True, relu=True, backend="triton"),
         lambda x, g, b: torch.relu(TF.batch_norm(x, None, None, g, b, True)), (x, g1, b1)),
        ("layer_norm", lambda x: ct.layer_norm(x, (6, 6), backend="triton"), lambda x: TF.layer_norm(x, (6, 6)), (x,)),
        ("group_norm", lambda x, g, b: ct.group_norm(x, 3, g, b, backend="triton"),
         lambda x, g, b: TF.group_norm(x, 3, g, b), (x, g1, b1)),
        ("instance_norm", lambda x: ct.instance_norm(x, backend="triton"), lambda x: TF.instance_norm(x), (x,)),
        ("linear", lambda x, w: ct.linear(x, w, backend="triton"), lambda x, w: TF.linear(x, w), (x, lw)),
        ("relu", lambda x: ct.relu(x, backend="triton"), torch.relu, (x,)),
        ("cross_entropy", lambda z: ct.cross_entropy(z, tgt, backend="triton"),
         lambda z: TF.cross_entropy(z, tgt), (logits,)),
    ]
    for name, ours, ref, inputs in cases:
        before = sum(be.LAUNCHES.values())
        y, yr = ours(*inputs), ref(*inputs)
        assert y.device.type == dev.type and y.dtype == f32
        torch.testing.assert_close(y, yr, **tol, msg=lambda m: f"{name} forward: {m}")
        wgt = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(dev)
        diff = [t for t in inputs if t.requires_grad]
        gs = torch.autograd.grad((y * wgt).sum(), diff)
        grs = torch.autograd.grad((yr * wgt).sum(), diff)
        for i, (a, r) in enumerate(zip(gs, grs)):
            torch.testing.assert_close(a, r, **tol, msg=lambda m: f"{name} grad {i}: {m}")
        assert sum(be.LAUNCHES.values()) > before, f"{name}: no triton kernel ran"


def test_triton_path_zero_size_batch():
    """N = 0 on the triton path (it crashed with ZeroDivisionError): empty outputs, zero grads."""
    _be, dev = _triton_device()
    x = torch.zeros(0, 3, 5, 5, device=dev, requires_grad=True)
    for m in (ct.Conv2d(3, 4, 3, padding=1), ct.MaxPool2d(2), ct.AvgPool2d(2), ct.BatchNorm2d(3),
              ct.BatchNorm2d(3).eval(), ct.LayerNorm(5), ct.GroupNorm(3, 3), ct.InstanceNorm2d(3), ct.ReLU(),
              ct.Linear(5, 2)):
        m = m.to(dev)
        m.backend = "triton"
        y = m(x)
        y.sum().backward()
        assert y.shape[0] == 0, m
    loss = ct.cross_entropy(torch.zeros(0, 4, device=dev), torch.zeros(0, dtype=torch.long, device=dev),
                            reduction="sum", backend="triton")
    assert loss.shape == () and float(loss) == 0.0


def test_triton_path_training_matches_torch_nn():
    _triton_or_skip()
    dev = backends.get_backend("triton").device()
    losses, _, _ = _train_pair(torch.float32, 3, backend_kw="triton", device=dev)
    np.testing.assert_allclose(losses[:, 1], losses[:, 0], rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# CUDA only: default backend choice on CUDA tensors and the cupy path via DLPack
# ----------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("backend", [None, "cupy", "numpy"])
def test_cuda_tensors_each_backend(backend):
    if backend == "cupy" and not backends.is_available("cupy"):
        pytest.skip(backends._why_unavailable("cupy"))
    x = _t((2, 3, 8, 8), 60, dtype=torch.float32, device="cuda")
    w = _t((4, 3, 3, 3), 61, dtype=torch.float32, device="cuda")
    g, b = _t((4,), 62, dtype=torch.float32, device="cuda"), _t((4,), 63, dtype=torch.float32, device="cuda")
    rm, rv = torch.zeros(4, device="cuda"), torch.ones(4, device="cuda")
    rm2, rv2 = rm.clone(), rv.clone()
    y = ct.batch_norm(ct.conv2d(x, w, padding=1, backend=backend), rm, rv, g, b, True, relu=True, backend=backend)
    y = ct.max_pool2d(y, 2, backend=backend)
    yr = TF.max_pool2d(torch.relu(TF.batch_norm(TF.conv2d(x, w, padding=1), rm2, rv2, g, b, True)), 2)
    assert y.is_cuda
    torch.testing.assert_close(y, yr, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rm, rm2, rtol=1e-5, atol=1e-6)  # running stats updated in the buffers
    wgt = torch.randn_like(y)
    ga = torch.autograd.grad((y * wgt).sum(), (x, w, g, b))
    gr = torch.autograd.grad((yr * wgt).sum(), (x, w, g, b))
    for a, r in zip(ga, gr):
        torch.testing.assert_close(a, r, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# torch's class hierarchy and cnngpu.torch.convert
# ----------------------------------------------------------------------------------------------
def _torch_twins():
    return [(ct.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(3, 4, 3, padding=1)),
            (ct.BatchNorm2d(4), torch.nn.BatchNorm2d(4)),
            (ct.MaxPool2d(2), torch.nn.MaxPool2d(2)),
            (ct.AvgPool2d(2, divisor_override=3), torch.nn.AvgPool2d(2, divisor_override=3)),
            (ct.LayerNorm((4, 4)), torch.nn.LayerNorm((4, 4))),
            (ct.GroupNorm(2, 4), torch.nn.GroupNorm(2, 4))]


def test_modules_are_torch_subclasses_with_torchs_state():
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.conv import _ConvNd
    for ours, ref in _torch_twins():
        assert isinstance(ours, type(ref)), type(ours)
        assert ours.state_dict().keys() == ref.state_dict().keys()
        assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    bn = ct.BatchNorm2d(4, relu=True)
    assert isinstance(bn, _BatchNorm) and isinstance(ct.Conv2d(1, 1, 1), _ConvNd)
    assert "relu=True" in repr(bn) and "backend=None" in repr(ct.Conv2d(1, 1, 1))


def test_init_loop_and_convert_sync_batchnorm_see_our_modules():
    """torchvision's init loop (isinstance nn.Conv2d / nn.BatchNorm2d) reaches our modules, and
    nn.SyncBatchNorm.convert_sync_batchnorm converts our BatchNorm2d (into torch's SyncBatchNorm)."""
    net = torch.nn.Sequential(ct.Conv2d(3, 4, 3), ct.BatchNorm2d(4), torch.nn.ReLU())
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.constant_(m.weight, 0.25)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.constant_(m.weight, 2.0)
    assert bool((net[0].weight == 0.25).all()) and bool((net[1].weight == 2.0).all())
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert isinstance(synced[1], torch.nn.SyncBatchNorm)
    assert bool((synced[1].weight == 2.0).all())


def test_conv2d_padding_mode():
    x = _t((1, 2, 5, 5), 41)
    m, r = ct.Conv2d(2, 3, 3, padding=1, padding_mode="zeros").double(), torch.nn.Conv2d(2, 3, 3, padding=1).double()
    m.load_state_dict(r.state_dict())
    torch.testing.assert_close(m(x), r(x))
    for mode in ("reflect", "replicate", "circular"):
        with pytest.raises(ValueError, match="padding_mode="):
            ct.Conv2d(2, 3, 3, padding=1, padding_mode=mode)


def test_avg_pool2d_divisor_override_vs_torch():
    x = _t((2, 2, 5, 4), 42)
    _check_vs_torch(lambda x: ct.avg_pool2d(x, 2, 1, 1, False, True, 3), lambda x: TF.avg_pool2d(x, 2, 1, 1, False, True, 3),
                    (x,))


def test_convert_swaps_supported_modules_in_place_and_reports():
    torch.manual_seed(1)
    ref = torch.nn.Sequential(_BasicBlock(torch.nn), torch.nn.AvgPool2d(2, ceil_mode=True), torch.nn.Flatten(),
                              torch.nn.LayerNorm(16), torch.nn.Linear(16, 2),
                              torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")).double()
    model = torch.nn.Sequential(_BasicBlock(torch.nn), torch.nn.AvgPool2d(2, ceil_mode=True), torch.nn.Flatten(),
                                torch.nn.LayerNorm(16), torch.nn.Linear(16, 2),
                                torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")).double()
    model.load_state_dict(ref.state_dict())
    params_before = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # built before the conversion: still applies
    report = ct.convert(model)
    assert report.model is model
    swapped = dict(report.swapped)
    assert swapped == {"0.conv1": "Conv2d", "0.bn1": "BatchNorm2d", "0.conv2": "Conv2d", "0.bn2": "BatchNorm2d",
                       "0.downsample.0": "Conv2d", "0.downsample.1": "BatchNorm2d", "1": "AvgPool2d",
                       "3": "LayerNorm", "0.relu": "ReLU", "4": "Linear"}
    left = {n: why for n, _, why in report.left}
    assert set(left) == {"2", "5"} and "padding_mode='reflect'" in left["5"]
    assert "swapped 10" in str(report)
    assert isinstance(model[0].bn1, ct.BatchNorm2d) and isinstance(model[1], ct.AvgPool2d)
    assert type(model[5]) is torch.nn.Conv2d
    assert [p is q for p, q in zip(model.parameters(), params_before)] == [True] * len(params_before)
    assert model.state_dict().keys() == ref.state_dict().keys()
    head = torch.nn.Sequential(*list(model)[:5])
    ref_head = torch.nn.Sequential(*list(ref)[:5])
    x = _t((3, 3, 6, 6), 43, grad=False)
    for _ in range(2):
        for net, o in ((ref_head, torch.optim.SGD(ref.parameters(), lr=0.1)), (head, opt)):
            o.zero_grad()
            net(x).pow(2).sum().backward()
            o.step()
    for (k, a), (_, b) in zip(ref.state_dict().items(), model.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10, msg=lambda m: f"{k}: {m}")
    root = ct.convert(torch.nn.BatchNorm2d(3))
    assert isinstance(root.model, ct.BatchNorm2d) and root.swapped == [("", "BatchNorm2d")]


# ----------------------------------------------------------------------------------------------
# memory format, empty batches, Linear / ReLU / CrossEntropyLoss / InstanceNorm2d
# ----------------------------------------------------------------------------------------------
def test_channels_last_in_channels_last_out():
    cl = torch.channels_last
    x = _t((2, 3, 6, 5), 51).detach().contiguous(memory_format=cl).requires_grad_(True)
    w = _t((4, 3, 3, 3), 52)
    cases = [(lambda x: ct.conv2d(x, w, padding=1), lambda x: TF.conv2d(x, w, padding=1)),
             (lambda x: ct.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2)),
             (lambda x: ct.avg_pool2d(x, 2), lambda x: TF.avg_pool2d(x, 2)),
             (lambda x: ct.batch_norm(x, None, None, None, None, True), lambda x: TF.batch_norm(x, None, None, None, None, True)),
             (lambda x: ct.group_norm(x, 3), lambda x: TF.group_norm(x, 3)),
             (lambda x: ct.instance_norm(x), lambda x: TF.instance_norm(x)),
             (lambda x: ct.relu(x), lambda x: TF.relu(x))]
    for ours, ref in cases:
        y = ours(x)
        assert y.is_contiguous(memory_format=cl) and not y.is_contiguous(), ours
        _check_vs_torch(ours, ref, (x,))
    y, idx = ct.max_pool2d(x, 2, return_indices=True)
    assert idx.is_contiguous(memory_format=cl)
    assert torch.equal(idx, TF.max_pool2d(x, 2, return_indices=True)[1])
    assert ct.conv2d(x.detach().contiguous(), w).is_contiguous()  # NCHW stays NCHW


def test_zero_size_batch_every_path():
    """N = 0 on every op and module: empty outputs of torch's shapes, zero parameter gradients,
    running statistics unchanged."""
    x = torch.zeros(0, 3, 5, 5, dtype=F64, requires_grad=True)
    cases = [(ct.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(3, 4, 3, padding=1)),
             (ct.MaxPool2d(2), torch.nn.MaxPool2d(2)), (ct.AvgPool2d(2), torch.nn.AvgPool2d(2)),
             (ct.BatchNorm2d(3), torch.nn.BatchNorm2d(3)), (ct.BatchNorm2d(3).eval(), torch.nn.BatchNorm2d(3).eval()),
             (ct.LayerNorm(5), torch.nn.LayerNorm(5)), (ct.GroupNorm(3, 3), torch.nn.GroupNorm(3, 3)),
             (ct.ReLU(), torch.nn.ReLU()), (ct.Linear(5, 2), torch.nn.Linear(5, 2))]
    for ours, ref in cases:
        ours, ref = ours.double(), ref.double()
        ours.load_state_dict(ref.state_dict())
        y, yr = ours(x), ref(x)
        assert y.shape == yr.shape, ours
        y.sum().backward()
        yr.sum().backward()
        for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
            torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{ours}.{n}: {m}")
        for (n, b), (_, c) in zip(ours.named_buffers(), ref.named_buffers()):
            torch.testing.assert_close(b, c, msg=lambda m: f"{ours}.{n}: {m}")
    inorm = ct.InstanceNorm2d(3, affine=True).double()  # torch's own raises IndexError on N = 0
    y = inorm(x)
    y.sum().backward()
    assert y.shape == x.shape and float(inorm.weight.grad.abs().sum()) == 0.0
    logits = torch.zeros(0, 4, dtype=F64, requires_grad=True)
    tgt = torch.zeros(0, dtype=torch.long)
    for red in ("sum", "none"):
        torch.testing.assert_close(ct.cross_entropy(logits, tgt, reduction=red), TF.cross_entropy(logits, tgt, reduction=red))


def test_linear_relu_modules_and_functional_vs_torch():
    x = _t((2, 3, 5), 61)
    w, b = _t((4, 5), 62), _t((4,), 63)
    assert gradcheck(lambda x, w, b: ct.linear(x, w, b), (x, w, b))
    _check_vs_torch(lambda x, w, b: ct.linear(x, w, b), lambda x, w, b: TF.linear(x, w, b), (x, w, b))
    _check_vs_torch(lambda x, w: ct.linear(x, w), lambda x, w: TF.linear(x, w), (x, w))
    m, r = ct.Linear(5, 4).double(), torch.nn.Linear(5, 4).double()
    assert isinstance(m, torch.nn.Linear) and m.state_dict().keys() == r.state_dict().keys()
    m.load_state_dict(r.state_dict())
    torch.testing.assert_close(m(x), r(x))
    assert gradcheck(lambda x: ct.relu(x), (x,))
    _check_vs_torch(lambda x: ct.relu(x), TF.relu, (x,))
    # inplace: the result is written into the input, and the gradient flows as torch's relu_
    a = x.detach().clone().requires_grad_(True)
    h, hr = a * 1.5, a * 1.5
    out = ct.ReLU(inplace=True)(h)
    assert out is h and isinstance(ct.ReLU(), torch.nn.ReLU)
    outr = torch.nn.ReLU(inplace=True)(hr)
    torch.testing.assert_close(out, outr)
    g, gr = torch.autograd.grad(out.pow(2).sum(), a), torch.autograd.grad(outr.pow(2).sum(), a)
    torch.testing.assert_close(g, gr)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,smoothing,ignore", [(False, 0.0, -100), (True, 0.1, 1)])
def test_cross_entropy_vs_torch(reduction, weighted, smoothing, ignore):
    x = _t((5, 4), 71)
    tgt = torch.tensor([0, 1, 3, 2, 1])
    wt = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=F64) if weighted else None
    kw = dict(weight=wt, ignore_index=ignore, reduction=reduction, label_smoothing=smoothing)
    assert gradcheck(lambda x: ct.cross_entropy(x, tgt, **kw), (x,))
    _check_vs_torch(lambda x: ct.cross_entropy(x, tgt, **kw), lambda x: TF.cross_entropy(x, tgt, **kw), (x,))
    m, r = ct.CrossEntropyLoss(**kw), torch.nn.CrossEntropyLoss(**kw)
    assert isinstance(m, torch.nn.CrossEntropyLoss)
    torch.testing.assert_close(m(x, tgt), r(x, tgt))


@pytest.mark.parametrize("affine,track", [(False, False), (True, False), (True, True)])
def test_instance_norm2d_vs_torch(affine, track):
    x = _t((3, 4, 3, 5), 81) * 2 + 1
    m, r = ct.InstanceNorm2d(4, affine=affine, track_running_stats=track).double(), \
        torch.nn.InstanceNorm2d(4, affine=affine, track_running_stats=track).double()
    assert isinstance(m, torch.nn.InstanceNorm2d)
    if affine:
        with torch.no_grad():
            r.weight.uniform_(0.5, 1.5)
            r.bias.uniform_(-1, 1)
    m.load_state_dict(r.state_dict())
    for _ in range(2):
        y, yr = m(x), r(x)
        torch.testing.assert_close(y, yr, rtol=1e-10, atol=1e-10)
        g = torch.autograd.grad(y.pow(3).sum(), [x] + list(m.parameters()))
        gr = torch.autograd.grad(yr.pow(3).sum(), [x] + list(r.parameters()))
        for a, b in zip(g, gr):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for (n, b), (_, c) in zip(m.named_buffers(), r.named_buffers()):
        torch.testing.assert_close(b, c, msg=lambda msg: f"{n}: {msg}")
    m.eval(), r.eval()
    torch.testing.assert_close(m(x), r(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m(x[0]), r(x[0]), rtol=1e-10, atol=1e-10)  # unbatched (C, H, W)


# ----------------------------------------------------------------------------------------------
# torch.compile: the cnngpu:: custom ops are opaque nodes of the traced graphs (more in test_torch_export.py)
# ----------------------------------------------------------------------------------------------
def test_compile_fullgraph_basic_block_equals_eager():
    """torch.compile(fullgraph=True) (aot_eager: no C++ compiler needed) of a BasicBlock built from
    cnngpu.torch modules: outputs, gradients and running statistics equal the eager run."""
    import copy
    torch._dynamo.reset()
    torch.manual_seed(2)
    eager = _BasicBlock(ct).double()
    compiled_mod = copy.deepcopy(eager)
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    codes = []

    def record(gm, _inputs):           # aot_eager that keeps the traced graphs' code
        codes.append(gm.code)
        return make_boxed_func(gm.forward)

    compiled = torch.compile(compiled_mod, backend=aot_autograd(fw_compiler=record, bw_compiler=record),
                             fullgraph=True, dynamic=False)
    g = torch.Generator().manual_seed(5)
    for step in range(2):
        x = torch.randn(4, 3, 6, 6, generator=g, dtype=F64, requires_grad=True)
        xc = x.detach().clone().requires_grad_(True)
        y, yc = eager(x), compiled(xc)
        torch.testing.assert_close(yc, y, rtol=1e-12, atol=1e-12)
        y.pow(2).sum().backward()
        yc.pow(2).sum().backward()
        torch.testing.assert_close(xc.grad, x.grad, rtol=1e-12, atol=1e-12)
    for (n, p), (_, q) in zip(eager.named_parameters(), compiled_mod.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-12, msg=lambda m: f"{n}: {m}")
    fw, bw = codes[0], codes[1]      # our ops are in the graphs, opaque (not traced into numpy)
    assert "cnngpu.conv2d.default" in fw and "cnngpu.batch_norm.default" in fw
    assert "cnngpu.conv2d_backward.default" in bw and "cnngpu.batch_norm_backward.default" in bw
    for (n, b), (_, c) in zip(eager.named_buffers(), compiled_mod.named_buffers()):
        torch.testing.assert_close(c, b, rtol=1e-12, atol=1e-12, msg=lambda m: f"{n}: {m}")
    torch._dynamo.reset()


def test_custom_ops_pass_opcheck():
    """torch.library.opcheck: schema, fake (meta) functions and autograd registration agree."""
    x, w, b = _t((2, 3, 5, 5), 91), _t((4, 3, 3, 3), 92), _t((4,), 93)
    torch.library.opcheck(torch.ops.cnngpu.conv2d.default, (x, w, b, [1, 1], [1, 1], "", [1, 1], 1, "auto", "ieee",
                                                           "numpy"))
    g1, b1 = _t((3,), 94), _t((3,), 95)
    for relu in (False, True):
        torch.library.opcheck(torch.ops.cnngpu.batch_norm.default,
                              (x, g1, b1, torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64), True, 0.1, 1e-5, relu,
                               "numpy"))
        torch.library.opcheck(torch.ops.cnngpu.batch_norm.default, (x, g1, None, None, None, True, 0.1, 1e-5, relu,
                                                                     "numpy"))
