"""Layer API (cnngpu.nn) against torch.nn in float64 on the numpy backend: a LeNet-5-like
Sequential forward/backward with copied weights, every parameter gradient, SGD with momentum vs
torch.optim.SGD, train/eval BatchNorm behaviour, each single layer, the shape helpers; and the
same LeNet on the triton backend (interpreter) vs numpy."""
import numpy as np
import pytest
import torch
import torch.nn as tnn

import cnngpu
from cnngpu.nn import (SGD, AvgPool2d, BatchNorm2d, Conv2d, CrossEntropyLoss, Flatten, GroupNorm,
                       InstanceNorm2d, LayerNorm, Linear, MaxPool2d, ReLU, Sequential)
from harness import assert_close, native, randn, require, rng, to_f64

# our layer index -> torch layer index (torch needs a separate ReLU after BatchNorm)
_TORCH_INDEX = {0: 0, 1: 1, 3: 4, 7: 8, 9: 10}
_OUR_INDEX = {t: o for o, t in _TORCH_INDEX.items()}


def lenet(backend="numpy", dtype="float64", seed=0, hidden=32):
    """Conv > BN+ReLU > MaxPool > Conv > ReLU > MaxPool > Flatten > Linear > ReLU > Linear on 16x16 input."""
    kw = dict(backend=backend)
    return Sequential(
        Conv2d(1, 6, 5, padding=2, bias=False, dtype=dtype, seed=seed, **kw),  # BN follows: no bias
        BatchNorm2d(6, relu=True, dtype=dtype, **kw),
        MaxPool2d(2, **kw),
        Conv2d(6, 16, 5, dtype=dtype, seed=seed + 1, **kw),
        ReLU(**kw),
        MaxPool2d(2, **kw),
        Flatten(**kw),
        Linear(16 * 2 * 2, hidden, dtype=dtype, seed=seed + 2, **kw),
        ReLU(**kw),
        Linear(hidden, 10, dtype=dtype, seed=seed + 3, **kw),
    )


def torch_lenet(ours, hidden=32):
    net = tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2, bias=False), tnn.BatchNorm2d(6), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(16 * 2 * 2, hidden), tnn.ReLU(), tnn.Linear(hidden, 10),
    ).double()
    sd = {}
    for k, v in ours.state_dict().items():
        i, name = k.split(".", 1)
        sd[f"{_TORCH_INDEX[int(i)]}.{name}"] = torch.from_numpy(v.astype(np.float64))
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert not unexpected and all(m.endswith("num_batches_tracked") for m in missing)
    return net


def torch_grads(tnet):
    out = {}
    for k, p in tnet.named_parameters():
        i, name = k.split(".", 1)
        out[f"{_OUR_INDEX[int(i)]}.{name}"] = p.grad.numpy()
    return out


def _data(seed, n=6):
    g = rng(seed)
    return randn(g, (n, 1, 16, 16)), g.integers(0, 10, size=n)


def test_lenet_forward_backward_matches_torch():
    net = lenet()
    tnet = torch_lenet(net)
    x, labels = _data(1)
    crit = CrossEntropyLoss()
    logits = net(x)
    loss = crit(logits, labels)
    dx = net.backward(crit.backward())

    xt = torch.from_numpy(x).requires_grad_(True)
    lt = tnet(xt)
    losst = tnn.functional.cross_entropy(lt, torch.from_numpy(labels))
    losst.backward()

    assert_close(logits, lt.detach().numpy(), "float64", 400, "logits")
    assert abs(loss - losst.item()) <= 1e-12 * max(1.0, abs(losst.item()))
    assert_close(dx, xt.grad.numpy(), "float64", 400, "dx")
    tg = torch_grads(tnet)
    names = [n for n, _ in net.named_parameters()]
    assert sorted(names) == sorted(tg), (names, sorted(tg))
    for n, p in net.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, n
        assert_close(p.grad, tg[n], "float64", 400, f"grad {n}")
    # running statistics were updated the same way (unbiased variance, momentum 0.1)
    assert_close(net[1].running_mean, tnet[1].running_mean.numpy(), "float64", 400, "running_mean")
    assert_close(net[1].running_var, tnet[1].running_var.numpy(), "float64", 400, "running_var")
    # eval mode uses the running statistics in both
    net.eval(), tnet.eval()
    x2, _ = _data(2, n=3)
    assert_close(net(x2), tnet(torch.from_numpy(x2)).detach().numpy(), "float64", 400, "eval logits")


