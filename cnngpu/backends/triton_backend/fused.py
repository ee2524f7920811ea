"""Fused conv -> BatchNorm -> (+ residual) -> (ReLU) on the triton backend (see the NumPy reference,
``cnngpu.backends.numpy_backend.fused``, for the definition).

Forward, where the convolution runs as the implicit GEMM (``conv_policy`` picks it, groups fit):
* eval: BatchNorm folded into the conv weights and bias (w' = w * s, b' = (b - mean) * s + beta,
  s = gamma / sqrt(var + eps); tiny torch ops on the (K, ...) parameters), residual and ReLU in the
  GEMM epilogue: one read of x, one write of out. w' (channels-last, as the GEMM reads it) is cached
  per version of w, gamma and running_var (``weight_cache``); kernels that update running
  statistics in place bump their version.
* training: the GEMM epilogue writes y and per-(row tile, channel) mean / M2 partials (STATS);
  ``conv_bn_fwd_finalize_stats`` merges them (Chan) and updates the running stats;
  ``conv_bn_fwd_apply`` writes out = relu(bn(y) + residual), one read of y. Against conv then
  batch_norm this saves the statistics pass over y.
Elsewhere (the direct conv kernel) the block is composed: conv2d, the batch_norm statistics
kernels (training), then ``conv_bn_fwd_apply``.
Backward: the batch_norm backward kernels on (dout, y, out) -- masked dout, dgamma / dbeta partials
in one pass, then the dy pass, which also writes the masked dout as dresidual (STORE_G) -- then the
conv backward (dX, dW) of dy.
Launches are recorded in LAUNCHES (``conv2d_bn_relu_fwd[eval-fused|train-fused|composed]``).
"""
from __future__ import annotations

import torch
import triton

from cnngpu.kernels.triton import conv2d_bn_relu as FK
from cnngpu.kernels.triton._config import launch_kwargs

from ...geometry import ConvGeometry
from .. import conv_policy as policy
from .. import weight_cache
from ._common import empty, launched, needs_int64, wrote_in_place
from .conv import (_dot_precision, _gemm_fits, alloc_nchw, as_layout_of, channels_last_input, conv2d_backward,
                   conv2d_forward, implicit_gemm_forward, padded_geometry, relaid_weight_copy)
from .norm import batch_norm_backward_masked, batch_norm_forward


def _gemm_path(x, g: ConvGeometry, algo: str) -> bool:
    """Whether the block runs fused into the implicit-GEMM conv (its epilogue)."""
    if algo == "auto":
        algo = policy.choose_algo(padded_geometry(g, x))
    return algo == "implicit_gemm" and _gemm_fits(g)


def _fold(w, b, weight, bias, running_mean, running_var, eps, c):
    """(w' channels-last, zero-padded to c channels, in w's dtype; b' fp32, mean fp32, invstd fp32)
    of the eval block. w' is made once per version of w, weight (gamma) and running_var
    (``weight_cache.relaid`` with those as inputs; recorded as ``conv2d_weight_relayout``): a new
    tensor on every call would be re-laid on every call."""
    invstd = torch.rsqrt(running_var.float() + eps)
    s = invstd if weight is None else invstd * weight.float()

    def make():
        return relaid_weight_copy((w.float() * s.view(-1, 1, 1, 1)).to(w.dtype), c)
    wf = weight_cache.relaid(w, ("bn_fold", c, float(eps)), make, inputs=(weight, running_var))
    shift = -running_mean.float() if b is None else b.float() - running_mean.float()
    bf = shift * s if bias is None else shift * s + bias.float()
    return wf, bf, running_mean.float().clone(), invstd


def _res_args(residual):
    if residual is None:
        return dict(HAS_RES=False)
    return dict(res_ptr=residual, srn=residual.stride(0), srk=residual.stride(1), srp=residual.stride(2),
                srq=residual.stride(3), HAS_RES=True)


VEC_ELEMS = 8       # conv_bn_fwd_apply: alignments proved up to 8 elements (16 bytes of fp16 / bf16)


def _pow2_dividing(*values: int) -> int:
    """The largest power of two <= VEC_ELEMS dividing every value (0 divides as VEC_ELEMS)."""
    a = VEC_ELEMS
    while a > 1 and any(v % a for v in values):
        a //= 2
    return a


