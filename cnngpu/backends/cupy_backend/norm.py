"""CuPy launchers for batch norm (+ fused ReLU), layer norm and group norm / instance norm,
forward and backward (CUDA C in kernels/cuda/{batch_norm,layer_norm,group_norm}.cu).

Tensors are made C-contiguous first (a copy only for strided inputs). Parameters, statistics and
all reductions are float32: weight/bias of any accepted dtype are widened (ones/zeros when
absent), mean/invstd/rstd come back float32, dweight/dbias are rounded to weight's dtype.
Batch norm statistics are Welford partials per (channel, chunk) merged with Chan's formula, more
than one block per channel when C is small (see _config.bn_partition); no atomics anywhere, so
every result is deterministic.
"""
from __future__ import annotations

import math

from ._cupy import cupy

from ._common import empty
from ._config import (BLOCK, COLSUM_TX, COLSUM_TY, SCALAR_T, bn_partition, column_partition, elementwise_grid,
                      group_norm_threads, row_launch, scalar_define, thread_per_item_grid, warp_per_item_grid)
from ._launch import (cast_from_float32, contiguous, dtype_of, f32, float_param, i32, i64, run,
                      sm_count)

_BN, _LN, _GN = "batch_norm.cu", "layer_norm.cu", "group_norm.cu"
_BN_ENTRIES = ["batch_norm_fwd_welford_partials", "batch_norm_fwd_finalize_stats", "batch_norm_eval_stats",
               "batch_norm_fwd_normalize_affine_relu", "batch_norm_bwd_channel_partial_sums",
               "batch_norm_bwd_finalize_sums", "batch_norm_bwd_dx"]
_LN_ENTRIES = ["layer_norm_fwd_rows", "layer_norm_bwd_dx_rows", "layer_norm_bwd_dwdb_partials",
               "layer_norm_bwd_dwdb_finalize"]
_GN_ENTRIES = ["group_norm_fwd_group_block", "group_norm_bwd_plane_sums", "group_norm_bwd_group_coeffs",
               "group_norm_bwd_dweight_dbias", "group_norm_bwd_dx"]
# cast kernels (elementwise.cu) widen half/bf16 parameters and round dweight/dbias back
_CASTS = ("elementwise.cu", ["cast_to_float32", "cast_from_float32"])
CUDA_BUILDS = [(f, list(e), scalar_define(dt)) for dt in SCALAR_T
               for f, e in ((_BN, _BN_ENTRIES), (_LN, _LN_ENTRIES), (_GN, _GN_ENTRIES), _CASTS)]


def _grad_param(g32, weight):
    """A float32 parameter gradient shaped and typed like ``weight``."""
    return cast_from_float32(g32, weight.dtype).reshape(weight.shape)


# ----------------------------------------------------------------------------------------------
# batch norm (+ fused ReLU)
# ----------------------------------------------------------------------------------------------
def _bn_dims(x):
    """(N, C, HW, M = N*HW) of an (N, C, H, W) or (N, C) array."""
    N, C = int(x.shape[0]), int(x.shape[1])
    HW = math.prod(int(s) for s in x.shape[2:])
    return N, C, HW, N * HW


def _update_running(running, stat32) -> None:
    """Write float32 ``stat32`` back into ``running`` in place (its dtype and strides kept)."""
    if running.dtype == cupy.float32 and running.flags.c_contiguous:
        return  # the kernel updated it directly
    running[...] = cast_from_float32(stat32, running.dtype).reshape(running.shape)


def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps, relu):
    """x (N, C, H, W) or (N, C) -> (y of x's dtype, mean (C,) float32, invstd (C,) float32).

    training: batch statistics (biased variance for y, unbiased for the running update, which is
    done in place on running_mean/var when given). eval: the running statistics.
    """
    x = contiguous(x)
    N, C, HW, M = _bn_dims(x)
    dt = dtype_of(x)
    mean, invstd = batch_norm_stats(x, running_mean, running_var, training, momentum, eps)
    y = empty(x.shape, x.dtype)
    run(_BN, "batch_norm_fwd_normalize_affine_relu", dt, elementwise_grid(x.size), (BLOCK,),
        (x, y, mean, invstd, float_param(weight, C, 1.0), float_param(bias, C, 0.0), i64(x.size),
         i64(HW), i32(C), i32(bool(relu))))
    return y, mean, invstd


def batch_norm_stats(x, running_mean, running_var, training, momentum, eps):
    """(mean, invstd) float32 (C,) of contiguous x as batch_norm_forward uses them: the batch
    statistics when training (running stats blended in place when given), else the running ones."""
    N, C, HW, M = _bn_dims(x)
    dt = dtype_of(x)
    if not training:
        return eval_stats(running_mean, running_var, C, eps, dt)
    B, chunk = bn_partition(C, M, sm_count())
    part = cupy.empty((3, C * B), dtype=cupy.float32)
    run(_BN, "batch_norm_fwd_welford_partials", dt, (C, B), (BLOCK,),
        (x, part[0], part[1], part[2], i32(C), i64(HW), i64(M), i64(chunk)))
    return finalize_stats(part, B, C, running_mean, running_var, momentum, eps, dt)


