"""Triton launchers for batch norm (+ fused ReLU), layer norm and group norm.

Kernels: ``cnngpu.kernels.triton.batch_norm`` / ``layer_norm`` / ``group_norm``. Statistics are
float32 tensors; arithmetic is float32 for every input dtype; parameters may be float32 for half x.

Layouts: batch and group norm read x, dy, y through (n, c, l) strides, so contiguous NCHW,
channels-last and channel/batch slices need no copy; a tensor whose H and W cannot be merged into
one strided axis (e.g. a slice along W) is copied with ``.contiguous()`` first. Their outputs keep
x's memory format (channels-last in, channels-last out). Layer norm views x as (M, D) rows (a copy
when the trailing dims do not merge); its outputs are contiguous.

Parallelism: every reduction is cut so that about TARGET_PROGRAMS_PER_SM programs per SM run:
batch norm always splits each channel block over S programs (partial stats + combine), layer
norm's dweight/dbias split the rows into S slabs, group norm switches from one program per
(n, group) to pieces of each group when N*G programs are too few. Tests shrink the tile tables
and raise the target to force every split path at tiny sizes.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton

from cnngpu.kernels.triton import batch_norm as BN
from cnngpu.kernels.triton import group_norm as GN
from cnngpu.kernels.triton import layer_norm as LN
from cnngpu.kernels.triton._config import for_dtype, launch_kwargs

from ._common import dtype_tag, empty, launched, num_sms, wrote_in_place



# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------
def least_waste(configs, C: int, L: int, c_stride_one: bool, c_key: str, l_key: str):
    """The config of ``configs`` whose (configs[c_key] x configs[l_key]) tile wastes the fewest
    lanes on a (C, L) problem; ties: the one whose contiguous axis (C when c_stride_one) is wider."""
    best = None
    for cfg in configs:
        bc, bl = cfg.kwargs[c_key], cfg.kwargs[l_key]
        waste = (triton.cdiv(C, bc) * bc / C) * (triton.cdiv(L, bl) * bl / L)
        key = (round(waste, 2), -(bc if c_stride_one else bl))
        if best is None or key < best[0]:
            best = (key, cfg)
    if best is None:
        raise ValueError("least_waste: no configs to choose from")
    return best[1]


def _ncl_strides(t):
    """(sn, sc, sl) of t seen as (N, C, L) without a copy: 4-D (N, C, H, W) with mergeable H, W,
    2-D (N, C) as (1, C, N). None when H and W do not merge into one strided axis."""
    if t.dim() == 2:
        return (0, t.stride(1), t.stride(0))
    sn, sc = t.stride(0), t.stride(1)
    sizes, strides = list(t.shape[2:]), list(t.stride()[2:])
    # drop size-1 dims, then every remaining dim must be (next size) x (next stride)
    dims = [(s, st) for s, st in zip(sizes, strides) if s != 1]
    if not dims:
        return (sn, sc, 1)
    for (s0, st0), (s1, st1) in zip(dims, dims[1:]):
        if st0 != s1 * st1:
            return None
    return (sn, sc, dims[-1][1])


def _as_ncl(t):
    """(t or a contiguous copy, (sn, sc, sl)); see _ncl_strides."""
    st = _ncl_strides(t)
    if st is None:
        t = t.contiguous()
        st = _ncl_strides(t)
    return t, st


def _empty_like_layout(x):
    """A poisoned output shaped like x, channels-last when x is (and not plain contiguous)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        N, C, H, W = x.shape
        return empty((N, H, W, C), x.dtype, x.device).permute(0, 3, 1, 2)
    return empty(x.shape, x.dtype, x.device)


def _unit(t):
    """A parameter / statistics tensor with unit-stride memory (the kernels index it flat): t itself,
    or a contiguous copy of a strided view; None stays None."""
    return t if t is None or t.is_contiguous() else t.contiguous()


# ----------------------------------------------------------------------------------------------
# batch norm
# ----------------------------------------------------------------------------------------------
class BatchNormPlan(NamedTuple):
    """How a batch-norm reduction is cut: tile (BLOCK_C x BLOCK_R), NCB channel blocks, NLB tiles
    per sample row, T = N*NLB tiles per channel block, S split programs per channel block of
    TILES_PER_SPLIT tiles each."""
    BLOCK_C: int
    BLOCK_R: int
    NCB: int
    NLB: int
    T: int
    S: int
    TILES_PER_SPLIT: int
    config: triton.Config        # the tile's launch config (BLOCK_C, BLOCK_R, warps, stages)


