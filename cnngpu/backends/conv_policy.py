"""conv2d launch policy shared by the GPU backends (triton, cupy): pure functions of the geometry.

What lives here is decided once for both backends; what differs between them is a parameter:
  - algorithm choice, forward (:func:`choose_algo`) and backward (:func:`choose_bwd_algos`):
    tensor cores need a reduction of at least one 16-wide K step and 8 columns per group, else the
    direct kernel; a backend says where its implicit GEMM / direct kernel cannot run;
  - split-K sizing of the N*P*Q reductions of dW and db (:func:`split_k`), with the backend's
    granule and workspace budget;
  - the stride-residue classes of dX (:func:`residue_classes`);
  - whether the forward / dX / dW take the Hopper wgmma kernels (:func:`use_wgmma`);
  - how an implicit GEMM reads its activations: in place as NCHW, or from a channels-last copy
    (:func:`gemm_activation_layout`, with its switch RELAYOUT_ENV);
  - the 32-bit extents of kernels that index with int (:func:`check_extents`; the limits
    themselves, the int64 decision and the SM count assumed off a GPU are in
    ``cnngpu.backends.limits``).
"""
from __future__ import annotations

import math
import os
from typing import Iterable, List, Tuple

from ..geometry import ConvGeometry, ceil_div
from .limits import extent_overflows

# 'tma': the triton backend's opt-in forward for 1x1 stride-1 unpadded NCHW convolutions (TMA tensor
# descriptors, unmeasured, never picked by 'auto'); a backward asked for 'tma' runs as 'auto'
ALGOS = ("auto", "direct", "implicit_gemm", "tma")
TC_MIN_K = 16                   # one tensor-core K step: a shorter reduction is mostly padding
TC_MIN_COLS = 8                 # fewer output columns per group: the GEMM tile is mostly padding

# split-K of the N*P*Q reductions (dW, db): aim at SPLIT_WAVES programs per SM, but each split at
# least SPLIT_MIN_LEN long and at most MAX_SPLIT splits
SPLIT_WAVES = 2
SPLIT_MIN_LEN = 2048
MAX_SPLIT = 64


# ------------------------------------------------------------------------------------------------
# algorithms
# ------------------------------------------------------------------------------------------------
def gemm_too_small(reduction: int, cols: int) -> bool:
    """True when a GEMM with this reduction length and output columns per group would be mostly
    tensor-core padding (reduction < TC_MIN_K or cols < TC_MIN_COLS): the direct kernel wins."""
    return reduction < TC_MIN_K or cols < TC_MIN_COLS


def choose_algo(g: ConvGeometry, direct_fits: bool = True) -> str:
    """'direct' or 'implicit_gemm' for the forward with ``algo='auto'``.

    y[N*P*Q, Kg] = im2col(x)[., Cg*R*S] @ W: direct when that GEMM is too small for tensor cores
    (:func:`gemm_too_small`: depthwise and similar, or a tiny reduction) and the backend's direct
    kernel can run this geometry (``direct_fits``); implicit GEMM otherwise.
    """
    if gemm_too_small(g.c_per_group * g.R * g.S, g.k_per_group) and direct_fits:
        return "direct"
    return "implicit_gemm"


def choose_bwd_algos(g: ConvGeometry, algo: str = "auto", dx_gemm_fits: bool = True,
                     dw_gemm_fits: bool = True) -> Tuple[str, str]:
    """('direct' | 'implicit_gemm') for dX and for dW.

    ``algo='auto'`` applies the forward's rule to each pass's GEMM: dX[N*H*W, Cg] = dY[., Kg*R*S] @ W
    and dW[Kg, Cg*R*S] = dY^T @ im2col(x); 'direct' / 'implicit_gemm' force both passes. Either
    way a pass whose implicit GEMM cannot run here (``dx_gemm_fits`` / ``dw_gemm_fits`` False: the
    backend's grid or tap-table limits) takes the direct kernel.
    """
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    cg, kg, rs = g.c_per_group, g.k_per_group, g.R * g.S
    if algo in ("auto", "tma"):     # 'tma' is a forward path: its backward is the 'auto' choice
        dx = "direct" if gemm_too_small(kg * rs, cg) else "implicit_gemm"
        dw = "direct" if gemm_too_small(cg * rs, kg) else "implicit_gemm"
    else:
        dx = dw = algo
    return (dx if dx_gemm_fits else "direct"), (dw if dw_gemm_fits else "direct")


# ------------------------------------------------------------------------------------------------
# Hopper warpgroup MMA
# ------------------------------------------------------------------------------------------------
WGMMA_ARCH = 90                 # compute capability of the wgmma kernels (built for sm_90a)
WGMMA_CHUNK = 8                 # 16-bit elements per 16-byte chunk of its K-major operands


