"""conv2d backward kernels: dX, dW (split-K) and db.

Shapes: x / dx (N, C, H, W), w / dw (K, C/groups, R, S), dy (N, K, P, Q), any strides.
Notation: Cg = C/groups, Kg = K/groups, g = group, ph/pw = begin padding.

dX -- implicit GEMM of dY with the flipped weights, no zero-inserted dY. An input pixel h receives
  from tap r iff (h + ph - r*dil_h) is a multiple of stride_h, which depends only on h mod stride_h.
  So dx is computed per *stride-residue class* (a, b) = (h mod sh, w mod sw): within a class the
  valid taps are r = r0 + t*r_step (r_step = sh / gcd(sh, dil_h)) for t < nr, and the dy row is
  p = i + p0 - t*dp with h = a + sh*i -- all integers from a small per-class table built by the
  launcher, so no lane does a division and no masked-off tap is multiplied (stride 2: 4 classes,
  each doing 1/4 of the taps). Per class and group the GEMM is
  dX[Mc, Cg] = dY[Mc, Kg*taps] @ W[Kg*taps, Cg], Mc = N * ceil((H-a)/sh) * ceil((W-b)/sw).
  ``conv2d_bwd_dx_implicit_gemm`` (tl.dot; taps outer / Kg chunks inner, or FLAT_K for small Kg) and
  ``conv2d_bwd_dx_direct`` (FMA; columns of different groups in one tile, for depthwise / tiny Cg).

dW -- per group dW[Kg, Cg*R*S] = dY^T[Kg, NPQ] @ im2col(x)[NPQ, Cg*R*S], a GEMM whose reduction
  NPQ = N*P*Q is long while the output is small, so the reduction is split SPLIT ways (grid axis 2):
  each split writes its fp32 partial tile into a workspace (SPLIT, K, Cg, R, S), and
  ``conv2d_bwd_sum_splits`` adds the SPLIT partials in a fixed order and casts to dw's dtype. We use
  a workspace rather than fp32 atomics so the result is deterministic (bit-identical from run to run,
  which atomics' arbitrary ordering is not) and half-precision dw needs no second pass over an fp32
  copy anyway; the extra traffic is SPLIT * |dw| * 4 bytes, small next to reading dY and x.
  With SPLIT == 1 the kernel stores straight into dw. ``conv2d_bwd_dw_implicit_gemm`` (tl.dot;
  column tile = one tap x BLOCK_N channels, or FLAT_N (c, r, s) columns for small Cg) and
  ``conv2d_bwd_dw_direct`` (FMA + row reduction; columns = (k, c) pairs across groups, one tap per
  program, for depthwise / tiny Kg).

db -- ``conv2d_bwd_db``: column sums of dY over (N, P, Q), split the same way.
"""
import triton
import triton.language as tl

from ._config import INTERP_GEMM_CONFIGS, config, tuned
from ._config import gemm_config as _cfg
from ._gemm import grouped_tile_ids as _tile_ids
from .conv2d_fwd import CONV_KEY, INTERP_DIRECT_CONFIGS, _flat_extent

DY_KEY = ["sdn", "sdk", "sdp", "sdq"]

# dX: the forward's big tiles first (picked only where they fill two waves, conv_policy.BIG_TILE)
DX_GEMM_CONFIGS = [
    _cfg(128, 256, 64, 3, 8),
    _cfg(256, 128, 64, 3, 8),
    _cfg(128, 128, 64, 3, 8),
    _cfg(128, 64, 64, 4, 4),
    _cfg(64, 128, 64, 4, 4),
    _cfg(64, 64, 64, 4, 4),
]
DW_GEMM_CONFIGS = [
    _cfg(128, 128, 64, 3, 8),
    _cfg(64, 128, 64, 4, 4),
    _cfg(128, 64, 64, 4, 4),
    _cfg(64, 64, 64, 4, 4),
]
# Ampere tables of the picker (``sm80_configs``), as the forward's
DX_GEMM_SM80_CONFIGS = [
    _cfg(128, 128, 32, 4, 4),
    _cfg(128, 64, 32, 4, 4),
    _cfg(64, 64, 32, 4, 4),
]
DW_GEMM_SM80_CONFIGS = DX_GEMM_SM80_CONFIGS
DX_DIRECT_CONFIGS = [
    config(BLOCK_M=128, BLOCK_N=32, num_stages=2),
    config(BLOCK_M=64, BLOCK_N=64, num_stages=2),
]
DW_DIRECT_CONFIGS = [
    config(BLOCK_M=64, BLOCK_N=64, num_stages=2),
    config(BLOCK_M=128, BLOCK_N=32, num_stages=2),
]
DB_CONFIGS = DW_DIRECT_CONFIGS                # the same column-reduction tiles
SUM_SPLITS_CONFIGS = [config(BLOCK=1024)]
INTERP_SUM_CONFIGS = [config(BLOCK=64, num_warps=1)]


