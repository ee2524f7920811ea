"""Batch normalization (optionally fused with ReLU), forward and backward, split over many
programs per channel.

x is seen as (N, C, L) with strides (sn, sc, sl): L = H*W for 4-D inputs whose H and W merge
(NCHW, channels-last, channel/batch slices), and (1, C, N) for 2-D (N, C). The reduction of
channel c runs over the N*L values (n, l); it is cut into tiles of BLOCK_R consecutive l of one n
(T = N * cdiv(L, BLOCK_R) tiles) and the tiles are dealt to S programs per block of BLOCK_C
channels (TILES_PER_SPLIT consecutive tiles each), so a layer with few channels still fills the
GPU (attorch's one-program-per-channel is the counter-example).

Training forward = 3 launches:
  batch_norm_fwd_partial_stats   (C/BLOCK_C, S)   per-tile two-pass mean/M2, Chan-merged per split
  batch_norm_fwd_combine_stats   (C/BLOCK_C,)     Chan merge of the S partials -> mean, invstd;
                                                  running-stat update in place (unbiased var)
  batch_norm_fwd_normalize       (tiles,)         y = relu((x - mean) * invstd * w + b)
Eval forward = batch_norm_fwd_normalize alone, reading the running stats (one pass over x).
Backward = batch_norm_bwd_partial_sums (C/BLOCK_C, S) -> batch_norm_bwd_reduce_partials
(C/BLOCK_C,) -> batch_norm_bwd_dx (tiles,). Statistics and all arithmetic are float32; the
partial statistics are of x - x[0, c, 0] (a pivot near the mean), added back in the combine, so a
large common offset costs no accuracy in the merge.
"""
import triton
import triton.language as tl

from ._config import config
from ._stats import chan_merge, store_channel_stats

# (BLOCK_C, BLOCK_R) tiles of the per-tile kernels; the launcher picks the one that wastes the
# fewest lanes on this (C, L) and suits the layout. 1024-value tiles and 4 warps (8 values per
# thread): the bigger tiles of an earlier table took 200+ registers and spilled in the backward
# kernels (ptxas -v, sm_90).
TILE_CONFIGS = [config(BLOCK_C=1, BLOCK_R=1024), config(BLOCK_C=4, BLOCK_R=256),
                config(BLOCK_C=16, BLOCK_R=64), config(BLOCK_C=64, BLOCK_R=16)]
COMBINE_CONFIGS = [config(BLOCK_C=128)]             # fwd_combine_stats, bwd_reduce_partials


@triton.jit
def batch_norm_fwd_partial_stats(
    x_ptr,                            # x viewed as (N, C, L), strides (sxn, sxc, sxl)
    pmean_ptr, pm2_ptr, pcount_ptr,   # out: (S, C) fp32 partial mean of x - x[0, c, 0] and M2,
                                      # (S,) fp32 count
    C, L, T, TILES_PER_SPLIT, NLB,    # T = N * NLB tiles per channel, NLB = cdiv(L, BLOCK_R)
    sxn, sxc, sxl,
    BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
):
    # grid: (cdiv(C, BLOCK_C), S); program (i, s) reduces channels [i*BLOCK_C, (i+1)*BLOCK_C) over
    # tiles [s*TILES_PER_SPLIT, (s+1)*TILES_PER_SPLIT) of the N*L values: per tile a two-pass
    # mean / M2 (stable), merged into the running (count, mean, M2) with Chan's formula.
    pid_c = tl.program_id(0)
    split = tl.program_id(1)
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    c_off = cs.to(tl.int64) * sxc
    rr = tl.arange(0, BLOCK_R)
    # statistics of x - pivot, pivot = x[0, c, 0]: the partial means stay O(std), so their rounding
    # does not spoil the between-tile term of the merge when |mean| >> std
    pivot = tl.load(x_ptr + c_off, mask=cmask, other=0.0).to(tl.float32)
    count = tl.zeros([BLOCK_C], tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    t0 = split * TILES_PER_SPLIT
    t1 = tl.minimum(t0 + TILES_PER_SPLIT, T)
    for t in range(t0, t1):
        n = t // NLB
        l0 = (t - n * NLB) * BLOCK_R
        ls = l0 + rr
        m = cmask[:, None] & (ls < L)[None, :]
        offs = n.to(tl.int64) * sxn + c_off[:, None] + ls.to(tl.int64)[None, :] * sxl
        v = tl.where(m, tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32) - pivot[:, None], 0.0)
        nb = tl.minimum(L - l0, BLOCK_R).to(tl.float32)
        bmean = tl.sum(v, axis=1) / nb
        d = tl.where(m, v - bmean[:, None], 0.0)
        bm2 = tl.sum(d * d, axis=1)
        count, mean, m2 = chan_merge(count, mean, m2, nb, bmean, bm2)
    tl.store(pmean_ptr + split * C + cs, mean, mask=cmask)
    tl.store(pm2_ptr + split * C + cs, m2, mask=cmask)
    tl.store(pcount_ptr + split + cs * 0, count, mask=cmask & (cs == 0))