def use_wgmma(dtype: str, compute_capability: int, *chunked_channels: int, aligned: bool = True) -> bool:
    """True when an implicit GEMM takes the Hopper wgmma kernel instead of the mma.sync one: an
    sm_90 device (the sm_90a build runs nowhere else), fp16/bf16, and operands copied in 16-byte
    chunks of channels that never straddle a (r, s) tap or the tensor's alignment: every count of
    ``chunked_channels`` a multiple of WGMMA_CHUNK and the operand bases 16-byte ``aligned``. The
    counts are the 16-byte-copied runs: C/groups for the forward on NHWC x (C/groups*R*S on NCHW x,
    whose weights keep their (C/groups, R, S) order), K/groups for dX, C/groups and K/groups for dW
    on NHWC activations (none on NCHW ones: activations read in place go through registers)."""
    return (int(compute_capability) == WGMMA_ARCH and dtype in ("float16", "bfloat16")
            and all(c % WGMMA_CHUNK == 0 for c in chunked_channels) and aligned)


# ------------------------------------------------------------------------------------------------
# activation layout of the implicit GEMMs
# ------------------------------------------------------------------------------------------------
# Switch: CNNGPU_CONV_RELAYOUT=1 copies C-contiguous NCHW activations to channels-last before the
# implicit GEMMs (one extra read + write per call; on the cupy backend the NHWC kernels then take
# their 16-byte cp.async loads) instead of reading them in place. Off by default: issue 15 asks for
# no per-call re-layout; which is faster per layer is unmeasured (the GPU report can time both).
RELAYOUT_ENV = "CNNGPU_CONV_RELAYOUT"


def relayout_forced() -> bool:
    """Whether RELAYOUT_ENV asks for channels-last copies of NCHW activations."""
    return os.environ.get(RELAYOUT_ENV, "0") not in ("", "0")


def gemm_activation_layout(layouts: Iterable[str], reads_nchw: bool = True) -> str:
    """'nchw' or 'nhwc': how one implicit-GEMM pass reads its activations (x for the forward, dy for
    dX, both for dW), given each one's memory layout: 'nchw' (C-contiguous), 'channels_last'
    (contiguous as (N, H, W, C)) or 'other' (any other strides).

    'nchw' -- read in place, no copy -- when every activation is C-contiguous, the backend's kernels
    read NCHW (``reads_nchw``) and RELAYOUT_ENV is off; else 'nhwc': the kernels read channels-last,
    and every activation not already channels-last is copied once (a re-layout the backend records).
    """
    ls = list(layouts)
    if reads_nchw and all(x == "nchw" for x in ls) and not relayout_forced():
        return "nchw"
    return "nhwc"