# programs the split reductions aim for: 4 per SM on a GPU; a handful in the interpreter (so
# tests exercise the multi-program merge at tiny sizes). Tests may override it.
TARGET_PROGRAMS_PER_SM = 4


def batch_norm_plan(N: int, C: int, L: int, c_stride_one: bool, dtype, device) -> BatchNormPlan:
    """Pick the tile with the least lane waste on (C, L) (ties: the one whose contiguous axis is
    wider), and split the N*L reduction over S programs per channel block."""
    cfg = least_waste(for_dtype(BN.TILE_CONFIGS, dtype_tag(dtype)), C, L, c_stride_one, "BLOCK_C", "BLOCK_R")
    bc, br = cfg.kwargs["BLOCK_C"], cfg.kwargs["BLOCK_R"]
    ncb, nlb = triton.cdiv(C, bc), triton.cdiv(L, br)
    T = N * nlb
    target = TARGET_PROGRAMS_PER_SM * num_sms(device)
    S = max(1, min(T, triton.cdiv(target, ncb)))
    tps = triton.cdiv(T, S)
    S = triton.cdiv(T, tps)
    return BatchNormPlan(bc, br, ncb, nlb, T, S, tps, cfg)


def _bn_geometry(x):
    if x.dim() == 2:
        return 1, int(x.shape[1]), int(x.shape[0])
    return int(x.shape[0]), int(x.shape[1]), int(x.shape[2]) * int(x.shape[3])


def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps, relu):
    """x (N, C, H, W) or (N, C) -> (y like x, mean (C,) fp32, invstd (C,) fp32).

    training: batch statistics, split over several programs per channel (partial Welford/Chan
    stats + combine), running stats blended in place (unbiased variance) inside the combine
    kernel. eval: one fused pass using the running stats. relu fuses max(y, 0).
    """
    x, xs = _as_ncl(x)
    weight, bias = _unit(weight), _unit(bias)
    rm_user, rv_user = running_mean, running_var
    running_mean, running_var = _unit(running_mean), _unit(running_var)
    N, C, L = _bn_geometry(x)
    plan = batch_norm_plan(N, C, L, xs[1] == 1, x.dtype, x.device)
    dev = x.device
    y = _empty_like_layout(x)
    ys = _ncl_strides(y)
    mean = empty((C,), torch.float32, dev)
    invstd = empty((C,), torch.float32, dev)
    if training:
        pmean = empty((plan.S, C), torch.float32, dev)
        pm2 = empty((plan.S, C), torch.float32, dev)
        pcount = empty((plan.S,), torch.float32, dev)
        BN.batch_norm_fwd_partial_stats[(plan.NCB, plan.S)](
            x, pmean, pm2, pcount, C, L, plan.T, plan.TILES_PER_SPLIT, plan.NLB, *xs,
            **launch_kwargs(plan.config))
        launched("batch_norm_fwd_partial_stats")
        count = N * L
        has_running = running_mean is not None
        BN.batch_norm_fwd_combine_stats[(triton.cdiv(C, _combine(BN).kwargs["BLOCK_C"]),)](
            pmean, pm2, pcount, x, xs[1], mean, invstd,
            running_mean if has_running else mean, running_var if has_running else invstd,
            C, plan.S, eps, momentum, count / (count - 1),
            HAS_RUNNING=has_running, **launch_kwargs(_combine(BN)))
        launched("batch_norm_fwd_combine_stats")
        if has_running and running_mean is not rm_user:        # strided running stats: write back
            rm_user.copy_(running_mean)
        elif has_running:
            wrote_in_place(rm_user)
        if has_running and running_var is not rv_user:
            rv_user.copy_(running_var)
        elif has_running:
            wrote_in_place(rv_user)
    BN.batch_norm_fwd_normalize[(plan.NCB * N * plan.NLB,)](
        x, y, mean, invstd,
        weight if weight is not None else mean, bias if bias is not None else mean,
        running_mean if not training else mean, running_var if not training else invstd,
        C, L, plan.NLB, plan.NCB, eps, *xs, *ys,
        FROM_RUNNING=not training, HAS_W=weight is not None, HAS_B=bias is not None, RELU=bool(relu),
        **launch_kwargs(plan.config))
    launched("batch_norm_fwd_normalize")
    return y, mean, invstd


