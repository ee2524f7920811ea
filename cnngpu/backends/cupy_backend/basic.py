"""CuPy launchers for relu, linear and mean softmax cross-entropy, forward and backward
(CUDA C in kernels/cuda/{elementwise,linear,cross_entropy}.cu).

linear: the GEMMs are cuBLAS SGEMMs through cupy.matmul on float32 operands (half/bfloat16
operands are widened by a cast kernel first, so the result is rounded once, as in the reference,
and nothing depends on cupy's own half/bfloat16 GEMM support); the bias add + rounding epilogue
and the bias gradient (column sums, two-stage, no atomics) are CUDA C kernels.
"""
from __future__ import annotations

from ._cupy import cupy

from ._common import empty
from ._config import (BLOCK, COLSUM_TX, COLSUM_TY, SCALAR_T, column_partition, elementwise_grid, row_launch,
                      scalar_define, thread_per_item_grid)
from ._launch import cast_from_float32, cast_to_float32, contiguous, dtype_of, f32, i32, i64, run, sm_count

_EW, _LIN, _XENT = "elementwise.cu", "linear.cu", "cross_entropy.cu"
_EW_ENTRIES = ["relu_fwd", "relu_bwd_mask", "cast_to_float32", "cast_from_float32"]
_LIN_ENTRIES = ["linear_fwd_bias_epilogue", "linear_bias_grad_partials", "linear_bias_grad_finalize"]
_XENT_ENTRIES = ["softmax_xent_fwd_rows", "softmax_xent_loss_mean", "softmax_xent_bwd"]
CUDA_BUILDS = [(f, list(e), scalar_define(dt)) for dt in SCALAR_T
               for f, e in ((_EW, _EW_ENTRIES), (_LIN, _LIN_ENTRIES), (_XENT, _XENT_ENTRIES))]

_LOSS_THREADS = 1024  # the single block that averages the row losses


# ----------------------------------------------------------------------------------------------
# relu
# ----------------------------------------------------------------------------------------------
def relu_forward(x):
    """y = max(x, 0) elementwise (NaN propagates); any shape; y has x's shape and dtype."""
    x = contiguous(x)
    y = empty(x.shape, x.dtype)
    if x.size:
        run(_EW, "relu_fwd", dtype_of(x), elementwise_grid(x.size), (BLOCK,), (x, y, i64(x.size)))
    return y


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0; dx has dy's shape and dtype."""
    dy, y = contiguous(dy), contiguous(y)
    dx = empty(dy.shape, dy.dtype)
    if dy.size:
        run(_EW, "relu_bwd_mask", dtype_of(dy), elementwise_grid(dy.size), (BLOCK,), (dy, y, dx, i64(dy.size)))
    return dx


# ----------------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------------
def linear_forward(x, w, b, precision="ieee"):
    """y = x @ w.T + b. x (M, in), w (out, in), b (out,) or None -> y (M, out) of x's dtype.
    precision is accepted for the common signature: the fp32 cuBLAS GEMM is used either way."""
    M, out = int(x.shape[0]), int(w.shape[0])
    acc = cupy.matmul(cast_to_float32(x), cast_to_float32(w).T)      # (M, out) float32, cuBLAS
    acc = cupy.ascontiguousarray(acc)
    y = empty((M, out), x.dtype)
    bias = contiguous(b) if b is not None else y                     # y: a placeholder, never read
    run(_LIN, "linear_fwd_bias_epilogue", dtype_of(x), elementwise_grid(M * out), (BLOCK,),
        (acc, bias, y, i64(M * out), i32(out), i32(b is not None)))
    return y


def _bias_grad(dy):
    """Column sums of dy (M, out) -> (out,) of dy's dtype: float32 partial sums over row chunks,
    then one thread per column adds the partials and rounds once."""
    M, out = int(dy.shape[0]), int(dy.shape[1])
    grid, rows = column_partition(M, out, sm_count())
    G = grid[1]
    part = cupy.empty((G * out,), dtype=cupy.float32)
    run(_LIN, "linear_bias_grad_partials", dtype_of(dy), grid, (COLSUM_TX, COLSUM_TY, 1), (dy, part, i64(M), i32(out), i64(rows)))
    db = empty((out,), dy.dtype)
    run(_LIN, "linear_bias_grad_finalize", dtype_of(dy), thread_per_item_grid(out), (BLOCK,),
        (part, i32(G), i32(out), db))
    return db


def linear_backward(dy, x, w, need_db=True, precision="ieee"):
    """Gradients of y = x @ w.T + b for dy (M, out): dx = dy @ w (M, in), dw = dy.T @ x (out, in),
    db = column sums of dy (out,) or None; all of x's dtype."""
    dy = contiguous(dy)
    g32, x32, w32 = cast_to_float32(dy), cast_to_float32(x), cast_to_float32(w)
    dx = cast_from_float32(cupy.ascontiguousarray(cupy.matmul(g32, w32)), x.dtype)
    dw = cast_from_float32(cupy.ascontiguousarray(cupy.matmul(g32.T, x32)), x.dtype)
    db = _bias_grad(dy) if need_db else None
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy (mean over the batch)
# ----------------------------------------------------------------------------------------------
def cross_entropy_forward(logits, labels):
    """logits (M, K), labels (M,) ints -> (loss 0-d float32, probs (M, K) of logits' dtype):
    per-row stable softmax (max subtraction) and log-sum-exp, then one block averages."""
    z = contiguous(logits)
    lab = cupy.ascontiguousarray(labels, dtype=cupy.int64)
    M, K = int(z.shape[0]), int(z.shape[1])
    probs = empty((M, K), z.dtype)
    row_loss = empty((M,), cupy.float32)
    block, grid = row_launch(M, K)
    run(_XENT, "softmax_xent_fwd_rows", dtype_of(z), grid, block, (z, lab, probs, row_loss, i64(M), i32(K)))
    loss = empty((), cupy.float32)
    run(_XENT, "softmax_xent_loss_mean", dtype_of(z), (1,), (_LOSS_THREADS,), (row_loss, i64(M), loss))
    return loss, probs


def cross_entropy_backward(probs, labels, dloss):
    """dlogits = dloss * (probs - onehot(labels)) / M, (M, K) of probs' dtype."""
    p = contiguous(probs)
    lab = cupy.ascontiguousarray(labels, dtype=cupy.int64)
    M, K = int(p.shape[0]), int(p.shape[1])
    dz = empty((M, K), p.dtype)
    run(_XENT, "softmax_xent_bwd", dtype_of(p), elementwise_grid(M * K), (BLOCK,),
        (p, lab, dz, i64(M * K), i32(K), f32(float(dloss) / M)))
    return dz
