"""cnngpu.torch.Conv2dBNReLU, conv2d_bn_relu and fuse(model) against torch's own Conv2d + BatchNorm2d
(+ add) + ReLU: values, every gradient, running statistics, state_dict round trip, the custom op's
registration (opcheck) and fuse() on nn.Sequential chains and a torchvision-style BasicBlock.
float64 on the numpy backend (CPU tensors); a triton-interpreter case in float32."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

import cnngpu.torch as ct
from harness import assert_close, require


def _pair(seed=0, bias=False, dtype=torch.float64, **conv):
    """(torch reference Sequential(conv, bn), our block) with the same parameters and buffers."""
    torch.manual_seed(seed)
    conv = dict(dict(kernel_size=3, padding=1), **conv)
    ref = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 6, bias=bias, **conv), bn=nn.BatchNorm2d(6))).to(dtype)
    with torch.no_grad():
        ref.bn.weight.uniform_(0.5, 1.5)
        ref.bn.bias.normal_()
        ref.bn.running_mean.normal_()
        ref.bn.running_var.uniform_(0.5, 2.0)
    m = ct.Conv2dBNReLU(3, 6, bias=bias, **conv).to(dtype)
    m.load_state_dict(ref.state_dict())
    return ref, m


def _compare(ref, m, x, res, relu=True, steps=2, n=27):
    for _ in range(steps):
        xr = x.clone().requires_grad_(True)
        xm = x.clone().requires_grad_(True)
        rr = None if res is None else res.clone().requires_grad_(True)
        rm = None if res is None else res.clone().requires_grad_(True)
        zr = ref(xr) + (0 if rr is None else rr)
        out_r = torch.relu(zr) if relu else zr
        out_m = m(xm, rm)
        assert_close(out_m.detach().numpy(), out_r.detach().numpy(), "float64", n, "out")
        g = torch.randn_like(out_r)
        ref.zero_grad()
        m.zero_grad()
        out_r.backward(g)
        out_m.backward(g)
        assert_close(xm.grad.numpy(), xr.grad.numpy(), "float64", out_r.numel(), "dx")
        if rr is not None:
            assert_close(rm.grad.numpy(), rr.grad.numpy(), "float64", 1, "dresidual")
        for (name, pr), (_, pm) in zip(ref.named_parameters(), m.named_parameters()):
            if name == "conv.bias" and m.training:   # analytically zero (BN removes it): both only rounding
                bound = 1e-12 * float(g.abs().sum())
                assert pm.grad.abs().max() <= bound and pr.grad.abs().max() <= bound, name
                continue
            assert_close(pm.grad.numpy(), pr.grad.numpy(), "float64", out_r.numel(), name)
        for (name, br), (_, bm) in zip(ref.named_buffers(), m.named_buffers()):
            assert torch.allclose(bm.double(), br.double(), rtol=1e-12, atol=1e-12), name


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_block_matches_torch(train, residual, bias):
    ref, m = _pair(1, bias=bias)
    ref.train(train)
    m.train(train)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    res = torch.randn(2, 6, 6, 5, dtype=torch.float64) if residual else None
    _compare(ref, m, x, res)


def test_no_relu_strided_and_momentum_none():
    ref, m = _pair(2, stride=2, padding=(1, 0))
    ref.bn.momentum = m.bn.momentum = None
    x = torch.randn(3, 3, 7, 6, dtype=torch.float64)
    m.relu = False
    _compare(ref, m, x, None, relu=False, steps=3)


def test_state_dict_keys_and_round_trip():
    ref, m = _pair(3, bias=True)
    assert list(m.state_dict()) == list(ref.state_dict()) == [
        "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
        "bn.num_batches_tracked"]
    back = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 6, 3, padding=1), bn=nn.BatchNorm2d(6))).double()
    back.load_state_dict(m.state_dict())
    for k, v in back.state_dict().items():
        assert torch.equal(v, m.state_dict()[k]), k


def test_triton_interpreter_float32():
    require("triton")
    ref, m = _pair(4, dtype=torch.float32)
    m.backend = "triton"
    x = torch.randn(2, 3, 6, 6)
    res = torch.randn(2, 6, 6, 6)
    xr, xm = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_r = torch.relu(ref(xr) + res)
    out_m = m(xm, res)
    assert_close(out_m.detach().numpy(), out_r.detach().numpy(), "float32", 27, "out")
    g = torch.randn_like(out_r)
    out_r.backward(g)
    out_m.backward(g)
    assert_close(xm.grad.numpy(), xr.grad.numpy(), "float32", out_r.numel(), "dx")
    assert_close(m.conv.weight.grad.numpy(), ref.conv.weight.grad.numpy(), "float32", out_r.numel(), "dw")
    assert_close(m.bn.running_var.numpy(), ref.bn.running_var.numpy(), "float32", 27, "running_var")


def _opcheck_samples():
    from cnngpu.torch.fused import _fused_backward_op, _fused_op
    torch.manual_seed(5)
    t = (lambda *shape: torch.randn(*shape, dtype=torch.float64))
    x, w, b = t(2, 3, 5, 5).requires_grad_(), t(4, 3, 3, 3).requires_grad_(), t(4).requires_grad_()
    gamma, beta = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_(), t(4).requires_grad_()
    res = t(2, 4, 5, 5).requires_grad_()
    cl = t(2, 3, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    rm, rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    conv = ([1, 1], [1, 1], "", [1, 1], 1)
    out = []
    for training in (True, False):
        for xx, rr, bb in ((x, res, None), (cl, None, b)):
            out.append((_fused_op, (xx, w, bb, gamma, beta, rm.clone(), rv.clone(), rr, *conv, training, 0.1, 1e-5,
                                    True, "auto", "ieee", "")))
    with torch.no_grad():
        o = _fused_op(x, w, b, gamma, beta, rm.clone(), rv.clone(), res, *conv, True, 0.1, 1e-5, True, "auto",
                      "ieee", "")
    out.append((_fused_backward_op, (t(2, 4, 5, 5).contiguous(memory_format=torch.channels_last), o[4],
                                     cl.detach(), w.detach(), b.detach(), o[1], gamma.detach(), o[2], o[3], *conv, True,
                                     True, True, "auto", "ieee", "")))
    out.append((_fused_op, (x, w, None, None, None, None, None, None, [2, 1], [0, 1], "", [1, 1], 1, True, 0.1, 1e-5,
                            False, "auto", "ieee", "")))
    return out


@pytest.mark.parametrize("i", range(6))
def test_opcheck(i):
    """Every test torch.library.opcheck offers: schema, fake kernels (shapes, strides), autograd
    registration, AOT dispatch (static and dynamic shapes)."""
    from torch.testing._internal.optests.generate_tests import ALL_TEST_UTILS
    op, args = _opcheck_samples()[i]
    torch.library.opcheck(op, args, test_utils=tuple(ALL_TEST_UTILS))


# ------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock's structure (torchvision is not installed here)."""
    expansion = 1

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         BasicBlock(4, 4), BasicBlock(4, 6, stride=2),
                         nn.Conv2d(6, 6, 1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 3)).double()