def _plane_args(t, P: int, Q: int):
    """((sn, ss, sc), UNIT, ALIGN) of an (N, K, P, Q) tensor for ``conv_bn_fwd_apply``: the strides of
    the image, the pixel s = p*Q + q and the channel (0 where that extent is 1), which of the pixel (1)
    or channel (2) axis has unit stride (0: neither) and ALIGN, a power of two dividing the other two
    strides, which are passed divided by it (the kernel multiplies them back: its axis analysis then
    knows the alignment). None when the pixels of a plane have no single stride (sp != Q * sq)."""
    N, K = t.shape[0], t.shape[1]
    sn, sk, sp, sq = t.stride()
    if P == 1 or Q == 1 or sp == Q * sq:
        ss = sq if Q > 1 else sp
    else:
        return None
    sn, sk, ss = (0 if N == 1 else sn), (0 if K == 1 else sk), (0 if P * Q == 1 else ss)
    if ss == 1:
        a = _pow2_dividing(sn, sk)
        return (sn // a, ss, sk // a), 1, a
    if sk == 1:
        a = _pow2_dividing(sn, ss)
        return (sn // a, ss // a, sk), 2, a
    return (sn, ss, sk), 0, 1


def _plane_flat(t, like):
    """t itself when ``_plane_args`` can address it, else a copy in like's memory format."""
    if _plane_args(t, t.shape[2], t.shape[3]) is not None:
        return t
    fmt = torch.channels_last if like.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return t.contiguous(memory_format=fmt)


def _apply(y, out, residual, mean, invstd, weight, bias, g: ConvGeometry, relu: bool) -> None:
    """out = relu((y - mean) * invstd * weight + bias + residual) by conv_bn_fwd_apply; out is
    addressable by ``_plane_args`` (alloc_nchw), y and the residual are copied when not."""
    PQ = g.P * g.Q
    cfg = FK.APPLY_CONFIGS[0]
    y = _plane_flat(y, out)
    residual = None if residual is None else _plane_flat(residual, out)
    res = residual if residual is not None else y
    ya, oa, ra = (_plane_args(t, g.P, g.Q) for t in (y, out, res))
    assert ya is not None and oa is not None and ra is not None
    int64 = needs_int64((y, out, residual), extents=(g.N * PQ,))
    tiles = triton.cdiv(PQ, cfg.kwargs["BLOCK_S"])
    grid = (g.N * tiles, triton.cdiv(g.K, cfg.kwargs["BLOCK_C"]))
    pq_align = _pow2_dividing(PQ)
    FK.conv_bn_fwd_apply[grid](
        y, out, res, mean, invstd, weight if weight is not None else mean, bias if bias is not None else mean,
        PQ // pq_align, g.K, tiles, *ya[0], *oa[0], *ra[0],
        HAS_W=weight is not None, HAS_B=bias is not None, HAS_RES=residual is not None, RELU=bool(relu),
        Y_UNIT=ya[1], O_UNIT=oa[1], R_UNIT=ra[1], Y_ALIGN=ya[2], O_ALIGN=oa[2], R_ALIGN=ra[2], PQ_ALIGN=pq_align,
        INT64=int64, **launch_kwargs(cfg))
    launched("conv_bn_fwd_apply")


def _finalize(pmean, pm2, running_mean, running_var, g: ConvGeometry, tile_m: int, momentum, eps):
    """(mean, invstd) fp32 from the GEMM's tile partials; running stats blended in place."""
    M, K = g.N * g.P * g.Q, g.K
    dev = pmean.device
    mean, invstd = empty((K,), torch.float32, dev), empty((K,), torch.float32, dev)
    has_running = running_mean is not None
    rm = running_mean if not has_running or running_mean.is_contiguous() else running_mean.contiguous()
    rv = running_var if not has_running or running_var.is_contiguous() else running_var.contiguous()
    cfg = FK.FINALIZE_CONFIGS[0]
    FK.conv_bn_fwd_finalize_stats[(triton.cdiv(K, cfg.kwargs["BLOCK_C"]),)](
        pmean, pm2, mean, invstd, rm if has_running else mean, rv if has_running else invstd,
        K, pmean.shape[0], M, tile_m, eps, momentum, M / (M - 1),
        HAS_RUNNING=has_running, **launch_kwargs(cfg))
    launched("conv_bn_fwd_finalize_stats")
    if has_running and rm is not running_mean:
        running_mean.copy_(rm)
    elif has_running:
        wrote_in_place(running_mean)
    if has_running and rv is not running_var:
        running_var.copy_(rv)
    elif has_running:
        wrote_in_place(running_var)
    return mean, invstd


def conv2d_bn_relu_forward(x, w, b, g: ConvGeometry, weight, bias, running_mean, running_var, residual, training,
                           momentum, eps, relu, algo="auto", precision="ieee"):
    """out = relu(bn(conv2d(x, w) + b) + residual) on torch tensors: returns (out (x's memory format),
    y (training: the conv output, channels-last on the fused path; eval: None), mean, invstd fp32)."""
    fused = _gemm_path(x, g, algo) and not (residual is not None and needs_int64((residual,)))
    prec = _dot_precision(x, precision)
    if not training:
        if fused:
            wf, bf, mean, invstd = _fold(w, b, weight, bias, running_mean, running_var, eps,
                                         padded_geometry(g, x).C)
            # the epilogue reads the residual at the GEMM's channels-last rows: an NCHW residual is
            # copied to channels-last first (as x is), else its tile loads are scalar 16-bit gathers
            res = None if residual is None else channels_last_input(residual)
            out, _ = implicit_gemm_forward(x, wf, bf, g, prec,
                                           epilogue=lambda cfg: dict(RELU=bool(relu), **_res_args(res)))
            launched("conv2d_bn_relu_fwd[eval-fused]")
            return as_layout_of(out, x), None, mean, invstd
        mean, invstd = running_mean.float().clone(), torch.rsqrt(running_var.float() + eps)
        yc = conv2d_forward(x, w, b, g, algo=algo, precision=precision)
        out = alloc_nchw((g.N, g.K, g.P, g.Q), x)
        _apply(yc, out, residual, mean, invstd, weight, bias, g, relu)
        launched("conv2d_bn_relu_fwd[composed]")
        return out, None, mean, invstd
    if fused:
        ws = {}

        def stats(cfg):
            T = triton.cdiv(g.N * g.P * g.Q, cfg.kwargs["BLOCK_M"])
            ws["pmean"] = empty((T, g.K), torch.float32, x.device)
            ws["pm2"] = empty((T, g.K), torch.float32, x.device)
            return dict(pmean_ptr=ws["pmean"], pm2_ptr=ws["pm2"], STATS=True)

        y, cfg = implicit_gemm_forward(x, w, b, g, prec, epilogue=stats)
        mean, invstd = _finalize(ws["pmean"], ws["pm2"], running_mean, running_var, g, cfg.kwargs["BLOCK_M"],
                                 momentum, eps)
        launched("conv2d_bn_relu_fwd[train-fused]")
    else:
        y = conv2d_forward(x, w, b, g, algo=algo, precision=precision)
        _, mean, invstd = batch_norm_forward(y, None, None, running_mean, running_var, True, momentum, eps, False)
        launched("conv2d_bn_relu_fwd[composed]")
    out = alloc_nchw((g.N, g.K, g.P, g.Q), x)
    _apply(y, out, residual, mean, invstd, weight, bias, g, relu)
    return out, y, mean, invstd


def conv2d_bn_relu_backward(dout, out, x, w, b, y, g: ConvGeometry, weight, mean, invstd, training, relu,
                            has_residual, need_dx=True, need_dw=True, need_db=True, algo="auto", precision="ieee"):
    """Gradients of the block (as the reference): (dx, dw, db, dweight, dbias, dresidual)."""
    if y is None:                           # eval forward: the conv output was never written
        y = conv2d_forward(x, w, b, g, algo=algo, precision=precision)
    # the residual's gradient is the masked dout: written by the BN dx pass itself (no extra pass)
    dy, dweight, dbias, dres = batch_norm_backward_masked(dout, y, out, weight, mean, invstd, training, relu,
                                                          want_g=has_residual)
    dx, dw, db = conv2d_backward(dy, x, w, g, need_dx=need_dx, need_dw=need_dw, need_db=need_db, algo=algo,
                                 precision=precision)
    launched("conv2d_bn_relu_bwd")
    return dx, dw, db, dweight, dbias, dres
