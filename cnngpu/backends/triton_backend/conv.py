"""conv2d on the triton backend: launchers for ``cnngpu.kernels.triton.conv2d_fwd`` / ``conv2d_bwd``.

Tensors are torch tensors of any strides (NCHW, channels-last, sliced views): every kernel takes
all strides, so nothing is copied. Outputs follow x's memory format (channels-last x gives a
channels-last y / dx), have x's dtype, and are accumulated in float32.

Policy (``cnngpu.backends.conv_policy``, shared with the cupy backend): forward algorithm
(``algo='auto'``: the direct FMA kernel when the GEMM view would be mostly tensor-core padding,
else the implicit GEMM), backward algorithms per pass (``algo=`` of :func:`conv2d_backward`),
split-K sizing of dW / db, the dX stride-residue classes and the 32-bit index limit. Within the
implicit GEMM this launcher specialises 1x1/stride-1/no-pad convolutions (IS_1X1) and small
C/groups (< FLAT_K_MAX_C, FLAT_K: flattened (c, r, s) reduction).

Backward: dX per stride-residue class (no zero-inserted dY), dW with split-K over N*P*Q into an
fp32 workspace summed in a fixed order (deterministic), db likewise.

Index width: kernels use int32 offsets unless some tensor's largest element offset or an index
extent (e.g. N*P*Q) reaches the int32 limit (``limits.needs_int64``); then INT64=True makes
them compute offsets in int64. Launches are recorded in LAUNCHES under the kernel name, plus
``'<name>[int64]'`` when the int64 variant ran and ``'<name>[<variant>]'`` for the implicit-GEMM
reduction variant ('1x1', 'flat' or 'taps'); split-K launches add ``'<name>[split=<SPLIT>]'``.
"""
from __future__ import annotations

import dataclasses
import functools

import torch
import triton

from ...geometry import ConvGeometry
from .. import conv_policy as policy
from .. import weight_cache
from ..limits import GRID_YZ_MAX
from ._common import empty, launched, needs_int64, num_sms
from .conv_tma import conv2d_forward_tma
from ._tuning import (autotune_enabled, capture_launches, capturing, config_table, device_arch,  # noqa: F401
                      pick_config, picked, programs)
from ._tuning import launch as _launch

from cnngpu.kernels.triton.conv2d_bwd import (conv2d_bwd_db, conv2d_bwd_dw_direct, conv2d_bwd_dw_implicit_gemm,
                                             conv2d_bwd_dx_direct, conv2d_bwd_dx_implicit_gemm,
                                             conv2d_bwd_sum_splits)
from cnngpu.kernels.triton.conv2d_fwd import conv2d_fwd_direct, conv2d_fwd_implicit_gemm

FLAT_K_MAX_C = 16               # implicit GEMM: flattened (c, r, s) reduction below this many channels
SPLIT_GRANULE = 128             # split-K chunks are a multiple of this many N*P*Q rows


def _gemm_fits(g: ConvGeometry) -> bool:
    """The implicit GEMMs put groups on grid axis 1."""
    return g.groups <= GRID_YZ_MAX


def _split_k(rows: int, tiles: int, device) -> tuple:
    return policy.split_k(rows, tiles, num_sms(device), granule=SPLIT_GRANULE)


@functools.lru_cache(maxsize=256)
def _class_table(g: ConvGeometry, device: str):
    rows, steps = policy.residue_classes(g)
    tab = torch.tensor(rows, dtype=torch.int32, device=device).reshape(-1)
    return tab, len(rows), max(r[2] * r[3] for r in rows) * g.N, steps


def is_1x1(g: ConvGeometry) -> bool:
    """1x1 kernel, stride 1, no padding: im2col is the identity (a strided view of x)."""
    return g.R == 1 and g.S == 1 and g.stride == (1, 1) and g.pad == (0, 0)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _channels_last(x: torch.Tensor) -> bool:
    return (not x.is_contiguous()) and x.is_contiguous(memory_format=torch.channels_last)


def alloc_nchw(shape, like: torch.Tensor) -> torch.Tensor:
    """A poisoned (N, C, H, W) output of like's dtype/device, channels-last when ``like`` is."""
    n, c, h, w = (int(s) for s in shape)
    if _channels_last(like):
        return empty((n, h, w, c), like.dtype, like.device).permute(0, 3, 1, 2)
    return empty((n, c, h, w), like.dtype, like.device)


