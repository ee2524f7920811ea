"""conv2d reference: im2col by a sliding-window view, one batched GEMM over the groups.

Layout of the GEMMs (G = groups, Cg = C/G, Kg = K/G, M = N*P*Q, L = Cg*R*S):
  forward   Y[g]  (M, Kg) = A[g] (M, L) @ W[g]^T (L, Kg)        A = im2col(x), W[g] = w[g] as (Kg, L)
  dW        dW[g] (Kg, L) = dY[g]^T (Kg, M) @ A[g] (M, L)
  dX        dA[g] (M, L)  = dY[g] (M, Kg) @ W[g] (Kg, L), then col2im (scatter-add over R*S taps)
  db        sum of dY over N, P, Q
float16 inputs are computed in float32 and rounded back; float32 and float64 compute in their own
dtype. ``precision`` and ``algo`` are accepted for the common signature: NumPy always does exact
(IEEE) arithmetic. Ops recorded in LAUNCHES: conv2d_fwd_im2col_gemm, conv2d_bwd_dx_col2im,
conv2d_bwd_dw_im2col_gemm, conv2d_bwd_db.
"""
from __future__ import annotations

import numpy as np

from ...geometry import ConvGeometry
from ._common import compute_dtype, launched
from ._windows import crop, pad_plane, scatter_windows, windows


def _im2col(x: np.ndarray, g: ConvGeometry, ct) -> np.ndarray:
    """x (N, C, H, W) -> A (G, N*P*Q, Cg*R*S) in dtype ``ct`` (a new contiguous array)."""
    xp = pad_plane(x, (g.P, g.Q), (g.R, g.S), g.stride, g.dilation, g.pad, ct)
    v = windows(xp, (g.P, g.Q), (g.R, g.S), g.stride, g.dilation)          # (N, C, P, Q, R, S)
    v = v.reshape(g.N, g.groups, g.c_per_group, g.P, g.Q, g.R, g.S)
    a = v.transpose(1, 0, 3, 4, 2, 5, 6)                                   # (G, N, P, Q, Cg, R, S)
    return np.ascontiguousarray(a).reshape(g.groups, g.N * g.P * g.Q, g.c_per_group * g.R * g.S)


def _weight_matrix(w: np.ndarray, g: ConvGeometry, ct) -> np.ndarray:
    """w (K, Cg, R, S) -> (G, Kg, Cg*R*S) in dtype ``ct``."""
    return w.astype(ct, copy=False).reshape(g.groups, g.k_per_group, g.c_per_group * g.R * g.S)


def _dy_matrix(dy: np.ndarray, g: ConvGeometry, ct) -> np.ndarray:
    """dy (N, K, P, Q) -> (G, N*P*Q, Kg) in dtype ``ct``."""
    d = dy.astype(ct, copy=False).reshape(g.N, g.groups, g.k_per_group, g.P, g.Q)
    return d.transpose(1, 0, 3, 4, 2).reshape(g.groups, g.N * g.P * g.Q, g.k_per_group)


def conv2d_forward(x, w, b, g: ConvGeometry, algo: str = "auto", precision: str = "ieee"):
    """y = conv2d(x, w) + b. x: (N, C, H, W) any strides; w: (K, C/groups, R, S); b: (K,) or None.

    Returns a new C-contiguous y (N, K, P, Q) of x's dtype.
    """
    ct = compute_dtype(x.dtype)
    a = _im2col(x, g, ct)                                                  # (G, M, L)
    wm = _weight_matrix(w, g, ct)                                          # (G, Kg, L)
    y = np.matmul(a, wm.transpose(0, 2, 1))                                # (G, M, Kg)
    y = y.reshape(g.groups, g.N, g.P, g.Q, g.k_per_group).transpose(1, 0, 4, 2, 3)
    y = y.reshape(g.N, g.K, g.P, g.Q)
    if b is not None:
        y = y + b.astype(ct, copy=False).reshape(1, g.K, 1, 1)
    launched("conv2d_fwd_im2col_gemm")
    return np.ascontiguousarray(y, dtype=x.dtype)


def conv2d_backward(dy, x, w, g: ConvGeometry, need_dx: bool = True, need_dw: bool = True,
                    need_db: bool = True, algo: str = "auto", precision: str = "ieee"):
    """Gradients of conv2d_forward. dy: (N, K, P, Q); x: (N, C, H, W); w: (K, C/groups, R, S).

    Returns (dx (N, C, H, W) | None, dw (K, C/groups, R, S) | None, db (K,) | None), new arrays of
    x's dtype; an entry is None when not asked for. algo and precision are accepted for the common
    signature: the reference is one algorithm (col2im / GEMM) in exact arithmetic.
    """
    ct = compute_dtype(x.dtype)
    dym = _dy_matrix(dy, g, ct)                                            # (G, M, Kg)
    dx = dw = db = None
    if need_dx:
        wm = _weight_matrix(w, g, ct)                                      # (G, Kg, L)
        da = np.matmul(dym, wm)                                            # (G, M, L)
        da = da.reshape(g.groups, g.N, g.P, g.Q, g.c_per_group, g.R, g.S)
        cols = da.transpose(1, 0, 4, 2, 3, 5, 6).reshape(g.N, g.C, g.P, g.Q, g.R, g.S)
        ph, pw = g.pad
        plane = (g.N, g.C,
                 max(ph + g.H, (g.P - 1) * g.stride[0] + (g.R - 1) * g.dilation[0] + 1),
                 max(pw + g.W, (g.Q - 1) * g.stride[1] + (g.S - 1) * g.dilation[1] + 1))
        dxp = scatter_windows(cols, plane, g.stride, g.dilation, ct)
        dx = crop(dxp, g.pad, (g.H, g.W)).astype(x.dtype, copy=False)
        launched("conv2d_bwd_dx_col2im")
    if need_dw:
        a = _im2col(x, g, ct)                                              # (G, M, L)
        dwm = np.matmul(dym.transpose(0, 2, 1), a)                         # (G, Kg, L)
        dw = np.ascontiguousarray(dwm.reshape(g.K, g.c_per_group, g.R, g.S), dtype=x.dtype)
        launched("conv2d_bwd_dw_im2col_gemm")
    if need_db:
        db = dy.astype(ct, copy=False).sum(axis=(0, 2, 3)).astype(x.dtype)
        launched("conv2d_bwd_db")
    return dx, dw, db