@pytest.mark.parametrize("nesterov,weight_decay", [(False, 0.0), (False, 1e-2), (True, 1e-3)])
def test_sgd_momentum_matches_torch(nesterov, weight_decay):
    net = lenet(seed=5)
    tnet = torch_lenet(net)
    opt = SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.05, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
    crit = CrossEntropyLoss()
    for step in range(4):
        x, labels = _data(10 + step)
        opt.zero_grad()
        loss = crit(net(x), labels)
        net.backward(crit.backward())
        opt.step()
        topt.zero_grad()
        losst = tnn.functional.cross_entropy(tnet(torch.from_numpy(x)), torch.from_numpy(labels))
        losst.backward()
        topt.step()
        assert abs(loss - losst.item()) <= 1e-10, (step, loss, losst.item())
    ref = {}
    for k, v in tnet.state_dict().items():
        i, name = k.split(".", 1)
        if not name.endswith("num_batches_tracked"):
            ref[f"{_OUR_INDEX[int(i)]}.{name}"] = v.numpy()
    for n, v in net.state_dict().items():
        assert_close(v, ref[n], "float64", 1000, f"param {n} after 4 steps")


def test_sgd_plain_update_and_zero_grad():
    lin = Linear(3, 2, backend="numpy", dtype="float64", seed=0)
    w0 = lin.weight.data.copy()
    x = randn(rng(0), (4, 3))
    lin(x)
    lin.backward(np.ones((4, 2)))
    g = lin.weight.grad.copy()
    np.testing.assert_allclose(g, np.ones((2, 4)) @ x)
    SGD(lin.parameters(), lr=0.1).step()
    np.testing.assert_allclose(lin.weight.data, w0 - 0.1 * g)
    # gradients accumulate across backward calls until zero_grad
    lin.backward(np.ones((4, 2)))
    np.testing.assert_allclose(lin.weight.grad, 2 * g)
    lin.zero_grad()
    assert all(p.grad is None for p in lin.parameters())