def _geom_args(g: ConvGeometry):
    return (g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q,
            g.stride[0], g.stride[1], g.pad[0], g.pad[1], g.dilation[0], g.dilation[1], g.groups)


def _dot_precision(x: torch.Tensor, precision: str) -> str:
    """tl.dot input_precision: the caller's 'ieee' / 'tf32' for float32 operands; half operands
    (exact products, fp32 accumulation either way) always get 'ieee', so they share one kernel."""
    return precision if x.dtype == torch.float32 else "ieee"


# ------------------------------------------------------------------------------------------------
# launch: one config per shape (no autotune storm), launch capture for the static report -- the
# rules live in _tuning (shared with linear); re-exported here for bench.static_report and tests
# ------------------------------------------------------------------------------------------------
def _gemm_split(kernel, grid, args, constexprs, steps_of):
    """(config or None, SPLIT, steps per split) of a forward / dX GEMM: the picked config and the
    split-K of its ``steps_of(BLOCK_K)`` K steps over ``grid``'s tiles (``conv_policy.gemm_split_k``);
    under CNNGPU_AUTOTUNE (no config fixed here) no split."""
    if autotune_enabled() and not capturing():
        return None, 1, steps_of(None)
    cfg, sms = picked(kernel, grid, args, constexprs)
    steps = steps_of(cfg.kwargs["BLOCK_K"])
    split, per = policy.gemm_split_k(steps, programs(grid(cfg.kwargs)), sms)
    return cfg, split, per


# ------------------------------------------------------------------------------------------------
# channels-last internal layout of the GEMM operands
# ------------------------------------------------------------------------------------------------
# The implicit GEMMs read their reduction axis (channels) contiguously only when activations and
# weights are channels-last; on NCHW the channel axis is strided and every A / B element is a scalar
# 16-bit load (no vector width, so no cp.async, one shared-memory stage, synchronous wgmma). So the
# GEMM launchers hand them channels-last copies: activations (x, dy) are copied once per call when
# they are not channels-last already -- one extra read and write of the tensor, about 2*|x| bytes
# (e.g. 2 x 25.7 MB for a 32x256x56x56 fp16 input, ~11 us at 4.8 TB/s, against the scalar path's
# uncoalesced loads) -- and weights once per parameter version (``weight_cache``, shared with the
# cupy backend). Outputs are stored straight in the caller's layout (stores take any strides at
# full width).


def canonical_channels_last(t: torch.Tensor) -> torch.Tensor:
    """A channels-last-contiguous t viewed with the canonical strides (C*H*W, 1, W*C, C) even where
    torch allows anything (size-1 dims: a contiguous (K, C, 1, 1) weight is both layouts with
    strides (C, 1, 1, 1)). Size-1 strides of 1 would otherwise be specialised to the constant 1 and
    break the kernels' 16-element alignment proof of every tap offset (runtime tap * 1)."""
    n, c, h, w = t.shape
    want = (c * h * w, 1, w * c, c)
    if tuple(t.stride()) == want or t.numel() == 0:
        return t
    return t.as_strided(t.shape, want)


def channels_last_input(t: torch.Tensor) -> torch.Tensor:
    """t itself when channels-last (or a 1x1-spatial tensor, where both layouts agree), else a
    channels-last copy; canonical strides either way."""
    if t.is_contiguous(memory_format=torch.channels_last):
        return canonical_channels_last(t)
    launched("conv2d_input_relayout")
    return canonical_channels_last(t.contiguous(memory_format=torch.channels_last))


PAD_C = 16                      # tensor-core K step: fp16/bf16 GEMMs pad fewer input channels to this


def padded_geometry(g: ConvGeometry, x: torch.Tensor) -> ConvGeometry:
    """The geometry the fp16/bf16 GEMMs run: a dense conv (groups 1) with fewer than PAD_C input
    channels (the RGB stem) gets its channels zero-padded to PAD_C in the internal channels-last
    copies, so every K step is one tap of 16 contiguous channels (vector loads, cp.async, the
    pipelined taps kernel) instead of the per-element (c, r, s) gather of FLAT_K (scalar 16-bit
    loads, no pipelining). The zero channels cost PAD_C/C more MMA work on a memory-bound layer
    and one more write of the padded x."""
    if g.groups == 1 and g.C < PAD_C and x.dtype in (torch.float16, torch.bfloat16):
        return dataclasses.replace(g, C=PAD_C)
    return g


