"""NumPy reference of the fused block conv -> BatchNorm -> (+ residual) -> (ReLU)
(cnngpu.functional.conv2d_bn_relu / conv2d_bn_relu_backward): against the unfused NumPy composition
(conv2d, batch_norm, add, relu and their backwards), against torch CPU in float64 (Conv2d +
BatchNorm2d + add + relu: values, every gradient, running statistics) and by float64 gradcheck."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import cnngpu.functional as cf
from harness import assert_close, check_backward, launches, randn, require, rng, seed_of

GEOMS = [  # (N, C, H, W, K, R, S, stride, pad, dilation, groups)
    (2, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1),
    (3, 4, 7, 7, 6, 3, 2, 2, (1, 0), 1, 2),
    (2, 5, 5, 6, 3, 1, 1, 1, 0, 1, 1),
]


@pytest.fixture(scope="module")
def be():
    return require("numpy")


def _case(geom, seed, dtype="float64", bias=True, affine=True):
    N, C, H, W, K, R, S, stride, pad, dil, groups = geom
    gen = rng(seed)
    x = randn(gen, (N, C, H, W), dtype).astype(dtype)
    w = randn(gen, (K, C // groups, R, S), dtype, 0.5).astype(dtype)
    b = randn(gen, (K,), dtype).astype(dtype) if bias else None
    gamma = (1.0 + 0.3 * randn(gen, (K,), dtype)).astype(dtype) if affine else None
    beta = randn(gen, (K,), dtype).astype(dtype) if affine else None
    rm = randn(gen, (K,), dtype, 0.3).astype(dtype)
    rv = (0.5 + np.abs(randn(gen, (K,), dtype))).astype(dtype)
    conv = dict(stride=stride, padding=pad, dilation=dil, groups=groups)
    y = cf.conv2d(x, w, b, **conv)
    res = randn(gen, y.shape, dtype).astype(dtype)
    dout = randn(gen, y.shape, dtype).astype(dtype)
    return dict(x=x, w=w, b=b, gamma=gamma, beta=beta, rm=rm, rv=rv, res=res, dout=dout, conv=conv)


def _unfused(c, training, residual, relu):
    """The block composed of the reference's separate ops: (out, y, mean, invstd, running stats, backward fn)."""
    rm, rv = c["rm"].copy(), c["rv"].copy()
    y = cf.conv2d(c["x"], c["w"], c["b"], **c["conv"])
    z, mean, invstd = cf.batch_norm(y, rm, rv, c["gamma"], c["beta"], training, 0.1, 1e-5, return_stats=True)
    pre = z + c["res"] if residual else z
    out = cf.relu(pre) if relu else pre

    def backward(dout):
        ga = cf.relu_backward(dout, out) if relu else dout
        dz = ga
        dy, dgamma, dbeta = cf.batch_norm_backward(dz, y, z, c["gamma"], mean, invstd, training=training)
        dx, dw, db = cf.conv2d_backward(dy, c["x"], c["w"], **c["conv"])
        return dx, dw, db, dgamma, dbeta, (ga if residual else None)
    return out, y, mean, invstd, (rm, rv), backward


