"""cnngpu.nn.Conv2dBNReLU against the unfused layers Conv2d -> BatchNorm2d -> (+ residual) -> ReLU with
the same parameters: outputs, gradients (dx, parameters, residual) and running statistics over a few
SGD steps in train and eval mode; fold() for inference; state_dict keys; the triton backend under the
interpreter at a tiny size."""
import numpy as np
import pytest

import cnngpu.nn as cnn
from harness import assert_close, require


def _layers(backend="numpy", dtype="float64", relu=True, bias=False, seed=0, **conv):
    conv = dict(dict(kernel_size=3, padding=1), **conv)
    fused = cnn.Conv2dBNReLU(3, 5, bias=bias, relu=relu, backend=backend, dtype=dtype, seed=seed, **conv)
    c = cnn.Conv2d(3, 5, bias=bias, backend=backend, dtype=dtype, seed=seed, **conv)
    bn = cnn.BatchNorm2d(5, backend=backend, dtype=dtype)
    gen = np.random.default_rng(seed + 1)
    state = {"bn.weight": gen.uniform(0.5, 1.5, 5), "bn.bias": gen.standard_normal(5),
             "bn.running_mean": gen.standard_normal(5), "bn.running_var": gen.uniform(0.5, 2, 5)}
    fused.load_state_dict(dict(fused.state_dict(), **state))
    bn.load_state_dict({k[3:]: v for k, v in state.items()})
    return fused, c, bn


def _unfused_step(c, bn, x, res, relu):
    y = bn(c(x))
    z = y + res if res is not None else y
    out = np.maximum(z, 0) if relu else z

    def backward(dout):
        g = np.where(out > 0, dout, 0) if relu else dout
        return c.backward(bn.backward(g)), g
    return out, backward


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_layer_matches_unfused_layers(train, residual):
    fused, c, bn = _layers(bias=True)
    for m in (fused, c, bn):
        m.train(train)
    opt_f = cnn.SGD(fused.parameters(), lr=0.1)
    opt_u = cnn.SGD(c.parameters() + bn.parameters(), lr=0.1)
    gen = np.random.default_rng(3)
    for step in range(3):
        x = gen.standard_normal((2, 3, 6, 5))
        res = gen.standard_normal((2, 5, 6, 5)) if residual else None
        out_u, bwd = _unfused_step(c, bn, x, res, True)
        out_f = fused(x, res)
        assert_close(out_f, out_u, "float64", 27, f"step {step} out")
        dout = gen.standard_normal(out_u.shape)
        opt_f.zero_grad()
        opt_u.zero_grad()
        dx_u, dres_u = bwd(dout)
        dx_f = fused.backward(dout)
        assert_close(dx_f, dx_u, "float64", out_u.size, "dx")
        if residual:
            assert_close(fused.residual_grad, dres_u, "float64", 1, "dresidual")
        else:
            assert fused.residual_grad is None
        for (name, p), q in zip(fused.named_parameters(), c.parameters() + bn.parameters()):
            if name == "conv.bias" and train:       # analytically zero: both are rounding noise
                assert np.abs(p.grad).max() < 1e-10 and np.abs(q.grad).max() < 1e-10
                continue
            assert_close(p.grad, q.grad, "float64", out_u.size, name)
        opt_f.step()
        opt_u.step()
        assert_close(fused.bn.running_mean, bn.running_mean, "float64", 27, "running_mean")
        assert_close(fused.bn.running_var, bn.running_var, "float64", 27, "running_var")
    assert fused.bn.num_batches_tracked == bn.num_batches_tracked == (3 if train else 0)


def test_state_dict_keys():
    fused, _, _ = _layers(bias=True)
    assert list(fused.state_dict()) == ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean",
                                        "bn.running_var"]


@pytest.mark.parametrize("relu", [True, False])
def test_fold_matches_eval(relu):
    fused, _, _ = _layers(relu=relu, stride=2)
    fused.eval()
    x = np.random.default_rng(4).standard_normal((2, 3, 7, 6))
    folded = fused.fold()
    assert isinstance(folded, cnn.Sequential if relu else cnn.Conv2d)
    assert_close(folded(x), fused(x), "float64", 27, "folded")


def test_no_running_stats_and_momentum_none():
    fused = cnn.Conv2dBNReLU(3, 4, 3, track_running_stats=False, backend="numpy", dtype="float64", seed=1)
    assert fused.bn.running_mean is None
    fused.eval()                                  # batch statistics in eval too, as BatchNorm2d
    x = np.random.default_rng(5).standard_normal((2, 3, 5, 5))
    c = cnn.Conv2d(3, 4, 3, bias=False, backend="numpy", dtype="float64", seed=1)
    bn = cnn.BatchNorm2d(4, track_running_stats=False, relu=True, backend="numpy", dtype="float64")
    bn.eval()
    assert_close(fused(x), bn(c(x)), "float64", 27, "out")
    with pytest.raises(ValueError, match="running statistics"):
        fused.fold()
    m = cnn.Conv2dBNReLU(3, 4, 3, momentum=None, backend="numpy", dtype="float64", seed=1)
    m(x)
    m(x)
    assert m.bn.num_batches_tracked == 2


def test_triton_float32_interpreter():
    require("triton")
    fused, c, bn = _layers(backend="triton", dtype="float32")
    import torch
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    res = torch.randn(2, 5, 6, 6, generator=torch.Generator().manual_seed(1))
    out_f = fused(x, res)
    out_u = torch.relu(bn(c(x)) + res)
    assert_close(out_f.numpy(), out_u.numpy(), "float32", 27, "out")
    dout = torch.randn_like(out_u)
    assert_close(fused.backward(dout).numpy(), c.backward(bn.backward(torch.where(out_u > 0, dout, 0))).numpy(),
                 "float32", out_u.numel(), "dx")