def test_train_eval_switch_changes_batchnorm():
    bn = BatchNorm2d(3, backend="numpy", dtype="float64")
    x = randn(rng(3), (4, 3, 5, 5), scale=3.0) + 2.0
    y_train = bn(x)
    # training: normalized with batch stats -> per-channel mean 0, var 1
    np.testing.assert_allclose(y_train.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y_train.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    rm = bn.running_mean.copy()
    assert np.all(rm != 0)
    bn.eval()
    assert not bn.training
    y_eval = bn(x)
    np.testing.assert_array_equal(bn.running_mean, rm)  # eval does not update running stats
    expect = (x - rm[None, :, None, None]) / np.sqrt(bn.running_var[None, :, None, None] + 1e-5)
    assert_close(y_eval, expect, "float64", 1, "eval output")
    assert np.abs(y_eval - y_train).max() > 0.1
    # without running stats, eval normalizes with the batch statistics
    bn2 = BatchNorm2d(3, track_running_stats=False, backend="numpy", dtype="float64").eval()
    assert_close(bn2(x), y_train, "float64", 100, "eval without running stats")
    # Sequential.train()/eval() reach every child
    net = lenet()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def _copy_to_torch(ours, tmod):
    with torch.no_grad():
        for n, p in ours.named_parameters():
            getattr(tmod, n).copy_(torch.from_numpy(np.asarray(p.data)))


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
@pytest.mark.parametrize("case", ["conv_groups_dil_stride", "conv_same", "conv_nobias", "maxpool_pad_ceil",
                                  "avgpool_pad_nocount", "avgpool_ceil", "bn_relu_eval", "bn_noaffine",
                                  "layernorm", "groupnorm", "instancenorm_affine", "linear_nobias", "relu"])
def test_single_layer_matches_torch(case):
    kw = dict(backend="numpy")
    fk = dict(kw, dtype="float64")
    shape = (2, 4, 9, 8)
    train = True
    if case == "conv_groups_dil_stride":
        ours = Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, seed=3, **fk)
        tm = tnn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    elif case == "conv_same":
        ours = Conv2d(4, 5, 4, padding="same", seed=4, **fk)
        tm = tnn.Conv2d(4, 5, 4, padding="same")
    elif case == "conv_nobias":
        ours = Conv2d(4, 3, 1, bias=False, seed=5, **fk)
        tm = tnn.Conv2d(4, 3, 1, bias=False)
    elif case == "maxpool_pad_ceil":
        ours = MaxPool2d(3, stride=2, padding=1, ceil_mode=True, **kw)
        tm = tnn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    elif case == "avgpool_pad_nocount":
        ours = AvgPool2d(3, stride=2, padding=1, count_include_pad=False, **kw)
        tm = tnn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    elif case == "avgpool_ceil":
        ours = AvgPool2d(2, stride=3, ceil_mode=True, **kw)
        tm = tnn.AvgPool2d(2, stride=3, ceil_mode=True)
    elif case == "bn_relu_eval":
        ours = BatchNorm2d(4, relu=True, **fk)
        g = rng(7)
        ours.running_mean[:] = g.standard_normal(4)
        ours.running_var[:] = g.uniform(0.5, 2.0, 4)
        ours.weight.data[:] = g.standard_normal(4)
        tm = tnn.Sequential(tnn.BatchNorm2d(4), tnn.ReLU()).double()
        tm[0].running_mean.copy_(torch.from_numpy(ours.running_mean))
        tm[0].running_var.copy_(torch.from_numpy(ours.running_var))
        ours.eval()
        train = False
    elif case == "bn_noaffine":
        ours = BatchNorm2d(4, affine=False, momentum=0.3, **fk)
        tm = tnn.BatchNorm2d(4, affine=False, momentum=0.3)
    elif case == "layernorm":
        ours = LayerNorm((9, 8), eps=1e-4, **fk)
        tm = tnn.LayerNorm((9, 8), eps=1e-4)
    elif case == "groupnorm":
        ours = GroupNorm(2, 4, **fk)
        tm = tnn.GroupNorm(2, 4)
    elif case == "instancenorm_affine":
        ours = InstanceNorm2d(4, affine=True, **fk)
        tm = tnn.InstanceNorm2d(4, affine=True)
    elif case == "linear_nobias":
        ours = Linear(7, 5, bias=False, seed=1, **fk)
        tm = tnn.Linear(7, 5, bias=False)
        shape = (3, 7)
    else:
        ours = ReLU(**kw)
        tm = tnn.ReLU()
    tm = tm.double().train(train)
    g = rng(abs(hash(case)) % 1000)
    if any(True for _ in ours.parameters()):
        for p in ours.parameters():  # random affine parameters so they matter
            if case != "bn_relu_eval":
                p.data[...] = g.standard_normal(p.shape)
        _copy_to_torch(ours, tm[0] if isinstance(tm, tnn.Sequential) else tm)
    x = randn(g, shape)
    dy = randn(g, tuple(ours.output_shape(shape)))
    y = ours(x)
    assert y.shape == ours.output_shape(shape)
    dx = ours.backward(dy)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = tm(xt)
    yt.backward(torch.from_numpy(dy))
    assert_close(y, yt.detach().numpy(), "float64", 100, f"{case} forward")
    assert_close(dx, xt.grad.numpy(), "float64", 100, f"{case} dx")
    tmm = tm[0] if isinstance(tm, tnn.Sequential) else tm
    for n, p in ours.named_parameters():
        assert_close(p.grad, getattr(tmm, n).grad.numpy(), "float64", 400, f"{case} d{n}")
    for n, b in ours.named_buffers():
        assert_close(b, getattr(tmm, n).numpy(), "float64", 100, f"{case} {n}")


def test_cross_entropy_loss_matches_torch():
    g = rng(11)
    logits = randn(g, (5, 7), scale=3.0)
    labels = g.integers(0, 7, size=5)
    crit = CrossEntropyLoss()
    loss = crit(logits, labels)
    d = crit.backward(2.0)
    lt = torch.from_numpy(logits).requires_grad_(True)
    losst = tnn.functional.cross_entropy(lt, torch.from_numpy(labels))
    (2.0 * losst).backward()
    assert isinstance(loss, float)
    assert abs(loss - losst.item()) <= 1e-12
    assert_close(d, lt.grad.numpy(), "float64", 7, "dlogits")


