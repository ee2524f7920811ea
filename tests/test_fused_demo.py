"""The demo's LeNet with fused Conv2dBNReLU blocks (the default on the GPU backends) trains exactly as
the unfused one: same initial weights, same losses and parameters after a few SGD steps on the digits
(numpy backend, float64 and float32), and the CLI's --fused option reaches run_demo."""
import pytest

from cnngpu.demo import build_lenet, load_digits
from cnngpu.nn import SGD, BatchNorm2d, Conv2dBNReLU, CrossEntropyLoss
from harness import assert_close


def _train(net, x, y, steps, batch):
    crit = CrossEntropyLoss()
    opt = SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses = []
    for s in range(steps):
        xb, yb = x[s * batch:(s + 1) * batch], y[s * batch:(s + 1) * batch]
        losses.append(float(crit(net(xb), yb)))
        opt.zero_grad()
        net.backward(crit.backward())
        opt.step()
    return losses


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_lenet_trains_as_unfused(dtype):
    images, labels = load_digits()
    x = images[:48].astype(dtype)
    y = labels[:48]
    fused = build_lenet("numpy", dtype=dtype, seed=3, fused=True)
    plain = build_lenet("numpy", dtype=dtype, seed=3, fused=False)
    assert isinstance(fused[0], Conv2dBNReLU) and isinstance(plain[1], BatchNorm2d)
    assert len(fused) == len(plain) - 2
    assert fused.receptive_field() == plain.receptive_field()
    lf, lp = _train(fused, x, y, 3, 16), _train(plain, x, y, 3, 16)
    assert_close(lf, lp, dtype, 400, "losses")
    # parameters and running statistics by layer: fused block i <-> (conv, bn) of the plain net
    pairs = [(fused[0], plain[0], plain[1]), (fused[2], plain[3], plain[4])]
    for blk, conv, bn in pairs:
        assert_close(blk.conv.weight.data, conv.weight.data, dtype, 400, "conv.weight")
        assert_close(blk.bn.weight.data, bn.weight.data, dtype, 400, "bn.weight")
        assert_close(blk.bn.running_var, bn.running_var, dtype, 400, "bn.running_var")
    fused.eval()
    plain.eval()
    assert_close(fused(x[:8]), plain(x[:8]), dtype, 400, "eval logits")


def test_build_lenet_default_is_fused_on_gpu_backends_only():
    assert not isinstance(build_lenet("numpy")[0], Conv2dBNReLU)


def test_cli_fused_option_reaches_run_demo(monkeypatch):
    import cnngpu.demo as demo
    from cnngpu.__main__ import main
    seen = {}

    def fake_run_demo(**kw):
        seen.update(kw)
        raise ValueError("stop here")
    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    for opt, want in (("yes", True), ("no", False), ("auto", None)):
        assert main(["demo", "--backend", "numpy", "--fused", opt, "-q"]) == 2
        assert seen["fused"] is want

