"""NumPy reference: the fused convolution block conv -> BatchNorm -> (+ residual) -> ReLU, forward
and backward (the specification of every backend's ``conv2d_bn_relu_*``).

out = relu(bn(conv2d(x, w) + b) + residual), residual and ReLU optional. Built from the reference
conv2d and batch_norm (one rule each, not restated here), all arithmetic in the compute dtype
(float32 for float16 x, no rounding of the conv output before the statistics).

* training: y = conv2d(x, w) + b; batch statistics of y and the running-stat update exactly as
  ``batch_norm_forward`` (it is called); returns y (rounded to x's dtype) for the backward.
* eval: BatchNorm folded into the convolution, w' = w * s[k], b' = (b - running_mean) * s + beta
  with s = gamma / sqrt(running_var + eps): one conv; y is not produced (None).
"""
import numpy as np

from ._common import compute_dtype, launched
from .conv import conv2d_backward, conv2d_forward
from .norm import _channel_rows, _inv_sqrt, batch_norm_forward


def _ct(a, ct):
    return None if a is None else np.asarray(a).astype(ct, copy=False)


def fold_bn(w, b, weight, bias, running_mean, running_var, eps, ct):
    """(w', b') of the eval-mode block in dtype ct: w' = w * s[k], b' = (b - mean) * s + beta,
    s = weight / sqrt(running_var + eps) (weight None: 1; bias None: 0; b None: 0)."""
    s = _inv_sqrt(running_var, eps, ct)
    if weight is not None:
        s = s * weight.astype(ct, copy=False)
    wf = w.astype(ct, copy=False) * s.reshape(-1, 1, 1, 1)
    shift = -running_mean.astype(ct, copy=False)
    if b is not None:
        shift = shift + b.astype(ct, copy=False)
    bf = shift * s
    if bias is not None:
        bf = bf + bias.astype(ct, copy=False)
    return wf, bf


def conv2d_bn_relu_forward(x, w, b, g, weight, bias, running_mean, running_var, residual, training, momentum,
                           eps, relu, algo="auto", precision="ieee"):
    """Fused conv -> BatchNorm -> (+ residual) -> (ReLU). x (N, C, H, W), w (K, C/groups, R, S),
    b (K,) | None, g: ConvGeometry; weight/bias/running stats (K,) (weight/bias may be None);
    residual (N, K, P, Q) | None.

    Returns (out (N, K, P, Q) in x's dtype, y: the conv output (training; None in eval),
    mean (K,), invstd (K,)) with the statistics float32 (float64 for float64 x): the batch
    statistics in training (running stats updated in place as batch_norm does), the running
    statistics' mean and 1/sqrt(var + eps) in eval.
    """
    launched("conv2d_bn_relu_forward")
    ct = compute_dtype(x.dtype)
    xc = x.astype(ct, copy=False)
    if training:
        yc = conv2d_forward(xc, w.astype(ct, copy=False), _ct(b, ct), g)
        z, mean, invstd = batch_norm_forward(yc, weight, bias, running_mean, running_var, True, momentum, eps,
                                             False)
        y = yc.astype(x.dtype, copy=False)
    else:
        wf, bf = fold_bn(w, b, weight, bias, running_mean, running_var, eps, ct)
        z = conv2d_forward(xc, wf, bf, g)
        mean = running_mean.astype(ct, copy=True)
        invstd = _inv_sqrt(running_var, eps, ct)
        y = None
    if residual is not None:
        z = z + residual.astype(ct, copy=False)
    if relu:
        z = np.maximum(z, 0)                  # NaN stays NaN (np.maximum propagates it), as torch.relu
    return np.ascontiguousarray(z, dtype=x.dtype), y, mean, invstd


def conv2d_bn_relu_backward(dout, out, x, w, b, y, g, weight, mean, invstd, training, relu, has_residual,
                            need_dx=True, need_dw=True, need_db=True, algo="auto", precision="ieee"):
    """Gradients of conv2d_bn_relu_forward. dout, out (N, K, P, Q): the upstream gradient and the
    forward output (its sign is the ReLU mask: dout passes where out > 0 or out is NaN);
    b: the conv bias (K,) | None (used only to recompute y); y: the forward's conv output (None in
    eval: recomputed from x, w, b); mean/invstd from the forward.

    With ga = dout masked, xhat = (y - mean) * invstd, per channel k over (N, P, Q):
    dbias = sum(ga), dweight = sum(ga * xhat); dy = weight * invstd * (ga - dbias / M - xhat *
    dweight / M) in training (statistics depend on y), weight * invstd * ga in eval; then
    (dx, dw, db) = conv2d_backward(dy). dresidual = ga.
    Returns (dx | None, dw | None, db | None, dweight | None, dbias | None, dresidual | None):
    dweight/dbias in weight's dtype (None when weight is None), dresidual None unless has_residual.
    """
    launched("conv2d_bn_relu_backward")
    ct = compute_dtype(x.dtype)
    K = dout.shape[1]
    bshape = (1, K, 1, 1)
    ga = dout.astype(ct, copy=True)
    if relu:
        ga[out <= 0] = 0                      # NaN out passes dout, as torch's relu backward
    xc, wc = x.astype(ct, copy=False), w.astype(ct, copy=False)
    if y is None:                             # eval: the conv output was never written; recompute it
        y = conv2d_forward(xc, wc, _ct(b, ct), g)
    xhat = (y.astype(ct, copy=False) - mean.astype(ct, copy=False).reshape(bshape)) * \
        invstd.astype(ct, copy=False).reshape(bshape)
    sum_g = _channel_rows(ga, ct).sum(axis=1)
    sum_gx = _channel_rows(ga * xhat, ct).sum(axis=1)
    scale = invstd.astype(ct, copy=False)
    if weight is not None:
        scale = scale * weight.astype(ct, copy=False)
    if training:
        count = ga.size // K
        dy = (ga - (sum_g / count).reshape(bshape) - xhat * (sum_gx / count).reshape(bshape)) * scale.reshape(bshape)
    else:
        dy = ga * scale.reshape(bshape)
    dx, dw, db = conv2d_backward(dy, xc, wc, g, need_dx=need_dx, need_dw=need_dw, need_db=need_db)
    cast = (lambda a: None if a is None else a.astype(x.dtype, copy=False))
    dweight = dbias = None
    if weight is not None:
        dweight, dbias = sum_gx.astype(weight.dtype, copy=False), sum_g.astype(weight.dtype, copy=False)
    dres = ga.astype(x.dtype, copy=False) if has_residual else None
    return cast(dx), cast(dw), cast(db), dweight, dbias, dres
