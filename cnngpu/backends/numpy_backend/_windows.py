"""Sliding-window helpers shared by the conv and pool references (NCHW, any input strides).

A window op with output length ``out``, kernel ``k``, stride ``s``, dilation ``d`` and begin
padding ``pad`` reads input index ``o * s - pad + t * d`` for output ``o`` and tap ``t``.
``pad_plane`` materialises the padded plane exactly as large as the windows need (the end
padding is derived from the output size, so 'same' with even kernels and ceil_mode both work);
``windows`` is a read-only (N, C, P, Q, R, S) view of it; ``scatter_windows`` is its adjoint.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pair = Tuple[int, int]


def end_padding(size: int, out: int, kernel: int, stride: int, dilation: int, pad: int) -> int:
    """Padding needed after the input so that every one of ``out`` windows lies inside the plane."""
    extent = (out - 1) * stride + dilation * (kernel - 1) + 1
    return max(0, extent - size - pad)


def pad_plane(x: np.ndarray, out: Pair, kernel: Pair, stride: Pair, dilation: Pair, pad: Pair,
              dtype, value: float = 0.0) -> np.ndarray:
    """x (N, C, H, W), any strides -> a new C-contiguous (N, C, Hp, Wp) array of ``dtype`` holding x
    at offset ``pad`` and ``value`` elsewhere, with Hp, Wp just large enough for ``out`` windows."""
    N, C, H, W = x.shape
    ph, pw = pad
    eh = end_padding(H, out[0], kernel[0], stride[0], dilation[0], ph)
    ew = end_padding(W, out[1], kernel[1], stride[1], dilation[1], pw)
    xp = np.full((N, C, ph + H + eh, pw + W + ew), value, dtype=dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    return xp


def windows(xp: np.ndarray, out: Pair, kernel: Pair, stride: Pair, dilation: Pair) -> np.ndarray:
    """Read-only view (N, C, P, Q, R, S) of a padded plane: [n, c, p, q, r, s] = xp[n, c,
    p*sh + r*dh, q*sw + s*dw]. No copy."""
    (P, Q), (R, S), (sh, sw), (dh, dw) = out, kernel, stride, dilation
    v = sliding_window_view(xp, ((R - 1) * dh + 1, (S - 1) * dw + 1), axis=(2, 3))
    v = v[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :P, :Q]
    assert v.shape[2:] == (P, Q, R, S), (v.shape, out, kernel)
    return v


def scatter_windows(cols: np.ndarray, plane_shape, stride: Pair, dilation: Pair, dtype) -> np.ndarray:
    """Adjoint of ``windows``: cols (N, C, P, Q, R, S) -> new (N, C, Hp, Wp) array where every
    element is the sum of the window entries that read it. Loops over the R*S taps only; within
    one tap the strided destination positions are distinct, so ``+=`` is exact."""
    N, C, P, Q, R, S = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    out = np.zeros(plane_shape, dtype=dtype)
    for r in range(R):
        rows = slice(r * dh, r * dh + (P - 1) * sh + 1, sh)
        for s in range(S):
            out[:, :, rows, s * dw:s * dw + (Q - 1) * sw + 1:sw] += cols[:, :, :, :, r, s]
    return out


def crop(xp: np.ndarray, pad: Pair, size: Pair) -> np.ndarray:
    """The (N, C, H, W) interior of a padded plane, as a new C-contiguous array."""
    (ph, pw), (H, W) = pad, size
    return np.ascontiguousarray(xp[:, :, ph:ph + H, pw:pw + W])
