"""cnngpu.torch under torch.compile(fullgraph=True) and torch.export: a ResNet BasicBlock and a
small classifier built from cnngpu.torch modules (every op: conv2d, batch_norm (+ fused ReLU),
relu (inplace), max/avg pool, group/layer norm, linear, cross_entropy) give the eager outputs,
gradients and running statistics; the graphs hold our ops, opaque."""
from __future__ import annotations

import copy
import shutil

import pytest

torch = pytest.importorskip("torch")

import cnngpu.torch as ct  # noqa: E402

F64 = torch.float64


class _BasicBlock(torch.nn.Module):
    """torchvision's BasicBlock (downsample branch) from cnngpu.torch modules, inplace ReLU and ``+=``."""

    def __init__(self, cin=3, cout=4, stride=2):
        super().__init__()
        self.conv1 = ct.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = ct.BatchNorm2d(cout)
        self.relu = ct.ReLU(inplace=True)
        self.conv2 = ct.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = ct.BatchNorm2d(cout)
        self.downsample = torch.nn.Sequential(ct.Conv2d(cin, cout, 1, stride, bias=False), ct.BatchNorm2d(cout))

    def forward(self, x):
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class _Classifier(torch.nn.Module):
    """Every other op: fused BN+ReLU, both pools, group/instance/layer norm, linear, cross_entropy."""

    def __init__(self):
        super().__init__()
        self.block = _BasicBlock()
        self.bn = ct.BatchNorm2d(4, relu=True)
        self.pool = ct.MaxPool2d(2, ceil_mode=True)
        self.avg = ct.AvgPool2d(1)
        self.gn = ct.GroupNorm(2, 4)
        self.inorm = ct.InstanceNorm2d(4, affine=True, track_running_stats=True)
        self.ln = ct.LayerNorm(16)
        self.fc = ct.Linear(16, 5)
        self.loss = ct.CrossEntropyLoss(label_smoothing=0.1)

    def forward(self, x, y):
        h = self.inorm(self.gn(self.avg(self.pool(self.bn(self.block(x))))))
        return self.loss(self.fc(self.ln(h.flatten(1))), y)


def _recording_backend(codes):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def record(gm, _inputs):            # aot_eager that keeps the traced graphs' code
        codes.append(gm.code)
        return make_boxed_func(gm.forward)

    return aot_autograd(fw_compiler=record, bw_compiler=record)


def _compare_training(eager, compiled, compiled_mod, steps, make_inputs, tol):
    for step in range(steps):
        inputs = make_inputs(step)
        inputs_c = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
        out, out_c = eager(*inputs), compiled(*inputs_c)
        torch.testing.assert_close(out_c, out, rtol=tol, atol=tol)
        out.pow(2).sum().backward()
        out_c.pow(2).sum().backward()
        for a, b in zip(inputs, inputs_c):
            if a.requires_grad:
                torch.testing.assert_close(b.grad, a.grad, rtol=tol, atol=tol)
    for (n, p), (_, q) in zip(eager.named_parameters(), compiled_mod.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=tol, atol=tol, msg=lambda m: f"{n}: {m}")
    for (n, b), (_, c) in zip(eager.named_buffers(), compiled_mod.named_buffers()):
        torch.testing.assert_close(c, b, rtol=tol, atol=tol, msg=lambda m: f"{n}: {m}")


def _classifier_inputs(step):
    g = torch.Generator().manual_seed(10 + step)
    return [torch.randn(4, 3, 8, 8, generator=g, dtype=F64, requires_grad=True),
            torch.randint(0, 5, (4,), generator=g)]


def test_compile_fullgraph_every_op_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(3)
    eager = _Classifier().double()
    compiled_mod = copy.deepcopy(eager)
    codes = []
    compiled = torch.compile(compiled_mod, backend=_recording_backend(codes), fullgraph=True, dynamic=False)
    _compare_training(eager, compiled, compiled_mod, 2, _classifier_inputs, 1e-12)
    fw, bw = codes[0], codes[1]
    for op in ("conv2d", "batch_norm", "relu", "max_pool2d", "avg_pool2d", "group_norm", "layer_norm", "linear",
               "cross_entropy"):
        assert f"torch.ops.cnngpu.{op}.default" in fw, op
        assert f"torch.ops.cnngpu.{op}_backward.default" in bw, op
    assert "torch.ops.cnngpu.instance_norm.default" in fw          # its backward is group_norm_backward
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None,
                    reason="inductor on CPU needs a C++ compiler")
