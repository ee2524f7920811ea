"""NumPy reference: relu, linear and mean softmax cross-entropy (forward and backward).

Half-precision inputs are computed in float32 and rounded back once at the end; float32 and
float64 are computed in their own precision. Every output is a freshly allocated array.
"""
import numpy as np

from ._common import compute_dtype, launched


# ----------------------------------------------------------------------------------------------
# relu
# ----------------------------------------------------------------------------------------------
def relu_forward(x):
    """y = max(x, 0) elementwise; any shape; y has x's dtype (NaN propagates)."""
    launched("relu_forward")
    return np.asarray(np.maximum(x, 0))      # an array even for 0-d x (ufuncs return scalars)


def relu_backward(dy, y):
    """dx = 0 where y <= 0, else dy (y is the relu output; NaN y passes dy, as torch's
    threshold_backward); dx has dy's shape and dtype."""
    launched("relu_backward")
    return np.asarray(np.where(y <= 0, np.zeros((), dtype=dy.dtype), dy).astype(dy.dtype, copy=False))


# ----------------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------------
def linear_forward(x, w, b, precision="ieee"):
    """y = x @ w.T + b. x: (M, in); w: (out, in); b: (out,) or None -> y: (M, out), x's dtype.
    precision is accepted for the common signature (exact arithmetic here)."""
    launched("linear_forward")
    ct = compute_dtype(x.dtype)
    y = x.astype(ct, copy=False) @ w.astype(ct, copy=False).T
    if b is not None:
        y += b.astype(ct, copy=False)
    return y.astype(x.dtype, copy=False)


def linear_backward(dy, x, w, need_db=True, precision="ieee"):
    """Gradients of y = x @ w.T + b for upstream dy (M, out).

    Returns dx = dy @ w (M, in), dw = dy.T @ x (out, in), db = dy summed over M (out,) or None;
    all in x's dtype.
    """
    launched("linear_backward")
    ct = compute_dtype(x.dtype)
    g = dy.astype(ct, copy=False)
    dx = g @ w.astype(ct, copy=False)
    dw = g.T @ x.astype(ct, copy=False)
    db = g.sum(axis=0).astype(x.dtype, copy=False) if need_db else None
    return dx.astype(x.dtype, copy=False), dw.astype(x.dtype, copy=False), db


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy (mean over the batch)
# ----------------------------------------------------------------------------------------------
def cross_entropy_forward(logits, labels):
    """Mean over rows of -log softmax(logits)[label], computed stably (max subtraction, log-sum-exp).

    logits: (M, classes); labels: (M,) ints in [0, classes). Returns (loss, probs): loss a 0-d
    array, float32 (float64 for float64 logits); probs (M, classes) the softmax in logits' dtype.
    """
    launched("cross_entropy_forward")
    ct = compute_dtype(logits.dtype)
    z = logits.astype(ct, copy=False)
    shifted = z - z.max(axis=1, keepdims=True)               # <= 0, the row max is exactly 0
    lse = np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # in [0, log(classes)]
    logp = shifted - lse
    rows = np.arange(z.shape[0])
    loss = -logp[rows, labels.astype(np.intp, copy=False)].mean(dtype=ct)
    return np.asarray(loss, dtype=ct), np.exp(logp).astype(logits.dtype, copy=False)


