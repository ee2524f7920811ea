"""conv2d on the cupy backend: launchers for kernels/cuda/conv2d_fwd.cu and conv2d_bwd.cu.

Arrays are cupy.ndarray (float32, float16, bfloat16); accumulation is always float32. The direct
kernels read x / dy through their strides (no copy); the implicit-GEMM kernels read NHWC copies of
x and dy (free for channels-last inputs) and re-laid-out weights, made here with cupy. 16-bit
tensors are re-laid-out through a uint16 view, so no cupy arithmetic on bfloat16 is needed.
Outputs are new C-contiguous arrays of x's dtype.

Algorithms (``algo='auto'``: :func:`choose_algo`; backward: :func:`choose_bwd_algos`, overridable
with the module attribute ``BWD_ALGO`` since the op contract's backward has no algo argument):
  forward  direct (smem halo tile, 4 or 1 output channels per thread) | implicit GEMM (128 x 64
           tiles; mma.sync m16n8k16 for fp16/bf16, exact fp32 FFMA for float32)
  dX       implicit GEMM per stride-residue class (no zero-inserted dY) | direct gather
  dW       implicit GEMM with split-K over N*P*Q | direct (a block per weight element), split too
  db       a block per channel, split too
Split-K partials go to an fp32 workspace (splits, ...) summed in a fixed order by
conv2d_bwd_sum_splits: results are deterministic.
``precision`` is accepted for the common signature: float32 always uses exact fp32 FMA here.

Every launch is recorded in LAUNCHES under the entry point's name and its family name
(``conv2d_fwd_direct``, ``conv2d_fwd_implicit_gemm``, ``conv2d_bwd_dx_direct``, ...), plus
``'<family>[split=S]'`` for the split reductions.
"""
from __future__ import annotations

import functools
from typing import Dict, List, Tuple

import numpy as np

from ...geometry import ConvGeometry, ceil_div
from . import _module
from ._common import empty, launched

FWD_FILE = "conv2d_fwd.cu"
BWD_FILE = "conv2d_bwd.cu"
SCALAR_T = {"float32": "float", "float16": "f16_t", "bfloat16": "bf16_t"}
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}

# kernel constants (must match conv2d_igemm.cuh / conv2d_fwd.cu / conv2d_bwd.cu)
IG_BM, IG_BN, IG_THREADS = 128, 64, 256
DIRECT_TILE, DIRECT_THREADS = 16, 256
RED_THREADS = 256
DX_MAX_TAPS = 32

GRID_X_MAX = 2 ** 31 - 1
GRID_YZ_MAX = 65535
INT32_LIMIT = 2 ** 31
EXTENT_HEADROOM = 2 ** 16           # tile rounding past an int extent must not overflow
SMEM_DEFAULT_MAX = 48 * 1024        # dynamic shared memory without an opt-in attribute
FLAT_GRID_MAX = 65535 * 32          # blocks of the grid-stride kernels

BWD_ALGO = "auto"
# split-K of the N*P*Q reductions (dW, db): aim at SPLIT_WAVES blocks per SM, but each split at
# least SPLIT_MIN_LEN long, at most MAX_SPLIT splits and WS_MAX_BYTES of fp32 workspace.
SPLIT_WAVES = 2
SPLIT_MIN_LEN = 2048
MAX_SPLIT = 64
WS_MAX_BYTES = 256 * 2 ** 20

FWD_ENTRIES = ["conv2d_fwd_direct_4ch", "conv2d_fwd_direct_1ch", "conv2d_fwd_implicit_gemm"]
BWD_ENTRIES = ["conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dx_direct", "conv2d_bwd_dw_implicit_gemm",
               "conv2d_bwd_dw_direct", "conv2d_bwd_db", "conv2d_bwd_sum_splits"]


# ------------------------------------------------------------------------------------------------
# specialisations (pure)
# ------------------------------------------------------------------------------------------------
def bk(dtype: str) -> int:
    """Reduction slice of the implicit-GEMM main loop: 16 for float32 (FFMA), 32 for 16-bit (mma)."""
    return 16 if dtype == "float32" else 32