def test_compile_default_inductor_basic_block():
    """The default backend (inductor: C++ code for the torch ops around ours) on CPU, float32."""
    torch._dynamo.reset()
    torch.manual_seed(4)
    eager = _BasicBlock()
    compiled_mod = copy.deepcopy(eager)
    compiled = torch.compile(compiled_mod, fullgraph=True, dynamic=False)

    def inputs(step):
        g = torch.Generator().manual_seed(20 + step)
        return [torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)]

    _compare_training(eager, compiled, compiled_mod, 2, inputs, 1e-5)
    torch._dynamo.reset()


def test_export_basic_block_eval_and_train():
    torch.manual_seed(5)
    block = _BasicBlock().double()
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    block.eval()
    with torch.no_grad():          # non-trivial running statistics
        for bn in (block.bn1, block.bn2, block.downsample[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    ep = torch.export.export(block, (x,))
    code = ep.graph_module.code
    assert "torch.ops.cnngpu.conv2d.default" in code and "torch.ops.cnngpu.batch_norm.default" in code
    x2 = torch.randn(2, 3, 6, 6, dtype=F64)
    torch.testing.assert_close(ep.module()(x2), block(x2), rtol=1e-12, atol=1e-12)

    block.train()                  # training: batch statistics, running stats are buffer mutations
    for decompose in (False, True):
        prog = torch.export.export(copy.deepcopy(block), (x,))   # its buffers are the exported copy's
        if decompose:                                            # the functional (core ATen + our ops) form
            prog = prog.run_decompositions({})
            assert "torch.ops.cnngpu.batch_norm.default" in prog.graph_module.code
            assert "bn1.running_mean" in prog.graph_signature.buffers_to_mutate.values()
        mod, ref = prog.module(), copy.deepcopy(block)
        for _ in range(2):
            torch.testing.assert_close(mod(x2), ref(x2), rtol=1e-12, atol=1e-12)
        for (n, b), (_, c) in zip(ref.named_buffers(), mod.named_buffers()):
            torch.testing.assert_close(c, b, rtol=1e-12, atol=1e-12, msg=lambda m: f"{n}: {m}")


def test_export_classifier_runs_and_matches():
    torch.manual_seed(6)
    net = _Classifier().double().eval()
    x, y = _classifier_inputs(0)
    ep = torch.export.export(net, (x.detach(), y))
    x2, y2 = _classifier_inputs(1)
    torch.testing.assert_close(ep.module()(x2.detach(), y2), net(x2.detach(), y2), rtol=1e-12, atol=1e-12)


def test_export_dynamic_batch_dim():
    """The fake kernels keep the batch dim symbolic: one exported program serves every batch size."""
    torch.manual_seed(7)
    N = torch.export.Dim("N", min=2, max=64)
    block = _BasicBlock().double().eval()
    ep = torch.export.export(block, (torch.randn(4, 3, 6, 6, dtype=F64),), dynamic_shapes={"x": {0: N}})
    net = _Classifier().double().eval()
    ep_net = torch.export.export(net, (torch.randn(4, 3, 8, 8, dtype=F64), torch.randint(0, 5, (4,))),
                                 dynamic_shapes={"x": {0: N}, "y": {0: N}})
    for n in (2, 5, 9):
        x = torch.randn(n, 3, 6, 6, dtype=F64)
        torch.testing.assert_close(ep.module()(x), block(x), rtol=1e-12, atol=1e-12)
        x, y = torch.randn(n, 3, 8, 8, dtype=F64), torch.randint(0, 5, (n,))
        torch.testing.assert_close(ep_net.module()(x, y), net(x, y), rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
def test_compile_and_export_on_cuda(backend):
    """On a GPU: the same graphs with CUDA tensors (the ops pick triton per call), float32."""
    torch._dynamo.reset()
    torch.manual_seed(8)
    eager = _BasicBlock().cuda()
    compiled_mod = copy.deepcopy(eager)
    compiled = torch.compile(compiled_mod, backend=backend, fullgraph=True, dynamic=False)

    def inputs(step):
        g = torch.Generator().manual_seed(30 + step)
        return [torch.randn(4, 3, 16, 16, generator=g).cuda().requires_grad_(True)]

    _compare_training(eager, compiled, compiled_mod, 2, inputs, 1e-4)
    eager.eval()
    x = torch.randn(4, 3, 16, 16, device="cuda")
    ep = torch.export.export(eager, (x,))
    torch.testing.assert_close(ep.module()(x), eager(x), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
