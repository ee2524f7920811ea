"""Fused conv -> BatchNorm -> (+ residual) -> (ReLU) on the cupy backend (definition: the NumPy
reference, ``cnngpu.backends.numpy_backend.fused``).

Forward, where the convolution runs as the implicit GEMM (``conv.fwd_algo``): the fused entry
points ``conv2d_fwd_implicit_gemm_bn_relu`` / ``_narrow`` (mma.sync / FFMA / tf32, conv2d_fwd.cu)
and ``conv2d_fwd_implicit_gemm_sm90_bn_relu`` (wgmma, sm_90a), the plain main loop with the
epilogue of kernels/cuda/conv2d_fwd_operands.cuh (FwdBnEpilogue), launched by
``conv.implicit_gemm_forward`` (same plan, operands, weight layout and split-K as the plain conv):

* eval: BatchNorm folded into the conv weights and bias with the running statistics (the
  reference's ``fold_bn``, one rule, on float32 device arrays; the folded weights rounded to x's
  dtype, the folded bias kept float32), residual add and ReLU in the epilogue: one read of x
  (and of the residual), one write of out.
* training: the epilogue writes y and, per (M tile of 128 pixels, channel), the tile's count, mean
  and M2 of the fp32 conv values (two passes over the tile staged in shared memory, warp-shuffle
  sums; no sum / sum-of-squares, so |mean| >> std keeps the variance); batch_norm.cu's
  ``batch_norm_fwd_finalize_stats`` merges them (Chan) and updates the running statistics (one
  home: ``norm.finalize_stats``); then ``conv_bn_apply_residual_relu`` reads y once. Against the
  composed block this saves the statistics pass over y.
* split-K (small grids, ``conv_policy.gemm_split_k``): the epilogue writes the fp32 partials only;
  the sum over the splits is the fused pass -- eval ``conv_bn_sum_splits_residual_relu`` (sum +
  residual + ReLU), training ``conv_bn_sum_splits_welford_partials`` (y and per-(channel, chunk)
  Welford partials of the fp32 sums, then the same finalize). The statistics come from the summed
  output, never from a split's partial.
Elsewhere (the direct conv kernel) the block is composed: conv2d_forward, ``batch_norm_stats``,
then ``conv_bn_apply_residual_relu``.
LAUNCHES: ``conv2d_bn_relu_fwd[eval-fused|train-fused|composed]``, the entry points as ever.

Backward, two passes over the activations (the minimum): ``batch_norm_backward_masked`` on (dout,
y, out) -- pass 1 masks dout by the ReLU and sums the dgamma / dbeta partials per (channel,
chunk), a tiny finalize, pass 2 forms dy and also writes the masked dout as the residual's
gradient -- then the conv backward (dX, dW) of dy. Why not fewer: in training dy needs the two
channel sums over the whole batch, so pass 2 cannot start before pass 1 has finished everywhere;
folding pass 2 into the conv backward's operand loads is not possible on the cp.async / wgmma paths,
whose copies go global -> shared without passing through registers. Eval needs pass 1 only when
there is a BatchNorm weight (dgamma).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import conv_policy as policy
from ..numpy_backend.fused import fold_bn
from ._common import empty, launched
from ._config import BLOCK, SCALAR_T, bn_partition, elementwise_grid, fused_stage_bytes, scalar_define
from ._launch import (cast_from_float32, cast_to_float32, contiguous, dtype_of, float_param, i32, i64, run,
                      sm_count)
from .conv import conv2d_backward, conv2d_forward, fwd_algo, implicit_gemm_forward
from .norm import batch_norm_backward_masked, batch_norm_stats, eval_stats, finalize_stats

_FILE = "conv_bn_relu.cu"
_ENTRIES = ["conv_bn_apply_residual_relu", "conv_bn_sum_splits_residual_relu", "conv_bn_sum_splits_welford_partials"]
CUDA_BUILDS = [(_FILE, list(_ENTRIES), scalar_define(dt)) for dt in SCALAR_T]


class _BnEpilogue:
    """The fused entry points' epilogue (conv.FusedEpilogue): eval (folded fp32 bias, residual, ReLU)
    or training statistics (``stats``: partials kept in .part / .B for ``finalize_stats``)."""
    suffix = "_bn_relu"

    def __init__(self, x, g, bias32, residual, relu: bool, stats: bool):
        self.dt, self.g, self.stats = dtype_of(x), g, stats
        self.bias32, self.residual, self.relu = bias32, residual, bool(relu)
        self.dummy_t = x                      # typed placeholder for an absent residual (never read)
        self.part: Any = None                 # (3, K * B) float32 partials once launched
        self.B = 0

    def args(self, grid, splits: int, tile) -> tuple:
        stats = self.stats and splits == 1
        if stats:                             # one partial per (channel, M tile): grid x = the M tiles
            self.B = int(grid[0])
            self.part = empty((3, self.g.K * self.B), np.float32)
        part: Any = self.part if stats else empty((3, 1), np.float32)
        bias = self.bias32 if self.bias32 is not None else part[0]
        res = self.residual if self.residual is not None else self.dummy_t
        return (bias, i32(self.bias32 is not None), res, i32(self.residual is not None), i32(self.relu),
                part[0], part[1], part[2], i32(stats))

    def smem(self, tile) -> int:
        return fused_stage_bytes(*tile) if self.stats else 0

    def finish_splits(self, ws, splits: int, y) -> None:
        g = self.g
        if self.stats:
            M = g.N * g.P * g.Q
            self.B, chunk = bn_partition(g.K, M, sm_count())
            part: Any = empty((3, g.K * self.B), np.float32)
            self.part = part
            run(_FILE, "conv_bn_sum_splits_welford_partials", self.dt, (g.K, self.B), (BLOCK,),
                (ws, i32(splits), y, part[0], part[1], part[2], i32(g.K), i64(g.P * g.Q), i64(M), i64(chunk)))
            return
        res = self.residual if self.residual is not None else y
        run(_FILE, "conv_bn_sum_splits_residual_relu", self.dt, elementwise_grid(y.size), (BLOCK,),
            (ws, i32(splits), i64(y.size), res, i32(self.residual is not None), i32(self.relu), y))


def _fold(w, b, weight, bias, running_mean, running_var, eps):
    """(w' in w's dtype, b' float32) of the eval block: the reference's fold_bn on float32 copies."""
    f = (lambda a: None if a is None else cast_to_float32(a))
    wf, bf = fold_bn(cast_to_float32(w), f(b), f(weight), f(bias), f(running_mean), f(running_var), eps,
                     np.dtype(np.float32))
    return cast_from_float32(contiguous(wf), w.dtype), contiguous(bf)


def _apply(y, residual, mean, invstd, weight, bias, g, relu):
    """out = relu((y - mean) * invstd * weight + bias + residual) by conv_bn_apply_residual_relu."""
    out = empty(y.shape, y.dtype)
    res = residual if residual is not None else y
    run(_FILE, "conv_bn_apply_residual_relu", dtype_of(y), elementwise_grid(y.size), (BLOCK,),
        (y, res, out, mean, invstd, float_param(weight, g.K, 1.0), float_param(bias, g.K, 0.0), i64(y.size),
         i64(g.P * g.Q), i32(g.K), i32(residual is not None), i32(bool(relu))))
    return out


def conv2d_bn_relu_forward(x, w, b, g, weight, bias, running_mean, running_var, residual, training, momentum, eps,
                           relu, algo="auto", precision="ieee"):
    """out = relu(bn(conv2d(x, w) + b) + residual) -> (out, y (training) | None, mean, invstd float32).

    x (N, C, H, W), w (K, C/groups, R, S), b (K,) | None, residual (N, K, P, Q) | None: cupy arrays
    of one dtype; BatchNorm parameters/statistics (K,) (running stats updated in place in training).
    out and y are new C-contiguous (N, K, P, Q) arrays of x's dtype."""
    dt = dtype_of(x)
    res = contiguous(residual) if residual is not None else None
    policy.check_extents(g, "cupy")
    if fwd_algo(g, algo) == "implicit_gemm":
        if not training:
            wf, bf = _fold(w, b, weight, bias, running_mean, running_var, eps)
            mean, invstd = eval_stats(running_mean, running_var, g.K, eps, dt)
            out = implicit_gemm_forward(x, wf, None, g, precision,
                                        epilogue=_BnEpilogue(x, g, bf, res, relu, stats=False))
            launched("conv2d_bn_relu_fwd[eval-fused]")
            return out, None, mean, invstd
        ep = _BnEpilogue(x, g, None if b is None else cast_to_float32(b), None, False, stats=True)
        y = implicit_gemm_forward(x, w, None, g, precision, epilogue=ep)
        mean, invstd = finalize_stats(ep.part, ep.B, g.K, running_mean, running_var, momentum, eps, dt)
        launched("conv2d_bn_relu_fwd[train-fused]")
    else:
        y = contiguous(conv2d_forward(x, w, b, g, algo=algo, precision=precision))
        mean, invstd = batch_norm_stats(y, running_mean, running_var, training, momentum, eps)
        launched("conv2d_bn_relu_fwd[composed]")
    out = _apply(y, res, mean, invstd, weight, bias, g, relu)
    return out, (y if training else None), mean, invstd


def conv2d_bn_relu_backward(dout, out, x, w, b, y, g, weight, mean, invstd, training, relu, has_residual,
                            need_dx=True, need_dw=True, need_db=True, algo="auto", precision="ieee"):
    """Gradients of the block (as the reference): (dx, dw, db, dweight, dbias, dresidual)."""
    if y is None:                           # eval forward: the conv output was not kept
        y = conv2d_forward(x, w, b, g, algo=algo, precision=precision)
    # the residual's gradient is the masked dout: written by the BN dx pass itself (no extra pass)
    dy, dweight, dbias, dres = batch_norm_backward_masked(dout, y, out, weight, mean, invstd, training, relu,
                                                          want_g=has_residual)
    launched("conv2d_bn_relu_bwd")
    dx, dw, db = conv2d_backward(dy, x, w, g, need_dx=need_dx, need_dw=need_dw, need_db=need_db, algo=algo,
                                 precision=precision)
    return dx, dw, db, dweight, dbias, dres
