"""2-D max and average pooling, forward and backward (PyTorch semantics).

Each program owns a 2-D tile whose fast axis is the tensor's contiguous one, so global loads and
stores are vectors where the layout allows:

* ``*_rows`` kernels (any layout; the vector path when the W axis has stride 1): a tile of BR rows
  (flat over n, c and the row axis) x BQ columns. Per window row (forward) or candidate output row
  (backward) a program loads, per tile row, one contiguous span of SPAN input (dy / argmax)
  columns starting VEC-aligned -- one vector load -- and picks each window tap out of it with
  ``tl.gather``. ``SPAN == 0`` (a strided W axis, or a span too long for registers) loads every
  tap directly instead (scalar gathers, any strides).
* ``*_channels`` kernels (channels-last: the C axis has stride 1): a tile of BP output (forward) or
  input (backward) pixels x BC channels; each tap (candidate window) is one contiguous run of BC
  channels.

Index math is int64 (numel may pass 2^31); inputs are read through explicit (n, c, h, w)
strides, outputs are contiguous NCHW (``*_rows``) or channels-last (``*_channels``). The
backward kernels are gathers: each input pixel visits the few output windows that can cover it
and sums their contributions, so no atomics are needed and the result is deterministic.

Window of output pixel (p, q): rows p*SH - PH + i*DH (i < KH), cols q*SW - PW + j*DW (j < KW);
positions outside [0, H) x [0, W) are padding (never the max, zero for the average).
"""
import triton
import triton.language as tl

# the tile and vector rules (launchers pick from these)
VEC_BYTES = 16              # widest global vector access
ROWS_TILE = 1024            # elements of the widest [BR, SPAN] register tile of a *_rows program
ROWS_OUT = 256              # outputs (inputs, backward) per *_rows program
CHANNELS_TILE = 2048        # outputs per *_channels program (BP x BC)
CHANNELS_BWD_PIXELS = 64    # at most this many input pixels per *_bwd_channels program (256 pixels x
                            # 8 channels took 240 registers, ptxas sm_90: per-pixel int64 index math)
MAX_SPAN = 1024             # longer spans: SPAN = 0 (direct tap loads)
POOL_WARPS = 4


@triton.jit
def _split_rows(r, C, D1):
    """Flat row index over (n, c, i) of planes with D1 rows -> (n, c, i)."""
    i = r % D1
    t = r // D1
    return t // C, t % C, i


@triton.jit
def _channel_tile(pixels, C, BP: tl.constexpr, BC: tl.constexpr, VEC: tl.constexpr):
    """The *_channels kernels' tile of program (i, j): pixels s = [i*BP, (i+1)*BP) (int64) x channels
    c = [j*BC, (j+1)*BC), with their masks; the channel mask is constant over runs of VEC (the
    launcher picks VEC so that C is a multiple of it: vector loads along C)."""
    s = tl.program_id(0).to(tl.int64) * BP + tl.arange(0, BP)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    c_ok = c < C
    if VEC > 1:
        c_ok = tl.max_constancy(c_ok, VEC)
    return s, c, s < pixels, c_ok


@triton.jit
def _load_span(ptr, rowbase, row_ok, a0, extent, stride, SPAN: tl.constexpr, VEC: tl.constexpr, other):
    """The [BR, SPAN] block ptr[rowbase + (a0 + s) * stride] (s < SPAN), masked to the rows
    row_ok and the columns 0 <= a0 + s < extent (``other`` elsewhere). VEC > 1: stride is 1 and
    rowbase, a0 and extent are multiples of VEC (the launcher checked), so each row is a run of
    VEC-aligned vectors."""
    cols = a0 + tl.arange(0, SPAN)
    col_ok = (cols >= 0) & (cols < extent)
    offs = rowbase[:, None] + cols[None, :] * stride
    if VEC > 1:
        col_ok = tl.max_constancy(col_ok, VEC)
        offs = tl.max_contiguous(tl.multiple_of(offs, [1, VEC]), [1, VEC])
    return tl.load(ptr + offs, mask=row_ok[:, None] & col_ok[None, :], other=other)


