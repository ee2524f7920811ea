"""2-D max and average pooling, forward and backward (PyTorch semantics).

Every kernel works on a flat index over its output tensor (int64, so numel may pass 2^31) and
reads its inputs through explicit (n, c, h, w) strides, so NCHW, channels-last and sliced
tensors need no copy. The backward kernels are gathers: each input pixel visits the few output
windows that can cover it and sums their contributions, so no atomics are needed and the result
is deterministic.

Window of output pixel (p, q): rows p*SH - PH + i*DH (i < KH), cols q*SW - PW + j*DW (j < KW);
positions outside [0, H) x [0, W) are padding (never the max, zero for the average).
"""
import triton
import triton.language as tl

from ._config import config

# one flat block of BLOCK outputs per program; 16-bit elements take twice as many per block
POOL_CONFIGS = {"fp32": [config(BLOCK=512)], "fp16": [config(BLOCK=1024, num_warps=8)]}


@triton.jit
def _split_nchw(offs, C, D1, D2):
    """Flat NCHW-order index -> (n, c, i, j) for planes of D1 x D2 (outputs P x Q or inputs H x W)."""
    j = offs % D2
    t = offs // D2
    i = t % D1
    t = t // D1
    return t // C, t % C, i, j


@triton.jit
def max_pool2d_fwd_window_max(
    x_ptr, y_ptr, idx_ptr,            # x (N, C, H, W) strided; y, idx (N, C, P, Q) contiguous
    C, H, W, P, Q, total,             # total = N*C*P*Q
    sxn, sxc, sxh, sxw,               # x strides (elements)
    KH, KW, SH, SW, PH, PW, DH, DW,   # window, stride, begin padding, dilation
    BLOCK: tl.constexpr,
):
    # grid: (cdiv(N*C*P*Q, BLOCK),); program i owns outputs [i*BLOCK, (i+1)*BLOCK) in NCPQ order.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n, c, p, q = _split_nchw(offs, C, P, Q)
    base = n * sxn + c * sxc
    h0 = p * SH - PH
    w0 = q * SW - PW
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.full([BLOCK], -1, tl.int64)
    for i in range(KH):
        h = h0 + i * DH
        h_ok = (h >= 0) & (h < H)
        for j in range(KW):
            w = w0 + j * DW
            ok = mask & h_ok & (w >= 0) & (w < W)
            v = tl.load(x_ptr + base + h * sxh + w * sxw, mask=ok, other=float("-inf")).to(tl.float32)
            # PyTorch's scan: `v > best or isnan(v)`, so the first maximum in row-major window
            # order wins, a NaN propagates (the last NaN of the window), and the first real pixel
            # is taken even when it is -inf (padding never wins).
            take = ok & ((v > best) | (v != v) | (best_idx < 0))
            best = tl.where(take, v, best)
            best_idx = tl.where(take, h * W + w, best_idx)
    tl.store(y_ptr + offs, best.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(idx_ptr + offs, best_idx, mask=mask)


@triton.jit
def max_pool2d_bwd_gather(
    dy_ptr, idx_ptr, dx_ptr,          # dy, idx (N, C, P, Q) strided; dx (N, C, H, W) contiguous
    C, H, W, P, Q, total,             # total = N*C*H*W
    sdn, sdc, sdp, sdq,               # dy strides
    sin, sic, sip, siq,               # argmax strides
    KH, KW, SH, SW, PH, PW, DH, DW,
    NPH, NPW,                         # candidate windows per axis: ((K-1)*D) // S + 1
    BLOCK: tl.constexpr,
):
    # grid: (cdiv(N*C*H*W, BLOCK),); each lane is one input pixel (h, w) of plane (n, c). It visits
    # the output windows p in [floor((h+PH-(KH-1)*DH)/SH)..floor((h+PH)/SH)] (likewise q) and adds
    # dy[p, q] where argmax[p, q] == h*W + w. Fixed trip counts NPH x NPW, masked at the edges.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n, c, h, w = _split_nchw(offs, C, H, W)
    me = h * W + w
    dbase = n * sdn + c * sdc
    ibase = n * sin + c * sic
    p_hi = (h + PH) // SH
    q_hi = (w + PW) // SW
    acc = tl.zeros([BLOCK], tl.float32)
    for a in range(NPH):
        p = p_hi - a
        tap_h = h + PH - p * SH                       # row offset inside window p, >= 0
        p_ok = (p >= 0) & (p < P) & (tap_h <= (KH - 1) * DH)
        for b in range(NPW):
            qq = q_hi - b
            tap_w = w + PW - qq * SW
            ok = mask & p_ok & (qq >= 0) & (qq < Q) & (tap_w <= (KW - 1) * DW)
            win = tl.load(idx_ptr + ibase + p * sip + qq * siq, mask=ok, other=-1)
            hit = ok & (win == me)
            g = tl.load(dy_ptr + dbase + p * sdp + qq * sdq, mask=hit, other=0.0).to(tl.float32)
            acc += g
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _avg_pool2d_divisor(p, q, H, W, KH, KW, SH, SW, PH, PW, COUNT_INCLUDE_PAD: tl.constexpr):
    # PyTorch: the window is clipped to the padded input [-PH, H+PH) first (that size is the divisor
    # with count_include_pad), then to the real input (that size is the divisor without it).
    hs = p * SH - PH
    ws = q * SW - PW
    he = tl.minimum(hs + KH, H + PH)
    we = tl.minimum(ws + KW, W + PW)
    if COUNT_INCLUDE_PAD:
        div = (he - hs) * (we - ws)
    else:
        div = (tl.minimum(he, H) - tl.maximum(hs, 0)) * (tl.minimum(we, W) - tl.maximum(ws, 0))
    return div.to(tl.float32)


@triton.jit
def avg_pool2d_fwd_window_mean(
    x_ptr, y_ptr,                     # x (N, C, H, W) strided; y (N, C, P, Q) contiguous
    C, H, W, P, Q, total,
    sxn, sxc, sxh, sxw,
    KH, KW, SH, SW, PH, PW,
    COUNT_INCLUDE_PAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # grid: (cdiv(N*C*P*Q, BLOCK),); each lane is one output pixel; fp32 window sum / divisor.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n, c, p, q = _split_nchw(offs, C, P, Q)
    base = n * sxn + c * sxc
    h0 = p * SH - PH
    w0 = q * SW - PW
    acc = tl.zeros([BLOCK], tl.float32)
    for i in range(KH):
        h = h0 + i
        h_ok = (h >= 0) & (h < H)
        for j in range(KW):
            w = w0 + j
            ok = mask & h_ok & (w >= 0) & (w < W)
            acc += tl.load(x_ptr + base + h * sxh + w * sxw, mask=ok, other=0.0).to(tl.float32)
    div = _avg_pool2d_divisor(p, q, H, W, KH, KW, SH, SW, PH, PW, COUNT_INCLUDE_PAD)
    tl.store(y_ptr + offs, (acc / div).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def avg_pool2d_bwd_gather(
    dy_ptr, dx_ptr,                   # dy (N, C, P, Q) strided; dx (N, C, H, W) contiguous
    C, H, W, P, Q, total,             # total = N*C*H*W
    sdn, sdc, sdp, sdq,
    KH, KW, SH, SW, PH, PW,
    NPH, NPW,                         # candidate windows per axis: (K-1) // S + 1
    COUNT_INCLUDE_PAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # grid: (cdiv(N*C*H*W, BLOCK),); each lane is one input pixel and sums dy[p, q] / divisor(p, q)
    # over the windows (p, q) that contain it (same candidate walk as max_pool2d_bwd_gather).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n, c, h, w = _split_nchw(offs, C, H, W)
    dbase = n * sdn + c * sdc
    p_hi = (h + PH) // SH
    q_hi = (w + PW) // SW
    acc = tl.zeros([BLOCK], tl.float32)
    for a in range(NPH):
        p = p_hi - a
        p_ok = (p >= 0) & (p < P) & (h + PH - p * SH <= KH - 1)
        for b in range(NPW):
            qq = q_hi - b
            ok = mask & p_ok & (qq >= 0) & (qq < Q) & (w + PW - qq * SW <= KW - 1)
            g = tl.load(dy_ptr + dbase + p * sdp + qq * sdq, mask=ok, other=0.0).to(tl.float32)
            div = _avg_pool2d_divisor(p, qq, H, W, KH, KW, SH, SW, PH, PW, COUNT_INCLUDE_PAD)
            acc += g / tl.where(ok, div, 1.0)     # g is 0 where not ok; keep div > 0 there
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)
