"""max_pool2d / avg_pool2d references with PyTorch semantics, on sliding-window views.

Window of output (p, q): rows p*sh - ph + r*dh (r < kh), cols q*sw - pw + s*dw (s < kw).
max: padding never wins. The result is what a sequential scan of the window in row-major order
gives with ``if v > best or isnan(v)`` starting from best = -inf at the first in-bounds tap (the
PyTorch kernels): the first maximum on ties, the last NaN if any, the first real pixel when all
are -inf. argmax is the flat index h*W + w in the unpadded (n, c) plane; a window with no real
pixel (dilation can step over the whole input) gives -inf and argmax -1, and no gradient.
avg: divisor = window clipped to the padded plane [-ph, H+ph) when count_include_pad, else the
number of real pixels in the window (a ceil_mode window may reach past H+ph).
float16 is computed in float32 and rounded back. Ops recorded in LAUNCHES: max_pool2d_fwd,
max_pool2d_bwd_scatter, avg_pool2d_fwd, avg_pool2d_bwd.
"""
from __future__ import annotations

import numpy as np

from ...geometry import PoolGeometry
from ._common import compute_dtype, launched
from ._windows import crop, pad_plane, scatter_windows, windows


def _taps(out: int, kernel: int, stride: int, dilation: int, pad: int) -> np.ndarray:
    """(out, kernel) input indices o*stride - pad + t*dilation (may be outside [0, size))."""
    return (np.arange(out)[:, None] * stride - pad) + np.arange(kernel)[None, :] * dilation


def max_pool2d_forward(x, g: PoolGeometry):
    """x: (N, C, H, W) any strides -> (y (N, C, P, Q) of x's dtype, argmax (N, C, P, Q) int64)."""
    ct = compute_dtype(x.dtype)
    (kh, kw), out = g.kernel, (g.P, g.Q)
    xp = pad_plane(x, out, g.kernel, g.stride, g.dilation, g.pad, ct, value=-np.inf)
    win = windows(xp, out, g.kernel, g.stride, g.dilation).reshape(g.N, g.C, g.P, g.Q, kh * kw)
    idx = np.argmax(win, axis=-1)                                   # first maximum, first NaN
    # NaN propagates as in PyTorch's scan: the last NaN of the window wins
    isnan = np.isnan(win)
    has_nan = isnan.any(axis=-1)
    if has_nan.any():
        last_nan = kh * kw - 1 - np.argmax(isnan[..., ::-1], axis=-1)
        idx = np.where(has_nan, last_nan, idx)
    rows = _taps(g.P, kh, g.stride[0], g.dilation[0], g.pad[0])     # (P, kh)
    cols = _taps(g.Q, kw, g.stride[1], g.dilation[1], g.pad[1])     # (Q, kw)
    rok, cok = (rows >= 0) & (rows < g.H), (cols >= 0) & (cols < g.W)
    r, s = idx // kw, idx % kw
    pi, qi = np.arange(g.P)[:, None], np.arange(g.Q)[None, :]
    h, w = rows[pi, r], cols[qi, s]                                 # (N, C, P, Q)
    # a window whose real pixels are all -inf: the first in-bounds tap wins, never padding
    first_h = rows[np.arange(g.P), np.argmax(rok, axis=1)]          # (P,)
    first_w = cols[np.arange(g.Q), np.argmax(cok, axis=1)]          # (Q,)
    in_pad = ~(rok[pi, r] & cok[qi, s])
    h = np.where(in_pad, first_h[:, None], h)
    w = np.where(in_pad, first_w[None, :], w)
    argmax = (h * g.W + w).astype(np.int64)
    y = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
    y = np.where(in_pad, -np.inf, y)
    # a window with no real pixel at all (dilation can step over the whole input): y = -inf,
    # argmax = -1, and backward sends it nothing (as the triton and CUDA kernels)
    rany, cany = np.asarray(rok.any(axis=1)), np.asarray(cok.any(axis=1))
    empty = ~(rany[:, None] & cany[None, :])                          # (P, Q)
    if empty.any():
        argmax = np.where(empty, np.int64(-1), argmax)
    launched("max_pool2d_fwd")
    return np.ascontiguousarray(y, dtype=x.dtype), np.ascontiguousarray(argmax)


def max_pool2d_backward(dy, argmax, g: PoolGeometry):
    """dy, argmax: (N, C, P, Q) -> dx (N, C, H, W): dx[n, c].flat[argmax] += dy (summed over windows)."""
    plane = g.H * g.W
    base = (np.arange(g.N * g.C, dtype=np.int64) * plane).reshape(g.N, g.C, 1, 1)
    am = np.asarray(argmax, dtype=np.int64)
    real = (am >= 0).ravel()                      # argmax -1: a window that saw only padding
    flat = (am + base).ravel()[real]
    # bincount sums in float64: exact enough for every input dtype, rounded once at the end
    dx = np.bincount(flat, weights=dy.astype(np.float64).ravel()[real], minlength=g.N * g.C * plane)
    launched("max_pool2d_bwd_scatter")
    return dx.reshape(g.N, g.C, g.H, g.W).astype(dy.dtype)


def _avg_divisor(g: PoolGeometry, count_include_pad: bool) -> np.ndarray:
    """(P, Q) divisor of each window (PyTorch's avg_pool2d rule; pooling has no dilation here)."""
    def counts(out, k, s, pad, size):
        start = np.arange(out) * s - pad
        end = np.minimum(start + k, size + pad)
        if count_include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)
    rc = counts(g.P, g.kernel[0], g.stride[0], g.pad[0], g.H)
    cc = counts(g.Q, g.kernel[1], g.stride[1], g.pad[1], g.W)
    return (rc[:, None] * cc[None, :]).astype(np.float64)


def avg_pool2d_forward(x, g: PoolGeometry, count_include_pad: bool = True):
    """x: (N, C, H, W) any strides -> y (N, C, P, Q) of x's dtype: window sum / divisor."""
    ct = compute_dtype(x.dtype)
    xp = pad_plane(x, (g.P, g.Q), g.kernel, g.stride, g.dilation, g.pad, ct)
    win = windows(xp, (g.P, g.Q), g.kernel, g.stride, g.dilation)
    y = win.sum(axis=(-2, -1)) / _avg_divisor(g, count_include_pad).astype(ct)
    launched("avg_pool2d_fwd")
    return np.ascontiguousarray(y, dtype=x.dtype)


def avg_pool2d_backward(dy, g: PoolGeometry, count_include_pad: bool = True):
    """dy: (N, C, P, Q) -> dx (N, C, H, W): every pixel gathers dy / divisor of each window covering it."""
    ct = compute_dtype(dy.dtype)
    (kh, kw), (ph, pw) = g.kernel, g.pad
    share = dy.astype(ct, copy=False) / _avg_divisor(g, count_include_pad).astype(ct)
    cols = np.broadcast_to(share[..., None, None], share.shape + (kh, kw))
    plane = (g.N, g.C,
             max(ph + g.H, (g.P - 1) * g.stride[0] + (kh - 1) * g.dilation[0] + 1),
             max(pw + g.W, (g.Q - 1) * g.stride[1] + (kw - 1) * g.dilation[1] + 1))
    dxp = scatter_windows(cols, plane, g.stride, g.dilation, ct)
    launched("avg_pool2d_bwd")
    return crop(dxp, g.pad, (g.H, g.W)).astype(dy.dtype, copy=False)
