"""Group normalization (instance norm = one channel per group), forward and backward.

x is seen as (N, C, L) with strides (sn, sc, sl) (L = prod of the spatial dims), so NCHW and
channels-last read in place. Group (n, g) covers channels [g*CPG, (g+1)*CPG) x all L positions,
walked in [BLOCK_C, BLOCK_L] tiles.

  group_norm_fwd_fused   (N*G,)   per-tile two-pass mean/M2 merged with Chan's formula, then
                                  y = xhat * w[c] + b[c]
  group_norm_bwd_dx      (N*G,)   sums of w*dy and w*dy*xhat over the group, then dx; also the
                                  per-(n, c) sums of dy*xhat and dy -> (N, C) partials
  sum_partial_rows_pair (layer_norm.py) adds the N partial rows -> dweight, dbias
All arithmetic and statistics are float32.
"""
import triton
import triton.language as tl

# (BLOCK_C, BLOCK_L) per element width; the launcher picks the least lane waste on (CPG, L).
TILES = {
    "fp32": ((1, 2048), (4, 512), (16, 128), (64, 32)),
    "fp16": ((1, 4096), (4, 1024), (16, 256), (64, 64)),
}
NUM_WARPS = 4


@triton.jit
def group_norm_fwd_fused(
    x_ptr, y_ptr,                     # (N, C, L) views with strides
    w_ptr, b_ptr,                     # (C,) or dummies
    mean_ptr, rstd_ptr,               # out: (N, G) fp32, contiguous
    C, L, G, CPG, eps,                # CPG = C // G channels per group
    sxn, sxc, sxl, syn, syc, syl,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    # grid: (N*G,); program i = n*G + g owns group g of sample n.
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    c_first = (pid % G) * CPG
    xb = x_ptr + n * sxn
    yb = y_ptr + n * syn
    ci = tl.arange(0, BLOCK_C)
    li = tl.arange(0, BLOCK_L)
    count = 0.0
    mean = 0.0
    m2 = 0.0
    for c0 in range(0, CPG, BLOCK_C):
        cs = c_first + c0 + ci
        cmask = c0 + ci < CPG
        coff = cs.to(tl.int64)[:, None] * sxc
        for l0 in range(0, L, BLOCK_L):
            ls = l0 + li
            m = cmask[:, None] & (ls < L)[None, :]
            v = tl.load(xb + coff + ls.to(tl.int64)[None, :] * sxl, mask=m, other=0.0).to(tl.float32)
            nb = (tl.minimum(CPG - c0, BLOCK_C) * tl.minimum(L - l0, BLOCK_L)).to(tl.float32)
            bmean = tl.sum(tl.sum(v, axis=1), axis=0) / nb
            dv = tl.where(m, v - bmean, 0.0)
            bm2 = tl.sum(tl.sum(dv * dv, axis=1), axis=0)
            tot = count + nb
            delta = bmean - mean
            mean += delta * (nb / tot)
            m2 += bm2 + delta * delta * (count * (nb / tot))
            count = tot
    rstd = 1.0 / tl.sqrt_rn(m2 / count + eps)
    tl.store(mean_ptr + pid, mean)
    tl.store(rstd_ptr + pid, rstd)
    for c0 in range(0, CPG, BLOCK_C):
        cs = c_first + c0 + ci
        cmask = c0 + ci < CPG
        scale = tl.zeros([BLOCK_C], tl.float32) + rstd
        if HAS_W:
            scale = scale * tl.load(w_ptr + cs, mask=cmask, other=0.0).to(tl.float32)
        shift = tl.zeros([BLOCK_C], tl.float32)
        if HAS_B:
            shift = tl.load(b_ptr + cs, mask=cmask, other=0.0).to(tl.float32)
        cs64 = cs.to(tl.int64)[:, None]
        for l0 in range(0, L, BLOCK_L):
            ls = l0 + li
            m = cmask[:, None] & (ls < L)[None, :]
            ls64 = ls.to(tl.int64)[None, :]
            v = tl.load(xb + cs64 * sxc + ls64 * sxl, mask=m, other=0.0).to(tl.float32)
            y = (v - mean) * scale[:, None] + shift[:, None]
            tl.store(yb + cs64 * syc + ls64 * syl, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def group_norm_bwd_dx(
    dy_ptr, x_ptr, dx_ptr,            # (N, C, L) views with strides
    w_ptr, mean_ptr, rstd_ptr,        # w (C,) or dummy; mean/rstd (N, G) fp32
    pdw_ptr, pdb_ptr,                 # out when HAS_W: (N, C) fp32 sums over L of dy*xhat and dy
    C, L, G, CPG,
    sdn, sdc, sdl, sxn, sxc, sxl, son, soc, sol,
    HAS_W: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    # grid: (N*G,); program i = n*G + g: c1 = mean(wdy * xhat), c2 = mean(wdy) over the group
    # (wdy = w[c] * dy), then dx = rstd * (wdy - xhat * c1 - c2).
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    c_first = (pid % G) * CPG
    mean = tl.load(mean_ptr + pid)
    rstd = tl.load(rstd_ptr + pid)
    xb = x_ptr + n * sxn
    db = dy_ptr + n * sdn
    ob = dx_ptr + n * son
    ci = tl.arange(0, BLOCK_C)
    li = tl.arange(0, BLOCK_L)
    acc1 = tl.zeros([BLOCK_C], tl.float32)
    acc2 = tl.zeros([BLOCK_C], tl.float32)
    for c0 in range(0, CPG, BLOCK_C):
        cs = c_first + c0 + ci
        cmask = c0 + ci < CPG
        cs64 = cs.to(tl.int64)[:, None]
        w = tl.zeros([BLOCK_C], tl.float32) + 1.0
        if HAS_W:
            w = tl.load(w_ptr + cs, mask=cmask, other=0.0).to(tl.float32)
        sum_gx = tl.zeros([BLOCK_C], tl.float32)          # per channel: sum of dy * xhat
        sum_g = tl.zeros([BLOCK_C], tl.float32)           # per channel: sum of dy
        for l0 in range(0, L, BLOCK_L):
            ls = l0 + li
            m = cmask[:, None] & (ls < L)[None, :]
            ls64 = ls.to(tl.int64)[None, :]
            x = tl.load(xb + cs64 * sxc + ls64 * sxl, mask=m, other=0.0).to(tl.float32)
            g = tl.load(db + cs64 * sdc + ls64 * sdl, mask=m, other=0.0).to(tl.float32)
            xhat = tl.where(m, (x - mean) * rstd, 0.0)
            sum_gx += tl.sum(g * xhat, axis=1)
            sum_g += tl.sum(g, axis=1)
        acc1 += w * sum_gx
        acc2 += w * sum_g
        if HAS_W:
            tl.store(pdw_ptr + n * C + cs, sum_gx, mask=cmask)
            tl.store(pdb_ptr + n * C + cs, sum_g, mask=cmask)
    cnt = (CPG * L).to(tl.float32)
    c1 = tl.sum(acc1, axis=0) / cnt
    c2 = tl.sum(acc2, axis=0) / cnt
    for c0 in range(0, CPG, BLOCK_C):
        cs = c_first + c0 + ci
        cmask = c0 + ci < CPG
        cs64 = cs.to(tl.int64)[:, None]
        w = tl.zeros([BLOCK_C], tl.float32) + 1.0
        if HAS_W:
            w = tl.load(w_ptr + cs, mask=cmask, other=0.0).to(tl.float32)
        for l0 in range(0, L, BLOCK_L):
            ls = l0 + li
            m = cmask[:, None] & (ls < L)[None, :]
            ls64 = ls.to(tl.int64)[None, :]
            x = tl.load(xb + cs64 * sxc + ls64 * sxl, mask=m, other=0.0).to(tl.float32)
            g = tl.load(db + cs64 * sdc + ls64 * sdl, mask=m, other=0.0).to(tl.float32)
            xhat = (x - mean) * rstd
            dx = (g * w[:, None] - (xhat * c1 + c2)) * rstd
            tl.store(ob + cs64 * soc + ls64 * sol, dx.to(dx_ptr.dtype.element_ty), mask=m)


def compile_cases():
    """(case_name, jit_fn, signature, constexprs, options, expect_wgmma) for every kernel x tile."""
    opts = dict(num_warps=NUM_WARPS, num_stages=1)
    i32, i64, f32, pf = "i32", "i64", "fp32", "*fp32"
    geo = {"C": i32, "L": i32, "G": i32, "CPG": i32}

    def strides(*names):
        return {f"s{a}{b}": i64 for a in names for b in "ncl"}

    # bf16 shares the fp16 tile table: its first tile is enough to prove the bf16 path compiles
    for dt, tiles in (*TILES.items(), ("bf16", TILES["fp16"][:1])):
        p = "*" + dt
        for bc, bl in tiles:
            tag = f"{dt}_c{bc}_l{bl}"
            sig = {"x_ptr": p, "y_ptr": p, "w_ptr": pf, "b_ptr": pf, "mean_ptr": pf, "rstd_ptr": pf,
                   **geo, "eps": f32, **strides("x", "y"), "HAS_W": "constexpr", "HAS_B": "constexpr",
                   "BLOCK_C": "constexpr", "BLOCK_L": "constexpr"}
            yield (f"group_norm_fwd_fused_{tag}", group_norm_fwd_fused, sig,
                   {"HAS_W": True, "HAS_B": True, "BLOCK_C": bc, "BLOCK_L": bl}, opts, False)
            sig = {"dy_ptr": p, "x_ptr": p, "dx_ptr": p, "w_ptr": pf, "mean_ptr": pf, "rstd_ptr": pf,
                   "pdw_ptr": pf, "pdb_ptr": pf, **geo, **strides("d", "x", "o"),
                   "HAS_W": "constexpr", "BLOCK_C": "constexpr", "BLOCK_L": "constexpr"}
            yield (f"group_norm_bwd_dx_{tag}", group_norm_bwd_dx, sig,
                   {"HAS_W": True, "BLOCK_C": bc, "BLOCK_L": bl}, opts, False)