def cross_entropy_backward(probs, labels, dloss):
    """dlogits = dloss * (probs - onehot(labels)) / M, (M, classes) in probs' dtype."""
    launched("cross_entropy_backward")
    ct = compute_dtype(probs.dtype)
    g = probs.astype(ct, copy=True)
    M = g.shape[0]
    g[np.arange(M), labels.astype(np.intp, copy=False)] -= 1
    g *= ct.type(dloss) / ct.type(M)
    return g.astype(probs.dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# cross-entropy with torch's options (class weights, ignore_index, reduction, label smoothing,
# probability targets, (N, C, d1, ...) inputs). Every case is one rule: per entry i,
# loss_i = -sum_c a[i, c] * log softmax(z_i)[c] with coefficients a (M, C), reduced by `denom`:
#   class indices y_i: a[i, c] = w[y_i] (1 - eps) [c == y_i] + w[c] eps / C (0 rows where ignored),
#                      mean denominator = sum of w[y_i] over the non-ignored entries;
#   probabilities t:   a[i, c] = w[c] ((1 - eps) t[i, c] + eps / C), mean denominator = M.
# dloss_i/dz[i, k] = A_i p[i, k] - a[i, k] with A_i = sum_c a[i, c].
# ----------------------------------------------------------------------------------------------
def _rows(a, C):
    """(N, C, d1, ...) -> (M, C) with C last; (C,) -> (1, C)."""
    if a.ndim == 1:
        return a[None, :]
    return np.moveaxis(a, 1, -1).reshape(-1, C)


def _unrows(r, shape):
    """Inverse of _rows for an array of ``shape``."""
    if len(shape) == 1:
        return r[0]
    moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
    return np.moveaxis(r.reshape(moved), -1, 1)


def _xent_coeffs(target, weight, ignore_index, label_smoothing, classes, C, ct):
    w = np.ones(C, ct) if weight is None else weight.astype(ct)
    eps = ct.type(label_smoothing)
    if classes:
        y = target.reshape(-1).astype(np.int64)
        keep = y != ignore_index
        yk = np.where(keep, y, 0)
        a = np.zeros((y.shape[0], C), ct)
        a[np.arange(y.shape[0]), yk] = w[yk] * (1 - eps)
        a += w[None, :] * eps / ct.type(C)
        a[~keep] = 0
        denom = np.sum(np.where(keep, w[yk], 0), dtype=ct)
    else:
        t = _rows(target.astype(ct), C)
        a = w[None, :] * ((1 - eps) * t + eps / ct.type(C))
        denom = ct.type(t.shape[0])
    return a, denom


def cross_entropy_general_forward(logits, target, weight, ignore_index, reduction, label_smoothing, classes):
    """torch.nn.functional.cross_entropy on NumPy arrays; returns (loss, probs of logits' shape)."""
    launched("cross_entropy_general_forward")
    ct = compute_dtype(logits.dtype)
    shape = logits.shape
    C = shape[1] if logits.ndim >= 2 else shape[0]
    z = _rows(logits.astype(ct), C)
    if z.shape[0]:
        shifted = z - z.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    else:
        logp = z.copy()
    a, denom = _xent_coeffs(target, weight, ignore_index, label_smoothing, classes, C, ct)
    # a == 0 contributes 0 even where logp is -inf (torch's nll ignores those terms)
    per = -np.sum(np.where(a != 0, a * logp, 0), axis=1)
    if reduction == "none":
        out_shape = (shape[0],) + tuple(shape[2:]) if logits.ndim >= 2 else ()
        loss = per.reshape(out_shape).astype(logits.dtype)
    elif reduction == "sum":
        loss = np.asarray(per.sum(dtype=ct), ct)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = np.asarray(per.sum(dtype=ct) / denom, ct)
    probs = _unrows(np.exp(logp), shape).astype(logits.dtype)
    return loss, np.ascontiguousarray(probs)


def cross_entropy_general_backward(probs, target, dloss, weight, ignore_index, reduction, label_smoothing,
                                   classes):
    """Gradient of cross_entropy_general_forward w.r.t. the logits, from its probs."""
    launched("cross_entropy_general_backward")
    ct = compute_dtype(probs.dtype)
    shape = probs.shape
    C = shape[1] if probs.ndim >= 2 else shape[0]
    p = _rows(probs.astype(ct), C)
    a, denom = _xent_coeffs(target, weight, ignore_index, label_smoothing, classes, C, ct)
    if reduction == "none":
        g = np.asarray(dloss, ct).reshape(-1)[:, None]
    elif reduction == "sum":
        g = ct.type(dloss)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            g = ct.type(dloss) / denom
    with np.errstate(invalid="ignore"):
        d = g * (a.sum(axis=1, keepdims=True) * p - a)
    # an entry with no coefficient (ignored) has gradient 0, also where g is not finite (every entry of a
    # 'mean' ignored: loss 0/0 = NaN, as torch, whose gradient is still 0)
    d = np.where(np.any(a != 0, axis=1, keepdims=True), d, 0)
    return np.ascontiguousarray(_unrows(d, shape).astype(probs.dtype))