@pytest.mark.parametrize("train", [True, False])
def test_fuse_sequential_and_basic_blocks(train):
    torch.manual_seed(6)
    ref = _net()
    model = _net()
    model.load_state_dict(ref.state_dict())
    before = dict(model.state_dict(keep_vars=True))     # the original tensors, shared by the fused blocks
    report = ct.fuse(model)
    assert report.fused == ["0+relu", "3 (BasicBlock: conv1+bn1+relu, conv2+bn2+add+relu)",
                            "4 (BasicBlock: conv1+bn1+relu, conv2+bn2+add+relu)", "4.downsample.0"]
    assert report.skipped == [("5", "MaxPool2d after the conv is not a BatchNorm2d")]
    assert "fused 4 block(s)" in str(report)
    assert sum(isinstance(m, ct.Conv2dBNReLU) for m in model.modules()) == 6
    ref.train(train)
    model.train(train)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1)
    opt_m = torch.optim.SGD(model.parameters(), lr=0.1)     # fuse shares the original parameters
    for step in range(2):
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        out_r, out_m = ref(x), model(x)
        assert_close(out_m.detach().numpy(), out_r.detach().numpy(), "float64", 200, f"step {step} out")
        for o, opt in ((out_r, opt_r), (out_m, opt_m)):
            opt.zero_grad()
            o.square().sum().backward()
            opt.step()
    for k, v in ref.state_dict().items():            # trained parameters and running statistics
        assert torch.allclose(before[k].detach().double(), v.double(), rtol=1e-9, atol=1e-12), k


def test_fuse_reports_what_it_leaves():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3), nn.GroupNorm(2, 4))
    report = ct.fuse(seq)
    assert report.fused == []
    assert [p for p, _ in report.skipped] == ["0", "3"]
    assert "padding_mode='reflect'" in report.skipped[0][1]


def test_torch_compile_fullgraph_matches_eager():
    """The block traces as one opaque custom op under torch.compile(fullgraph=True)."""
    torch._dynamo.reset()
    _, m = _pair(7)
    m2 = ct.Conv2dBNReLU(3, 6, 3, padding=1).double()
    m2.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    res = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    compiled = torch.compile(m2, fullgraph=True, backend="aot_eager")
    out_c = compiled(x, res)
    out_e = m(x, res)
    assert_close(out_c.detach().numpy(), out_e.detach().numpy(), "float64", 27, "out")
    (gc,) = torch.autograd.grad(out_c.sum(), x)
    (ge,) = torch.autograd.grad(out_e.sum(), x)
    assert_close(gc.numpy(), ge.numpy(), "float64", out_e.numel(), "dx")
    assert torch.allclose(m2.bn.running_mean, m.bn.running_mean) and int(m2.bn.num_batches_tracked) == 1


def test_vmap_eval_block():
    """torch.func.vmap over a batch of inputs (eval: no state) equals the per-entry calls."""
    _, m = _pair(8)
    m.eval()
    xs = torch.randn(3, 2, 3, 5, 5, dtype=torch.float64)
    args = (m.conv.weight, None, m.bn.weight, m.bn.bias, m.bn.running_mean, m.bn.running_var)
    got = torch.func.vmap(lambda x: ct.conv2d_bn_relu(x, *args, padding=1))(xs)
    want = torch.stack([ct.conv2d_bn_relu(x, *args, padding=1) for x in xs])
    assert torch.allclose(got, want, rtol=0, atol=0)