def max_vec(dtype: str) -> int:
    """Elements in one 16-byte load."""
    return 16 // ITEMSIZE[dtype]


def vec_width(dtype: str, *counts: int, ptrs=()) -> int:
    """VEC for an implicit GEMM whose vectorised runs have lengths ``counts`` (channels per group):
    16-byte loads when every count is a multiple of them and every operand base address in
    ``ptrs`` is 16-byte aligned (a channels-last view of a slice may not be), else scalar loads."""
    v = max_vec(dtype)
    ok = all(int(c) % v == 0 for c in counts) and all(int(p) % 16 == 0 for p in ptrs)
    return v if ok else 1


def defines(dtype: str, vec: int = 1) -> Dict[str, object]:
    """The -D defines of one specialisation of conv2d_fwd.cu / conv2d_bwd.cu."""
    try:
        return {"SCALAR_T": SCALAR_T[dtype], "VEC": int(vec)}
    except KeyError:
        raise TypeError(f"the cupy conv2d kernels take float32, float16 or bfloat16, got {dtype}") from None


# Every specialisation the launchers below can request (the CPU compile test builds them all).
CUDA_BUILDS: List[Tuple[str, List[str], Dict[str, object]]] = [
    (fname, list(entries), defines(dt, v))
    for fname, entries in ((FWD_FILE, FWD_ENTRIES), (BWD_FILE, BWD_ENTRIES))
    for dt in ("float32", "float16", "bfloat16")
    for v in (1, max_vec(dt))
]


# ------------------------------------------------------------------------------------------------
# decisions (pure functions of the geometry; unit-tested on CPU)
# ------------------------------------------------------------------------------------------------
def check_extents(g: ConvGeometry) -> None:
    """The kernels index the flat GEMM extents (N*P*Q, N*H*W, C/groups*R*S, K*C/groups*R*S) with
    32-bit ints (tensor offsets are 64-bit); raise ValueError when one would not fit."""
    ext = {"N*P*Q": g.N * g.P * g.Q, "N*H*W": g.N * g.H * g.W,
           "K*(C/groups)*R*S": g.K * g.c_per_group * g.R * g.S}
    for name, v in ext.items():
        if v >= INT32_LIMIT - EXTENT_HEADROOM:
            raise ValueError(f"conv2d on the cupy backend: {name} = {v} does not fit the kernels' 32-bit "
                             f"index (x {(g.N, g.C, g.H, g.W)}, w {(g.K, g.c_per_group, g.R, g.S)}); "
                             f"split the batch")


def choose_algo(g: ConvGeometry) -> str:
    """'direct' or 'implicit_gemm' for the forward with ``algo='auto'``.

    direct when (C/groups)*R*S < 16 (shorter than one tensor-core K step) or K/groups < 8
    (depthwise and similar: a 64-wide column tile would be mostly padding), provided its shared
    memory tile fits (:func:`direct_fwd_plan`); implicit GEMM otherwise.
    """
    if g.c_per_group * g.R * g.S < 16 or g.k_per_group < 8:
        if direct_fwd_plan(g) is not None:
            return "direct"
    return "implicit_gemm"


def direct_fwd_plan(g: ConvGeometry):
    """(entry point, KB, grid, dynamic smem bytes) of the direct forward, or None when it cannot
    run: its halo tile (16*stride + dilated kernel)^2 + KB*R*S floats must fit 48 KiB, and the grid
    (16x16 output tiles, groups*ceil(Kg/KB), N) must fit CUDA's limits."""
    kb = 4 if g.k_per_group >= 4 else 1
    ih = (DIRECT_TILE - 1) * g.stride[0] + (g.R - 1) * g.dilation[0] + 1
    iw = (DIRECT_TILE - 1) * g.stride[1] + (g.S - 1) * g.dilation[1] + 1
    smem = 4 * (ih * iw + kb * g.R * g.S)
    grid = (ceil_div(g.P, DIRECT_TILE) * ceil_div(g.Q, DIRECT_TILE),
            g.groups * ceil_div(g.k_per_group, kb), g.N)
    if smem > SMEM_DEFAULT_MAX or grid[0] > GRID_X_MAX or max(grid[1:]) > GRID_YZ_MAX:
        return None
    return f"conv2d_fwd_direct_{kb}ch", kb, grid, smem


