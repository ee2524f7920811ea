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
    """dx = dy where y > 0, else 0 (y is the relu output); dx has dy's shape and dtype."""
    launched("relu_backward")
    return np.asarray(np.where(y > 0, dy, np.zeros((), dtype=dy.dtype)).astype(dy.dtype, copy=False))


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