@triton.jit
def batch_norm_fwd_combine_stats(
    pmean_ptr, pm2_ptr, pcount_ptr,   # (S, C), (S, C), (S,) fp32 partials (means of x - x[0, c, 0])
    x_ptr, sxc,                       # x, to read the pivot x[0, c, 0] back
    mean_ptr, invstd_ptr,             # out: (C,) fp32
    rmean_ptr, rvar_ptr,              # running stats (C,), updated in place when HAS_RUNNING
    C, S, eps, momentum, unbias,      # unbias = count / (count - 1)
    HAS_RUNNING: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # grid: (cdiv(C, BLOCK_C),); program i merges the S partials of channels [i*BLOCK_C, ...)
    # (Chan's parallel formula), writes mean and 1/sqrt(var + eps) (biased var), and blends the
    # running stats: r = (1 - momentum) * r + momentum * stat, with the unbiased variance.
    cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    count = tl.zeros([BLOCK_C], tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    for s in range(S):
        nb = tl.load(pcount_ptr + s + cs * 0)
        bmean = tl.load(pmean_ptr + s * C + cs, mask=cmask, other=0.0)
        bm2 = tl.load(pm2_ptr + s * C + cs, mask=cmask, other=0.0)
        count, mean, m2 = chan_merge(count, mean, m2, nb, bmean, bm2)
    mean += tl.load(x_ptr + cs.to(tl.int64) * sxc, mask=cmask, other=0.0).to(tl.float32)
    store_channel_stats(mean, m2, count, cs, cmask, eps, momentum, unbias, mean_ptr, invstd_ptr, rmean_ptr, rvar_ptr,
                        HAS_RUNNING)


@triton.jit
def batch_norm_fwd_normalize(
    x_ptr, y_ptr,                     # (N, C, L) views; y has its own strides
    mean_ptr, invstd_ptr,             # (C,) fp32: read (training) or written (FROM_RUNNING)
    w_ptr, b_ptr,                     # (C,) affine, or dummies when HAS_W / HAS_B is off
    rmean_ptr, rvar_ptr,              # running stats, read when FROM_RUNNING (eval)
    C, L, NLB, NCB, eps,
    sxn, sxc, sxl, syn, syc, syl,
    FROM_RUNNING: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, RELU: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
):
    # grid: (NCB * N * NLB,); program id = (n * NLB + l_block) * NCB + c_block: one
    # [BLOCK_C, BLOCK_R] tile of channels x positions of one sample. y = (x - mean) * (invstd * w)
    # + b, then max(y, 0) when RELU. In eval (FROM_RUNNING) mean / invstd come from the running
    # stats and the programs of tile 0 also write them out (the backward needs them).
    pid = tl.program_id(0)
    pid_c = pid % NCB
    t = pid // NCB
    n = t // NLB
    l0 = (t - n * NLB) * BLOCK_R
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    ls = l0 + tl.arange(0, BLOCK_R)
    m = cmask[:, None] & (ls < L)[None, :]
    if FROM_RUNNING:
        mean = tl.load(rmean_ptr + cs, mask=cmask, other=0.0).to(tl.float32)
        rv = tl.load(rvar_ptr + cs, mask=cmask, other=1.0).to(tl.float32)
        invstd = 1.0 / tl.sqrt_rn(rv + eps)
        if t == 0:
            tl.store(mean_ptr + cs, mean, mask=cmask)
            tl.store(invstd_ptr + cs, invstd, mask=cmask)
    else:
        mean = tl.load(mean_ptr + cs, mask=cmask, other=0.0)
        invstd = tl.load(invstd_ptr + cs, mask=cmask, other=0.0)
    scale = invstd
    if HAS_W:
        scale = scale * tl.load(w_ptr + cs, mask=cmask, other=0.0).to(tl.float32)
    n64 = n.to(tl.int64)
    ls64 = ls.to(tl.int64)
    x = tl.load(x_ptr + n64 * sxn + cs.to(tl.int64)[:, None] * sxc + ls64[None, :] * sxl,
                mask=m, other=0.0).to(tl.float32)
    y = (x - mean[:, None]) * scale[:, None]
    if HAS_B:
        y += tl.load(b_ptr + cs, mask=cmask, other=0.0).to(tl.float32)[:, None]
    if RELU:
        y = tl.maximum(y, 0.0, propagate_nan=tl.PropagateNan.ALL)   # NaN stays NaN, as torch.relu
    tl.store(y_ptr + n64 * syn + cs.to(tl.int64)[:, None] * syc + ls64[None, :] * syl,
             y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def batch_norm_bwd_partial_sums(
    dy_ptr, x_ptr, y_ptr,             # (N, C, L) views, each with its own strides
    mean_ptr, invstd_ptr,             # (C,) fp32 from the forward
    psum_g_ptr, psum_gx_ptr,          # out: (S, C) fp32 partial sum(g), sum(g * xhat)
    C, L, T, TILES_PER_SPLIT, NLB,
    sdn, sdc, sdl, sxn, sxc, sxl, syn, syc, syl,
    RELU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
):
    # grid: (cdiv(C, BLOCK_C), S), same tile split as batch_norm_fwd_partial_stats; g = dy, masked
    # where not y <= 0 when RELU (NaN y passes, as torch), xhat = (x - mean) * invstd.
    pid_c = tl.program_id(0)
    split = tl.program_id(1)
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    cs64 = cs.to(tl.int64)
    mean = tl.load(mean_ptr + cs, mask=cmask, other=0.0)
    invstd = tl.load(invstd_ptr + cs, mask=cmask, other=0.0)
    rr = tl.arange(0, BLOCK_R)
    acc_g = tl.zeros([BLOCK_C], tl.float32)
    acc_gx = tl.zeros([BLOCK_C], tl.float32)
    t0 = split * TILES_PER_SPLIT
    t1 = tl.minimum(t0 + TILES_PER_SPLIT, T)
    for t in range(t0, t1):
        n = t // NLB
        ls = (t - n * NLB) * BLOCK_R + rr
        m = cmask[:, None] & (ls < L)[None, :]
        n64 = n.to(tl.int64)
        ls64 = ls.to(tl.int64)[None, :]
        g = tl.load(dy_ptr + n64 * sdn + cs64[:, None] * sdc + ls64 * sdl, mask=m, other=0.0).to(tl.float32)
        if RELU:
            yv = tl.load(y_ptr + n64 * syn + cs64[:, None] * syc + ls64 * syl, mask=m, other=0.0)
            g = tl.where(yv <= 0, 0.0, g)       # torch's threshold_backward: NaN y passes dy
        x = tl.load(x_ptr + n64 * sxn + cs64[:, None] * sxc + ls64 * sxl, mask=m, other=0.0).to(tl.float32)
        xhat = (x - mean[:, None]) * invstd[:, None]
        acc_g += tl.sum(g, axis=1)
        acc_gx += tl.sum(g * xhat, axis=1)
    tl.store(psum_g_ptr + split * C + cs, acc_g, mask=cmask)
    tl.store(psum_gx_ptr + split * C + cs, acc_gx, mask=cmask)


@triton.jit
def batch_norm_bwd_reduce_partials(
    psum_g_ptr, psum_gx_ptr,          # (S, C) fp32 partials
    sum_g_ptr, sum_gx_ptr,            # out: (C,) fp32 totals for batch_norm_bwd_dx
    dw_ptr, db_ptr,                   # out: (C,) dweight = sum(g * xhat), dbias = sum(g) (HAS_W)
    C, S,
    HAS_W: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # grid: (cdiv(C, BLOCK_C),); program i adds up the S partial rows of its channels.
    cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    sg = tl.zeros([BLOCK_C], tl.float32)
    sgx = tl.zeros([BLOCK_C], tl.float32)
    for s in range(S):
        sg += tl.load(psum_g_ptr + s * C + cs, mask=cmask, other=0.0)
        sgx += tl.load(psum_gx_ptr + s * C + cs, mask=cmask, other=0.0)
    tl.store(sum_g_ptr + cs, sg, mask=cmask)
    tl.store(sum_gx_ptr + cs, sgx, mask=cmask)
    if HAS_W:
        tl.store(dw_ptr + cs, sgx.to(dw_ptr.dtype.element_ty), mask=cmask)
        tl.store(db_ptr + cs, sg.to(db_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def batch_norm_bwd_dx(
    dy_ptr, x_ptr, y_ptr, dx_ptr,     # (N, C, L) views with their own strides
    mean_ptr, invstd_ptr, w_ptr,      # (C,); w a dummy when HAS_W is off
    sum_g_ptr, sum_gx_ptr,            # (C,) fp32 from batch_norm_bwd_reduce_partials (TRAINING)
    C, L, NLB, NCB, inv_count,        # inv_count = 1 / (N * L)
    sdn, sdc, sdl, sxn, sxc, sxl, syn, syc, syl, son, soc, sol,
    TRAINING: tl.constexpr, RELU: tl.constexpr, HAS_W: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
    g_ptr=None, sgn=0, sgc=0, sgl=0,
    STORE_G: tl.constexpr = False,
):
    # grid: (NCB * N * NLB,), tiles as in batch_norm_fwd_normalize. With g = dy * (not y <= 0 if RELU):
    # training: dx = w * invstd * (g - sum_g / M - xhat * sum_gx / M); eval: dx = w * invstd * g.
    # STORE_G also writes g itself to g_ptr (strides sgn, sgc, sgl): the gradient of a residual
    # added before the ReLU (the fused conv blocks, cnngpu.backends.triton_backend.fused).
    pid = tl.program_id(0)
    pid_c = pid % NCB
    t = pid // NCB
    n = t // NLB
    ls = (t - n * NLB) * BLOCK_R + tl.arange(0, BLOCK_R)
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    m = cmask[:, None] & (ls < L)[None, :]
    n64 = n.to(tl.int64)
    cs64 = cs.to(tl.int64)[:, None]
    ls64 = ls.to(tl.int64)[None, :]
    invstd = tl.load(invstd_ptr + cs, mask=cmask, other=0.0)
    scale = invstd
    if HAS_W:
        scale = scale * tl.load(w_ptr + cs, mask=cmask, other=0.0).to(tl.float32)
    g = tl.load(dy_ptr + n64 * sdn + cs64 * sdc + ls64 * sdl, mask=m, other=0.0).to(tl.float32)
    if RELU:
        yv = tl.load(y_ptr + n64 * syn + cs64 * syc + ls64 * syl, mask=m, other=0.0)
        g = tl.where(yv <= 0, 0.0, g)       # torch's threshold_backward: NaN y passes dy
    if STORE_G:
        tl.store(g_ptr + n64 * sgn + cs64 * sgc + ls64 * sgl, g.to(g_ptr.dtype.element_ty), mask=m)
    if TRAINING:
        mean = tl.load(mean_ptr + cs, mask=cmask, other=0.0)
        mg = tl.load(sum_g_ptr + cs, mask=cmask, other=0.0) * inv_count
        mgx = tl.load(sum_gx_ptr + cs, mask=cmask, other=0.0) * inv_count
        x = tl.load(x_ptr + n64 * sxn + cs64 * sxc + ls64 * sxl, mask=m, other=0.0).to(tl.float32)
        xhat = (x - mean[:, None]) * invstd[:, None]
        g = g - mg[:, None] - xhat * mgx[:, None]
    dx = g * scale[:, None]
    tl.store(dx_ptr + n64 * son + cs64 * soc + ls64 * sol, dx.to(dx_ptr.dtype.element_ty), mask=m)
