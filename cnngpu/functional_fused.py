"""Fused convolution blocks as functions: conv2d -> BatchNorm -> (+ residual) -> (ReLU), forward and
backward. Re-exported by ``cnngpu.functional`` (``conv2d_bn_relu``, ``conv2d_bn_relu_backward``);
argument checks reuse its helpers, so the rules are the same as for ``conv2d`` and ``batch_norm``.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

from . import functional as F
from ._typing import Array, IntOrPair, Padding
from .dtypes import dtype_name


def _check_block(be, x: Array, weight: Array, bias: Optional[Array], bn_weight: Optional[Array],
                 bn_bias: Optional[Array], stats: Tuple[Tuple[str, Any], ...], stride, padding, dilation, groups):
    """Shared checks of the fused forward / backward: x, conv weight/bias, BN parameters; returns g."""
    F._check_ndim("input", x, 4, "N, C, H, W")
    F._check_float(be, "input", x)
    F._check_same_dtype("input", x, "weight", weight)
    g = F.conv2d_geometry(F._shape(x), F._shape(weight), stride, padding, dilation, groups)
    if bias is not None:
        F._check_same_dtype("input", x, "bias", bias)
        F._check_vector("bias", bias, g.K, "C_out of weight")
    for name, v in (("bn_weight", bn_weight), ("bn_bias", bn_bias)) + stats:
        F._check_vector(name, v, g.K, "one per output channel of the conv", x)
    return g


def _check_out_shaped(name: str, v: Optional[Array], x: Array, g) -> None:
    if v is None:
        return
    want = (g.N, g.K, g.P, g.Q)
    if F._shape(v) != want:
        raise ValueError(f"{name} must have the conv output's shape {want} (input {F._shape(x)}), got {F._shape(v)}")
    F._check_same_dtype("input", x, name, v)


def conv2d_bn_relu(input: Array, weight: Array, bias: Optional[Array], bn_weight: Optional[Array],
                   bn_bias: Optional[Array], running_mean: Optional[Array], running_var: Optional[Array],
                   residual: Optional[Array] = None, stride: IntOrPair = 1, padding: Padding = 0,
                   dilation: IntOrPair = 1, groups: int = 1, training: bool = False, momentum: float = 0.1,
                   eps: float = 1e-5, *, relu: bool = True, return_stats: bool = False, algo: str = "auto",
                   precision: str = "ieee", backend: Optional[str] = None
                   ) -> Union[Array, Tuple[Array, Optional[Array], Array, Array]]:
    """out = relu(batch_norm(conv2d(input, weight, bias)) + residual), one fused block.

    input (N, C, H, W); weight (K, C/groups, R, S); bias (K,) | None (the conv bias);
    bn_weight/bn_bias (K,) | None (BatchNorm affine); running_mean/running_var (K,) (required in
    eval, optional in training); residual (N, K, P, Q) | None, added before the ReLU (ResNet's
    BasicBlock). Conv arguments as ``conv2d``, BatchNorm arguments as ``batch_norm``: training
    uses the batch statistics of the conv output and updates the running stats in place (unbiased
    variance, momentum blend); eval folds the running statistics into the conv weights and bias.
    relu=False leaves the ReLU out. Returns out (N, K, P, Q); with ``return_stats=True``
    (out, y, mean, invstd): y the conv output (training; None in eval), mean/invstd (K,) float32
    (float64 for float64 input) -- what ``conv2d_bn_relu_backward`` needs.
    """
    x = input
    be = F._resolve(backend, ("input", x), ("weight", weight), ("bias", bias), ("bn_weight", bn_weight),
                    ("bn_bias", bn_bias), ("running_mean", running_mean), ("running_var", running_var),
                    ("residual", residual))
    F._check_conv_opts(algo, precision)
    if momentum is None:
        raise TypeError("momentum must be a number in [0, 1], got None")
    F._check_eps_momentum(eps, momentum)
    g = _check_block(be, x, weight, bias, bn_weight, bn_bias,
                     (("running_mean", running_mean), ("running_var", running_var)),
                     stride, padding, dilation, groups)
    _check_out_shaped("residual", residual, x, g)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if not training and running_mean is None:
        raise ValueError("conv2d_bn_relu with training=False needs running_mean and running_var")
    if training:
        for name, v in (("running_mean", running_mean), ("running_var", running_var)):
            F._check_writable(name, v)
        if g.N * g.P * g.Q == 1:
            raise ValueError(f"conv2d_bn_relu training needs more than one value per channel: the conv output is "
                             f"{(g.N, g.K, g.P, g.Q)} for input {F._shape(x)}")
    if g.N * g.P * g.Q == 0 or g.K == 0:
        sdt = "float64" if dtype_name(x) == "float64" else "float32"
        out = F._empty(be, x, (g.N, g.K, g.P, g.Q))
        res = (out, F._empty(be, x, (g.N, g.K, g.P, g.Q)) if training else None,
               F._empty(be, x, (g.K,), sdt), F._empty(be, x, (g.K,), sdt))
        return res if return_stats else out
    res = be.conv2d_bn_relu_forward(x, weight, bias, g, bn_weight, bn_bias, running_mean, running_var, residual,
                                    training=bool(training), momentum=float(momentum), eps=float(eps),
                                    relu=bool(relu), algo=algo, precision=precision)
    return res if return_stats else res[0]


def conv2d_bn_relu_backward(dout: Array, out: Array, x: Array, weight: Array, bias: Optional[Array], y: Optional[Array],
                            bn_weight: Optional[Array], mean: Array, invstd: Array, stride: IntOrPair = 1,
                            padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1, *,
                            training: bool = True, relu: bool = True, has_residual: bool = False,
                            need_dx: bool = True, need_dw: bool = True, need_db: bool = True,
                            algo: str = "auto", precision: str = "ieee", backend: Optional[str] = None
                            ) -> Tuple[Optional[Array], ...]:
    """Gradients of ``conv2d_bn_relu``: returns (dx, dweight, dbias, dbn_weight, dbn_bias, dresidual).

    dout, out (N, K, P, Q): upstream gradient and the forward output (the ReLU mask is out > 0);
    y, mean, invstd: what the forward returned with ``return_stats=True`` (y None after an eval
    forward: the conv output is recomputed from x, weight, bias). dx/dweight/dbias are the conv's
    (None where need_* is False), dbn_weight/dbn_bias None when bn_weight is None, dresidual None
    unless has_residual (it is the masked dout).
    """
    be = F._resolve(backend, ("dout", dout), ("out", out), ("x", x), ("weight", weight), ("bias", bias), ("y", y),
                    ("bn_weight", bn_weight), ("mean", mean), ("invstd", invstd))
    F._check_conv_opts(algo, precision)
    g = _check_block(be, x, weight, bias, bn_weight, None, (), stride, padding, dilation, groups)
    F._check_vector("mean", mean, g.K, "one per output channel of the conv")
    F._check_vector("invstd", invstd, g.K, "one per output channel of the conv")
    for name, v in (("dout", dout), ("out", out), ("y", y)):
        _check_out_shaped(name, v, x, g)
    if training and y is None:
        raise ValueError("conv2d_bn_relu_backward with training=True needs y (the forward's conv output)")
    if g.N * g.P * g.Q == 0 or g.K == 0:
        pg = None if bn_weight is None else F._zeros_like(be, bn_weight)
        return (F._zeros_like(be, x) if need_dx else None, F._zeros_like(be, weight) if need_dw else None,
                F._empty(be, x, (g.K,)) if need_db else None,
                pg, None if pg is None else F._zeros_like(be, bn_weight),
                F._empty(be, x, F._shape(dout)) if has_residual else None)
    return be.conv2d_bn_relu_backward(dout, out, x, weight, bias, y, g, bn_weight, mean, invstd,
                                      training=bool(training), relu=bool(relu), has_residual=bool(has_residual),
                                      need_dx=need_dx, need_dw=need_dw, need_db=need_db, algo=algo,
                                      precision=precision)
