"""NumPy reference: batch norm (optionally fused with ReLU), layer norm and group norm
(instance norm = group norm with one channel per group), forward and backward.

Statistics are two-pass (mean first, then the mean of squared deviations, with the
corrected two-pass term), never E[x^2] - E[x]^2, so a large common offset does not destroy
the variance. Every reduction runs along a contiguous last axis, where NumPy sums pairwise.
Arithmetic and statistics are float32 (float64 for float64 inputs); half-precision x is
computed in float32 and y rounded back once.
Every output is a freshly allocated array.
"""
import math

import numpy as np

from ._common import compute_dtype, launched


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _rows(a, nrows: int, ct) -> np.ndarray:
    """a reshaped to a C-contiguous (nrows, -1) array of dtype ct (a copy when needed)."""
    return np.ascontiguousarray(a.reshape(nrows, -1), dtype=ct)


def _channel_rows(a, ct) -> np.ndarray:
    """a (N, C, *) -> C-contiguous (C, N * prod(*)) of dtype ct: one row per channel."""
    C = a.shape[1]
    return np.ascontiguousarray(np.moveaxis(a, 1, 0).reshape(C, -1), dtype=ct)


def _row_mean_var(rows):
    """Per-row mean and biased variance of a (R, L) array by the corrected two-pass algorithm
    (Chan, Golub & LeVeque): var = mean(d^2) - mean(d)^2 with d = x - mean. The correction term
    removes the bias that the rounding of the mean itself would add. Also returns d."""
    mean = rows.mean(axis=1)
    dev = rows - mean[:, None]
    var = np.maximum(np.mean(dev * dev, axis=1) - np.square(dev.mean(axis=1)), 0)
    return mean, var, dev


def _inv_sqrt(var, eps, ct):
    return (1.0 / np.sqrt(var.astype(ct, copy=False) + ct.type(eps))).astype(ct, copy=False)


def _blend_into(running, stat, momentum: float, ct) -> None:
    """running <- (1 - momentum) * running + momentum * stat, in place, computed in ct."""
    running[...] = (ct.type(1.0 - momentum) * running.astype(ct, copy=False) + ct.type(momentum) * stat)


def _param(p, ct):
    return None if p is None else p.astype(ct, copy=False)


# ----------------------------------------------------------------------------------------------
# batch norm (+ fused ReLU)
# ----------------------------------------------------------------------------------------------
def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps, relu):
    """Per-channel normalization over (N, H, W); x: (N, C, H, W) or (N, C).

    training: batch mean and biased variance; running stats (if given) are updated in place with
    the unbiased variance, r = (1 - momentum) * r + momentum * stat. eval: running stats are used.
    y = (x - mean) * invstd * weight + bias (weight/bias None: 1/0), then max(y, 0) if relu.
    Returns (y in x's dtype, mean (C,), invstd (C,)), the statistics float32 (float64 for float64).
    """
    launched("batch_norm_forward")
    ct = compute_dtype(x.dtype)
    C = x.shape[1]
    bshape = (1, C) + (1,) * (x.ndim - 2)
    if training:
        rows = _channel_rows(x, ct)
        count = rows.shape[1]
        mean, var, _ = _row_mean_var(rows)
        invstd = _inv_sqrt(var, eps, ct)
        if running_mean is not None:
            _blend_into(running_mean, mean, momentum, ct)
            _blend_into(running_var, var * ct.type(count / (count - 1)), momentum, ct)
    else:
        mean = running_mean.astype(ct, copy=True)
        invstd = _inv_sqrt(running_var, eps, ct)
    w, b = _param(weight, ct), _param(bias, ct)
    scale = invstd if w is None else invstd * w
    y = (x.astype(ct, copy=False) - mean.reshape(bshape)) * scale.reshape(bshape)
    if b is not None:
        y += b.reshape(bshape)
    if relu:
        np.maximum(y, 0, out=y)
    return y.astype(x.dtype, copy=False), mean, invstd