@triton.jit
def _tap(ptr, rowbase, row_ok, span, a0, col, col_ok, stride, SPAN: tl.constexpr, other):
    """Values at columns ``col`` ([BQ]) of the tile rows: picked from ``span`` (loaded from a0 by
    _load_span) when SPAN > 0, else loaded directly (masked to row_ok x col_ok)."""
    if SPAN > 0:
        idx = tl.broadcast_to((col - a0)[None, :], [span.shape[0], col.shape[0]])
        return tl.gather(span, idx.to(tl.int32), axis=1)
    else:
        ok = row_ok[:, None] & col_ok[None, :]
        return tl.load(ptr + rowbase[:, None] + col[None, :] * stride, mask=ok, other=other)


@triton.jit
def _span_start(first, OFF, VEC: tl.constexpr):
    """The largest multiple of VEC <= first (first >= -OFF, OFF a multiple of VEC >= 0)."""
    return ((first + OFF) // VEC) * VEC - OFF


@triton.jit
def _store_rows(ptr, r, q, Q, ok, val, VEC_Y: tl.constexpr):
    """Store the [BR, BQ] tile at rows r, columns q of a contiguous (rows, Q) tensor."""
    offs = r[:, None] * Q + q[None, :]
    if VEC_Y > 1:
        offs = tl.max_contiguous(tl.multiple_of(offs, [1, VEC_Y]), [1, VEC_Y])
    tl.store(ptr + offs, val, mask=ok)


@triton.jit
def max_pool2d_fwd_rows(
    x_ptr, y_ptr, idx_ptr,            # x (N, C, H, W) strided; y, idx (N, C, P, Q) contiguous
    C, H, W, P, Q, rows,              # rows = N*C*P
    sxn, sxc, sxh, sxw,               # x strides (elements)
    KH, KW, SH, SW, PH, PW, DH, DW,   # window, stride, begin padding, dilation
    OFF,                              # PW rounded up to a multiple of VEC (span start math)
    BR: tl.constexpr, BQ: tl.constexpr, SPAN: tl.constexpr, VEC: tl.constexpr, VEC_Y: tl.constexpr,
):
    # grid: (cdiv(N*C*P, BR), cdiv(Q, BQ)); program (i, j) owns output rows [i*BR, (i+1)*BR) in NCP
    # order x columns [j*BQ, (j+1)*BQ); per window row one input span per tile row (module doc).
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    q0 = tl.program_id(1) * BQ
    q = q0 + tl.arange(0, BQ)
    r_ok = r < rows
    q_ok = q < Q
    n, c, p = _split_rows(r, C, P)
    a0 = _span_start(q0 * SW - PW, OFF, VEC)
    best = tl.full([BR, BQ], float("-inf"), tl.float32)
    best_idx = tl.full([BR, BQ], -1, tl.int64)
    for i in range(KH):
        h = p * SH - PH + i * DH
        h_ok = r_ok & (h >= 0) & (h < H)
        rowbase = n * sxn + c * sxc + h * sxh
        span = best   # placeholder when SPAN == 0 (never read)
        if SPAN > 0:
            span = _load_span(x_ptr, rowbase, h_ok, a0, W, sxw, SPAN, VEC, float("-inf"))
        for j in range(KW):
            w = q * SW - PW + j * DW
            w_ok = q_ok & (w >= 0) & (w < W)
            v = _tap(x_ptr, rowbase, h_ok, span, a0, w, w_ok, sxw, SPAN, float("-inf")).to(tl.float32)
            # PyTorch's scan: `v > best or isnan(v)`, so the first maximum in row-major window
            # order wins, a NaN propagates (the last NaN of the window), and the first real pixel
            # is taken even when it is -inf (padding never wins).
            ok = h_ok[:, None] & w_ok[None, :]
            take = ok & ((v > best) | (v != v) | (best_idx < 0))
            best = tl.where(take, v, best)
            best_idx = tl.where(take, h[:, None] * W + w[None, :], best_idx)
    ok = r_ok[:, None] & q_ok[None, :]
    _store_rows(y_ptr, r, q, Q, ok, best.to(y_ptr.dtype.element_ty), VEC_Y)
    _store_rows(idx_ptr, r, q, Q, ok, best_idx, VEC_Y)


@triton.jit
def max_pool2d_fwd_channels(
    x_ptr, y_ptr, idx_ptr,            # x (N, C, H, W), C stride 1; y, idx (N, C, P, Q) channels-last
    C, H, W, P, Q, pixels,            # pixels = N*P*Q
    sxn, sxc, sxh, sxw,
    KH, KW, SH, SW, PH, PW, DH, DW,
    BP: tl.constexpr, BC: tl.constexpr, VEC: tl.constexpr,
):
    # grid: (cdiv(N*P*Q, BP), cdiv(C, BC)); program (i, j) owns output pixels [i*BP, (i+1)*BP) in
    # NPQ order x channels [j*BC, (j+1)*BC); every tap is one contiguous run of BC channels.
    s, c, s_ok, c_ok = _channel_tile(pixels, C, BP, BC, VEC)
    n, p, q = _split_rows(s, P, Q)
    best = tl.full([BP, BC], float("-inf"), tl.float32)
    best_idx = tl.full([BP, BC], -1, tl.int64)
    for i in range(KH):
        h = p * SH - PH + i * DH
        h_ok = s_ok & (h >= 0) & (h < H)
        for j in range(KW):
            w = q * SW - PW + j * DW
            ok = h_ok & (w >= 0) & (w < W)
            base = n * sxn + h * sxh + w * sxw
            if VEC > 1:
                base = tl.multiple_of(base, VEC)
            v = tl.load(x_ptr + base[:, None] + c[None, :] * sxc, mask=ok[:, None] & c_ok[None, :],
                        other=float("-inf")).to(tl.float32)
            # PyTorch's scan order and NaN rule, as in max_pool2d_fwd_rows
            take = ok[:, None] & ((v > best) | (v != v) | (best_idx < 0))
            best = tl.where(take, v, best)
            best_idx = tl.where(take, (h * W + w)[:, None], best_idx)
    offs = s[:, None] * C + c[None, :]
    ok = s_ok[:, None] & c_ok[None, :]
    tl.store(y_ptr + offs, best.to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(idx_ptr + offs, best_idx, mask=ok)


@triton.jit
def max_pool2d_bwd_rows(
    dy_ptr, idx_ptr, dx_ptr,          # dy, idx (N, C, P, Q) strided; dx (N, C, H, W) contiguous
    C, H, W, P, Q, rows,              # rows = N*C*H
    sdn, sdc, sdp, sdq,               # dy strides
    sin, sic, sip, siq,               # argmax strides
    KH, KW, SH, SW, PH, PW, DH, DW,
    NPH, NPW,                         # candidate windows per axis: ((K-1)*D) // S + 1
    OFF,                              # NPW - 1 rounded up to a multiple of VEC (span start math)
    BR: tl.constexpr, BW: tl.constexpr, SPAN: tl.constexpr, VEC: tl.constexpr, VEC_Y: tl.constexpr,
):
    # grid: (cdiv(N*C*H, BR), cdiv(W, BW)); program (i, j) owns input rows [i*BR, (i+1)*BR) in NCH
    # order x columns [j*BW, (j+1)*BW). Each pixel (h, w) visits the output windows p in
    # [floor((h+PH-(KH-1)*DH)/SH)..floor((h+PH)/SH)] (likewise q) and adds dy[p, q] where
    # argmax[p, q] == h*W + w; per candidate row p one span of argmax and of dy per tile row.
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    w0 = tl.program_id(1) * BW
    w = w0 + tl.arange(0, BW)
    r_ok = r < rows
    w_ok = w < W
    n, c, h = _split_rows(r, C, H)
    me = h[:, None] * W + w[None, :]
    q_hi = (w + PW) // SW
    a0 = _span_start((w0 + PW) // SW - (NPW - 1), OFF, VEC)
    acc = tl.zeros([BR, BW], tl.float32)
    for a in range(NPH):
        p = (h + PH) // SH - a
        p_ok = r_ok & (p >= 0) & (p < P) & (h + PH - p * SH <= (KH - 1) * DH)
        ibase = n * sin + c * sic + p * sip
        dbase = n * sdn + c * sdc + p * sdp
        ispan = acc   # placeholders when SPAN == 0 (never read)
        dspan = acc
        if SPAN > 0:
            ispan = _load_span(idx_ptr, ibase, p_ok, a0, Q, siq, SPAN, VEC, -1)
            dspan = _load_span(dy_ptr, dbase, p_ok, a0, Q, sdq, SPAN, VEC, 0.0)
        for b in range(NPW):
            qq = q_hi - b
            q_ok = w_ok & (qq >= 0) & (qq < Q) & (w + PW - qq * SW <= (KW - 1) * DW)
            win = _tap(idx_ptr, ibase, p_ok, ispan, a0, qq, q_ok, siq, SPAN, -1)
            g = _tap(dy_ptr, dbase, p_ok, dspan, a0, qq, q_ok, sdq, SPAN, 0.0).to(tl.float32)
            hit = p_ok[:, None] & q_ok[None, :] & (win == me)
            acc += tl.where(hit, g, 0.0)
    _store_rows(dx_ptr, r, w, W, r_ok[:, None] & w_ok[None, :], acc.to(dx_ptr.dtype.element_ty), VEC_Y)


@triton.jit
def max_pool2d_bwd_channels(
    dy_ptr, idx_ptr, dx_ptr,          # dy, idx (N, C, P, Q), C stride 1; dx (N, C, H, W) channels-last
    C, H, W, P, Q, pixels,            # pixels = N*H*W
    sdn, sdc, sdp, sdq,               # dy strides
    sin, sic, sip, siq,               # argmax strides
    KH, KW, SH, SW, PH, PW, DH, DW,
    NPH, NPW,                         # candidate windows per axis: ((K-1)*D) // S + 1
    BP: tl.constexpr, BC: tl.constexpr, VEC: tl.constexpr,
):
    # grid: (cdiv(N*H*W, BP), cdiv(C, BC)); program (i, j) owns input pixels [i*BP, (i+1)*BP) in
    # NHW order x channels [j*BC, (j+1)*BC). Each pixel (h, w) visits the candidate windows of
    # max_pool2d_bwd_rows and adds dy[p, q] where argmax[p, q] == h*W + w; every candidate is one
    # contiguous run of BC channels of argmax and of dy (vector loads along C).
    s, c, s_ok, c_ok = _channel_tile(pixels, C, BP, BC, VEC)
    n, h, w = _split_rows(s, H, W)
    me = (h * W + w)[:, None]
    q_hi = (w + PW) // SW
    acc = tl.zeros([BP, BC], tl.float32)
    for a in range(NPH):
        p = (h + PH) // SH - a
        p_ok = s_ok & (p >= 0) & (p < P) & (h + PH - p * SH <= (KH - 1) * DH)
        for b in range(NPW):
            qq = q_hi - b
            ok = p_ok & (qq >= 0) & (qq < Q) & (w + PW - qq * SW <= (KW - 1) * DW)
            ibase = n * sin + p * sip + qq * siq
            dbase = n * sdn + p * sdp + qq * sdq
            if VEC > 1:
                ibase = tl.multiple_of(ibase, VEC)
                dbase = tl.multiple_of(dbase, VEC)
            m = ok[:, None] & c_ok[None, :]
            win = tl.load(idx_ptr + ibase[:, None] + c[None, :] * sic, mask=m, other=-1)
            g = tl.load(dy_ptr + dbase[:, None] + c[None, :] * sdc, mask=m, other=0.0).to(tl.float32)
            acc += tl.where(m & (win == me), g, 0.0)
    tl.store(dx_ptr + s[:, None] * C + c[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=s_ok[:, None] & c_ok[None, :])


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
def avg_pool2d_fwd_rows(
    x_ptr, y_ptr,                     # x (N, C, H, W) strided; y (N, C, P, Q) contiguous
    C, H, W, P, Q, rows,              # rows = N*C*P
    sxn, sxc, sxh, sxw,
    KH, KW, SH, SW, PH, PW,
    OFF,                              # PW rounded up to a multiple of VEC
    COUNT_INCLUDE_PAD: tl.constexpr,
    BR: tl.constexpr, BQ: tl.constexpr, SPAN: tl.constexpr, VEC: tl.constexpr, VEC_Y: tl.constexpr,
):
    # grid: (cdiv(N*C*P, BR), cdiv(Q, BQ)); the tiles of max_pool2d_fwd_rows; fp32 window sum / divisor.
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    q0 = tl.program_id(1) * BQ
    q = q0 + tl.arange(0, BQ)
    r_ok = r < rows
    q_ok = q < Q
    n, c, p = _split_rows(r, C, P)
    a0 = _span_start(q0 * SW - PW, OFF, VEC)
    acc = tl.zeros([BR, BQ], tl.float32)
    for i in range(KH):
        h = p * SH - PH + i
        h_ok = r_ok & (h >= 0) & (h < H)
        rowbase = n * sxn + c * sxc + h * sxh
        span = acc    # placeholder when SPAN == 0 (never read)
        if SPAN > 0:
            span = _load_span(x_ptr, rowbase, h_ok, a0, W, sxw, SPAN, VEC, 0.0)
        for j in range(KW):
            w = q * SW - PW + j
            w_ok = q_ok & (w >= 0) & (w < W)
            v = _tap(x_ptr, rowbase, h_ok, span, a0, w, w_ok, sxw, SPAN, 0.0).to(tl.float32)
            acc += tl.where(h_ok[:, None] & w_ok[None, :], v, 0.0)
    div = _avg_pool2d_divisor(p[:, None], q[None, :], H, W, KH, KW, SH, SW, PH, PW, COUNT_INCLUDE_PAD)
    _store_rows(y_ptr, r, q, Q, r_ok[:, None] & q_ok[None, :], (acc / div).to(y_ptr.dtype.element_ty), VEC_Y)


@triton.jit
def avg_pool2d_fwd_channels(
    x_ptr, y_ptr,                     # x (N, C, H, W), C stride 1; y (N, C, P, Q) channels-last
    C, H, W, P, Q, pixels,            # pixels = N*P*Q
    sxn, sxc, sxh, sxw,
    KH, KW, SH, SW, PH, PW,
    COUNT_INCLUDE_PAD: tl.constexpr,
    BP: tl.constexpr, BC: tl.constexpr, VEC: tl.constexpr,
):
    # grid: (cdiv(N*P*Q, BP), cdiv(C, BC)); the tiles of max_pool2d_fwd_channels; fp32 sum / divisor.
    s, c, s_ok, c_ok = _channel_tile(pixels, C, BP, BC, VEC)
    n, p, q = _split_rows(s, P, Q)
    acc = tl.zeros([BP, BC], tl.float32)
    for i in range(KH):
        h = p * SH - PH + i
        h_ok = s_ok & (h >= 0) & (h < H)
        for j in range(KW):
            w = q * SW - PW + j
            ok = h_ok & (w >= 0) & (w < W)
            base = n * sxn + h * sxh + w * sxw
            if VEC > 1:
                base = tl.multiple_of(base, VEC)
            acc += tl.load(x_ptr + base[:, None] + c[None, :] * sxc, mask=ok[:, None] & c_ok[None, :],
                           other=0.0).to(tl.float32)
    div = _avg_pool2d_divisor(p, q, H, W, KH, KW, SH, SW, PH, PW, COUNT_INCLUDE_PAD)
    tl.store(y_ptr + s[:, None] * C + c[None, :], (acc / div[:, None]).to(y_ptr.dtype.element_ty),
             mask=s_ok[:, None] & c_ok[None, :])


@triton.jit
def avg_pool2d_bwd_rows(
    dy_ptr, dx_ptr,                   # dy (N, C, P, Q) strided; dx (N, C, H, W) contiguous
    C, H, W, P, Q, rows,              # rows = N*C*H
    sdn, sdc, sdp, sdq,
    KH, KW, SH, SW, PH, PW,
    NPH, NPW,                         # candidate windows per axis: (K-1) // S + 1
    OFF,                              # NPW - 1 rounded up to a multiple of VEC
    COUNT_INCLUDE_PAD: tl.constexpr,
    BR: tl.constexpr, BW: tl.constexpr, SPAN: tl.constexpr, VEC: tl.constexpr, VEC_Y: tl.constexpr,
):
    # grid: (cdiv(N*C*H, BR), cdiv(W, BW)); the tiles and candidate walk of max_pool2d_bwd_rows;
    # each pixel sums dy[p, q] / divisor(p, q) over the windows (p, q) that contain it.
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    w0 = tl.program_id(1) * BW
    w = w0 + tl.arange(0, BW)
    r_ok = r < rows
    w_ok = w < W
    n, c, h = _split_rows(r, C, H)
    q_hi = (w + PW) // SW
    a0 = _span_start((w0 + PW) // SW - (NPW - 1), OFF, VEC)
    acc = tl.zeros([BR, BW], tl.float32)
    for a in range(NPH):
        p = (h + PH) // SH - a
        p_ok = r_ok & (p >= 0) & (p < P) & (h + PH - p * SH <= KH - 1)
        dbase = n * sdn + c * sdc + p * sdp
        dspan = acc   # placeholder when SPAN == 0 (never read)
        if SPAN > 0:
            dspan = _load_span(dy_ptr, dbase, p_ok, a0, Q, sdq, SPAN, VEC, 0.0)
        for b in range(NPW):
            qq = q_hi - b
            q_ok = w_ok & (qq >= 0) & (qq < Q) & (w + PW - qq * SW <= KW - 1)
            g = _tap(dy_ptr, dbase, p_ok, dspan, a0, qq, q_ok, sdq, SPAN, 0.0).to(tl.float32)
            ok = p_ok[:, None] & q_ok[None, :]
            div = _avg_pool2d_divisor(p[:, None], qq[None, :], H, W, KH, KW, SH, SW, PH, PW, COUNT_INCLUDE_PAD)
            acc += tl.where(ok, g / tl.where(ok, div, 1.0), 0.0)    # keep div > 0 off the windows
    _store_rows(dx_ptr, r, w, W, r_ok[:, None] & w_ok[None, :], acc.to(dx_ptr.dtype.element_ty), VEC_Y)


@triton.jit
def avg_pool2d_bwd_channels(
    dy_ptr, dx_ptr,                   # dy (N, C, P, Q), C stride 1; dx (N, C, H, W) channels-last
    C, H, W, P, Q, pixels,            # pixels = N*H*W
    sdn, sdc, sdp, sdq,
    KH, KW, SH, SW, PH, PW,
    NPH, NPW,                         # candidate windows per axis: (K-1) // S + 1
    COUNT_INCLUDE_PAD: tl.constexpr,
    BP: tl.constexpr, BC: tl.constexpr, VEC: tl.constexpr,
):
    # grid: (cdiv(N*H*W, BP), cdiv(C, BC)); the tiles of max_pool2d_bwd_channels; each pixel sums
    # dy[p, q] / divisor(p, q) over the windows (p, q) that contain it, one run of BC channels each.
    s, c, s_ok, c_ok = _channel_tile(pixels, C, BP, BC, VEC)
    n, h, w = _split_rows(s, H, W)
    q_hi = (w + PW) // SW
    acc = tl.zeros([BP, BC], tl.float32)
    for a in range(NPH):
        p = (h + PH) // SH - a
        p_ok = s_ok & (p >= 0) & (p < P) & (h + PH - p * SH <= KH - 1)
        for b in range(NPW):
            qq = q_hi - b
            ok = p_ok & (qq >= 0) & (qq < Q) & (w + PW - qq * SW <= KW - 1)
            dbase = n * sdn + p * sdp + qq * sdq
            if VEC > 1:
                dbase = tl.multiple_of(dbase, VEC)
            m = ok[:, None] & c_ok[None, :]
            g = tl.load(dy_ptr + dbase[:, None] + c[None, :] * sdc, mask=m, other=0.0).to(tl.float32)
            div = _avg_pool2d_divisor(p, qq, H, W, KH, KW, SH, SW, PH, PW, COUNT_INCLUDE_PAD)
            acc += tl.where(m, g / tl.where(ok, div, 1.0)[:, None], 0.0)    # keep div > 0 off the windows
    tl.store(dx_ptr + s[:, None] * C + c[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=s_ok[:, None] & c_ok[None, :])