def fwd_igemm_grid(g: ConvGeometry) -> Tuple[int, int, int]:
    """(tiles of 128 output pixels, tiles of 64 channels of a group, groups)."""
    grid = (ceil_div(g.N * g.P * g.Q, IG_BM), ceil_div(g.k_per_group, IG_BN), g.groups)
    if max(grid[1:]) > GRID_YZ_MAX:
        raise ValueError(f"conv2d implicit GEMM grid {grid} exceeds CUDA's limit {GRID_YZ_MAX} on y/z "
                         f"(groups={g.groups}); use algo='direct'")
    return grid


def dx_igemm_grid(g: ConvGeometry):
    """(pixel tiles of the largest residue class, tiles of 64 input channels, groups * sh * sw),
    or None when the dX implicit GEMM cannot run (R or S > DX_MAX_TAPS, grid over the limits)."""
    sh, sw = g.stride
    grid = (ceil_div(g.N * ceil_div(g.H, sh) * ceil_div(g.W, sw), IG_BM), ceil_div(g.c_per_group, IG_BN),
            g.groups * sh * sw)
    if max(g.R, g.S) > DX_MAX_TAPS or max(grid[1:]) > GRID_YZ_MAX:
        return None
    return grid


def choose_bwd_algos(g: ConvGeometry) -> Tuple[str, str]:
    """('direct' | 'implicit_gemm') for dX and for dW, by the forward's rule applied to each GEMM:
    dX[N*H*W, Cg] = dY[., Kg*R*S] @ W: direct when Cg < 8 or Kg*R*S < 16 (or the implicit GEMM's
    grid/tap tables do not fit); dW[Kg, Cg*R*S] = dY^T @ im2col(x): direct when Kg < 8 or
    Cg*R*S < 16. ``BWD_ALGO`` forces both (where the implicit GEMM can run)."""
    cg, kg, rs = g.c_per_group, g.k_per_group, g.R * g.S
    if BWD_ALGO != "auto":
        dx, dw = BWD_ALGO, BWD_ALGO
    else:
        dx = "direct" if (cg < 8 or kg * rs < 16) else "implicit_gemm"
        dw = "direct" if (kg < 8 or cg * rs < 16) else "implicit_gemm"
    if dx == "implicit_gemm" and dx_igemm_grid(g) is None:
        dx = "direct"
    if dw == "implicit_gemm" and g.groups > GRID_YZ_MAX:
        dw = "direct"
    return dx, dw


