"""ReLU forward and backward.

Every kernel works on a flat int64 index over the output's logical (row-major) order. Two modes:

* FLAT=True: all tensors share one dense layout (contiguous, channels-last, any permutation
  without gaps), so the flat index is the storage offset of every tensor -- no index math.
* FLAT=False: the index is decomposed into 4-D coordinates (d0, d1, d2, d3) with sizes
  (., D1, D2, D3) and each tensor is addressed through its own four strides (lower-rank tensors
  are padded with leading size-1 dims by the launcher), so sliced views need no copy.

forward:  y = x if x >= 0 else 0 (NaN propagates, as in np.maximum(x, 0)).
backward: dx = dy where y > 0 else 0, with y the forward output.
"""
import triton
import triton.language as tl

from ._config import config

# one flat block of BLOCK elements per program; 16-bit elements take twice as many per block
RELU_CONFIGS = {"fp32": [config(BLOCK=1024)], "fp16": [config(BLOCK=2048)]}


@triton.jit
def _relu_offsets(offs, D1, D2, D3, s0, s1, s2, s3):
    """Storage offset of the logical element ``offs`` in a (., D1, D2, D3) view with strides s0..s3."""
    i3 = offs % D3
    t = offs // D3
    i2 = t % D2
    t = t // D2
    i1 = t % D1
    i0 = t // D1
    return i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3


@triton.jit
def relu_fwd_elementwise(
    x_ptr, y_ptr, total,
    D1, D2, D3,                       # sizes of the last three (padded) dims
    sx0, sx1, sx2, sx3,               # x strides (elements)
    sy0, sy1, sy2, sy3,               # y strides
    FLAT: tl.constexpr, BLOCK: tl.constexpr,
):
    # grid: (cdiv(total, BLOCK),); program i owns logical elements [i*BLOCK, (i+1)*BLOCK).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    if FLAT:
        x_off = offs
        y_off = offs
    else:
        x_off = _relu_offsets(offs, D1, D2, D3, sx0, sx1, sx2, sx3)
        y_off = _relu_offsets(offs, D1, D2, D3, sy0, sy1, sy2, sy3)
    x = tl.load(x_ptr + x_off, mask=mask, other=0.0)
    # compare in fp32 (exact for every input dtype; the interpreter mis-compares raw bf16);
    # NaN < 0 is false, so NaN passes through
    y = tl.where(x.to(tl.float32) < 0, tl.zeros_like(x), x)
    tl.store(y_ptr + y_off, y, mask=mask)


@triton.jit
def relu_bwd_mask(
    dy_ptr, y_ptr, dx_ptr, total,
    D1, D2, D3,
    sd0, sd1, sd2, sd3,               # dy strides
    sy0, sy1, sy2, sy3,               # y strides
    sx0, sx1, sx2, sx3,               # dx strides
    FLAT: tl.constexpr, BLOCK: tl.constexpr,
):
    # grid: (cdiv(total, BLOCK),); each lane is one element: dx = dy where y > 0, else 0.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    if FLAT:
        d_off = offs
        y_off = offs
        x_off = offs
    else:
        d_off = _relu_offsets(offs, D1, D2, D3, sd0, sd1, sd2, sd3)
        y_off = _relu_offsets(offs, D1, D2, D3, sy0, sy1, sy2, sy3)
        x_off = _relu_offsets(offs, D1, D2, D3, sx0, sx1, sx2, sx3)
    y = tl.load(y_ptr + y_off, mask=mask, other=0.0)
    dy = tl.load(dy_ptr + d_off, mask=mask & (y.to(tl.float32) > 0), other=0.0)
    tl.store(dx_ptr + x_off, dy, mask=mask)
