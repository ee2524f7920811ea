"""Triton launchers for max/avg pooling (kernels in ``cnngpu.kernels.triton.pool2d``).

Inputs may have any strides (NCHW, channels-last, sliced): the kernels read through strides.
Forward: a channels-last input (C stride 1, C > 1) runs the ``*_channels`` kernels (vectors along
C) and gets channels-last y / argmax, as torch returns; any other layout runs the ``*_rows``
kernels (vectors along W where its stride is 1) and gets contiguous NCHW outputs. Backward: the
``*_channels`` gathers when dy (and argmax) are channels-last, giving channels-last dx, else the
``*_rows`` gathers, dx contiguous NCHW. Argmax is int64, flat h*W+w in the input plane.
"""
import math

import torch
import triton

from cnngpu.kernels.triton import pool2d as K

from ._common import empty, launched


def _candidates(k: int, s: int, d: int) -> int:
    """How many windows along one axis can cover a given input pixel."""
    return (k - 1) * d // s + 1


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _vec(t, strides, extent: int, elems: int = 0) -> int:
    """Largest power of 2 <= ``elems`` (default: K.VEC_BYTES of ``t``'s elements) dividing ``t``'s
    storage offset, ``strides`` and the fast axis' ``extent``: the alignment, in elements, of every
    row start (the hardware caps a vector at K.VEC_BYTES whatever the element size)."""
    g = 0
    for v in (*strides, extent, t.data_ptr() // t.element_size() if t.data_ptr() % t.element_size() == 0 else 1):
        g = math.gcd(g, int(v))
    vec = elems or K.VEC_BYTES // t.element_size()
    while vec > 1 and g % vec:
        vec //= 2
    return vec


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def row_tile(rows: int, cols: int, first_taps: int, step: int, vec: int):
    """(BR, BC, SPAN) of a ``*_rows`` launch: BC output columns per program (<= 64), each tile row
    reading a span of SPAN >= (BC-1)*step + first_taps + vec - 1 contiguous source columns
    (``first_taps``: the columns one output needs); SPAN = 0 when vec == 1 (a strided source: direct
    tap loads) or the span would pass K.MAX_SPAN; BR rows so the tile has about K.ROWS_OUT outputs
    and a span block of at most K.ROWS_TILE elements."""
    bc = min(_pow2(cols), 64)
    span = 0
    if vec > 1:
        while bc > 1 and _pow2((bc - 1) * step + first_taps + vec - 1) > K.MAX_SPAN:
            bc //= 2
        span = _pow2((bc - 1) * step + first_taps + vec - 1)
        if span > K.MAX_SPAN:
            span = 0
    br = max(1, min(K.ROWS_OUT // bc, K.ROWS_TILE // max(span, 1), _pow2(rows)))
    return br, bc, span


def _channels_last(x, g, width: int = 0) -> bool:
    """x (N, C, ., width; width defaults to g.W) is channels-last: C stride 1, C > 1, and its
    W axis not stride 1 as well."""
    return g.C > 1 and x.stride(1) == 1 and not (x.stride(3) == 1 and (width or g.W) > 1)


def _channels_tile(g, vec):
    bc = min(_pow2(g.C), 128)
    return max(1, K.CHANNELS_TILE // bc), bc


def _empty_channels_last(g, dtype, device):
    return empty((g.N, g.P, g.Q, g.C), dtype, device).permute(0, 3, 1, 2)


def _empty_channels_last_input(g, dtype, device):
    return empty((g.N, g.H, g.W, g.C), dtype, device).permute(0, 3, 1, 2)


def _pool_forward(x, g, is_max: bool, count_include_pad: bool = True):
    if _channels_last(x, g):
        y = _empty_channels_last(g, x.dtype, x.device)
        idx = _empty_channels_last(g, torch.int64, x.device) if is_max else None
        vec = _vec(x, (x.stride(0), x.stride(2), x.stride(3)), g.C)
        bp, bc = _channels_tile(g, vec)
        grid = (triton.cdiv(g.N * g.P * g.Q, bp), triton.cdiv(g.C, bc))
        tile = dict(BP=bp, BC=bc, VEC=vec, num_warps=K.POOL_WARPS)
        if is_max:
            K.max_pool2d_fwd_channels[grid](x, y, idx, g.C, g.H, g.W, g.P, g.Q, g.N * g.P * g.Q, *x.stride(),
                                            *g.kernel, *g.stride, *g.pad, *g.dilation, **tile)
            launched("max_pool2d_fwd_channels")
        else:
            K.avg_pool2d_fwd_channels[grid](x, y, g.C, g.H, g.W, g.P, g.Q, g.N * g.P * g.Q, *x.stride(),
                                            *g.kernel, *g.stride, *g.pad,
                                            COUNT_INCLUDE_PAD=bool(count_include_pad), **tile)
            launched("avg_pool2d_fwd_channels")
        return y, idx
    y = empty((g.N, g.C, g.P, g.Q), x.dtype, x.device)
    idx = empty((g.N, g.C, g.P, g.Q), torch.int64, x.device) if is_max else None
    vec = _vec(x, (x.stride(0), x.stride(1), x.stride(2)), g.W) if x.stride(3) == 1 else 1
    rows = g.N * g.C * g.P
    dw = g.dilation[1] if is_max else 1
    br, bq, span = row_tile(rows, g.Q, (g.kernel[1] - 1) * dw + 1, g.stride[1], vec)
    vec = vec if span else 1
    grid = (triton.cdiv(rows, br), triton.cdiv(g.Q, bq))
    tile = dict(BR=br, BQ=bq, SPAN=span, VEC=vec, VEC_Y=_vec(y, (), g.Q), num_warps=K.POOL_WARPS)
    off = _round_up(g.pad[1], vec)
    if is_max:
        K.max_pool2d_fwd_rows[grid](x, y, idx, g.C, g.H, g.W, g.P, g.Q, rows, *x.stride(), *g.kernel, *g.stride,
                                    *g.pad, *g.dilation, off, **tile)
        launched("max_pool2d_fwd_rows")
    else:
        K.avg_pool2d_fwd_rows[grid](x, y, g.C, g.H, g.W, g.P, g.Q, rows, *x.stride(), *g.kernel, *g.stride, *g.pad,
                                    off, COUNT_INCLUDE_PAD=bool(count_include_pad), **tile)
        launched("avg_pool2d_fwd_rows")
    return y, idx


def max_pool2d_forward(x, g):
    """x (N, C, H, W) -> (y (N, C, P, Q), argmax int64 (N, C, P, Q), flat h*W+w in the input plane);
    channels-last outputs for a channels-last x, else contiguous."""
    return _pool_forward(x, g, True)


def avg_pool2d_forward(x, g, count_include_pad=True):
    """x (N, C, H, W) -> y (N, C, P, Q), window sum / divisor (PyTorch's count_include_pad rule);
    channels-last y for a channels-last x, else contiguous."""
    return _pool_forward(x, g, False, count_include_pad)[0]


def _bwd_tile(g, srcs, kw, dw):
    """(grid, tile kwargs, OFF, NPW) of a ``*_rows`` backward over dx (N*C*H rows x W)."""
    npw = _candidates(kw, g.stride[1], dw)
    vec = K.VEC_BYTES // srcs[0].element_size()      # dy's vector; argmax (int64) rows aligned alike
    for t in srcs:
        vec = min(vec, _vec(t, (t.stride(0), t.stride(1), t.stride(2)), g.Q, vec) if t.stride(3) == 1 else 1)
    rows = g.N * g.C * g.H
    # the dy columns a tile row reads: q in [(w0+PW)//SW - (NPW-1), (w0+BW-1+PW)//SW], at most
    # (BW-1)//SW + NPW of them, from a span start up to VEC-1 before the first
    bw, span = min(_pow2(g.W), 64), 0
    if vec > 1:
        span = _pow2((bw - 1) // g.stride[1] + npw + vec)
        if span > K.MAX_SPAN:
            span = 0
    # rows: a span block of K.ROWS_TILE elements (full vectors per thread), else K.ROWS_OUT outputs
    br = max(1, min(K.ROWS_TILE // span if span else K.ROWS_OUT // bw, _pow2(rows)))
    vec = vec if span else 1
    grid = (triton.cdiv(rows, br), triton.cdiv(g.W, bw))
    return grid, dict(BR=br, BW=bw, SPAN=span, VEC=vec, num_warps=K.POOL_WARPS), _round_up(npw - 1, vec), npw


def _bwd_channels(g, srcs):
    """(grid, tile kwargs) of a ``*_bwd_channels`` launch over dx (N*H*W pixels x C), or None unless
    every source (dy, argmax) is channels-last (and P*Q > 1: a 1x1 dy is both layouts; it keeps the
    NCHW dx): VEC, the elements every source's channel runs are aligned to (at most a 16-byte
    vector of dy)."""
    if g.P * g.Q == 1 or not all(_channels_last(t, g, g.Q) for t in srcs):
        return None
    vec = K.VEC_BYTES // srcs[0].element_size()
    for t in srcs:
        vec = min(vec, _vec(t, (t.stride(0), t.stride(2), t.stride(3)), g.C, vec))
    bp, bc = _channels_tile(g, vec)
    bp = min(bp, K.CHANNELS_BWD_PIXELS)
    grid = (triton.cdiv(g.N * g.H * g.W, bp), triton.cdiv(g.C, bc))
    return grid, dict(BP=bp, BC=bc, VEC=vec, num_warps=K.POOL_WARPS)


def max_pool2d_backward(dy, argmax, g):
    """dy, argmax (N, C, P, Q) -> dx (N, C, H, W): each pixel gathers dy of the windows it won;
    channels-last dx (``max_pool2d_bwd_channels``) when dy and argmax are, else contiguous."""
    nph = _candidates(g.kernel[0], g.stride[0], g.dilation[0])
    chan = _bwd_channels(g, (dy, argmax))
    if chan is not None:
        dx = _empty_channels_last_input(g, dy.dtype, dy.device)
        npw = _candidates(g.kernel[1], g.stride[1], g.dilation[1])
        K.max_pool2d_bwd_channels[chan[0]](
            dy, argmax, dx, g.C, g.H, g.W, g.P, g.Q, g.N * g.H * g.W, *dy.stride(), *argmax.stride(),
            *g.kernel, *g.stride, *g.pad, *g.dilation, nph, npw, **chan[1])
        launched("max_pool2d_bwd_channels")
        return dx
    dx = empty((g.N, g.C, g.H, g.W), dy.dtype, dy.device)
    grid, tile, off, npw = _bwd_tile(g, (dy, argmax), g.kernel[1], g.dilation[1])
    K.max_pool2d_bwd_rows[grid](
        dy, argmax, dx, g.C, g.H, g.W, g.P, g.Q, g.N * g.C * g.H, *dy.stride(), *argmax.stride(),
        *g.kernel, *g.stride, *g.pad, *g.dilation, nph, npw, off, VEC_Y=_vec(dx, (), g.W), **tile)
    launched("max_pool2d_bwd_rows")
    return dx


def avg_pool2d_backward(dy, g, count_include_pad=True):
    """dy (N, C, P, Q) -> dx (N, C, H, W): each pixel gathers dy / divisor of the windows holding it;
    channels-last dx (``avg_pool2d_bwd_channels``) when dy is, else contiguous."""
    nph = _candidates(g.kernel[0], g.stride[0], 1)
    chan = _bwd_channels(g, (dy,))
    if chan is not None:
        dx = _empty_channels_last_input(g, dy.dtype, dy.device)
        K.avg_pool2d_bwd_channels[chan[0]](
            dy, dx, g.C, g.H, g.W, g.P, g.Q, g.N * g.H * g.W, *dy.stride(), *g.kernel, *g.stride, *g.pad, nph,
            _candidates(g.kernel[1], g.stride[1], 1), COUNT_INCLUDE_PAD=bool(count_include_pad), **chan[1])
        launched("avg_pool2d_bwd_channels")
        return dx
    dx = empty((g.N, g.C, g.H, g.W), dy.dtype, dy.device)
    grid, tile, off, npw = _bwd_tile(g, (dy,), g.kernel[1], 1)
    K.avg_pool2d_bwd_rows[grid](
        dy, dx, g.C, g.H, g.W, g.P, g.Q, g.N * g.C * g.H, *dy.stride(), *g.kernel, *g.stride, *g.pad, nph, npw,
        off, COUNT_INCLUDE_PAD=bool(count_include_pad), VEC_Y=_vec(dx, (), g.W), **tile)
    launched("avg_pool2d_bwd_rows")
    return dx