def split_reduction(length: int, blocks: int, num_sms: int, granule: int = 1,
                    out_numel: int = 0, max_split: int = MAX_SPLIT) -> Tuple[int, int]:
    """(splits, chunk) for a reduction of ``length`` terms feeding ``blocks`` independent blocks.

    splits = min(ceil(SPLIT_WAVES*num_sms / blocks), length // SPLIT_MIN_LEN, max_split), at least
    1, and small enough that splits * out_numel fp32 partials fit WS_MAX_BYTES; chunk =
    ceil(length / splits) rounded up to ``granule``, then splits = ceil(length / chunk) so that no
    split is empty. Split s covers [s*chunk, min((s+1)*chunk, length)).
    """
    want = ceil_div(SPLIT_WAVES * num_sms, max(blocks, 1))
    splits = max(1, min(want, length // SPLIT_MIN_LEN, max_split))
    if out_numel > 0:
        splits = max(1, min(splits, WS_MAX_BYTES // (4 * out_numel)))
    chunk = ceil_div(ceil_div(length, splits), granule) * granule
    return ceil_div(length, chunk), chunk


def dw_igemm_plan(g: ConvGeometry, dtype: str, num_sms: int):
    """(grid, splits, kt_chunk) of the dW implicit GEMM: grid (tiles of 128 rows of Cg*R*S, tiles of
    64 channels, groups * splits); each split runs kt_chunk BK-slices of the N*P*Q reduction."""
    b = bk(dtype)
    rows = g.c_per_group * g.R * g.S
    tiles = ceil_div(rows, IG_BM) * ceil_div(g.k_per_group, IG_BN) * g.groups
    splits, chunk = split_reduction(g.N * g.P * g.Q, tiles, num_sms, granule=b,
                                    out_numel=g.K * rows, max_split=min(MAX_SPLIT, GRID_YZ_MAX // g.groups))
    return (ceil_div(rows, IG_BM), ceil_div(g.k_per_group, IG_BN), g.groups * splits), splits, chunk // b


def dw_direct_plan(g: ConvGeometry, num_sms: int):
    """(grid, splits, chunk) of the direct dW: a block per weight element and split."""
    numel = g.K * g.c_per_group * g.R * g.S
    splits, chunk = split_reduction(g.N * g.P * g.Q, numel, num_sms, granule=RED_THREADS, out_numel=numel)
    return (numel, splits, 1), splits, chunk


def db_plan(g: ConvGeometry, num_sms: int):
    """(grid, splits, chunk) of db: a block per output channel and split."""
    splits, chunk = split_reduction(g.N * g.P * g.Q, g.K, num_sms, granule=RED_THREADS, out_numel=g.K)
    return (g.K, splits, 1), splits, chunk


def flat_grid(total: int, block: int = 256) -> Tuple[int, int, int]:
    """Grid of a grid-stride kernel over ``total`` elements."""
    return (max(1, min(ceil_div(total, block), FLAT_GRID_MAX)), 1, 1)


def dx_residue_classes(g: ConvGeometry):
    """The decomposition conv2d_bwd_dx_implicit_gemm uses (mirrors its tap-table code), as a list
    of (a, b, Hc, Wc, [(r, dp)], [(s, dq)]): pixels h = a + sh*i (i < Hc), w = b + sw*j (j < Wc)
    receive exactly from taps r at dy row p = i + dp (when 0 <= p < P), likewise s / q."""
    sh, sw = g.stride
    out = []
    for a in range(sh):
        for b in range(sw):
            hc = ceil_div(g.H - a, sh) if a < g.H else 0
            wc = ceil_div(g.W - b, sw) if b < g.W else 0
            rt = [(r, (a + g.pad[0] - r * g.dilation[0]) // sh) for r in range(g.R)
                  if (a + g.pad[0] - r * g.dilation[0]) % sh == 0]
            st = [(s, (b + g.pad[1] - s * g.dilation[1]) // sw) for s in range(g.S)
                  if (b + g.pad[1] - s * g.dilation[1]) % sw == 0]
            out.append((a, b, hc, wc, rt, st))
    return out


# ------------------------------------------------------------------------------------------------
# device helpers
# ------------------------------------------------------------------------------------------------
def _cupy():
    import cupy
    return cupy


@functools.lru_cache(maxsize=None)
def _sm_count(device_id: int) -> int:
    return int(_cupy().cuda.Device(device_id).attributes["MultiProcessorCount"])


def num_sms() -> int:
    return _sm_count(_cupy().cuda.Device().id)


def _dtype(x) -> str:
    return x.dtype.name


def _i32(v) -> np.int32:
    v = int(v)
    if not -INT32_LIMIT <= v < INT32_LIMIT:
        raise ValueError(f"conv2d: kernel argument {v} does not fit a 32-bit int")
    return np.int32(v)


def _strides(a) -> Tuple[np.int64, ...]:
    """Strides in elements as int64 kernel arguments."""
    return tuple(np.int64(s // a.itemsize) for s in a.strides)


def _raw(a):
    """A same-size unsigned-integer view for 16-bit floats (layout copies without float kernels)."""
    return a.view(_cupy().uint16) if a.itemsize == 2 else a


def _nhwc(a):
    """(N, C, H, W) -> contiguous (N, H, W, C) raw bits (no copy when a is channels-last)."""
    return _cupy().ascontiguousarray(_raw(a).transpose(0, 2, 3, 1))


def _geom_args(g: ConvGeometry):
    return tuple(_i32(v) for v in (g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q, g.stride[0], g.stride[1],
                                   g.pad[0], g.pad[1], g.dilation[0], g.dilation[1], g.groups))


def _launch(fname: str, entry: str, family: str, dtype: str, vec: int, grid, block, args, shared_mem=0):
    kern = _module.get_function(fname, entry, defines(dtype, vec))
    kern(tuple(int(v) for v in grid), tuple(int(v) for v in block), tuple(args), shared_mem=int(shared_mem))
    launched(entry)
    if family != entry:
        launched(family)


def _workspace(splits: int, numel: int):
    """fp32 split-K partials (splits, numel) (poisoned like any output), or a 1-element dummy."""
    return empty((splits, numel) if splits > 1 else (1,), np.float32)


# ------------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------------
def conv2d_forward(x, w, b, g: ConvGeometry, algo: str = "auto", precision: str = "ieee"):
    """y = conv2d(x, w) + b on cupy arrays.

    x: (N, C, H, W) any strides; w: (K, C/groups, R, S); b: (K,) or None. Returns a new
    C-contiguous y (N, K, P, Q) of x's dtype. algo: 'direct', 'implicit_gemm' or 'auto'
    (:func:`choose_algo`); precision is accepted for the common signature (fp32 is exact FMA).
    """
    cp = _cupy()
    dt = _dtype(x)
    check_extents(g)
    if algo == "auto":
        algo = choose_algo(g)
    y = empty((g.N, g.K, g.P, g.Q), x.dtype)
    has_bias = np.int32(b is not None)
    bias = cp.ascontiguousarray(_raw(b)) if b is not None else y
    if algo == "direct":
        plan = direct_fwd_plan(g)
        if plan is None:
            raise ValueError(f"conv2d direct kernel cannot run this geometry (shared-memory tile or grid "
                             f"too large: stride {g.stride}, dilation {g.dilation}, kernel {(g.R, g.S)}, "
                             f"groups {g.groups}, N {g.N}); use algo='implicit_gemm'")
        entry, _, grid, smem = plan
        wc = cp.ascontiguousarray(_raw(w))
        args = (x, *_strides(x), wc, bias, has_bias, y, *_geom_args(g))
        _launch(FWD_FILE, entry, "conv2d_fwd_direct", dt, 1, grid, (DIRECT_THREADS,), args, smem)
        return y
    if algo != "implicit_gemm":
        raise ValueError(f"algo must be 'auto', 'direct' or 'implicit_gemm', got {algo!r}")
    grid = fwd_igemm_grid(g)
    x_nhwc = _nhwc(x)
    w_krsc = cp.ascontiguousarray(_raw(w).transpose(0, 2, 3, 1))
    vec = vec_width(dt, g.c_per_group, ptrs=(x_nhwc.data.ptr, w_krsc.data.ptr))
    args = (x_nhwc, w_krsc, bias, has_bias, y, *_geom_args(g))
    _launch(FWD_FILE, "conv2d_fwd_implicit_gemm", "conv2d_fwd_implicit_gemm", dt, vec, grid, (IG_THREADS,), args)
    return y


# ------------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------------
def _sum_splits(ws, splits: int, out, dt: str) -> None:
    numel = out.size
    _launch(BWD_FILE, "conv2d_bwd_sum_splits", "conv2d_bwd_sum_splits", dt, 1, flat_grid(numel, RED_THREADS),
            (RED_THREADS,), (ws, np.int32(splits), np.int64(numel), out))


def _grad_x(dy, w, g: ConvGeometry, algo: str, dy_nhwc, dt: str):
    cp = _cupy()
    dx = empty((g.N, g.C, g.H, g.W), dy.dtype)
    if algo == "implicit_gemm":
        grid = dx_igemm_grid(g)
        G, Kg, Cg = g.groups, g.k_per_group, g.c_per_group
        w_grsck = cp.ascontiguousarray(_raw(w).reshape(G, Kg, Cg, g.R, g.S).transpose(0, 3, 4, 2, 1))
        d = dy_nhwc()
        args = (d, w_grsck, dx, *_geom_args(g))
        _launch(BWD_FILE, "conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dx_implicit_gemm", dt,
                vec_width(dt, Kg, ptrs=(d.data.ptr, w_grsck.data.ptr)), grid, (IG_THREADS,), args)
        return dx
    wc = cp.ascontiguousarray(_raw(w))
    args = (dy, *_strides(dy), wc, dx, *_geom_args(g))
    _launch(BWD_FILE, "conv2d_bwd_dx_direct", "conv2d_bwd_dx_direct", dt, 1, flat_grid(dx.size),
            (256,), args)
    return dx


def _grad_w(dy, x, g: ConvGeometry, algo: str, dy_nhwc, dt: str):
    dw = empty((g.K, g.c_per_group, g.R, g.S), x.dtype)
    if algo == "implicit_gemm":
        grid, splits, kt_chunk = dw_igemm_plan(g, dt, num_sms())
        ws = _workspace(splits, dw.size)
        xn, d = _nhwc(x), dy_nhwc()
        args = (xn, d, dw, ws, np.int32(splits), _i32(kt_chunk), *_geom_args(g))
        vec = vec_width(dt, g.c_per_group, g.k_per_group, ptrs=(xn.data.ptr, d.data.ptr))
        _launch(BWD_FILE, "conv2d_bwd_dw_implicit_gemm", "conv2d_bwd_dw_implicit_gemm", dt,
                vec, grid, (IG_THREADS,), args)
        launched(f"conv2d_bwd_dw_implicit_gemm[split={splits}]")
    else:
        grid, splits, chunk = dw_direct_plan(g, num_sms())
        ws = _workspace(splits, dw.size)
        args = (dy, *_strides(dy), x, *_strides(x), dw, ws, np.int32(splits), np.int64(chunk), *_geom_args(g))
        _launch(BWD_FILE, "conv2d_bwd_dw_direct", "conv2d_bwd_dw_direct", dt, 1, grid, (RED_THREADS,), args)
        launched(f"conv2d_bwd_dw_direct[split={splits}]")
    if splits > 1:
        _sum_splits(ws, splits, dw, dt)
    return dw


def _grad_b(dy, g: ConvGeometry, dt: str):
    db = empty((g.K,), dy.dtype)
    grid, splits, chunk = db_plan(g, num_sms())
    ws = _workspace(splits, g.K)
    args = (dy, *_strides(dy), db, ws, np.int32(splits), np.int64(chunk),
            _i32(g.N), _i32(g.K), _i32(g.P), _i32(g.Q))
    _launch(BWD_FILE, "conv2d_bwd_db", "conv2d_bwd_db", dt, 1, grid, (RED_THREADS,), args)
    launched(f"conv2d_bwd_db[split={splits}]")
    if splits > 1:
        _sum_splits(ws, splits, db, dt)
    return db


def conv2d_backward(dy, x, w, g: ConvGeometry, need_dx: bool = True, need_dw: bool = True,
                    need_db: bool = True, precision: str = "ieee"):
    """Gradients of conv2d_forward on cupy arrays.

    dy: (N, K, P, Q), x: (N, C, H, W), w: (K, C/groups, R, S), any strides. Returns
    (dx (N, C, H, W) | None, dw (K, C/groups, R, S) | None, db (K,) | None), new C-contiguous
    arrays of x's dtype; entries not asked for are None and cost nothing. Algorithms per pass:
    :func:`choose_bwd_algos`; dW and db split N*P*Q (:func:`split_reduction`) deterministically.
    """
    dt = _dtype(x)
    check_extents(g)
    dx_algo, dw_algo = choose_bwd_algos(g)
    cache = {}

    def dy_nhwc():  # made once, only when an implicit GEMM needs it
        if "v" not in cache:
            cache["v"] = _nhwc(dy)
        return cache["v"]

    dx = _grad_x(dy, w, g, dx_algo, dy_nhwc, dt) if need_dx else None
    dw = _grad_w(dy, x, g, dw_algo, dy_nhwc, dt) if need_dw else None
    db = _grad_b(dy, g, dt) if need_db else None
    return dx, dw, db
