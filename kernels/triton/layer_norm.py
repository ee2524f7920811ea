"""Layer normalization over the trailing dims, forward and backward (x seen as (M, D) rows).

  layer_norm_fwd_fused         (M,)                one row per program: per-chunk two-pass mean/M2
                                                   merged with Chan's formula (one read for the
                                                   stats, one for y = xhat * w + b)
  layer_norm_bwd_dx_fused      (M,)                one row per program: sums of w*dy and w*dy*xhat,
                                                   then dx (the Triton tutorial's formula)
  layer_norm_bwd_dwdb_partial  (cdiv(D, BD), S)    column sums of dy*xhat and dy over a slab of
                                                   rows -> (S, D) partials (no atomics, no locks)
  sum_partial_rows_pair        (cdiv(D, BLOCK),)   adds the S partial rows -> dweight, dbias
                                                   (also used by group norm)
All arithmetic and statistics are float32; loads read x/dy in place through row/col strides.
"""
import triton
import triton.language as tl

from ._config import config
from ._stats import chan_merge

# row programs (fwd_fused, bwd_dx_fused), ascending BLOCK_D: the launcher takes the smallest that
# holds a row, else the largest (the row is then walked in chunks); about 8 values per thread
ROW_CONFIGS = [config(BLOCK_D=128), config(BLOCK_D=512), config(BLOCK_D=2048, num_warps=8)]
DWDB_CONFIGS = [config(BLOCK_M=8, BLOCK_D=128)]     # dweight/dbias partial tile: rows x columns
REDUCE_CONFIGS = [config(BLOCK=256)]                # sum_partial_rows_pair


@triton.jit
def layer_norm_fwd_fused(
    x_ptr, y_ptr,                     # x (M, D) strides (sxm, sxd); y (M, D) contiguous
    w_ptr, b_ptr,                     # (D,) or dummies
    mean_ptr, rstd_ptr,               # out: (M,) fp32
    D, sxm, sxd, eps,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # grid: (M,); program r normalizes row r in chunks of BLOCK_D columns.
    row = tl.program_id(0).to(tl.int64)
    xrow = x_ptr + row * sxm
    cols = tl.arange(0, BLOCK_D)
    # statistics of x - pivot, pivot = x[row, 0]: chunk means stay O(std), so the merge keeps
    # full accuracy
    # when |mean| >> std
    pivot = tl.load(xrow).to(tl.float32)
    count = 0.0
    mean = 0.0
    m2 = 0.0
    for d0 in range(0, D, BLOCK_D):
        dm = d0 + cols < D
        v = tl.load(xrow + (d0 + cols).to(tl.int64) * sxd, mask=dm, other=0.0).to(tl.float32)
        v = tl.where(dm, v - pivot, 0.0)
        nb = tl.minimum(D - d0, BLOCK_D).to(tl.float32)
        bmean = tl.sum(v, axis=0) / nb
        dv = tl.where(dm, v - bmean, 0.0)
        bm2 = tl.sum(dv * dv, axis=0)
        count, mean, m2 = chan_merge(count, mean, m2, nb, bmean, bm2)
    rstd = 1.0 / tl.sqrt_rn(m2 / count + eps)
    mean += pivot
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)
    yrow = y_ptr + row * D
    for d0 in range(0, D, BLOCK_D):
        dc = d0 + cols
        dm = dc < D
        v = tl.load(xrow + dc.to(tl.int64) * sxd, mask=dm, other=0.0).to(tl.float32)
        y = (v - mean) * rstd
        if HAS_W:
            y = y * tl.load(w_ptr + dc, mask=dm, other=0.0).to(tl.float32)
        if HAS_B:
            y = y + tl.load(b_ptr + dc, mask=dm, other=0.0).to(tl.float32)
        tl.store(yrow + dc, y.to(y_ptr.dtype.element_ty), mask=dm)