def pad_channels(t: torch.Tensor, c: int) -> torch.Tensor:
    """t (N, C, H, W) or weight (K, C, R, S) as a channels-last tensor with c >= C channels (zeros)."""
    if t.shape[1] == c:
        return t
    n, _, h, w = t.shape
    out = torch.zeros((n, h, w, c), dtype=t.dtype, device=t.device).permute(0, 3, 1, 2)
    out[:, :t.shape[1]] = t
    launched("conv2d_channel_pad")
    return out


def channels_last_weight(w: torch.Tensor, c: int = 0) -> torch.Tensor:
    """A channels-last (K, C/groups, R, S) view of the weight (zero-padded to ``c`` channels when
    larger): w itself when it is one, else a copy made once per parameter version
    (``weight_cache.relaid``: torch's in-place version counter, the parameter cnngpu.torch
    declares; a new tensor at a recycled address does not hit) and recorded as
    ``conv2d_weight_relayout``."""
    c = max(c, w.shape[1])
    if c == w.shape[1] and w.is_contiguous(memory_format=torch.channels_last):
        return canonical_channels_last(w)

    return weight_cache.relaid(w, ("channels_last", c), lambda: relaid_weight_copy(w, c))


def relaid_weight_copy(w: torch.Tensor, c: int) -> torch.Tensor:
    """A new channels-last copy of w (zero-padded to c >= C channels), recorded as
    ``conv2d_weight_relayout``: what :func:`channels_last_weight` caches (and the fused block's
    folded weight)."""
    launched("conv2d_weight_relayout")
    return canonical_channels_last(pad_channels(w, c) if c > w.shape[1]
                                   else w.contiguous(memory_format=torch.channels_last))


def gemm_output(shape, like: torch.Tensor) -> torch.Tensor:
    """A channels-last output for a GEMM kernel (its stores then run along the contiguous channel
    axis at full vector width; NCHW stores are scalar 16-bit and their layout conversion costs
    registers); :func:`as_layout_of` hands it back in the caller's layout."""
    n, c, h, w = (int(s) for s in shape)
    return empty((n, h, w, c), like.dtype, like.device).permute(0, 3, 1, 2)


def as_layout_of(out: torch.Tensor, like: torch.Tensor, channels: int = 0) -> torch.Tensor:
    """out (channels-last; its first ``channels`` channels when given) in like's memory format:
    out itself when that is its layout already, else a copy (one more read and write)."""
    if channels and channels < out.shape[1]:
        out = out[:, :channels]
    fmt = torch.channels_last if _channels_last(like) else torch.contiguous_format
    if out.is_contiguous(memory_format=fmt):
        return out
    launched("conv2d_output_relayout")
    return out.contiguous(memory_format=fmt)


def _record(name: str, int64: bool, variant: str = "") -> None:
    launched(name)
    if variant:
        launched(f"{name}[{variant}]")
    if int64:
        launched(name + "[int64]")


# ------------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------------
def conv2d_forward(x, w, b, g: ConvGeometry, algo: str = "auto", precision: str = "ieee"):
    """y = conv2d(x, w) + b on torch tensors.

    x: (N, C, H, W) any strides; w: (K, C/groups, R, S) any strides; b: (K,) or None;
    returns y (N, K, P, Q) of x's dtype (channels-last when x is).
    algo: 'direct', 'implicit_gemm' or 'auto' (``conv_policy.choose_algo``), or the opt-in 'tma'
    (``conv_tma``: 1x1 stride-1 unpadded NCHW convolutions, unmeasured); precision: 'ieee' or 'tf32'
    for float32 tensor-core dots (ignored by the direct kernel, which always uses fp32 FMA, and
    for half inputs, whose products are exact in fp32).
    """
    if algo == "auto":
        algo = policy.choose_algo(padded_geometry(g, x))
    precision = _dot_precision(x, precision)
    M = g.N * g.P * g.Q
    bias = b if b is not None else x
    sb = b.stride(0) if b is not None else 0
    if algo == "direct":
        y = alloc_nchw((g.N, g.K, g.P, g.Q), x)
        int64 = needs_int64((x, w, b, y), extents=(M,))
        args = (x, w, bias, y, *_geom_args(g), *x.stride(), *w.stride(), sb, *y.stride())
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(g.K, meta["BLOCK_N"]))  # noqa: E731
        _launch(conv2d_fwd_direct, grid, args, HAS_BIAS=b is not None, GROUPED=g.groups > 1, INT64=int64)
        _record("conv2d_fwd_direct", int64)
        return y
    if algo == "tma":               # opt-in, unmeasured: TMA loads of NCHW x (1x1, stride 1, no padding)
        return conv2d_forward_tma(x, w, b, g, precision)
    if algo != "implicit_gemm":
        raise ValueError(f"algo must be 'auto', 'direct', 'implicit_gemm' or 'tma', got {algo!r}")
    if not _gemm_fits(g):
        raise ValueError(f"conv2d implicit GEMM puts groups on grid axis 1 (at most {GRID_YZ_MAX}), got "
                         f"groups={g.groups}; use algo='direct'")
    return implicit_gemm_forward(x, w, b, g, precision)