def batch_norm_backward(dy, x, y, weight, mean, invstd, training, relu):
    """dy, x, y like x -> (dx like x, dweight (C,) | None, dbias (C,) | None), through the ReLU
    mask y > 0 when relu. The per-channel sums of g and g*xhat are split over several programs
    per channel (partial sums + reduce), then one pass writes dx."""
    return batch_norm_backward_masked(dy, x, y, weight, mean, invstd, training, relu)[:3]


def batch_norm_backward_masked(dy, x, y, weight, mean, invstd, training, relu, want_g=False):
    """:func:`batch_norm_backward`, plus (want_g) the masked upstream gradient g = dy * (y > 0)
    (like x; written by the dx pass, no extra pass): (dx, dweight, dbias, g | None)."""
    x, xs = _as_ncl(x)
    dy, ds = _as_ncl(dy)
    y, ys = _as_ncl(y)
    weight, mean, invstd = _unit(weight), _unit(mean), _unit(invstd)
    N, C, L = _bn_geometry(x)
    plan = batch_norm_plan(N, C, L, xs[1] == 1, x.dtype, x.device)
    dev = x.device
    dx = _empty_like_layout(x)
    os_ = _ncl_strides(dx)
    has_w = weight is not None
    dweight = dbias = None
    if has_w:
        dweight = empty((C,), weight.dtype, dev)
        dbias = empty((C,), weight.dtype, dev)
    sum_g = sum_gx = mean
    if training or has_w:
        psum_g = empty((plan.S, C), torch.float32, dev)
        psum_gx = empty((plan.S, C), torch.float32, dev)
        BN.batch_norm_bwd_partial_sums[(plan.NCB, plan.S)](
            dy, x, y, mean, invstd, psum_g, psum_gx, C, L, plan.T, plan.TILES_PER_SPLIT, plan.NLB,
            *ds, *xs, *ys, RELU=bool(relu), **launch_kwargs(plan.config))
        launched("batch_norm_bwd_partial_sums")
        sum_g = empty((C,), torch.float32, dev)
        sum_gx = empty((C,), torch.float32, dev)
        BN.batch_norm_bwd_reduce_partials[(triton.cdiv(C, _combine(BN).kwargs["BLOCK_C"]),)](
            psum_g, psum_gx, sum_g, sum_gx, dweight if has_w else sum_g, dbias if has_w else sum_gx,
            C, plan.S, HAS_W=has_w, **launch_kwargs(_combine(BN)))
        launched("batch_norm_bwd_reduce_partials")
    g_out, extra = None, {}
    if want_g:
        g_out = _empty_like_layout(x)
        gs = _ncl_strides(g_out)
        extra = dict(g_ptr=g_out, sgn=gs[0], sgc=gs[1], sgl=gs[2], STORE_G=True)
    BN.batch_norm_bwd_dx[(plan.NCB * N * plan.NLB,)](
        dy, x, y, dx, mean, invstd, weight if has_w else mean, sum_g, sum_gx,
        C, L, plan.NLB, plan.NCB, 1.0 / (N * L), *ds, *xs, *ys, *os_,
        TRAINING=bool(training), RELU=bool(relu), HAS_W=has_w,
        **extra, **launch_kwargs(plan.config))
    launched("batch_norm_bwd_dx")
    return dx, dweight, dbias, g_out


# ----------------------------------------------------------------------------------------------
# layer norm
# ----------------------------------------------------------------------------------------------
def layer_norm_row_config(D: int, dtype):
    """The row programs' config: the smallest BLOCK_D of the table that holds a row of D values,
    else the largest (the kernels then walk the row in chunks)."""
    configs = for_dtype(LN.ROW_CONFIGS, dtype_tag(dtype))
    return next((c for c in configs if c.kwargs["BLOCK_D"] >= D), configs[-1])