def test_receptive_field_and_output_shape():
    # classic LeNet-5 on 32x32: 32 -conv5-> 28 -pool2-> 14 -conv5-> 10 -pool2-> 5
    net = Sequential(Conv2d(1, 6, 5, backend="numpy"), ReLU(backend="numpy"), MaxPool2d(2, backend="numpy"),
                     Conv2d(6, 16, 5, backend="numpy"), ReLU(backend="numpy"), AvgPool2d(2, backend="numpy"),
                     Flatten(backend="numpy"), Linear(400, 120, backend="numpy"))
    assert [s for _, s in net.output_shapes((8, 1, 32, 32))] == [
        (8, 6, 28, 28), (8, 6, 28, 28), (8, 6, 14, 14), (8, 16, 10, 10), (8, 16, 10, 10), (8, 16, 5, 5),
        (8, 400), (8, 120)]
    # rf: 1 +4 (conv5) = 5; +1 (pool2, jump 1) = 6, jump 2; +4*2 (conv5) = 14; +1*2 (pool2) = 16
    assert net.receptive_field() == (16, 16)
    # the output shape agrees with running the network
    assert net(randn(rng(0), (2, 1, 32, 32), "float32").astype(np.float32)).shape == net.output_shape((2, 1, 32, 32))
    # stride and dilation: conv3 s2 -> rf 3, jump 2; conv3 d2 -> +2*2*2 = 11; conv (3,1) -> +(2,0)*2
    net2 = Sequential(Conv2d(3, 4, 3, stride=2, padding=1, backend="numpy"),
                      Conv2d(4, 4, 3, dilation=2, padding="same", backend="numpy"),
                      Conv2d(4, 2, (3, 1), backend="numpy"))
    assert net2.receptive_field() == (15, 11)
    # 33 -> (33 + 2 - 3)//2 + 1 = 17 -> same: 17 -> (17 - 3 + 1) = 15 rows, 17 cols
    assert net2.output_shape((1, 3, 33, 33)) == (1, 2, 15, 17)
    # the lecture formula (W - K + 2P)/S + 1, e.g. AlexNet conv1: (227 - 11)/4 + 1 = 55
    assert cnngpu.conv_output_size(227, 11, 4) == 55
    assert cnngpu.conv_output_size(7, 3, 2, 1) == 4
    with pytest.raises(ValueError, match="larger than the padded input"):
        net.output_shape((1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"Linear\(400, 120\) needs input shape"):
        Sequential(Flatten(backend="numpy"), Linear(400, 120, backend="numpy")).output_shape((2, 3, 5, 5))


def test_parameters_init_repr_and_state_dict():
    conv = Conv2d(3, 8, 3, backend="numpy", seed=0)
    assert conv.weight.data.dtype == np.float32 and conv.weight.name == "weight"
    bound = 1 / np.sqrt(3 * 9)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.8 * bound
    assert np.array_equal(Conv2d(3, 8, 3, backend="numpy", seed=0).weight.data, conv.weight.data)
    assert not np.array_equal(Conv2d(3, 8, 3, backend="numpy", seed=1).weight.data, conv.weight.data)
    net = lenet()
    assert "BatchNorm2d(6" in repr(net) and "relu=True" in repr(net) and "(9): Linear" in repr(net)
    other = lenet(seed=9)
    other.load_state_dict(net.state_dict())
    x, _ = _data(4)
    np.testing.assert_array_equal(other(x), net(x))
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"0.weight": net.state_dict()["0.weight"]})


# kernels each device backend must have launched in one LeNet forward/backward (besides "any")
LENET_KERNELS = {
    "triton": (),
    "cupy": ("batch_norm_fwd_normalize_affine_relu", "max_pool2d_fwd_window_argmax", "relu_fwd",
             "linear_fwd_bias_epilogue", "softmax_xent_fwd_rows", "batch_norm_bwd_dx",
             "linear_bias_grad_finalize"),
}


@pytest.mark.parametrize("backend", ["triton", pytest.param("cupy", marks=pytest.mark.gpu)])
def test_lenet_on_device_backend_matches_numpy(backend):
    be = require(backend)
    ref = lenet(backend="numpy", dtype="float32", seed=3)
    dev = lenet(backend=backend, dtype="float32", seed=99)
    dev.load_state_dict(ref.state_dict())
    x, labels = _data(6, n=2)
    x = x.astype(np.float32)
    crit_r, crit_d = CrossEntropyLoss(), CrossEntropyLoss()
    before = sum(be.LAUNCHES.values())
    logits_d = dev(native(backend, x, "float32"))
    logits_r = ref(x)
    assert isinstance(logits_d, be.array_type)
    assert_close(to_f64(logits_d), logits_r, "float32", 400, "logits", factor=64)
    loss_d = crit_d(logits_d, labels)
    loss_r = crit_r(logits_r, labels)
    assert abs(loss_d - loss_r) <= 1e-4 * max(1, abs(loss_r))
    dx_d = dev.backward(crit_d.backward())
    dx_r = ref.backward(crit_r.backward())
    assert_close(to_f64(dx_d), dx_r, "float32", 400, "dx", factor=64)
    grads_r = dict(ref.named_parameters())
    for n, p in dev.named_parameters():
        assert_close(to_f64(p.grad), grads_r[n].grad, "float32", 400, f"grad {n}", factor=64)
    assert_close(to_f64(dev[1].running_var), ref[1].running_var, "float32", 400, "running_var")
    assert sum(be.LAUNCHES.values()) > before, f"no kernel ran on backend {backend!r}"
    for k in LENET_KERNELS[backend]:
        assert be.LAUNCHES[k] > 0, f"{k} never ran in the LeNet pass"