def implicit_gemm_forward(x, w, b, g: ConvGeometry, precision: str, epilogue=None):
    """The implicit-GEMM forward of :func:`conv2d_forward` (precision already resolved).

    epilogue: None, or a function of the launch config returning the kernel's epilogue arguments
    (``res_ptr``.., ``HAS_RES``, ``RELU``, ``STATS``.., see ``conv2d_fwd_implicit_gemm``); with one,
    the launch runs one picked config (no autotuning) without split-K, and the output stays in
    the GEMM's channels-last layout. Returns y, or (y, config) with an epilogue.
    """
    M = g.N * g.P * g.Q
    bias = b if b is not None else x
    sb = b.stride(0) if b is not None else 0
    gp = padded_geometry(g, x)
    one = is_1x1(gp)
    flat = (not one) and gp.c_per_group < FLAT_K_MAX_C
    kg = g.k_per_group
    xc = canonical_channels_last(pad_channels(x, gp.C)) if gp.C != g.C else channels_last_input(x)
    wc = channels_last_weight(w, gp.C)
    y = gemm_output((g.N, g.K, g.P, g.Q), x)
    cg, rs = gp.c_per_group, g.R * g.S

    def steps_of(bk):
        if bk is None:              # autotuned (BLOCK_K unknown): one split over every step
            return 1 << 20
        return triton.cdiv(cg, bk) if one else (triton.cdiv(cg * rs, bk) if flat else rs * triton.cdiv(cg, bk))

    const = dict(HAS_BIAS=b is not None, IS_1X1=one, FLAT_K=flat, PRECISION=precision)
    head = (xc, wc, bias)
    geo = (*_geom_args(gp), *xc.stride(), *wc.stride(), sb)
    int64 = needs_int64((xc, wc, b, y), extents=(M,))
    grid1 = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(kg, meta["BLOCK_N"]), g.groups, 1)  # noqa: E731
    if epilogue is None:
        cfg, split, per = _gemm_split(conv2d_fwd_implicit_gemm, grid1, (*head, y, *geo, *y.stride(), 1, 1, 0),
                                      dict(const, INT64=int64), steps_of)
    else:                           # epilogue work needs whole tiles: one split, a known config
        cfg, _ = picked(conv2d_fwd_implicit_gemm, grid1, (*head, y, *geo, *y.stride(), 1, 1, 0),
                        dict(const, INT64=int64))
        split, per = 1, steps_of(cfg.kwargs["BLOCK_K"])
    if split == 1:
        out, so, sys_ = y, tuple(y.stride()), 0
    else:
        # fp32 partials (split, N, P, Q, K): split s at out + s*sys_, (n, k, p, q) strides below
        out = empty((split, g.N, g.P, g.Q, g.K), torch.float32, x.device)
        so, sys_ = (g.P * g.Q * g.K, 1, g.Q * g.K, g.K), g.N * g.P * g.Q * g.K
        int64 = int64 or needs_int64((out,))
    args = (*head, out, *geo, *so, split, per, sys_)
    grid3 = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(kg, meta["BLOCK_N"]), g.groups, split)  # noqa: E731
    extra = {} if epilogue is None else epilogue(cfg)
    _launch(conv2d_fwd_implicit_gemm, grid3, args, cfg=cfg, INT64=int64, **const, **extra)
    _record("conv2d_fwd_implicit_gemm", int64, "1x1" if one else ("flat" if flat else "taps"))
    launched(f"conv2d_fwd_implicit_gemm[split={split}]")
    if epilogue is not None:
        return y, cfg
    if split > 1:
        _sum_splits(out, y.permute(0, 2, 3, 1), split)
    return as_layout_of(y, x)