def _rows_view(t, M: int, D: int):
    """t as (M, D) rows: a view when the dims merge, else a contiguous copy."""
    return t.reshape(M, D)


def _dwdb_config(dtype):
    return for_dtype(LN.DWDB_CONFIGS, dtype_tag(dtype))[0]


def _reduce_config():
    return LN.REDUCE_CONFIGS[0]


def _combine(module):
    """The combine / reduce-partials config of the batch_norm or group_norm kernel module."""
    return module.COMBINE_CONFIGS[0]


def layer_norm_dwdb_plan(M: int, D: int, dtype, device):
    """(BLOCK_M, BLOCK_D, column blocks, S row slabs, rows per slab) for the dweight/dbias
    partial sums: enough slabs that cdiv(D, BLOCK_D) * S programs fill the device."""
    cfg = _dwdb_config(dtype)
    bm, bd = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_D"]
    ndb = triton.cdiv(D, bd)
    target = TARGET_PROGRAMS_PER_SM * num_sms(device)
    S = max(1, min(triton.cdiv(M, bm), triton.cdiv(target, ndb)))
    rps = triton.cdiv(M, S)
    return bm, bd, ndb, triton.cdiv(M, rps), rps


def layer_norm_forward(x, normalized_ndim, weight, bias, eps):
    """x (..., *normalized_shape) -> (y like x (contiguous), mean (M,) fp32, rstd (M,) fp32), M the
    product of the leading dims: one program per row, stats by chunked two-pass + Chan merge."""
    D = math.prod(x.shape[x.dim() - normalized_ndim:])
    M = x.numel() // D if D else 0
    x2 = _rows_view(x, M, D)
    dev = x.device
    y = empty((M, D), x.dtype, dev)
    mean = empty((M,), torch.float32, dev)
    rstd = empty((M,), torch.float32, dev)
    w = _unit(weight).reshape(D) if weight is not None else None
    b = _unit(bias).reshape(D) if bias is not None else None
    LN.layer_norm_fwd_fused[(M,)](
        x2, y, w if w is not None else mean, b if b is not None else mean, mean, rstd,
        D, x2.stride(0), x2.stride(1), eps,
        HAS_W=w is not None, HAS_B=b is not None, **launch_kwargs(layer_norm_row_config(D, x.dtype)))
    launched("layer_norm_fwd_fused")
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd, normalized_ndim):
    """dy, x like x -> (dx like x (contiguous), dweight | None, dbias | None) shaped like weight.

    dx: one program per row. dweight/dbias: column sums of dy*xhat and dy over the M rows, split
    over S programs per column block into (S, D) partials, then summed (no atomics)."""
    D = math.prod(x.shape[x.dim() - normalized_ndim:])
    M = x.numel() // D if D else 0
    x2 = _rows_view(x, M, D)
    dy2 = _rows_view(dy, M, D)
    dev = x.device
    dx = empty((M, D), x.dtype, dev)
    has_w = weight is not None
    mean, rstd = _unit(mean), _unit(rstd)
    w = _unit(weight).reshape(D) if has_w else mean
    LN.layer_norm_bwd_dx_fused[(M,)](
        dy2, x2, dx, w, mean, rstd, D, dy2.stride(0), dy2.stride(1), x2.stride(0), x2.stride(1),
        HAS_W=has_w, **launch_kwargs(layer_norm_row_config(D, x.dtype)))
    launched("layer_norm_bwd_dx_fused")
    if not has_w:
        return dx.reshape(x.shape), None, None
    _, _, ndb, S, rps = layer_norm_dwdb_plan(M, D, x.dtype, dev)
    pdw = empty((S, D), torch.float32, dev)
    pdb = empty((S, D), torch.float32, dev)
    LN.layer_norm_bwd_dwdb_partial[(ndb, S)](
        dy2, x2, mean, rstd, pdw, pdb, M, D, rps,
        dy2.stride(0), dy2.stride(1), x2.stride(0), x2.stride(1),
        **launch_kwargs(_dwdb_config(x.dtype)))
    launched("layer_norm_bwd_dwdb_partial")
    dweight = empty(weight.shape, weight.dtype, dev)
    dbias = empty(weight.shape, weight.dtype, dev)
    LN.sum_partial_rows_pair[(triton.cdiv(D, _reduce_config().kwargs["BLOCK"]),)](
        pdw, pdb, dweight, dbias, S, D, **launch_kwargs(_reduce_config()))
    launched("sum_partial_rows_pair")
    return dx.reshape(x.shape), dweight, dbias