def _keep_fitting(configs, rows, cols):
    """Drop tiles far larger than a rows x cols GEMM output (BLOCK_M vs rows, BLOCK_N vs cols)."""
    keep = [c for c in configs
            if c.kwargs["BLOCK_M"] <= max(64, triton.next_power_of_2(rows))
            and c.kwargs["BLOCK_N"] <= max(64, triton.next_power_of_2(cols))]
    return keep or configs[:1]


def _prune_dx(configs, named_args, **kwargs):
    """dX tile: rows = pixels of one residue class (about N*H*W / (sh*sw)), columns = C/groups."""
    a = named_args
    rows = a["N"] * -(-a["H"] // a["stride_h"]) * -(-a["W"] // a["stride_w"])
    return _keep_fitting(configs, rows, a["C"] // a["groups"])


def _prune_dw(configs, named_args, **kwargs):
    """dW tile: rows = K/groups, columns = C/groups channels of one tap (all C/groups*R*S if FLAT_N)."""
    a = named_args
    cols = a["C"] // a["groups"] * (a["R"] * a["S"] if kwargs.get("FLAT_N") else 1)
    return _keep_fitting(configs, a["K"] // a["groups"], cols)


@triton.jit
def _class_rows(tab_ptr, cls, N, INT64: tl.constexpr):
    """Load one residue class: (a, b, Hc, Wc, r0, nr, p0, s0, ns, q0) and its row count N*Hc*Wc
    (Hc, Wc and so every pixel index derived from them in int64 when INT64)."""
    t = tab_ptr + cls * 10
    a = tl.load(t + 0)
    b = tl.load(t + 1)
    Hc = tl.load(t + 2)
    Wc = tl.load(t + 3)
    if INT64:
        Hc = Hc.to(tl.int64)
        Wc = Wc.to(tl.int64)
    r0 = tl.load(t + 4)
    nr = tl.load(t + 5)
    p0 = tl.load(t + 6)
    s0 = tl.load(t + 7)
    ns = tl.load(t + 8)
    q0 = tl.load(t + 9)
    return a, b, Hc, Wc, r0, nr, p0, s0, ns, q0, N * Hc * Wc


@triton.autotune(configs=tuned(DX_GEMM_CONFIGS, INTERP_GEMM_CONFIGS), key=CONV_KEY + DY_KEY + ["PRECISION", "SPLIT"],
                 prune_configs_by={"early_config_prune": _prune_dx})
@triton.jit
def conv2d_bwd_dx_implicit_gemm(
    dy_ptr, w_ptr, dx_ptr, tab_ptr,
    N, C, H, W, K, R, S, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups,
    r_step, s_step, dp_r, dq_s,
    sdn, sdk, sdp, sdq, swk, swc, swr, sws, sxn, sxc, sxh, sxw,
    SPLIT, split_len, sxs,
    FLAT_K: tl.constexpr, INT64: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """dx[n, g*Cg+c, h, w] = sum_{k<Kg, valid taps} dy[n, g*Kg+k, p, q] * w[g*Kg+k, c, r, s].

    Split-K (SPLIT > 1): the residue class and split share grid axis 2 (cls = axis2 % classes,
    split = axis2 // classes); split s runs K steps [s*split_len, (s+1)*split_len) of the class's
    loop and stores its fp32 partial at dx_ptr + s*sxs (a workspace the launcher sums in a fixed
    order; an empty range stores zeros, so every split covers every pixel).

    Grid: (cdiv(max class rows, BLOCK_M) * cdiv(Cg, BLOCK_N), groups, stride_h * stride_w);
    axis 0 = (row tile, column tile) in grouped order within the residue class of axis 2 (programs
    past that class's row count exit), axis 1 = the group. Rows = (n, i, j) of the class's pixels
    h = a + sh*i, w = b + sw*j; columns = input channels of the group.
    """
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    cls = tl.program_id(2)
    n_cls = stride_h * stride_w             # SPLIT == 1: axis 2 is the class alone, sid = 0
    sid = cls // n_cls
    cls = cls % n_cls
    if INT64:
        sid = sid.to(tl.int64)
    a, b, Hc, Wc, r0, nr, p0, s0, ns, q0, Mc = _class_rows(tab_ptr, cls, N, INT64)
    Cg = C // groups
    Kg = K // groups
    num_m = tl.cdiv(Mc, BLOCK_M)
    num_n = tl.cdiv(Cg, BLOCK_N)
    if pid >= num_m * num_n:
        return
    pid_m, pid_n = _tile_ids(pid, num_m, num_n, GROUP_M)
    if INT64:
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
        grp = grp.to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < Mc
    c_ok = offs_c < Cg
    n = offs_m // (Hc * Wc)
    ij = offs_m % (Hc * Wc)
    i = ij // Wc
    j = ij % Wc
    dy_base = dy_ptr + grp * Kg * sdk + n * sdn
    w_base = w_ptr + grp * Kg * swk + offs_c * swc
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FLAT_K:
        # reduction index t = (k * nr + tr) * ns + ts, decoded per element (small Kg)
        nt = nr * ns
        L = Kg * nt
        t_lo = sid * split_len * BLOCK_K
        t_hi = tl.minimum(L, t_lo + split_len * BLOCK_K)
        for t0 in range(t_lo, t_hi, BLOCK_K):
            t = t0 + kk
            t_ok = t < L
            k = t // nt
            rs = t % nt
            tr = rs // ns
            ts = rs % ns
            p = i[:, None] + (p0 - tr * dp_r)[None, :]
            q = j[:, None] + (q0 - ts * dq_s)[None, :]
            a_ok = m_ok[:, None] & t_ok[None, :] & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
            av = tl.load(dy_base[:, None] + (k * sdk)[None, :] + p * sdp + q * sdq, mask=a_ok, other=0.0)
            w_off = k * swk + (r0 + tr * r_step) * swr + (s0 + ts * s_step) * sws
            bv = tl.load(w_base[None, :] + w_off[:, None], mask=t_ok[:, None] & c_ok[None, :], other=0.0)
            acc = tl.dot(av, bv, acc, input_precision=PRECISION)
    else:
        # valid taps outer, BLOCK_K output channels inner, as one flat (pipelined) loop
        num_kb = tl.cdiv(Kg, BLOCK_K)
        it_lo = sid * split_len
        it_hi = tl.minimum(nr * ns * num_kb, it_lo + split_len)
        for it in range(it_lo, it_hi):
            tap = it // num_kb
            k = (it - tap * num_kb) * BLOCK_K + kk
            tr = tap // ns
            ts = tap - tr * ns
            p = i + (p0 - tr * dp_r)
            q = j + (q0 - ts * dq_s)
            row_ok = m_ok & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
            k_ok = k < Kg
            av = tl.load(dy_base[:, None] + (p * sdp + q * sdq)[:, None] + (k * sdk)[None, :],
                         mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w_off = k * swk + (r0 + tr * r_step) * swr + (s0 + ts * s_step) * sws
            bv = tl.load(w_base[None, :] + w_off[:, None], mask=k_ok[:, None] & c_ok[None, :], other=0.0)
            acc = tl.dot(av, bv, acc, input_precision=PRECISION)
    h = a + stride_h * i
    w = b + stride_w * j
    dx_off = (n * sxn + h * sxh + w * sxw)[:, None] + ((grp * Cg + offs_c) * sxc)[None, :]
    dx_out = dx_ptr
    if SPLIT > 1:
        dx_out = dx_ptr + sid * sxs
    tl.store(dx_out + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


@triton.autotune(configs=tuned(DX_DIRECT_CONFIGS, INTERP_DIRECT_CONFIGS), key=CONV_KEY + DY_KEY)
@triton.jit
def conv2d_bwd_dx_direct(
    dy_ptr, w_ptr, dx_ptr, tab_ptr,
    N, C, H, W, K, R, S, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups,
    r_step, s_step, dp_r, dq_s,
    sdn, sdk, sdp, sdq, swk, swc, swr, sws, sxn, sxc, sxh, sxw,
    GROUPED: tl.constexpr, INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Direct dX (fp32 FMA), same residue-class decomposition as the implicit GEMM.

    Grid: (cdiv(max class rows, BLOCK_M), cdiv(C, BLOCK_N), stride_h * stride_w); axis 0 = BLOCK_M
    pixels of the class of axis 2, axis 1 = BLOCK_N input channels over all groups (each column's
    group g(c) = c // Cg picks its dy channels). GROUPED=False: one dy value per pixel, broadcast.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    cls = tl.program_id(2)
    a, b, Hc, Wc, r0, nr, p0, s0, ns, q0, Mc = _class_rows(tab_ptr, cls, N, INT64)
    if INT64:
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
    if pid_m * BLOCK_M >= Mc:
        return
    Cg = C // groups
    Kg = K // groups
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < Mc
    c_ok = offs_c < C
    n = offs_m // (Hc * Wc)
    ij = offs_m % (Hc * Wc)
    i = ij // Wc
    j = ij % Wc
    k_first = (offs_c // Cg) * Kg            # first output channel of each column's group
    ci = offs_c % Cg
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, Kg):
        for tr in range(0, nr):
            p = i + (p0 - tr * dp_r)
            p_ok = m_ok & (p >= 0) & (p < P)
            r = r0 + tr * r_step
            for ts in range(0, ns):
                q = j + (q0 - ts * dq_s)
                pix_ok = p_ok & (q >= 0) & (q < Q)
                pix = n * sdn + p * sdp + q * sdq
                s = s0 + ts * s_step
                wv = tl.load(w_ptr + (k_first + k) * swk + ci * swc + r * swr + s * sws, mask=c_ok, other=0.0)
                if GROUPED:
                    dv = tl.load(dy_ptr + pix[:, None] + ((k_first + k) * sdk)[None, :],
                                 mask=pix_ok[:, None] & c_ok[None, :], other=0.0)
                    acc += dv.to(tl.float32) * wv.to(tl.float32)[None, :]
                else:
                    dv = tl.load(dy_ptr + pix + k * sdk, mask=pix_ok, other=0.0)
                    acc += dv.to(tl.float32)[:, None] * wv.to(tl.float32)[None, :]
    h = a + stride_h * i
    w = b + stride_w * j
    dx_off = (n * sxn + h * sxh + w * sxw)[:, None] + (offs_c * sxc)[None, :]
    tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])


@triton.autotune(configs=tuned(DW_GEMM_CONFIGS, INTERP_GEMM_CONFIGS), key=CONV_KEY + DY_KEY + ["PRECISION", "SPLIT"],
                 prune_configs_by={"early_config_prune": _prune_dw})
@triton.jit
def conv2d_bwd_dw_implicit_gemm(
    dy_ptr, x_ptr, out_ptr,
    N, C, H, W, K, R, S, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups,
    SPLIT, split_len,
    sdn, sdk, sdp, sdq, sxn, sxc, sxh, sxw, sos, sok, soc, sor, sss,
    FLAT_N: tl.constexpr, INT64: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Split-K dW: out[split, g*Kg+k, c, r, s] = sum over this split's (n, p, q) of
    dy[n, g*Kg+k, p, q] * x[n, g*Cg+c, p*sh-ph+r*dh, q*sw-pw+s*dw].

    Grid: (cdiv(Kg, BLOCK_M) * column tiles, groups, SPLIT); axis 0 = (row tile of output channels,
    column tile), axis 1 = group, axis 2 = the split: (n, p, q) in [split*split_len, +split_len).
    Column tiles: FLAT_N=False -> R*S*cdiv(Cg, BLOCK_N) tiles, each one tap (r, s) x BLOCK_N
    channels (channel-contiguous x loads for channels-last x); FLAT_N=True -> cdiv(Cg*R*S, BLOCK_N)
    tiles of flattened (c, r, s) columns (small Cg). out is dw itself when SPLIT == 1, else the fp32
    workspace; strides sos (split), sok, soc, sor, sss.
    """
    pid = tl.program_id(0)
    grp = tl.program_id(1)
    split = tl.program_id(2)
    Cg = C // groups
    Kg = K // groups
    RS = R * S
    num_m = tl.cdiv(Kg, BLOCK_M)
    if FLAT_N:
        num_n = tl.cdiv(Cg * RS, BLOCK_N)
    else:
        num_cb = tl.cdiv(Cg, BLOCK_N)
        num_n = RS * num_cb
    pid_m, pid_n = _tile_ids(pid, num_m, num_n, GROUP_M)
    if INT64:
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
        grp = grp.to(tl.int64)
        split = split.to(tl.int64)
    offs_k = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    k_ok = offs_k < Kg
    cols = tl.arange(0, BLOCK_N)
    if FLAT_N:
        jcol = pid_n * BLOCK_N + cols
        col_ok = jcol < Cg * RS
        c = jcol // RS
        rs = jcol % RS
        r = rs // S
        s = rs % S
    else:
        rs = pid_n // num_cb
        c = (pid_n - rs * num_cb) * BLOCK_N + cols
        col_ok = c < Cg
        r = rs // S
        s = rs - r * S
    PQ = P * Q
    start = split * split_len
    end = tl.minimum(start + split_len, _flat_extent(N, PQ, INT64))
    dy_base = dy_ptr + ((grp * Kg + offs_k) * sdk)[:, None]
    x_base = x_ptr + grp * Cg * sxc
    rows = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for m0 in range(start, end, BLOCK_K):
        m = m0 + rows
        m_ok = m < end
        n = m // PQ
        pq = m % PQ
        p = pq // Q
        q = pq % Q
        av = tl.load(dy_base + (n * sdn + p * sdp + q * sdq)[None, :], mask=k_ok[:, None] & m_ok[None, :],
                     other=0.0)
        if FLAT_N:
            h = (p * stride_h - pad_h)[:, None] + (r * dil_h)[None, :]
            w = (q * stride_w - pad_w)[:, None] + (s * dil_w)[None, :]
            b_ok = m_ok[:, None] & col_ok[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            bv = tl.load(x_base + (n * sxn)[:, None] + (c * sxc)[None, :] + h * sxh + w * sxw, mask=b_ok, other=0.0)
        else:
            h = p * stride_h - pad_h + r * dil_h
            w = q * stride_w - pad_w + s * dil_w
            row_ok = m_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            bv = tl.load(x_base + (n * sxn + h * sxh + w * sxw)[:, None] + (c * sxc)[None, :],
                         mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(av, bv, acc, input_precision=PRECISION)
    o_off = split * sos + ((grp * Kg + offs_k) * sok)[:, None] + (c * soc + r * sor + s * sss)[None, :]
    tl.store(out_ptr + o_off, acc.to(out_ptr.dtype.element_ty), mask=k_ok[:, None] & col_ok[None, :])


@triton.autotune(configs=tuned(DW_DIRECT_CONFIGS, INTERP_DIRECT_CONFIGS), key=CONV_KEY + DY_KEY + ["SPLIT"])
@triton.jit
def conv2d_bwd_dw_direct(
    dy_ptr, x_ptr, out_ptr,
    N, C, H, W, K, R, S, P, Q,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups,
    SPLIT, split_len,
    sdn, sdk, sdp, sdq, sxn, sxc, sxh, sxw, sos, sok, soc, sor, sss,
    INT64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Direct split-K dW (fp32 FMA + reduction over rows), for depthwise / tiny K/groups.

    Grid: (cdiv(K*Cg, BLOCK_N), R*S, SPLIT); axis 0 = BLOCK_N columns j = (k, c) = (j // Cg, j % Cg)
    over all groups (column j reads dy channel k and x channel g(k)*Cg + c), axis 1 = the tap
    (r, s), axis 2 = the split of (n, p, q), BLOCK_M rows per step.
    """
    pid_n = tl.program_id(0)
    rs = tl.program_id(1)
    split = tl.program_id(2)
    if INT64:
        pid_n = pid_n.to(tl.int64)
        split = split.to(tl.int64)
    Cg = C // groups
    Kg = K // groups
    r = rs // S
    s = rs % S
    jcol = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = jcol < K * Cg
    k = jcol // Cg
    c = jcol % Cg
    xc = (k // Kg) * Cg + c
    PQ = P * Q
    start = split * split_len
    end = tl.minimum(start + split_len, _flat_extent(N, PQ, INT64))
    rows = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for m0 in range(start, end, BLOCK_M):
        m = m0 + rows
        m_ok = m < end
        n = m // PQ
        pq = m % PQ
        p = pq // Q
        q = pq % Q
        h = p * stride_h - pad_h + r * dil_h
        w = q * stride_w - pad_w + s * dil_w
        x_ok = m_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        dv = tl.load(dy_ptr + (n * sdn + p * sdp + q * sdq)[:, None] + (k * sdk)[None, :],
                     mask=m_ok[:, None] & col_ok[None, :], other=0.0)
        xv = tl.load(x_ptr + (n * sxn + h * sxh + w * sxw)[:, None] + (xc * sxc)[None, :],
                     mask=x_ok[:, None] & col_ok[None, :], other=0.0)
        acc += dv.to(tl.float32) * xv.to(tl.float32)
    tot = tl.sum(acc, axis=0)
    o_off = split * sos + k * sok + c * soc + r * sor + s * sss
    tl.store(out_ptr + o_off, tot.to(out_ptr.dtype.element_ty), mask=col_ok)


@triton.autotune(configs=tuned(DB_CONFIGS, INTERP_DIRECT_CONFIGS), key=["N", "K", "P", "Q", "SPLIT"] + DY_KEY)
@triton.jit
def conv2d_bwd_db(
    dy_ptr, out_ptr, N, K, P, Q, SPLIT, split_len, sdn, sdk, sdp, sdq, sos,
    INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """db partials: out[split, k] = sum of dy[n, k, p, q] over this split's (n, p, q).

    Grid: (cdiv(K, BLOCK_N), SPLIT); axis 0 = BLOCK_N output channels, axis 1 = the split of the
    N*P*Q rows, read BLOCK_M rows at a time. out is db itself when SPLIT == 1 (sos unused).
    """
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    if INT64:
        pid_n = pid_n.to(tl.int64)
        split = split.to(tl.int64)
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_ok = offs_k < K
    PQ = P * Q
    start = split * split_len
    end = tl.minimum(start + split_len, _flat_extent(N, PQ, INT64))
    rows = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for m0 in range(start, end, BLOCK_M):
        m = m0 + rows
        m_ok = m < end
        n = m // PQ
        pq = m % PQ
        p = pq // Q
        q = pq % Q
        dv = tl.load(dy_ptr + (n * sdn + p * sdp + q * sdq)[:, None] + (offs_k * sdk)[None, :],
                     mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        acc += dv.to(tl.float32)
    tot = tl.sum(acc, axis=0)
    tl.store(out_ptr + split * sos + offs_k, tot.to(out_ptr.dtype.element_ty), mask=k_ok)


@triton.autotune(configs=tuned(SUM_SPLITS_CONFIGS, INTERP_SUM_CONFIGS), key=["L", "SPLIT"])
@triton.jit
def conv2d_bwd_sum_splits(ws_ptr, out_ptr, L, SPLIT, INT64: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = sum_{s < SPLIT} ws[s, i] in order s = 0, 1, ... (deterministic), cast to out's dtype.

    Grid: (cdiv(L, BLOCK),); one program = BLOCK consecutive elements of the contiguous output.
    """
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    ok = offs < L
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    ws = ws_ptr + offs
    for _ in range(0, SPLIT):
        acc += tl.load(ws, mask=ok, other=0.0)
        ws += L                                   # pointer steps: no int32 product s * L to wrap
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


conv2d_bwd_dx_implicit_gemm.sm80_configs = DX_GEMM_SM80_CONFIGS
conv2d_bwd_dw_implicit_gemm.sm80_configs = DW_GEMM_SM80_CONFIGS