@pytest.mark.parametrize("geom", GEOMS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_unfused_composition(be, geom, training, residual, relu, dtype):
    c = _case(geom, seed_of(geom, training, residual, relu, dtype), dtype)
    ref_out, ref_y, ref_mean, ref_inv, (ref_rm, ref_rv), ref_bwd = _unfused(c, training, residual, relu)
    rm, rv = c["rm"].copy(), c["rv"].copy()
    with launches(be, "conv2d_bn_relu_forward"):
        out, y, mean, invstd = cf.conv2d_bn_relu(c["x"], c["w"], c["b"], c["gamma"], c["beta"], rm, rv,
                                                 c["res"] if residual else None, **c["conv"], training=training,
                                                 relu=relu, return_stats=True)
    red = c["w"][0].size
    assert out.dtype == np.dtype(dtype)
    assert_close(out, ref_out, dtype, red, "out")
    assert_close(mean, ref_mean, dtype, red, "mean")
    assert_close(invstd, ref_inv, dtype, red, "invstd")
    assert_close(rm, ref_rm, dtype, red, "running_mean")
    assert_close(rv, ref_rv, dtype, red, "running_var")
    if training:
        assert_close(y, ref_y, dtype, red, "y")
    else:
        assert y is None
        assert np.array_equal(rm, c["rm"]) and np.array_equal(rv, c["rv"])
    with launches(be, "conv2d_bn_relu_backward"):
        got = cf.conv2d_bn_relu_backward(c["dout"], out, c["x"], c["w"], c["b"], y, c["gamma"], mean, invstd,
                                         **c["conv"], training=training, relu=relu, has_residual=residual)
    want = ref_bwd(c["dout"])
    red_b = y.size if training else out.size
    for name, a, e in zip(("dx", "dw", "db", "dgamma", "dbeta", "dresidual"), got, want):
        if e is None:
            assert a is None, name
        else:
            assert_close(a, e, dtype, red_b, name, factor=32.0)


def _torch_block(c, training, residual, relu):
    """torch float64 Conv2d + BatchNorm2d (+ residual) (+ relu): (out, grads, running stats)."""
    t = {k: torch.tensor(c[k], requires_grad=True) for k in ("x", "w", "b", "gamma", "beta", "res")}
    rm, rv = torch.tensor(c["rm"]), torch.tensor(c["rv"])
    y = TF.conv2d(t["x"], t["w"], t["b"], **c["conv"])
    z = TF.batch_norm(y, rm, rv, t["gamma"], t["beta"], training, 0.1, 1e-5)
    if residual:
        z = z + t["res"]
    out = torch.relu(z) if relu else z
    out.backward(torch.tensor(c["dout"]))
    grads = [t[k].grad.numpy() for k in ("x", "w", "b", "gamma", "beta")]
    grads.append(t["res"].grad.numpy() if residual else None)
    return out.detach().numpy(), grads, rm.numpy(), rv.numpy()


@pytest.mark.parametrize("geom", GEOMS[:2])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_matches_torch(be, geom, training, residual):
    c = _case(geom, seed_of("torch", geom, training, residual))
    out_t, grads_t, rm_t, rv_t = _torch_block(c, training, residual, True)
    rm, rv = c["rm"].copy(), c["rv"].copy()
    out, y, mean, invstd = cf.conv2d_bn_relu(c["x"], c["w"], c["b"], c["gamma"], c["beta"], rm, rv,
                                             c["res"] if residual else None, **c["conv"], training=training,
                                             return_stats=True)
    n = c["w"][0].size
    assert_close(out, out_t, "float64", n, "out")
    assert_close(rm, rm_t, "float64", n, "running_mean")
    assert_close(rv, rv_t, "float64", n, "running_var")
    got = cf.conv2d_bn_relu_backward(c["dout"], out, c["x"], c["w"], c["b"], y, c["gamma"], mean, invstd, **c["conv"],
                                     training=training, has_residual=residual)
    for name, a, e in zip(("dx", "dw", "db", "dgamma", "dbeta", "dresidual"), got, grads_t):
        if e is None:
            assert a is None, name
        elif name == "db" and training:      # analytically zero (BN removes the conv bias): judge by the terms
            assert np.max(np.abs(a)) < 1e-9 * np.sqrt(out.size) * np.max(np.abs(c["dout"])), name
        else:
            assert_close(a, e, "float64", out.size, name)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_gradcheck(be, training, residual):
    geom = (2, 2, 4, 4, 3, 3, 3, 1, 1, 1, 1)
    c = _case(geom, seed_of("gradcheck", training, residual))

    def fwd(x, w, b, gamma, beta, res):
        return cf.conv2d_bn_relu(x, w, b, gamma, beta, c["rm"].copy(), c["rv"].copy(), res if residual else None,
                                 **c["conv"], training=training)

    def bwd(dout, x, w, b, gamma, beta, res):
        out, y, mean, invstd = cf.conv2d_bn_relu(x, w, b, gamma, beta, c["rm"].copy(), c["rv"].copy(),
                                                 res if residual else None, **c["conv"], training=training,
                                                 return_stats=True)
        g = cf.conv2d_bn_relu_backward(dout, out, x, w, b, y, gamma, mean, invstd, **c["conv"], training=training,
                                       has_residual=residual)
        return (*g[:5], g[5] if residual else np.zeros_like(res))

    check_backward(fwd, bwd, [c[k] for k in ("x", "w", "b", "gamma", "beta", "res")],
                   ["x", "w", "b", "gamma", "beta", "residual"], rtol=1e-4, atol=1e-6)


def test_no_affine_no_bias(be):
    """bn_weight/bn_bias None (affine=False) and no conv bias: as the unfused composition."""
    c = _case(GEOMS[0], seed_of("plain"), bias=False, affine=False)
    ref_out, ref_y, ref_mean, ref_inv, _, ref_bwd = _unfused(c, True, False, True)
    out, y, mean, invstd = cf.conv2d_bn_relu(c["x"], c["w"], None, None, None, None, None, padding=1, training=True,
                                             return_stats=True)
    assert_close(out, ref_out, "float64", 27, "out")
    got = cf.conv2d_bn_relu_backward(c["dout"], out, c["x"], c["w"], None, y, None, mean, invstd, padding=1,
                                     need_db=False)
    want = ref_bwd(c["dout"])
    assert_close(got[0], want[0], "float64", out.size, "dx")
    assert_close(got[1], want[1], "float64", out.size, "dw")
    assert got[2:] == (None, None, None, None)


def test_empty_batch(be):
    x = np.zeros((0, 3, 5, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    out = cf.conv2d_bn_relu(x, w, None, None, None, rm, rv, training=True)
    assert out.shape == (0, 4, 3, 3)
    assert np.array_equal(rm, np.zeros(4)) and np.array_equal(rv, np.ones(4))


def test_bad_inputs(be):
    x = np.ones((2, 3, 5, 5), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="bn_weight must have shape"):
        cf.conv2d_bn_relu(x, w, None, np.ones(3, np.float32), None, rm, rv)
    with pytest.raises(ValueError, match="residual must have the conv output's shape"):
        cf.conv2d_bn_relu(x, w, None, None, None, rm, rv, np.ones((2, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="needs running_mean"):
        cf.conv2d_bn_relu(x, w, None, None, None, None, None, training=False)
    with pytest.raises(ValueError, match="more than one value per channel"):
        cf.conv2d_bn_relu(np.ones((1, 3, 3, 3), np.float32), w, None, None, None, rm, rv, training=True)
    with pytest.raises(ValueError, match="needs y"):
        cf.conv2d_bn_relu_backward(np.ones((2, 4, 3, 3), np.float32), np.ones((2, 4, 3, 3), np.float32), x, w, None,
                                   None, None, rm, rv, training=True)
    with pytest.raises(TypeError, match="dtype"):
        cf.conv2d_bn_relu(x, w.astype(np.float64), None, None, None, rm, rv)