# ----------------------------------------------------------------------------------------------
# group norm
# ----------------------------------------------------------------------------------------------
def group_norm_tile(CPG: int, L: int, c_stride_one: bool, dtype):
    """The tile config (BLOCK_C, BLOCK_L) with the least lane waste on (CPG, L)."""
    return least_waste(for_dtype(GN.TILE_CONFIGS, dtype_tag(dtype)), CPG, L, c_stride_one, "BLOCK_C", "BLOCK_L")


def _ncl(t):
    """t (N, C, *) as an (N, C, L) view (a contiguous copy when the spatial dims do not merge)."""
    return t.reshape(t.shape[0], t.shape[1], -1)


class GroupNormPlan(NamedTuple):
    """How group norm is cut: tile (BLOCK_C x BLOCK_L), NCBG channel blocks per group, NLB l-blocks.
    fused: one program per (n, group) (enough groups to fill the device); otherwise each group is
    split into NCBG x S pieces of LPS l-blocks (partial stats + combine)."""
    BLOCK_C: int
    BLOCK_L: int
    NCBG: int
    NLB: int
    fused: bool
    S: int
    LPS: int
    config: triton.Config        # the tile's launch config (BLOCK_C, BLOCK_L, warps, stages)


def group_norm_plan(N: int, G: int, CPG: int, L: int, c_stride_one: bool, dtype, device) -> GroupNormPlan:
    """The tile of group_norm_tile, and the split path when N*G programs would leave SMs idle."""
    cfg = group_norm_tile(CPG, L, c_stride_one, dtype)
    bc, bl = cfg.kwargs["BLOCK_C"], cfg.kwargs["BLOCK_L"]
    ncbg, nlb = triton.cdiv(CPG, bc), triton.cdiv(L, bl)
    target = TARGET_PROGRAMS_PER_SM * num_sms(device)
    if N * G >= target:
        return GroupNormPlan(bc, bl, ncbg, nlb, True, 1, nlb, cfg)
    S = max(1, min(nlb, triton.cdiv(target, N * G * ncbg)))
    lps = triton.cdiv(nlb, S)
    return GroupNormPlan(bc, bl, ncbg, nlb, False, triton.cdiv(nlb, lps), lps, cfg)


def group_norm_forward(x, num_groups, weight, bias, eps):
    """x (N, C, *) -> (y like x, keeping channels-last, mean (N, G) fp32, rstd (N, G) fp32).

    Fused path: one program per (n, group), stats by tiled two-pass + Chan merge, then the affine
    pass. Split path (few groups): partial stats per piece, a combine, then one program per tile."""
    N, C, G = int(x.shape[0]), int(x.shape[1]), int(num_groups)
    x3 = _ncl(x)
    L = int(x3.shape[2])
    dev = x.device
    y = _empty_like_layout(x)
    y3 = y.view(N, C, L)
    mean = empty((N, G), torch.float32, dev)
    rstd = empty((N, G), torch.float32, dev)
    CPG = C // G
    plan = group_norm_plan(N, G, CPG, L, x3.stride(1) == 1, x.dtype, dev)
    w = _unit(weight) if weight is not None else mean
    b = _unit(bias) if bias is not None else mean
    flags = dict(HAS_W=weight is not None, HAS_B=bias is not None, **launch_kwargs(plan.config))
    if plan.fused:
        GN.group_norm_fwd_fused[(N * G,)](
            x3, y3, w, b, mean, rstd, C, L, G, CPG, eps, *x3.stride(), *y3.stride(), **flags)
        launched("group_norm_fwd_fused")
        return y, mean, rstd
    pieces = N * G * plan.NCBG
    pcount = empty((pieces, plan.S), torch.float32, dev)
    pmean = empty((pieces, plan.S), torch.float32, dev)
    pm2 = empty((pieces, plan.S), torch.float32, dev)
    GN.group_norm_fwd_partial_stats[(pieces, plan.S)](
        x3, pcount, pmean, pm2, L, G, CPG, plan.NCBG, plan.LPS, plan.S, *x3.stride(),
        **launch_kwargs(plan.config))
    launched("group_norm_fwd_partial_stats")
    GN.group_norm_fwd_combine_stats[(N * G,)](
        pcount, pmean, pm2, x3, x3.stride(0), x3.stride(1), mean, rstd, plan.NCBG * plan.S, G, CPG, eps,
        **launch_kwargs(_combine(GN)))
    launched("group_norm_fwd_combine_stats")
    GN.group_norm_fwd_normalize[(pieces * plan.NLB,)](
        x3, y3, w, b, mean, rstd, L, G, CPG, plan.NCBG, plan.NLB, *x3.stride(), *y3.stride(), **flags)
    launched("group_norm_fwd_normalize")
    return y, mean, rstd