def finalize_stats(part, B: int, C: int, running_mean, running_var, momentum, eps, dt: str):
    """(mean, invstd) float32 (C,) from per-(channel, chunk) Welford partials ``part`` (3, C * B)
    float32 (count, mean, M2; partial c * B + b) by batch_norm_fwd_finalize_stats (Chan merge);
    running stats blended in place when given (unbiased variance). Also finishes the fused conv
    block's epilogue partials (cupy_backend/fused.py)."""
    mean = empty((C,), cupy.float32)
    invstd = empty((C,), cupy.float32)
    update = running_mean is not None
    rm = float_param(running_mean, C, 0.0) if update else mean
    rv = float_param(running_var, C, 1.0) if update else invstd
    run(_BN, "batch_norm_fwd_finalize_stats", dt, warp_per_item_grid(C), (BLOCK,),
        (part[0], part[1], part[2], i32(B), i32(C), f32(eps), f32(momentum), i32(update),
         mean, invstd, rm, rv))
    if update:
        _update_running(running_mean, rm)
        _update_running(running_var, rv)
    return mean, invstd


def eval_stats(running_mean, running_var, C: int, eps, dt: str):
    """(mean, invstd) float32 (C,) of eval mode: the running mean and 1/sqrt(running_var + eps)."""
    mean = empty((C,), cupy.float32)
    invstd = empty((C,), cupy.float32)
    run(_BN, "batch_norm_eval_stats", dt, thread_per_item_grid(C), (BLOCK,),
        (float_param(running_mean, C, 0.0), float_param(running_var, C, 1.0), i32(C), f32(eps), mean, invstd))
    return mean, invstd


def batch_norm_backward(dy, x, y, weight, mean, invstd, training, relu):
    """Gradients of batch_norm_forward -> (dx of x's dtype, dweight | None, dbias | None).

    g = dy masked by y > 0 when relu. training: dx = w*invstd*(g - mean(g) - xhat*mean(g*xhat));
    eval: dx = g*w*invstd. dweight = sum g*xhat, dbias = sum g over (N, H, W), in weight's dtype.
    """
    return batch_norm_backward_masked(dy, x, y, weight, mean, invstd, training, relu)[:3]


def batch_norm_backward_masked(dy, x, y, weight, mean, invstd, training, relu, want_g=False):
    """batch_norm_backward, plus (``want_g``) the masked upstream gradient g (x's dtype), written by
    the dx pass itself (the fused conv block's residual gradient): (dx, dweight, dbias, g | None)."""
    dy, x, y = contiguous(dy), contiguous(x), contiguous(y)
    N, C, HW, M = _bn_dims(x)
    dt = dtype_of(x)
    mean32, invstd32 = float_param(mean, C, 0.0), float_param(invstd, C, 1.0)
    w32 = float_param(weight, C, 1.0)
    need_sums = training or weight is not None
    if need_sums:
        B, chunk = bn_partition(C, M, sm_count())
        part = cupy.empty((2, C * B), dtype=cupy.float32)
        run(_BN, "batch_norm_bwd_channel_partial_sums", dt, (C, B), (BLOCK,),
            (dy, x, y, mean32, part[0], part[1], i32(C), i64(HW), i64(M), i64(chunk), i32(bool(relu))))
        dbias32 = empty((C,), cupy.float32)
        dweight32 = empty((C,), cupy.float32)
        run(_BN, "batch_norm_bwd_finalize_sums", dt, warp_per_item_grid(C), (BLOCK,),
            (part[0], part[1], invstd32, i32(B), i32(C), dbias32, dweight32))
    else:  # eval without weight: dx = g * invstd, the sums are not read
        dbias32 = dweight32 = mean32
    dx = empty(x.shape, x.dtype)
    g = empty(x.shape, x.dtype) if want_g else None
    run(_BN, "batch_norm_bwd_dx", dt, elementwise_grid(x.size), (BLOCK,),
        (dy, x, y, mean32, invstd32, w32, dbias32, dweight32, dx, i64(x.size), i64(HW), i32(C),
         f32(1.0 / M), i32(bool(relu)), i32(bool(training)), g if want_g else dx, i32(bool(want_g))))
    if weight is None:
        return dx, None, None, g
    return dx, _grad_param(dweight32, weight), _grad_param(dbias32, weight), g


# ----------------------------------------------------------------------------------------------
# layer norm
# ----------------------------------------------------------------------------------------------
def _ln_dims(x, normalized_ndim: int):
    D = math.prod(int(s) for s in x.shape[x.ndim - normalized_ndim:])
    return x.size // D, D