# ------------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------------
def _sum_splits(ws: torch.Tensor, out: torch.Tensor, split: int) -> None:
    """out (contiguous) = ws (split, *out.shape) summed over the splits in a fixed order."""
    L = out.numel()
    int64 = needs_int64((ws,))
    grid = lambda meta: (triton.cdiv(L, meta["BLOCK"]),)  # noqa: E731
    _launch(conv2d_bwd_sum_splits, grid, (ws, out, L, split), INT64=int64)
    _record("conv2d_bwd_sum_splits", int64)


def _grad_x(dy, w, x, g: ConvGeometry, algo: str, precision: str):
    tab, n_cls, rows_max, steps = _class_table(g, str(x.device))
    if algo == "direct":
        dx = alloc_nchw((g.N, g.C, g.H, g.W), x)
        int64 = needs_int64((dy, w, dx), extents=(g.N * g.H * g.W,))
        args = (dy, w, dx, tab, *_geom_args(g), *steps, *dy.stride(), *w.stride(), *dx.stride())
        grid = lambda meta: (triton.cdiv(rows_max, meta["BLOCK_M"]), triton.cdiv(g.C, meta["BLOCK_N"]), n_cls)  # noqa: E731
        _launch(conv2d_bwd_dx_direct, grid, args, GROUPED=g.groups > 1, INT64=int64)
        _record("conv2d_bwd_dx_direct", int64)
        return dx
    flat = g.k_per_group < FLAT_K_MAX_C
    gp = padded_geometry(g, x)
    cg = gp.c_per_group
    dyc, wc = channels_last_input(dy), channels_last_weight(w, gp.C)
    dx = gemm_output((g.N, gp.C, g.H, g.W), x)
    int64 = needs_int64((dyc, wc, dx), extents=(g.N * g.H * g.W,))
    head = (dyc, wc)
    geo = (tab, *_geom_args(gp), *steps, *dyc.stride(), *wc.stride())
    taps = _max_class_taps(g)
    kg = g.k_per_group

    def steps_of(bk):
        if bk is None:              # autotuned (BLOCK_K unknown): one split over every step
            return 1 << 20
        return triton.cdiv(kg * taps, bk) if flat else taps * triton.cdiv(kg, bk)

    const = dict(FLAT_K=flat, PRECISION=precision)
    tiles = lambda meta: triton.cdiv(rows_max, meta["BLOCK_M"]) * triton.cdiv(cg, meta["BLOCK_N"])  # noqa: E731
    grid1 = lambda meta: (tiles(meta), g.groups, n_cls)  # noqa: E731
    cfg, split, per = _gemm_split(conv2d_bwd_dx_implicit_gemm, grid1, (*head, dx, *geo, *dx.stride(), 1, 1, 0),
                                  dict(const, INT64=int64), steps_of)
    if split == 1:
        out, so, sxs = dx, tuple(dx.stride()), 0
    else:
        # fp32 partials (split, N, H, W, C'): split s at out + s*sxs, (n, c, h, w) strides below
        cp = gp.C
        out = empty((split, g.N, g.H, g.W, cp), torch.float32, x.device)
        so, sxs = (g.H * g.W * cp, 1, g.W * cp, cp), g.N * g.H * g.W * cp
        int64 = int64 or needs_int64((out,))
    args = (*head, out, *geo, *so, split, per, sxs)
    grid = lambda meta: (tiles(meta), g.groups, n_cls * split)  # noqa: E731
    _launch(conv2d_bwd_dx_implicit_gemm, grid, args, cfg=cfg, INT64=int64, **const)
    _record("conv2d_bwd_dx_implicit_gemm", int64, "flat" if flat else "taps")
    launched(f"conv2d_bwd_dx_implicit_gemm[split={split}]")
    if split > 1:
        _sum_splits(out, dx.permute(0, 2, 3, 1), split)
    return as_layout_of(dx, x, g.C)


@functools.lru_cache(maxsize=256)
def _max_class_taps(g: ConvGeometry) -> int:
    """The most taps any dX residue class runs (its K loop is that many times Kg)."""
    rows, _ = policy.residue_classes(g)
    return max(r[5] * r[8] for r in rows)


