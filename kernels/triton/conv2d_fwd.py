"""conv2d forward kernels: a direct (FMA) kernel and an implicit-GEMM (tl.dot) kernel.

Shapes: x (N, C, H, W), w (K, C/groups, R, S), b (K,), y (N, K, P, Q), any strides (every tensor's
four strides are kernel arguments, so NCHW, channels-last and sliced views need no copy).
An input row index is ``p * stride_h - pad_h + r * dil_h`` (pad = begin padding), likewise columns.

* ``conv2d_fwd_direct``: one program = BLOCK_M output pixels x BLOCK_N output channels, looping
  over the (C/groups) * R * S taps with fp32 FMAs. Each output channel column carries its own group,
  so depthwise / small-group convolutions stay dense (no tile wasted on a tiny per-group GEMM).
* ``conv2d_fwd_implicit_gemm``: per group, the GEMM Y[M, Kg] = A[M, L] @ B[L, Kg] with
  M = N*P*Q, Kg = K/groups, L = (C/groups)*R*S; A (im2col of x) is gathered on the fly with masks
  for padding, B is the weight. fp16/bf16 operands run on tensor cores (wgmma on sm_90) with fp32
  accumulation; fp32 operands use ``input_precision`` 'ieee' or 'tf32' (PRECISION).
  Reduction order (FLAT_K=False): taps (r, s) outer, channels inner in BLOCK_K chunks, so one K step
  is a single tap and BLOCK_K consecutive channels -- contiguous for channels-last x, and for NCHW x
  the M axis (output columns q) is the contiguous one; only scalar index math per step.
  FLAT_K=True flattens L in the weight's own (c, r, s) order, decoded per element; used when
  C/groups is small (e.g. the RGB stem) so a K step is not mostly padding.
  IS_1X1 (1x1, stride 1, no padding) drops the tap loop and the bounds masks: A is a strided load.
  Split-K (grid axis 2, SPLIT > 1): each split runs a contiguous range of the K steps into an
  fp32 workspace, summed in a fixed order by ``conv2d_bwd_sum_splits`` (deterministic).

Launch configs: the autotuner's tables ``*_CONFIGS`` (convention: ``_config.py``).
"""
import triton
import triton.language as tl

from ._config import INTERP_GEMM_CONFIGS, config, tuned
from ._config import gemm_config as _cfg
from ._gemm import grouped_tile_ids as _tile_ids

# Shape parameters every autotune key lists (the autotuner appends the tensor dtypes itself);
# the x strides are in the key too, since NCHW and channels-last tune differently.
CONV_KEY = ["N", "C", "H", "W", "K", "R", "S", "P", "Q", "stride_h", "stride_w", "pad_h", "pad_w",
            "dil_h", "dil_w", "groups", "sxn", "sxc", "sxh", "sxw"]


# H100-oriented tiles: 64..128 x 64..128, K step 32..64, 3..4 pipeline stages; first the 128x256 /
# 256x128 tiles on 8 warps (two warpgroups), which the picker takes only where they fill two waves
# of SMs (conv_policy.BIG_TILE)
FWD_GEMM_CONFIGS = [
    _cfg(128, 256, 64, 3, 8),
    _cfg(256, 128, 64, 3, 8),
    _cfg(128, 128, 64, 3, 8),
    _cfg(128, 128, 32, 4, 8),
    _cfg(128, 64, 64, 4, 4),
    _cfg(64, 128, 64, 4, 4),
    _cfg(64, 64, 64, 4, 4),
    _cfg(128, 64, 32, 4, 4),
]
# Ampere (sm_80, 164 KB shared memory, mma.sync): K step 32, 4 warps; the launchers' picker reads
# it through the kernel's ``sm80_configs`` (the autotuner's list is the sm_90 table above)
FWD_GEMM_SM80_CONFIGS = [
    _cfg(128, 128, 32, 4, 4),
    _cfg(128, 64, 32, 4, 4),
    _cfg(64, 128, 32, 4, 4),
    _cfg(64, 64, 32, 4, 4),
]
FWD_DIRECT_CONFIGS = [
    config(BLOCK_M=128, BLOCK_N=32, num_stages=2),
    config(BLOCK_M=64, BLOCK_N=64, num_stages=2),
    config(BLOCK_M=256, BLOCK_N=16, num_stages=2, num_warps=8),
]
# the one small config of the direct FMA kernels under the interpreter
INTERP_DIRECT_CONFIGS = [config(BLOCK_M=16, BLOCK_N=8, num_warps=1)]


def _prune_gemm(configs, named_args, **kwargs):
    """Drop tiles far larger than the problem (Kg = K/groups columns, M rows); keep at least one."""
    kg = named_args["K"] // named_args["groups"]
    m = named_args["N"] * named_args["P"] * named_args["Q"]
    keep = [c for c in configs
            if c.kwargs["BLOCK_N"] <= max(64, triton.next_power_of_2(kg))
            and c.kwargs["BLOCK_M"] <= max(64, triton.next_power_of_2(m))]
    return keep or configs[:1]