def batch_norm_backward(dy, x, y, weight, mean, invstd, training, relu):
    """Gradients of batch_norm_forward. dy, x, y: x's shape; mean/invstd (C,) from the forward.

    relu: dy is first zeroed where y <= 0 (NaN y passes, as torch). training: the batch statistics depend on x, so
    dx = weight * invstd * (g - mean(g) - xhat * mean(g * xhat)) per channel (g the masked dy,
    xhat = (x - mean) * invstd); eval: dx = g * weight * invstd. dweight = sum(g * xhat),
    dbias = sum(g) over (N, H, W), in weight's dtype; both None when weight is None.
    """
    launched("batch_norm_backward")
    ct = compute_dtype(x.dtype)
    C = x.shape[1]
    bshape = (1, C) + (1,) * (x.ndim - 2)
    g = dy.astype(ct, copy=True)
    if relu:
        g[y <= 0] = 0                        # NaN y passes dy, as torch's relu backward
    mean_c = mean.astype(ct, copy=False).reshape(bshape)
    inv_c = invstd.astype(ct, copy=False).reshape(bshape)
    xhat = (x.astype(ct, copy=False) - mean_c) * inv_c
    w = _param(weight, ct)
    scale = inv_c if w is None else inv_c * w.reshape(bshape)
    need_sums = training or weight is not None
    if need_sums:
        dbias = _channel_rows(g, ct).sum(axis=1)
        dweight = _channel_rows(g * xhat, ct).sum(axis=1)
    if training:
        count = g.size // C
        dx = (g - (dbias / count).reshape(bshape) - xhat * (dweight / count).reshape(bshape)) * scale
    else:
        dx = g * scale
    dx = dx.astype(x.dtype, copy=False)
    if weight is None:
        return dx, None, None
    return dx, dweight.astype(weight.dtype, copy=False), dbias.astype(weight.dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# layer norm
# ----------------------------------------------------------------------------------------------
def layer_norm_forward(x, normalized_ndim, weight, bias, eps):
    """Normalize over the trailing ``normalized_ndim`` dims of x.

    weight/bias: shape x.shape[-normalized_ndim:] or None. Returns (y in x's dtype, mean (M,),
    rstd (M,)) with M the product of the leading dims (1 when there are none).
    """
    launched("layer_norm_forward")
    ct = compute_dtype(x.dtype)
    M = math.prod(x.shape[:x.ndim - normalized_ndim])
    rows = _rows(x, M, ct)
    mean, var, dev = _row_mean_var(rows)
    rstd = _inv_sqrt(var, eps, ct)
    y = dev * rstd[:, None]
    if weight is not None:
        y *= weight.astype(ct, copy=False).reshape(1, -1)
    if bias is not None:
        y += bias.astype(ct, copy=False).reshape(1, -1)
    return y.reshape(x.shape).astype(x.dtype, copy=False), mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd, normalized_ndim):
    """Gradients of layer_norm_forward: dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)) per
    row, gw = dy * weight; dweight = sum over rows of dy * xhat, dbias = sum of dy, both shaped
    like weight and in its dtype (None when weight is None)."""
    launched("layer_norm_backward")
    ct = compute_dtype(x.dtype)
    M = math.prod(x.shape[:x.ndim - normalized_ndim])
    g = _rows(dy, M, ct)
    r = rstd.astype(ct, copy=False).reshape(M, 1)
    xhat = (_rows(x, M, ct) - mean.astype(ct, copy=False).reshape(M, 1)) * r
    gw = g if weight is None else g * weight.astype(ct, copy=False).reshape(1, -1)
    dx = r * (gw - gw.mean(axis=1, keepdims=True) - xhat * (gw * xhat).mean(axis=1, keepdims=True))
    dx = dx.reshape(x.shape).astype(x.dtype, copy=False)
    if weight is None:
        return dx, None, None
    # sums over the M rows, transposed so they run along a contiguous axis
    dweight = np.ascontiguousarray((g * xhat).T).sum(axis=1)
    dbias = np.ascontiguousarray(g.T).sum(axis=1)
    return (dx, dweight.reshape(weight.shape).astype(weight.dtype, copy=False),
            dbias.reshape(weight.shape).astype(weight.dtype, copy=False))


# ----------------------------------------------------------------------------------------------
# group norm (instance norm: num_groups == C)
# ----------------------------------------------------------------------------------------------
def group_norm_forward(x, num_groups, weight, bias, eps):
    """x (N, C, *) normalized over (C / G, *) for each (n, group); weight/bias (C,) or None.

    Returns (y in x's dtype, mean (N, G), rstd (N, G)).
    """
    launched("group_norm_forward")
    ct = compute_dtype(x.dtype)
    N, C, G = x.shape[0], x.shape[1], num_groups
    rows = _rows(x, N * G, ct)
    mean, var, dev = _row_mean_var(rows)
    rstd = _inv_sqrt(var, eps, ct)
    y = (dev * rstd[:, None]).reshape(N, C, -1)
    if weight is not None:
        y *= weight.astype(ct, copy=False).reshape(1, C, 1)
    if bias is not None:
        y += bias.astype(ct, copy=False).reshape(1, C, 1)
    return y.reshape(x.shape).astype(x.dtype, copy=False), mean.reshape(N, G), rstd.reshape(N, G)


def group_norm_backward(dy, x, num_groups, weight, mean, rstd):
    """Gradients of group_norm_forward: per (n, group) row, dx = rstd * (gw - mean(gw) -
    xhat * mean(gw * xhat)) with gw = dy * weight[c]; dweight[c] = sum over (N, *) of dy * xhat,
    dbias[c] = sum of dy, in weight's dtype (None when weight is None)."""
    launched("group_norm_backward")
    ct = compute_dtype(x.dtype)
    N, C, G = x.shape[0], x.shape[1], num_groups
    r = rstd.astype(ct, copy=False).reshape(N * G, 1)
    xhat = (_rows(x, N * G, ct) - mean.astype(ct, copy=False).reshape(N * G, 1)) * r
    g = _rows(dy, N * C, ct)                                    # (N*C, S)
    gw = g if weight is None else g * np.tile(weight.astype(ct, copy=False), N).reshape(N * C, 1)
    gw = gw.reshape(N * G, -1)
    dx = r * (gw - gw.mean(axis=1, keepdims=True) - xhat * (gw * xhat).mean(axis=1, keepdims=True))
    dx = dx.reshape(x.shape).astype(x.dtype, copy=False)
    if weight is None:
        return dx, None, None
    gx = (g * xhat.reshape(N * C, -1)).reshape(N, C, -1)
    dweight = _channel_rows(gx, ct).sum(axis=1)
    dbias = _channel_rows(g.reshape(N, C, -1), ct).sum(axis=1)
    return dx, dweight.astype(weight.dtype, copy=False), dbias.astype(weight.dtype, copy=False)