def layer_norm_forward(x, normalized_ndim, weight, bias, eps):
    """Normalize each of the M rows of the trailing D = prod(normalized shape) values.
    -> (y of x's shape and dtype, mean (M,) float32, rstd (M,) float32)."""
    x = contiguous(x)
    M, D = _ln_dims(x, normalized_ndim)
    y = empty(x.shape, x.dtype)
    mean = empty((M,), cupy.float32)
    rstd = empty((M,), cupy.float32)
    block, grid = row_launch(M, D)
    run(_LN, "layer_norm_fwd_rows", dtype_of(x), grid, block,
        (x, float_param(weight, D, 1.0), float_param(bias, D, 0.0), y, mean, rstd, i64(M), i32(D), f32(eps)))
    return y, mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd, normalized_ndim):
    """Gradients of layer_norm_forward -> (dx, dweight | None, dbias | None), the parameter
    gradients (column sums over the M rows, two-stage, no atomics) shaped and typed like weight."""
    dy, x = contiguous(dy), contiguous(x)
    M, D = _ln_dims(x, normalized_ndim)
    dt = dtype_of(x)
    mean32, rstd32 = float_param(mean, M, 0.0), float_param(rstd, M, 1.0)
    dx = empty(x.shape, x.dtype)
    block, grid = row_launch(M, D)
    run(_LN, "layer_norm_bwd_dx_rows", dt, grid, block,
        (dy, x, float_param(weight, D, 1.0), mean32, rstd32, dx, i64(M), i32(D)))
    if weight is None:
        return dx, None, None
    cgrid, rows = column_partition(M, D, sm_count())
    G = cgrid[1]
    part = cupy.empty((2, G * D), dtype=cupy.float32)
    run(_LN, "layer_norm_bwd_dwdb_partials", dt, cgrid, (COLSUM_TX, COLSUM_TY, 1),
        (dy, x, mean32, rstd32, part[0], part[1], i64(M), i32(D), i64(rows)))
    dw32 = empty((D,), cupy.float32)
    db32 = empty((D,), cupy.float32)
    run(_LN, "layer_norm_bwd_dwdb_finalize", dt, thread_per_item_grid(D), (BLOCK,),
        (part[0], part[1], i32(G), i32(D), dw32, db32))
    return dx, _grad_param(dw32, weight), _grad_param(db32, weight)


# ----------------------------------------------------------------------------------------------
# group norm (instance norm: num_groups == C)
# ----------------------------------------------------------------------------------------------
def _gn_dims(x):
    N, C = int(x.shape[0]), int(x.shape[1])
    return N, C, math.prod(int(s) for s in x.shape[2:])


def group_norm_forward(x, num_groups, weight, bias, eps):
    """x (N, C, *) normalized over (C/G, *) per (n, group), one block per group.
    -> (y of x's shape and dtype, mean (N, G) float32, rstd (N, G) float32)."""
    x = contiguous(x)
    N, C, S = _gn_dims(x)
    G = int(num_groups)
    y = empty(x.shape, x.dtype)
    mean = empty((N, G), cupy.float32)
    rstd = empty((N, G), cupy.float32)
    threads = group_norm_threads((C // G) * S)
    run(_GN, "group_norm_fwd_group_block", dtype_of(x), (N * G,), (threads,),
        (x, float_param(weight, C, 1.0), float_param(bias, C, 0.0), y, mean, rstd, i32(C), i32(G),
         i64(S), f32(eps)))
    return y, mean, rstd


def group_norm_backward(dy, x, num_groups, weight, mean, rstd):
    """Gradients of group_norm_forward -> (dx, dweight | None, dbias | None): per-plane sums (a warp
    per (n, c)), per-group coefficients, per-channel parameter sums, then one elementwise dx pass."""
    dy, x = contiguous(dy), contiguous(x)
    N, C, S = _gn_dims(x)
    G = int(num_groups)
    dt = dtype_of(x)
    mean32, rstd32 = float_param(mean, N * G, 0.0), float_param(rstd, N * G, 1.0)
    w32 = float_param(weight, C, 1.0)
    planes = N * C
    dsx = cupy.empty((planes,), dtype=cupy.float32)
    db = cupy.empty((planes,), dtype=cupy.float32)
    run(_GN, "group_norm_bwd_plane_sums", dt, warp_per_item_grid(planes), (BLOCK,),
        (dy, x, mean32, dsx, db, i64(planes), i32(C), i32(G), i64(S)))
    coef = cupy.empty((2, N * G), dtype=cupy.float32)
    run(_GN, "group_norm_bwd_group_coeffs", dt, thread_per_item_grid(N * G), (BLOCK,),
        (dsx, db, w32, rstd32, coef[0], coef[1], i64(N * G), i32(C), i32(G), i64(S)))
    dx = empty(x.shape, x.dtype)
    run(_GN, "group_norm_bwd_dx", dt, elementwise_grid(x.size), (BLOCK,),
        (dy, x, w32, mean32, rstd32, coef[0], coef[1], dx, i64(x.size), i32(C), i32(G), i64(S)))
    if weight is None:
        return dx, None, None
    dw32 = empty((C,), cupy.float32)
    db32 = empty((C,), cupy.float32)
    run(_GN, "group_norm_bwd_dweight_dbias", dt, thread_per_item_grid(C), (BLOCK,),
        (dsx, db, rstd32, i32(N), i32(C), i32(G), dw32, db32))
    return dx, _grad_param(dw32, weight), _grad_param(db32, weight)