@triton.jit
def _flat_extent(N, per_image, INT64: tl.constexpr):
    """N * per_image (a flattened GEMM extent such as N*P*Q), in int64 when INT64 so it cannot wrap."""
    n = N
    if INT64:
        n = tl.cast(N, tl.int64)
    return n * per_image


@triton.autotune(configs=tuned(FWD_DIRECT_CONFIGS, INTERP_DIRECT_CONFIGS), key=CONV_KEY)
@triton.jit
def conv2d_fwd_direct(
    x_ptr, w_ptr, b_ptr, y_ptr,
    N, C, H, W, K, R, S, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups,
    sxn, sxc, sxh, sxw, swk, swc, swr, sws, sb, syn, syk, syp, syq,
    HAS_BIAS: tl.constexpr, GROUPED: tl.constexpr, INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Direct conv: y[n, k, p, q] = b[k] + sum_{c, r, s} x[n, g(k)*Cg + c, h, w] * w[k, c, r, s].

    Grid: (cdiv(N*P*Q, BLOCK_M), cdiv(K, BLOCK_N)); axis 0 = a tile of BLOCK_M output pixels
    (flattened n, p, q), axis 1 = a tile of BLOCK_N output channels over all groups (each column's
    group g(k) = k // (K/groups) picks its input channels). GROUPED=False (groups == 1) loads one
    x value per pixel and broadcasts it over the channel tile (an outer-product FMA).
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if INT64:
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
    Cg = C // groups
    Kg = K // groups
    M = _flat_extent(N, P * Q, INT64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    k_ok = offs_k < K
    n = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    p = pq // Q
    q = pq % Q
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w
    x_row = n * sxn
    c_first = (offs_k // Kg) * Cg          # first input channel of each column's group
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c in range(0, Cg):
        for r in range(0, R):
            h = h0 + r * dil_h
            h_ok = m_ok & (h >= 0) & (h < H)
            for s in range(0, S):
                w = w0 + s * dil_w
                pix_ok = h_ok & (w >= 0) & (w < W)
                pix = x_row + h * sxh + w * sxw
                wv = tl.load(w_ptr + offs_k * swk + c * swc + r * swr + s * sws, mask=k_ok, other=0.0)
                if GROUPED:
                    xv = tl.load(x_ptr + pix[:, None] + (c_first + c)[None, :] * sxc,
                                 mask=pix_ok[:, None] & k_ok[None, :], other=0.0)
                    acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
                else:
                    xv = tl.load(x_ptr + pix + c * sxc, mask=pix_ok, other=0.0)
                    acc += xv.to(tl.float32)[:, None] * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        bv = tl.load(b_ptr + offs_k * sb, mask=k_ok, other=0.0)
        acc += bv.to(tl.float32)[None, :]
    y_off = (n * syn + p * syp + q * syq)[:, None] + (offs_k * syk)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & k_ok[None, :])


@triton.autotune(configs=tuned(FWD_GEMM_CONFIGS, INTERP_GEMM_CONFIGS), key=CONV_KEY + ["PRECISION", "SPLIT"],
                 prune_configs_by={"early_config_prune": _prune_gemm})
@triton.jit
def conv2d_fwd_implicit_gemm(
    x_ptr, w_ptr, b_ptr, y_ptr,
    N, C, H, W, K, R, S, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups,
    sxn, sxc, sxh, sxw, swk, swc, swr, sws, sb, syn, syk, syp, syq,
    SPLIT, split_len, sys_,
    HAS_BIAS: tl.constexpr, IS_1X1: tl.constexpr, FLAT_K: tl.constexpr, INT64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    res_ptr=None, srn=0, srk=0, srp=0, srq=0,
    pmean_ptr=None, pm2_ptr=None,
    HAS_RES: tl.constexpr = False, RELU: tl.constexpr = False, STATS: tl.constexpr = False,
):
    """Implicit-GEMM conv: per group g, Y_g[M, Kg] = im2col(x)_g[M, L] @ W_g[L, Kg] (+ bias).

    Epilogue options (SPLIT == 1 only; the fused conv + BatchNorm blocks of
    ``cnngpu.backends.triton_backend.fused``): HAS_RES adds res[n, k, p, q] (strides srn, srk,
    srp, srq), RELU applies max(., 0) (NaN kept); STATS also writes, per output channel, this row
    tile's mean and M2 (sum of squared deviations from that mean; fp32 from the accumulator, before
    rounding) to pmean_ptr / pm2_ptr [pid_m, K] for ``conv_bn_fwd_finalize_stats`` to merge.

    Grid: (cdiv(N*P*Q, BLOCK_M) * cdiv(K/groups, BLOCK_N), groups, SPLIT); axis 0 = one (row tile,
    column tile) pair in grouped order (GROUP_M row tiles per column sweep), axis 1 = the group,
    axis 2 = the split of the reduction (split-K): split s runs K steps [s*split_len,
    (s+1)*split_len) of the loop and, when SPLIT > 1, stores its fp32 partial tile at
    y_ptr + s*sys_ (a workspace; bias in split 0 only), which the launcher sums in a fixed order.
    Rows m = (n, p, q) flattened; columns = output channels g*Kg .. g*Kg+Kg-1.
    """
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    sid = tl.program_id(2)
    Cg = C // groups
    Kg = K // groups
    M = _flat_extent(N, P * Q, INT64)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(Kg, BLOCK_N)
    pid_m, pid_n = _tile_ids(pid, num_m, num_n, GROUP_M)
    if INT64:
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
        grp = grp.to(tl.int64)
        sid = sid.to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < Kg
    k_glob = grp * Kg + offs_n
    n = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    p = pq // Q
    q = pq % Q
    x_base = x_ptr + grp * Cg * sxc
    w_col = w_ptr + k_glob * swk
    ck = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if IS_1X1:
        # 1x1, stride 1, pad 0: (h, w) = (p, q), every pixel in bounds; A is a plain strided load.
        x_row = n * sxn + p * sxh + q * sxw
        c_lo = sid * split_len * BLOCK_K
        c_hi = tl.minimum(Cg, c_lo + split_len * BLOCK_K)
        for c0 in range(c_lo, c_hi, BLOCK_K):
            c = c0 + ck
            c_ok = c < Cg
            a = tl.load(x_base + x_row[:, None] + (c * sxc)[None, :],
                        mask=m_ok[:, None] & c_ok[None, :], other=0.0)
            b = tl.load(w_col[None, :] + (c * swc)[:, None], mask=c_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    elif FLAT_K:
        # reduction index j = (c * R + r) * S + s, decoded per element (small C/groups)
        h0 = p * stride_h - pad_h
        w0 = q * stride_w - pad_w
        x_row = n * sxn
        RS = R * S
        L = Cg * RS
        j_lo = sid * split_len * BLOCK_K
        j_hi = tl.minimum(L, j_lo + split_len * BLOCK_K)
        for j0 in range(j_lo, j_hi, BLOCK_K):
            j = j0 + ck
            j_ok = j < L
            c = j // RS
            rs = j % RS
            r = rs // S
            s = rs % S
            h = h0[:, None] + (r * dil_h)[None, :]
            w = w0[:, None] + (s * dil_w)[None, :]
            a_ok = m_ok[:, None] & j_ok[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            a = tl.load(x_base + x_row[:, None] + (c * sxc)[None, :] + h * sxh + w * sxw, mask=a_ok, other=0.0)
            w_off = c * swc + r * swr + s * sws
            b = tl.load(w_col[None, :] + w_off[:, None], mask=j_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    else:
        # taps (r, s) outer, BLOCK_K channels inner: one flat loop so the pipeliner sees one loop
        h0 = p * stride_h - pad_h
        w0 = q * stride_w - pad_w
        x_row = n * sxn
        num_cb = tl.cdiv(Cg, BLOCK_K)
        it_lo = sid * split_len
        it_hi = tl.minimum(R * S * num_cb, it_lo + split_len)
        for it in range(it_lo, it_hi):
            rs = it // num_cb
            c = (it - rs * num_cb) * BLOCK_K + ck
            r = rs // S
            s = rs - r * S
            h = h0 + r * dil_h
            w = w0 + s * dil_w
            row_ok = m_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            c_ok = c < Cg
            a = tl.load(x_base + (x_row + h * sxh + w * sxw)[:, None] + (c * sxc)[None, :],
                        mask=row_ok[:, None] & c_ok[None, :], other=0.0)
            b = tl.load(w_col[None, :] + (c * swc + r * swr + s * sws)[:, None],
                        mask=c_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if HAS_BIAS:
        if sid == 0:                # split-K: the bias goes into one partial only
            bv = tl.load(b_ptr + k_glob * sb, mask=n_ok, other=0.0)
            acc += bv.to(tl.float32)[None, :]
    y_off = (n * syn + p * syp + q * syq)[:, None] + (k_glob * syk)[None, :]
    y_out = y_ptr
    if SPLIT > 1:
        y_out = y_ptr + sid * sys_
    tile_ok = m_ok[:, None] & n_ok[None, :]
    if STATS:
        # per-channel two-pass statistics of the tile's valid rows (Chan-merged across tiles later)
        cnt = tl.sum(m_ok.to(tl.float32), axis=0)
        t_mean = tl.sum(tl.where(tile_ok, acc, 0.0), axis=0) / cnt
        dev = tl.where(tile_ok, acc - t_mean[None, :], 0.0)
        tl.store(pmean_ptr + pid_m * K + k_glob, t_mean, mask=n_ok)
        tl.store(pm2_ptr + pid_m * K + k_glob, tl.sum(dev * dev, axis=0), mask=n_ok)
    if HAS_RES:
        r_off = (n * srn + p * srp + q * srq)[:, None] + (k_glob * srk)[None, :]
        acc += tl.load(res_ptr + r_off, mask=tile_ok, other=0.0).to(tl.float32)
    if RELU:
        acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(y_out + y_off, acc.to(y_ptr.dtype.element_ty), mask=tile_ok)


conv2d_fwd_implicit_gemm.sm80_configs = FWD_GEMM_SM80_CONFIGS