def group_norm_backward(dy, x, num_groups, weight, mean, rstd):
    """dy, x (N, C, *) -> (dx like x, dweight (C,) | None, dbias (C,) | None).

    Fused path: one program per (n, group) writes dx and the per-(n, c) sums of dy*xhat and dy.
    Split path: per-piece partial sums, reduced to (N, C), then one program per tile writes dx.
    dweight/dbias: a last kernel adds the N rows of the (N, C) sums."""
    N, C, G = int(x.shape[0]), int(x.shape[1]), int(num_groups)
    x3 = _ncl(x)
    dy3 = _ncl(dy)
    L = int(x3.shape[2])
    dev = x.device
    dx = _empty_like_layout(x)
    dx3 = dx.view(N, C, L)
    CPG = C // G
    has_w = weight is not None
    mean, rstd = _unit(mean), _unit(rstd)
    w = _unit(weight) if has_w else mean
    plan = group_norm_plan(N, G, CPG, L, x3.stride(1) == 1, x.dtype, dev)
    sum_gx = sum_g = mean
    if has_w or not plan.fused:
        sum_gx = empty((N, C), torch.float32, dev)
        sum_g = empty((N, C), torch.float32, dev)
    if plan.fused:
        GN.group_norm_bwd_dx[(N * G,)](
            dy3, x3, dx3, w, mean, rstd, sum_gx, sum_g, C, L, G, CPG,
            *dy3.stride(), *x3.stride(), *dx3.stride(),
            HAS_W=has_w, **launch_kwargs(plan.config))
        launched("group_norm_bwd_dx")
    else:
        pieces = N * G * plan.NCBG
        psum_gx = empty((plan.S, N * C), torch.float32, dev)
        psum_g = empty((plan.S, N * C), torch.float32, dev)
        GN.group_norm_bwd_partial_sums[(pieces, plan.S)](
            dy3, x3, mean, rstd, psum_gx, psum_g, C, N * C, L, G, CPG, plan.NCBG, plan.LPS,
            *dy3.stride(), *x3.stride(), **launch_kwargs(plan.config))
        launched("group_norm_bwd_partial_sums")
        LN.sum_partial_rows_pair[(triton.cdiv(N * C, _reduce_config().kwargs["BLOCK"]),)](
            psum_gx, psum_g, sum_gx, sum_g, plan.S, N * C, **launch_kwargs(_reduce_config()))
        launched("sum_partial_rows_pair")
        GN.group_norm_bwd_dx_tiles[(pieces * plan.NLB,)](
            dy3, x3, dx3, w, mean, rstd, sum_gx, sum_g, C, L, G, CPG, plan.NCBG, plan.NLB,
            *dy3.stride(), *x3.stride(), *dx3.stride(),
            HAS_W=has_w, **launch_kwargs(plan.config))
        launched("group_norm_bwd_dx_tiles")
    if not has_w:
        return dx, None, None
    dweight = empty((C,), weight.dtype, dev)
    dbias = empty((C,), weight.dtype, dev)
    LN.sum_partial_rows_pair[(triton.cdiv(C, _reduce_config().kwargs["BLOCK"]),)](
        sum_gx, sum_g, dweight, dbias, N, C, **launch_kwargs(_reduce_config()))
    launched("sum_partial_rows_pair")
    return dx, dweight, dbias
