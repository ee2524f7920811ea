"""relu, linear and mean softmax cross-entropy on the triton backend (launchers).

Kernels: ``cnngpu.kernels.triton.elementwise`` (relu), ``.linear`` (one strided GEMM for the
forward, dX and dW+db), ``.cross_entropy``. Inputs may have any strides; nothing is copied except
labels of an integer type other than int32/int64 (converted to int64) and relu inputs of more than
4 dims that are not densely laid out. Outputs are fresh tensors of the input's dtype (relu keeps a
dense input's memory format, e.g. channels-last); the loss is a 0-d float32 tensor.

``linear_gemm`` runs one config picked per shape (``_tuning``; the autotuner only with
CNNGPU_AUTOTUNE=1). Launches are recorded under the kernel name; ``linear_gemm`` also as ``linear_gemm[fwd]``,
``linear_gemm[dx]``, ``linear_gemm[dw_db]`` / ``linear_gemm[dw]`` and ``linear_gemm[int64]``.
"""
from __future__ import annotations

import torch
import triton

from cnngpu.kernels.triton import cross_entropy as CE
from cnngpu.kernels.triton import elementwise as EW
from cnngpu.kernels.triton import linear as LIN
from cnngpu.kernels.triton._config import for_dtype, launch_kwargs

from ..limits import EXTENT_HEADROOM
from ._common import dtype_tag, empty, launched, needs_int64
from ._tuning import launch


# ----------------------------------------------------------------------------------------------
# relu
# ----------------------------------------------------------------------------------------------
def _dense_like(x):
    """A poisoned output with x's shape and, when x is dense (a permutation of a contiguous layout,
    e.g. channels-last), x's strides; otherwise contiguous."""
    if x.is_contiguous() or x.ndim < 2:
        return empty(x.shape, x.dtype, x.device)
    perm = sorted(range(x.ndim), key=lambda d: (-x.stride(d), -x.shape[d]))
    if not x.permute(perm).is_contiguous():
        return empty(x.shape, x.dtype, x.device)
    buf = empty([x.shape[d] for d in perm], x.dtype, x.device)
    inv = [0] * x.ndim
    for i, d in enumerate(perm):
        inv[d] = i
    return buf.permute(inv)


def _is_dense(t) -> bool:
    """Elements exactly fill storage offsets [0, numel) (so a flat index is a storage offset)."""
    if t.is_contiguous():
        return True
    perm = sorted(range(t.ndim), key=lambda d: (-t.stride(d), -t.shape[d]))
    return t.permute(perm).is_contiguous()


def _view4(flat, *tensors):
    """Sizes (D1, D2, D3) and per-tensor 4 strides of same-shaped tensors padded to 4-D
    (placeholders when the kernel runs FLAT and reads no strides)."""
    if flat:
        return [1, 1, 1], [0] * (4 * len(tensors))
    shape = list(tensors[0].shape)
    pad = 4 - len(shape)
    sizes = [1] * pad + shape
    strides = []
    for t in tensors:
        strides.extend([0] * pad + list(t.stride()))
    return sizes[1:], strides


def _ew_config(dtype):
    return for_dtype(EW.RELU_CONFIGS, dtype_tag(dtype))[0]


def _flat_ok(*tensors) -> bool:
    first = tensors[0]
    return _is_dense(first) and all(t.stride() == first.stride() for t in tensors[1:])


def relu_forward(x):
    """y = max(x, 0) elementwise (NaN propagates); any shape; y has x's dtype and dense layout."""
    if x.ndim > 4 and not _is_dense(x):
        x = x.contiguous()
    y = _dense_like(x)
    total = x.numel()
    if total == 0:
        return y
    cfg = _ew_config(x.dtype)
    flat = _flat_ok(x, y)
    sizes, strides = _view4(flat, x, y)
    EW.relu_fwd_elementwise[(triton.cdiv(total, cfg.kwargs["BLOCK"]),)](
        x, y, total, *sizes, *strides, FLAT=flat, **launch_kwargs(cfg))
    launched("relu_fwd_elementwise")
    return y


def relu_backward(dy, y):
    """dx = dy where y > 0 else 0 (y the relu output); dx has dy's shape, dtype and dense layout."""
    if dy.ndim > 4 and not (_flat_ok(dy, y)):
        dy, y = dy.contiguous(), y.contiguous()
    dx = _dense_like(dy)
    total = dy.numel()
    if total == 0:
        return dx
    cfg = _ew_config(dy.dtype)
    flat = _flat_ok(dy, y, dx)
    sizes, strides = _view4(flat, dy, y, dx)
    EW.relu_bwd_mask[(triton.cdiv(total, cfg.kwargs["BLOCK"]),)](
        dy, y, dx, total, *sizes, *strides, FLAT=flat, **launch_kwargs(cfg))
    launched("relu_bwd_mask")
    return dx