def _grad_w(dy, x, g: ConvGeometry, algo: str, precision: str):
    gp = padded_geometry(g, x)
    if algo != "direct" and gp.C != g.C:
        # zero-padded input channels (padded_geometry): the padded dW's first C channels
        return _grad_w(dy, pad_channels(x, gp.C), gp, algo, precision)[:, :g.C].contiguous()
    dw = empty((g.K, g.c_per_group, g.R, g.S), x.dtype, x.device)
    npq = g.N * g.P * g.Q
    cg, kg, rs = g.c_per_group, g.k_per_group, g.R * g.S
    if algo == "direct":
        tiles = triton.cdiv(g.K * cg, 64) * rs
    else:
        tiles = g.groups * triton.cdiv(kg, 128) * triton.cdiv(cg * rs, 128)
    split, split_len = _split_k(npq, tiles, x.device)
    out = dw if split == 1 else empty((split, g.K, cg, g.R, g.S), torch.float32, x.device)
    so = (0, *dw.stride()) if split == 1 else out.stride()
    int64 = needs_int64((dy, x, out), extents=(npq + split_len, g.K * cg * rs))
    args = (dy, x, out, *_geom_args(g), split, split_len, *dy.stride(), *x.stride(), *so)
    if algo == "direct":
        grid = lambda meta: (triton.cdiv(g.K * cg, meta["BLOCK_N"]), rs, split)  # noqa: E731
        _launch(conv2d_bwd_dw_direct, grid, args, INT64=int64)
        _record("conv2d_bwd_dw_direct", int64, f"split={split}")
    else:
        flat = cg < FLAT_K_MAX_C
        grid = lambda meta: (triton.cdiv(kg, meta["BLOCK_M"])  # noqa: E731
                             * (triton.cdiv(cg * rs, meta["BLOCK_N"]) if flat else rs * triton.cdiv(cg, meta["BLOCK_N"])),
                             g.groups, split)
        dyc, xc = channels_last_input(dy), channels_last_input(x)
        int64 = int64 or needs_int64((dyc, xc))
        args = (dyc, xc, out, *_geom_args(g), split, split_len, *dyc.stride(), *xc.stride(), *so)
        _launch(conv2d_bwd_dw_implicit_gemm, grid, args, FLAT_N=flat, INT64=int64, PRECISION=precision)
        _record("conv2d_bwd_dw_implicit_gemm", int64, ("flat" if flat else "taps"))
        launched(f"conv2d_bwd_dw_implicit_gemm[split={split}]")
    if split > 1:
        _sum_splits(out, dw, split)
    return dw


def _grad_b(dy, g: ConvGeometry):
    db = empty((g.K,), dy.dtype, dy.device)
    npq = g.N * g.P * g.Q
    split, split_len = _split_k(npq, triton.cdiv(g.K, 64), dy.device)
    out = db if split == 1 else empty((split, g.K), torch.float32, dy.device)
    sos = 0 if split == 1 else out.stride(0)
    int64 = needs_int64((dy, out), extents=(npq + split_len,))
    grid = lambda meta: (triton.cdiv(g.K, meta["BLOCK_N"]), split)  # noqa: E731
    _launch(conv2d_bwd_db, grid, (dy, out, g.N, g.K, g.P, g.Q, split, split_len, *dy.stride(), sos), INT64=int64)
    _record("conv2d_bwd_db", int64, f"split={split}")
    if split > 1:
        _sum_splits(out, db, split)
    return db


def conv2d_backward(dy, x, w, g: ConvGeometry, need_dx: bool = True, need_dw: bool = True,
                    need_db: bool = True, algo: str = "auto", precision: str = "ieee"):
    """Gradients of conv2d_forward on torch tensors.

    dy: (N, K, P, Q), x: (N, C, H, W), w: (K, C/groups, R, S), any strides. Returns
    (dx (N, C, H, W) | None, dw (K, C/groups, R, S) | None, db (K,) | None) of x's dtype; dx is
    channels-last when x is, dw and db are contiguous; entries not asked for are None and cost
    nothing. algo: 'auto' (per pass, ``conv_policy.choose_bwd_algos``), 'direct' or
    'implicit_gemm' (both passes; the direct kernel where the implicit GEMM's grid does not fit).
    dW and db split their N*P*Q reduction (``conv_policy.split_k``) into an fp32 workspace summed
    deterministically.
    """
    # the GEMMs' choice on the geometry they would run (fp16/bf16 pad few input channels)
    gp = padded_geometry(g, x)
    dx_algo, dw_algo = policy.choose_bwd_algos(gp, algo, dx_gemm_fits=_gemm_fits(g), dw_gemm_fits=_gemm_fits(g))
    precision = _dot_precision(x, precision)
    dx = _grad_x(dy, w, x, g, dx_algo, precision) if need_dx else None
    dw = _grad_w(dy, x, g, dw_algo, precision) if need_dw else None
    db = _grad_b(dy, g) if need_db else None
    return dx, dw, db
