"""Fused conv -> BatchNorm -> (+ residual) -> (ReLU): the kernels after the convolution.

Training forward = 3 launches (launcher: ``cnngpu.backends.triton_backend.fused``):
  conv2d_fwd_implicit_gemm(STATS=True)  writes y (the conv output, channels-last (M, K) rows) and,
                                        per row tile and output channel, the tile's mean and M2
  conv_bn_fwd_finalize_stats            (cdiv(K, BLOCK_C),): Chan merge of the T tile partials ->
                                        mean, invstd; running-stat update in place (unbiased var)
  conv_bn_fwd_apply                     (N * cdiv(P*Q, BLOCK_S), cdiv(K, BLOCK_C)): out = relu((y - mean)
                                        * invstd * w + b + residual), one read of y
Eval forward = conv2d_fwd_implicit_gemm with BatchNorm folded into the weights and bias and the
residual / ReLU in its epilogue (HAS_RES, RELU): no kernel of this file.
"""
import triton
import triton.language as tl

from ._config import config
from ._stats import chan_merge, store_channel_stats

FINALIZE_CONFIGS = [config(BLOCK_C=128)]
# 64 x 64 tiles on 8 warps (16 values per thread): 4 warps took 176-255 registers (ptxas, sm_90)
APPLY_CONFIGS = [config(num_warps=8, BLOCK_S=64, BLOCK_C=64)]


@triton.jit
def conv_bn_fwd_finalize_stats(
    pmean_ptr, pm2_ptr,               # (T, K) fp32 per-row-tile mean and M2 of the conv output
    mean_ptr, invstd_ptr,             # out: (K,) fp32
    rmean_ptr, rvar_ptr,              # running stats (K,), updated in place when HAS_RUNNING
    K, T, M, TILE_M, eps, momentum, unbias,   # tile t holds min(TILE_M, M - t*TILE_M) rows; unbias = M/(M-1)
    HAS_RUNNING: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # grid: (cdiv(K, BLOCK_C),); program i merges the T tile partials of channels
    # [i*BLOCK_C, (i+1)*BLOCK_C) in tile order (deterministic), writes mean and 1/sqrt(var + eps)
    # (biased var) and blends the running stats: r = (1 - momentum) * r + momentum * stat.
    cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < K
    count = tl.zeros([BLOCK_C], tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    c64 = cs.to(tl.int64)
    for t in range(T):
        nb = tl.minimum(TILE_M, M - t * TILE_M).to(tl.float32) + tl.zeros([BLOCK_C], tl.float32)
        off = (c64 * 0 + t) * K + c64           # int64: T * K may pass the int32 range
        bmean = tl.load(pmean_ptr + off, mask=cmask, other=0.0)
        bm2 = tl.load(pm2_ptr + off, mask=cmask, other=0.0)
        count, mean, m2 = chan_merge(count, mean, m2, nb, bmean, bm2)
    store_channel_stats(mean, m2, count, cs, cmask, eps, momentum, unbias, mean_ptr, invstd_ptr, rmean_ptr, rvar_ptr,
                        HAS_RUNNING)


@triton.jit
def _plane_offsets(n, s, c, sn, ss, sc, UNIT: tl.constexpr, ALIGN: tl.constexpr):
    """(BLOCK_S, BLOCK_C) element offsets of one tensor, written so triton's axis analysis sees its
    unit-stride axis (UNIT 1: the pixel axis s = p*Q + q, NCHW; 2: the channel axis c, channels-last;
    0: neither) and that the other strides are multiples of ALIGN: the launcher passes those strides
    divided by ALIGN (a power of two), so the loads / stores along the unit axis become vectors."""
    if UNIT == 1:
        return n * sn * ALIGN + s[:, None] + (c * sc * ALIGN)[None, :]     # left to right: INT64 n, c
    elif UNIT == 2:
        return n * sn * ALIGN + (s * ss * ALIGN)[:, None] + c[None, :]
    else:
        return n * sn + (s * ss)[:, None] + (c * sc)[None, :]


@triton.jit
def conv_bn_fwd_apply(
    y_ptr, out_ptr, res_ptr,          # (N, K, P, Q) conv output, output and residual, each with its strides
    mean_ptr, invstd_ptr,             # (K,) fp32
    w_ptr, b_ptr,                     # (K,) BatchNorm affine, or dummies when HAS_W / HAS_B is off
    PQ_A, K, TILES_S,                 # P * Q = PQ_A * PQ_ALIGN pixels per plane; TILES_S = cdiv(P * Q, BLOCK_S)
    syn, sys, syk, son, sos, sok, srn, srs, srk,    # strides of n, the pixel s = p*Q + q, the channel
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_RES: tl.constexpr, RELU: tl.constexpr,
    Y_UNIT: tl.constexpr, O_UNIT: tl.constexpr, R_UNIT: tl.constexpr,     # see _plane_offsets
    Y_ALIGN: tl.constexpr, O_ALIGN: tl.constexpr, R_ALIGN: tl.constexpr, PQ_ALIGN: tl.constexpr,
    INT64: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # grid: (N * TILES_S, cdiv(K, BLOCK_C)); program (i, j) normalizes image n = i // TILES_S,
    # pixels [t*BLOCK_S, (t+1)*BLOCK_S) (t = i % TILES_S) of its (P*Q) plane x channels
    # [j*BLOCK_C, ...): out = (y - mean) * invstd * w + b (+ res), then max(., 0) when RELU (NaN kept,
    # as torch.relu). Tiles stay inside one image so each tensor's unit-stride axis (the plane in
    # NCHW, the channels in channels-last) is a plain arange: vector loads and stores in both layouts
    # (triton converts between the two register layouts when y and out differ).
    pid = tl.program_id(0)
    pid_c = tl.program_id(1)
    if INT64:
        pid = pid.to(tl.int64)
    n = pid // TILES_S
    s = (pid % TILES_S) * BLOCK_S + tl.arange(0, BLOCK_S)
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if INT64:
        s = s.to(tl.int64)
        cs64 = cs.to(tl.int64)
    else:
        cs64 = cs
    s_ok = s < PQ_A * PQ_ALIGN          # the mask is constant over PQ_ALIGN pixels: no split vectors
    c_ok = cs < K
    ok = s_ok[:, None] & c_ok[None, :]
    scale = tl.load(invstd_ptr + cs, mask=c_ok, other=0.0)
    if HAS_W:
        scale = scale * tl.load(w_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + cs, mask=c_ok, other=0.0)
    y_off = _plane_offsets(n, s, cs64, syn, sys, syk, Y_UNIT, Y_ALIGN)
    y = tl.load(y_ptr + y_off, mask=ok, other=0.0).to(tl.float32)
    z = (y - mean[None, :]) * scale[None, :]          # subtract first: exact-ish when |mean| >> std
    if HAS_B:
        z += tl.load(b_ptr + cs, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_RES:
        r_off = _plane_offsets(n, s, cs64, srn, srs, srk, R_UNIT, R_ALIGN)
        z += tl.load(res_ptr + r_off, mask=ok, other=0.0).to(tl.float32)
    if RELU:
        z = tl.maximum(z, 0.0, propagate_nan=tl.PropagateNan.ALL)
    o_off = _plane_offsets(n, s, cs64, son, sos, sok, O_UNIT, O_ALIGN)
    tl.store(out_ptr + o_off, z.to(out_ptr.dtype.element_ty), mask=ok)