# ----------------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------------
def _gemm(a, a_strides, b, b_strides, c, M, N, K, bias=None, rowsum=None, precision="ieee", tag="fwd"):
    """C (M, N) = A (M, K) @ B (K, N) (+ bias) (rowsum = A summed over K) with ``linear_gemm``."""
    if M == 0 or N == 0:
        return
    # masked lanes of the last tile step past the end: offsets need headroom too
    int64 = needs_int64((a, b, c, bias, rowsum), (M, N, K), offset_headroom=EXTENT_HEADROOM)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    args = (a, b, bias if bias is not None else c, c, rowsum if rowsum is not None else c,
            M, N, K, *a_strides, *b_strides, *c.stride(),
            bias.stride(0) if bias is not None else 0, rowsum.stride(0) if rowsum is not None else 0)
    # one picked config per shape (CNNGPU_AUTOTUNE=1: the autotuner), captured by bench.static_report
    launch(LIN.linear_gemm, grid, args, HAS_BIAS=bias is not None, ROW_SUM_A=rowsum is not None, INT64=int64,
           PRECISION="tf32" if (precision == "tf32" and a.dtype == torch.float32) else "ieee")
    launched("linear_gemm")
    launched(f"linear_gemm[{tag}]")
    if int64:
        launched("linear_gemm[int64]")


def linear_forward(x, w, b, precision="ieee"):
    """y = x @ w.T + b. x (M, in), w (out, in), b (out,) or None -> y (M, out) in x's dtype.

    precision: 'ieee' (exact fp32 products) or 'tf32' (tensor cores) for float32 inputs."""
    M, K = int(x.shape[0]), int(x.shape[1])
    N = int(w.shape[0])
    y = empty((M, N), x.dtype, x.device)
    # B = w^T: element (k, n) is w[n, k]
    _gemm(x, x.stride(), w, (w.stride(1), w.stride(0)), y, M, N, K, bias=b, precision=precision, tag="fwd")
    return y


def linear_backward(dy, x, w, need_db=True, precision="ieee"):
    """dy (M, out) -> (dx = dy @ w (M, in), dw = dy.T @ x (out, in), db = dy summed over M or None).

    db is fused into the dW GEMM (row sums of dy^T). All in x's dtype, fp32 accumulation."""
    M, K = int(x.shape[0]), int(x.shape[1])
    N = int(w.shape[0])
    dx = empty((M, K), x.dtype, x.device)
    dw = empty((N, K), x.dtype, x.device)
    db = empty((N,), x.dtype, x.device) if need_db else None
    _gemm(dy, dy.stride(), w, w.stride(), dx, M, K, N, precision=precision, tag="dx")
    # A = dy^T (N, M): element (n, m) is dy[m, n]
    _gemm(dy, (dy.stride(1), dy.stride(0)), x, x.stride(), dw, N, K, M, rowsum=db, precision=precision,
          tag="dw_db" if need_db else "dw")
    if need_db and K == 0 and N > 0:
        # no dW tile exists to carry the fused row sums: reduce dy on its own (same kernel, N x 1)
        ones = torch.ones((M, 1), dtype=x.dtype, device=x.device)
        col = empty((N, 1), x.dtype, x.device)
        _gemm(dy, (dy.stride(1), dy.stride(0)), ones, ones.stride(), col, N, 1, M, precision=precision, tag="db")
        db = col[:, 0]
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy (mean over the batch)
# ----------------------------------------------------------------------------------------------
def _labels(labels):
    return labels if labels.dtype in (torch.int32, torch.int64) else labels.to(torch.int64)


def cross_entropy_forward(logits, labels):
    """logits (M, classes), labels (M,) -> (loss 0-d float32 = mean of -log softmax[label], probs
    (M, classes) in logits' dtype), computed stably (max subtraction, online log-sum-exp)."""
    labels = _labels(labels)
    M, C = int(logits.shape[0]), int(logits.shape[1])
    probs = empty((M, C), logits.dtype, logits.device)
    nll = empty((M,), torch.float32, logits.device)
    loss = empty((), torch.float32, logits.device)
    cfg = CE.fwd_config(C)
    if M > 0:
        CE.cross_entropy_fwd_softmax_rows[(triton.cdiv(M, cfg.kwargs["BLOCK_M"]),)](
            logits, labels, probs, nll, M, C, *logits.stride(), labels.stride(0), **launch_kwargs(cfg))
        launched("cross_entropy_fwd_softmax_rows")
    CE.cross_entropy_fwd_mean[(1,)](nll, loss, M, **launch_kwargs(CE.MEAN_CONFIGS[0]))
    launched("cross_entropy_fwd_mean")
    return loss, probs


def cross_entropy_backward(probs, labels, dloss):
    """dlogits = dloss * (probs - onehot(labels)) / M, (M, classes) in probs' dtype."""
    labels = _labels(labels)
    M, C = int(probs.shape[0]), int(probs.shape[1])
    dlogits = empty((M, C), probs.dtype, probs.device)
    if M == 0 or C == 0:
        return dlogits
    cfg = CE.BWD_CONFIGS[0]
    bm, bc = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_C"]
    scale = float(torch.tensor(float(dloss), dtype=torch.float32) / torch.tensor(float(M), dtype=torch.float32))
    CE.cross_entropy_bwd_softmax_minus_onehot[(triton.cdiv(M, bm), triton.cdiv(C, bc))](
        probs, labels, dlogits, M, C, *probs.stride(), labels.stride(0), scale,
        **launch_kwargs(cfg))
    launched("cross_entropy_bwd_softmax_minus_onehot")
    return dlogits