@triton.jit
def layer_norm_bwd_dx_fused(
    dy_ptr, x_ptr, dx_ptr,            # dy, x (M, D) strided; dx (M, D) contiguous
    w_ptr, mean_ptr, rstd_ptr,        # w (D,) or dummy; mean/rstd (M,) fp32
    D, sdm, sdd, sxm, sxd,
    HAS_W: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # grid: (M,); program r: c1 = mean(wdy * xhat), c2 = mean(wdy) over row r (wdy = w * dy), then
    # dx = rstd * (wdy - xhat * c1 - c2).
    row = tl.program_id(0).to(tl.int64)
    xrow = x_ptr + row * sxm
    dyrow = dy_ptr + row * sdm
    mean = tl.load(mean_ptr + row)
    rstd = tl.load(rstd_ptr + row)
    cols = tl.arange(0, BLOCK_D)
    acc1 = tl.zeros([BLOCK_D], tl.float32)
    acc2 = tl.zeros([BLOCK_D], tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dc = d0 + cols
        dm = dc < D
        dc64 = dc.to(tl.int64)
        x = tl.load(xrow + dc64 * sxd, mask=dm, other=0.0).to(tl.float32)
        wdy = tl.load(dyrow + dc64 * sdd, mask=dm, other=0.0).to(tl.float32)
        if HAS_W:
            wdy = wdy * tl.load(w_ptr + dc, mask=dm, other=0.0).to(tl.float32)
        xhat = tl.where(dm, (x - mean) * rstd, 0.0)
        acc1 += wdy * xhat
        acc2 += wdy
    c1 = tl.sum(acc1, axis=0) / D
    c2 = tl.sum(acc2, axis=0) / D
    dxrow = dx_ptr + row * D
    for d0 in range(0, D, BLOCK_D):
        dc = d0 + cols
        dm = dc < D
        dc64 = dc.to(tl.int64)
        x = tl.load(xrow + dc64 * sxd, mask=dm, other=0.0).to(tl.float32)
        wdy = tl.load(dyrow + dc64 * sdd, mask=dm, other=0.0).to(tl.float32)
        if HAS_W:
            wdy = wdy * tl.load(w_ptr + dc, mask=dm, other=0.0).to(tl.float32)
        xhat = (x - mean) * rstd
        dx = (wdy - (xhat * c1 + c2)) * rstd
        tl.store(dxrow + dc, dx.to(dx_ptr.dtype.element_ty), mask=dm)


@triton.jit
def layer_norm_bwd_dwdb_partial(
    dy_ptr, x_ptr, mean_ptr, rstd_ptr,
    pdw_ptr, pdb_ptr,                 # out: (S, D) fp32 partial sums of dy * xhat and dy
    M, D, ROWS_PER_SPLIT,
    sdm, sdd, sxm, sxd,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # grid: (cdiv(D, BLOCK_D), S); program (j, s) sums columns [j*BLOCK_D, ...) over rows
    # [s*ROWS_PER_SPLIT, (s+1)*ROWS_PER_SPLIT) in [BLOCK_M, BLOCK_D] tiles.
    pid_d = tl.program_id(0)
    split = tl.program_id(1)
    dc = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = dc < D
    dc64 = dc.to(tl.int64)[None, :]
    rr = tl.arange(0, BLOCK_M)
    acc_w = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc_b = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    r_end = tl.minimum((split + 1) * ROWS_PER_SPLIT, M)
    for r0 in range(split * ROWS_PER_SPLIT, r_end, BLOCK_M):
        rows = r0 + rr
        rm = rows < r_end
        m = rm[:, None] & dm[None, :]
        r64 = rows.to(tl.int64)[:, None]
        mean = tl.load(mean_ptr + rows, mask=rm, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=rm, other=0.0)
        x = tl.load(x_ptr + r64 * sxm + dc64 * sxd, mask=m, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + r64 * sdm + dc64 * sdd, mask=m, other=0.0).to(tl.float32)
        acc_w += dy * ((x - mean[:, None]) * rstd[:, None])
        acc_b += dy
    tl.store(pdw_ptr + split * D + dc, tl.sum(acc_w, axis=0), mask=dm)
    tl.store(pdb_ptr + split * D + dc, tl.sum(acc_b, axis=0), mask=dm)


@triton.jit
def sum_partial_rows_pair(
    pa_ptr, pb_ptr,                   # (S, D) fp32 partials
    a_ptr, b_ptr,                     # out: (D,) column sums, cast to the outputs' dtype
    S, D,
    BLOCK: tl.constexpr,
):
    # grid: (cdiv(D, BLOCK),); program j adds up the S rows of columns [j*BLOCK, (j+1)*BLOCK).
    dc = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    dm = dc < D
    sa = tl.zeros([BLOCK], tl.float32)
    sb = tl.zeros([BLOCK], tl.float32)
    for s in range(S):
        sa += tl.load(pa_ptr + s * D + dc, mask=dm, other=0.0)
        sb += tl.load(pb_ptr + s * D + dc, mask=dm, other=0.0)
    tl.store(a_ptr + dc, sa.to(a_ptr.dtype.element_ty), mask=dm)
    tl.store(b_ptr + dc, sb.to(b_ptr.dtype.element_ty), mask=dm)