# ------------------------------------------------------------------------------------------------
# split-K
# ------------------------------------------------------------------------------------------------
def split_k(length: int, tiles: int, num_sms: int, granule: int = 1, out_numel: int = 0,
            ws_max_bytes: int = 0, max_split: int | None = None, min_len: int | None = None) -> Tuple[int, int]:
    """(splits, chunk) for a reduction of ``length`` terms (N*P*Q) feeding ``tiles`` output tiles.

    splits = min(ceil(SPLIT_WAVES*num_sms / tiles), length // min_len (default SPLIT_MIN_LEN),
    max_split (default MAX_SPLIT)), at least 1, and -- when ``ws_max_bytes`` -- small enough that splits * out_numel
    fp32 partials fit it; chunk = ceil(length / splits) rounded up to ``granule``, then
    splits = ceil(length / chunk) so that no split is empty. Split s covers
    [s*chunk, min((s+1)*chunk, length)).
    """
    cap = MAX_SPLIT if max_split is None else max_split
    want = ceil_div(SPLIT_WAVES * num_sms, max(tiles, 1))
    splits = max(1, min(want, length // max(SPLIT_MIN_LEN if min_len is None else min_len, 1), cap))
    if ws_max_bytes and out_numel > 0:
        splits = max(1, min(splits, ws_max_bytes // (4 * out_numel)))
    chunk = ceil_div(ceil_div(length, splits), granule) * granule
    return ceil_div(length, chunk), chunk


# split-K of the forward / dX GEMM loops (units: K steps of one tile): only when the output tiles
# fill fewer than GEMM_SPLIT_WAVES waves of SMs, each split at least GEMM_SPLIT_MIN_STEPS steps
GEMM_SPLIT_WAVES = 2
GEMM_SPLIT_MIN_STEPS = 8
GEMM_MAX_SPLIT = 16
# GEMM tiles of more than BIG_TILE outputs (128x256 / 256x128 on 8 warps, one CTA per SM: ~145 KB of
# shared memory, 190-255 registers) are picked only where they still fill GEMM_SPLIT_WAVES waves
# (so they never need split-K): an unmeasured heuristic -- the static report shows them spill-free
# with overlapped wgmma on sm_90; no GPU has timed them
BIG_TILE = 128 * 128


def big_tile_fills(tile_outputs: int, tiles: int, num_sms: int) -> bool:
    """Whether a GEMM config with ``tile_outputs`` outputs per tile may be picked for a launch of
    ``tiles`` programs on ``num_sms`` SMs: always up to BIG_TILE, beyond only at GEMM_SPLIT_WAVES waves."""
    return tile_outputs <= BIG_TILE or tiles >= GEMM_SPLIT_WAVES * num_sms


def gemm_split_k(steps: int, tiles: int, num_sms: int, out_numel: int = 0, ws_max_bytes: int = 0,
                 max_split: int | None = None) -> Tuple[int, int]:
    """(splits, steps per split) of a forward / dX implicit GEMM whose tiles each run ``steps`` K
    steps: 1 split when ``tiles`` fill GEMM_SPLIT_WAVES waves of ``num_sms`` (or the loop is short),
    else :func:`split_k` over the steps (at least GEMM_SPLIT_MIN_STEPS each, at most GEMM_MAX_SPLIT
    or ``max_split``; with ``ws_max_bytes``, splits * out_numel fp32 partials fit it)."""
    if tiles >= GEMM_SPLIT_WAVES * num_sms:
        return 1, steps
    cap = GEMM_MAX_SPLIT if max_split is None else min(GEMM_MAX_SPLIT, max_split)
    return split_k(steps, tiles, num_sms, out_numel=out_numel, ws_max_bytes=ws_max_bytes, max_split=cap,
                   min_len=GEMM_SPLIT_MIN_STEPS)


# ------------------------------------------------------------------------------------------------
# dX by stride-residue classes
# ------------------------------------------------------------------------------------------------
def residue_classes(g: ConvGeometry) -> Tuple[List[Tuple[int, ...]], Tuple[int, int, int, int]]:
    """The stride-residue decomposition of dX (no zero-inserted dY).

    An input pixel h receives from tap r iff (h + pad - r*dil) is a multiple of the stride, which
    depends only on a = h mod stride. Returns (rows, (r_step, s_step, dp_r, dq_s)); one row per
    class (a, b), a < stride_h, b < stride_w: (a, b, Hc, Wc, r0, nr, p0, s0, ns, q0) such that pixel
    h = a + sh*i (i < Hc) receives from exactly the taps r = r0 + t*r_step (t < nr) at dy row
    p = i + p0 - t*dp_r (when 0 <= p < P); likewise for columns. A class without taps has nr = 0
    (or ns = 0): its pixels get zero.
    """
    def axis(size: int, stride: int, pad: int, dil: int, taps: int
             ) -> Tuple[List[Tuple[int, int, int, int, int]], int, int]:
        step = stride // math.gcd(stride, dil)
        dp = step * dil // stride
        out: List[Tuple[int, int, int, int, int]] = []
        for a in range(stride):
            count = max(0, ceil_div(size - a, stride))
            first = next((r for r in range(min(taps, step)) if (a + pad - r * dil) % stride == 0), None)
            if first is None:
                out.append((a, count, 0, 0, 0))
            else:
                out.append((a, count, first, len(range(first, taps, step)), (a + pad - first * dil) // stride))
        return out, step, dp

    rows_h, r_step, dp_r = axis(g.H, g.stride[0], g.pad[0], g.dilation[0], g.R)
    rows_w, s_step, dq_s = axis(g.W, g.stride[1], g.pad[1], g.dilation[1], g.S)
    rows: List[Tuple[int, ...]] = [(a, b, hc, wc, r0, nr, p0, s0, ns, q0)
            for (a, hc, r0, nr, p0) in rows_h for (b, wc, s0, ns, q0) in rows_w]
    return rows, (r_step, s_step, dp_r, dq_s)


# ------------------------------------------------------------------------------------------------
# index width
# ------------------------------------------------------------------------------------------------
def check_extents(g: ConvGeometry, backend: str) -> None:
    """For kernels that index the flat GEMM extents with 32-bit ints (tensor offsets 64-bit): raise
    ValueError when N*P*Q, N*H*W or K*(C/groups)*R*S would not fit."""
    ext = {"N*P*Q": g.N * g.P * g.Q, "N*H*W": g.N * g.H * g.W,
           "K*(C/groups)*R*S": g.K * g.c_per_group * g.R * g.S}
    for name, v in ext.items():
        if extent_overflows(v):
            raise ValueError(f"conv2d on the {backend} backend: {name} = {v} does not fit the kernels' 32-bit "
                             f"index (x {(g.N, g.C, g.H, g.W)}, w {(g.K, g.c_per_group, g.R, g.S)}); "
                             f"split the batch")
