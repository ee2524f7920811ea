"""conv2d on the triton backend: launchers for ``cnngpu.kernels.triton.conv2d_fwd`` / ``conv2d_bwd``.

Tensors are torch tensors of any strides (NCHW, channels-last, sliced views): every kernel takes
all strides, so nothing is copied. Outputs follow x's memory format (channels-last x gives a
channels-last y / dx), have x's dtype, and are accumulated in float32.

Algorithm choice (``algo='auto'``, see :func:`choose_algo`): the direct FMA kernel when the GEMM view
would be mostly padding on tensor cores -- a reduction (C/groups)*R*S shorter than one 16-wide
tensor-core K step, or fewer than 8 output channels per group (depthwise and similar) -- else the
implicit-GEMM kernel. Within the implicit GEMM the launcher specialises 1x1/stride-1/no-pad
convolutions (IS_1X1) and small C/groups (< 16, FLAT_K: flattened (c, r, s) reduction).

Backward (:func:`conv2d_backward`): dX per stride-residue class (:func:`residue_classes`, no
zero-inserted dY), dW with split-K over N*P*Q (:func:`split_k`) into an fp32 workspace summed in a
fixed order (deterministic), db likewise; direct or implicit GEMM per pass by
:func:`choose_bwd_algos` (``BWD_ALGO`` forces one, for tests and benchmarks).

Index width: kernels use int32 offsets unless some tensor's largest element offset or an index
extent (e.g. N*P*Q) reaches ``INT32_LIMIT``; then INT64=True makes them compute offsets in int64
(:func:`needs_int64`). Launches are recorded in LAUNCHES under the kernel name, plus
``'<name>[int64]'`` when the int64 variant ran and ``'<name>[<variant>]'`` for the implicit-GEMM
reduction variant ('1x1', 'flat' or 'taps'); split-K launches add ``'<name>[split=<SPLIT>]'``.
"""
from __future__ import annotations

import functools
import math
from typing import Iterable, List, Sequence, Tuple

import torch
import triton

from ...geometry import ConvGeometry
from ._common import empty, launched

from cnngpu.kernels.triton.conv2d_bwd import (conv2d_bwd_db, conv2d_bwd_dw_direct, conv2d_bwd_dw_implicit_gemm,
                                             conv2d_bwd_dx_direct, conv2d_bwd_dx_implicit_gemm,
                                             conv2d_bwd_sum_splits)
from cnngpu.kernels.triton.conv2d_fwd import conv2d_fwd_direct, conv2d_fwd_implicit_gemm

INT32_LIMIT = 2 ** 31
# headroom for index values of masked lanes past the end (tile rounding: BLOCK sizes <= 256)
_EXTENT_HEADROOM = 2 ** 16
# Grid axes 1 and 2 are limited to 65535 programs on CUDA.
_GRID_YZ_MAX = 65535
FLAT_K_MAX_C = 16
# backward algorithm: 'auto' (choose_bwd_algos) or 'direct' / 'implicit_gemm' to force both dX and dW
# (conv2d_backward has no algo argument in the op contract; tests and benchmarks set this)
BWD_ALGO = "auto"
# split-K of the N*P*Q reduction (dW, db): aim for SPLIT_WAVES programs per SM, but keep at least
# SPLIT_MIN_LEN rows per split, splits a multiple of SPLIT_GRANULE rows long, and at most MAX_SPLIT
SPLIT_WAVES = 2
SPLIT_MIN_LEN = 2048
SPLIT_GRANULE = 128
MAX_SPLIT = 64
NOMINAL_SMS = 132            # H100 SXM; used when the tensors are not on a CUDA device (interpreter)


# ------------------------------------------------------------------------------------------------
# decisions (pure functions, unit-tested)
# ------------------------------------------------------------------------------------------------
def max_offset(shape: Sequence[int], strides: Sequence[int]) -> int:
    """Largest element offset of a strided view (0 for an empty one)."""
    if any(int(s) == 0 for s in shape):
        return 0
    return sum((int(s) - 1) * abs(int(st)) for s, st in zip(shape, strides))


def needs_int64(layouts: Iterable[Tuple[Sequence[int], Sequence[int]]], extents: Iterable[int] = ()) -> bool:
    """True when int32 index math could overflow: any (shape, strides) view has an element offset
    >= INT32_LIMIT, or an index extent (a flattened GEMM dimension such as N*P*Q) comes within
    a tile of it."""
    if any(max_offset(sh, st) >= INT32_LIMIT for sh, st in layouts):
        return True
    return any(int(e) >= INT32_LIMIT - _EXTENT_HEADROOM for e in extents)


def _layouts(*tensors):
    return [(tuple(t.shape), tuple(t.stride())) for t in tensors if t is not None]


def choose_algo(g: ConvGeometry) -> str:
    """'direct' or 'implicit_gemm' for ``algo='auto'``.

    direct when (C/groups)*R*S < 16 (shorter than one tensor-core K step: a GEMM tile would be
    mostly zero padding) or K/groups < 8 (depthwise and similar: the GEMM's column tile would be
    mostly padding, while the direct kernel packs channels of different groups into one tile);
    implicit GEMM otherwise.
    """
    if g.c_per_group * g.R * g.S < 16 or g.k_per_group < 8:
        return "direct"
    return "implicit_gemm"


def choose_bwd_algos(g: ConvGeometry) -> Tuple[str, str]:
    """('direct' | 'implicit_gemm') for dX and for dW, by the same rule as :func:`choose_algo`
    applied to each pass's GEMM: dX[N*H*W, Cg] = dY[., Kg*R*S] @ W (direct when Cg < 8 or
    Kg*R*S < 16); dW[Kg, Cg*R*S] = dY^T @ im2col(x) (direct when Kg < 8 or Cg*R*S < 16); both
    direct when groups exceeds the grid-axis limit of the implicit GEMMs."""
    if BWD_ALGO != "auto":
        return BWD_ALGO, BWD_ALGO
    if g.groups > _GRID_YZ_MAX:           # the implicit GEMMs put groups on grid axis 1
        return "direct", "direct"
    cg, kg, rs = g.c_per_group, g.k_per_group, g.R * g.S
    dx = "direct" if (cg < 8 or kg * rs < 16) else "implicit_gemm"
    dw = "direct" if (kg < 8 or cg * rs < 16) else "implicit_gemm"
    return dx, dw


def split_k(rows: int, tiles: int, num_sms: int = NOMINAL_SMS) -> Tuple[int, int]:
    """(SPLIT, split_len) for a reduction over ``rows`` (N*P*Q) feeding ``tiles`` output tiles.

    SPLIT = min(ceil(SPLIT_WAVES*num_sms / tiles), rows // SPLIT_MIN_LEN, MAX_SPLIT), at least 1;
    split_len = ceil(rows / SPLIT) rounded up to SPLIT_GRANULE, and SPLIT recomputed from it so no
    split is empty. Split s covers rows [s*split_len, min((s+1)*split_len, rows)).
    """
    want = -(-SPLIT_WAVES * num_sms // max(tiles, 1))
    split = max(1, min(want, rows // max(SPLIT_MIN_LEN, 1), MAX_SPLIT))
    length = -(-rows // split)
    length = -(-length // SPLIT_GRANULE) * SPLIT_GRANULE
    return -(-rows // length), length


def residue_classes(g: ConvGeometry) -> Tuple[List[Tuple[int, ...]], Tuple[int, int, int, int]]:
    """The stride-residue decomposition of dX (see kernels/triton/conv2d_bwd.py).

    Returns (rows, (r_step, s_step, dp_r, dq_s)); one row per class (a, b), a < stride_h, b < stride_w:
    (a, b, Hc, Wc, r0, nr, p0, s0, ns, q0) such that pixel h = a + sh*i (i < Hc) receives from exactly
    the taps r = r0 + t*r_step (t < nr) at dy row p = i + p0 - t*dp_r (which the kernel still
    bounds-checks against P); likewise for columns.
    """
    def axis(size, stride, pad, dil, taps):
        step = stride // math.gcd(stride, dil)
        dp = step * dil // stride
        out = []
        for a in range(stride):
            count = max(0, -(-(size - a) // stride))
            first = next((r for r in range(min(taps, step)) if (a + pad - r * dil) % stride == 0), None)
            if first is None:
                out.append((a, count, 0, 0, 0))
            else:
                n_taps = len(range(first, taps, step))
                out.append((a, count, first, n_taps, (a + pad - first * dil) // stride))
        return out, step, dp

    rows_h, r_step, dp_r = axis(g.H, g.stride[0], g.pad[0], g.dilation[0], g.R)
    rows_w, s_step, dq_s = axis(g.W, g.stride[1], g.pad[1], g.dilation[1], g.S)
    rows = [(a, b, hc, wc, r0, nr, p0, s0, ns, q0)
            for (a, hc, r0, nr, p0) in rows_h for (b, wc, s0, ns, q0) in rows_w]
    return rows, (r_step, s_step, dp_r, dq_s)


@functools.lru_cache(maxsize=256)
def _class_table(g: ConvGeometry, device: str):
    rows, steps = residue_classes(g)
    tab = torch.tensor(rows, dtype=torch.int32, device=device).reshape(-1)
    return tab, len(rows), max(r[2] * r[3] for r in rows) * g.N, steps


@functools.lru_cache(maxsize=16)
def _num_sms(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).multi_processor_count
    return NOMINAL_SMS


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
    algo: 'direct', 'implicit_gemm' or 'auto' (:func:`choose_algo`); precision: 'ieee' or 'tf32'
    for float32 tensor-core dots (ignored by the direct kernel, which always uses fp32 FMA, and
    for half inputs, whose products are exact in fp32).
    """
    if algo == "auto":
        algo = choose_algo(g)
    precision = _dot_precision(x, precision)
    y = alloc_nchw((g.N, g.K, g.P, g.Q), x)
    M = g.N * g.P * g.Q
    int64 = needs_int64(_layouts(x, w, b, y), extents=(M,))
    bias = b if b is not None else x
    sb = b.stride(0) if b is not None else 0
    args = (x, w, bias, y, *_geom_args(g), *x.stride(), *w.stride(), sb, *y.stride())
    if algo == "direct":
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(g.K, meta["BLOCK_N"]))  # noqa: E731
        conv2d_fwd_direct[grid](*args, HAS_BIAS=b is not None, GROUPED=g.groups > 1, INT64=int64)
        _record("conv2d_fwd_direct", int64)
        return y
    if algo != "implicit_gemm":
        raise ValueError(f"algo must be 'auto', 'direct' or 'implicit_gemm', got {algo!r}")
    if g.groups > _GRID_YZ_MAX:
        raise ValueError(f"conv2d implicit GEMM puts groups on grid axis 1 (at most {_GRID_YZ_MAX}), got "
                         f"groups={g.groups}; use algo='direct'")
    one = is_1x1(g)
    flat = (not one) and g.c_per_group < FLAT_K_MAX_C
    kg = g.k_per_group
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(kg, meta["BLOCK_N"]), g.groups)  # noqa: E731
    conv2d_fwd_implicit_gemm[grid](*args, HAS_BIAS=b is not None, IS_1X1=one, FLAT_K=flat, INT64=int64,
                                   PRECISION=precision)
    _record("conv2d_fwd_implicit_gemm", int64, "1x1" if one else ("flat" if flat else "taps"))
    return y


# ------------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------------
def _sum_splits(ws: torch.Tensor, out: torch.Tensor, split: int) -> None:
    """out (contiguous) = ws (split, *out.shape) summed over the splits in a fixed order."""
    L = out.numel()
    int64 = needs_int64(_layouts(ws))
    grid = lambda meta: (triton.cdiv(L, meta["BLOCK"]),)  # noqa: E731
    conv2d_bwd_sum_splits[grid](ws, out, L, split, INT64=int64)
    _record("conv2d_bwd_sum_splits", int64)


def _grad_x(dy, w, x, g: ConvGeometry, algo: str, precision: str):
    dx = alloc_nchw((g.N, g.C, g.H, g.W), x)
    tab, n_cls, rows_max, steps = _class_table(g, str(x.device))
    int64 = needs_int64(_layouts(dy, w, dx), extents=(g.N * g.H * g.W,))
    args = (dy, w, dx, tab, *_geom_args(g), *steps, *dy.stride(), *w.stride(), *dx.stride())
    if algo == "direct":
        grid = lambda meta: (triton.cdiv(rows_max, meta["BLOCK_M"]), triton.cdiv(g.C, meta["BLOCK_N"]), n_cls)  # noqa: E731
        conv2d_bwd_dx_direct[grid](*args, GROUPED=g.groups > 1, INT64=int64)
        _record("conv2d_bwd_dx_direct", int64)
        return dx
    if g.groups > _GRID_YZ_MAX:
        raise ValueError(f"conv2d dX implicit GEMM puts groups on grid axis 1 (at most {_GRID_YZ_MAX}), "
                         f"got groups={g.groups}")
    flat = g.k_per_group < FLAT_K_MAX_C
    cg = g.c_per_group
    grid = lambda meta: (triton.cdiv(rows_max, meta["BLOCK_M"]) * triton.cdiv(cg, meta["BLOCK_N"]),  # noqa: E731
                         g.groups, n_cls)
    conv2d_bwd_dx_implicit_gemm[grid](*args, FLAT_K=flat, INT64=int64, PRECISION=precision)
    _record("conv2d_bwd_dx_implicit_gemm", int64, "flat" if flat else "taps")
    return dx


def _grad_w(dy, x, g: ConvGeometry, algo: str, precision: str):
    dw = empty((g.K, g.c_per_group, g.R, g.S), x.dtype, x.device)
    npq = g.N * g.P * g.Q
    cg, kg, rs = g.c_per_group, g.k_per_group, g.R * g.S
    if algo == "direct":
        tiles = triton.cdiv(g.K * cg, 64) * rs
    else:
        tiles = g.groups * triton.cdiv(kg, 128) * triton.cdiv(cg * rs, 128)
    split, split_len = split_k(npq, tiles, _num_sms(str(x.device)))
    out = dw if split == 1 else empty((split, g.K, cg, g.R, g.S), torch.float32, x.device)
    so = (0, *dw.stride()) if split == 1 else out.stride()
    int64 = needs_int64(_layouts(dy, x, out), extents=(npq + split_len, g.K * cg * rs))
    args = (dy, x, out, *_geom_args(g), split, split_len, *dy.stride(), *x.stride(), *so)
    if algo == "direct":
        grid = lambda meta: (triton.cdiv(g.K * cg, meta["BLOCK_N"]), rs, split)  # noqa: E731
        conv2d_bwd_dw_direct[grid](*args, INT64=int64)
        _record("conv2d_bwd_dw_direct", int64, f"split={split}")
    else:
        if g.groups > _GRID_YZ_MAX:
            raise ValueError(f"conv2d dW implicit GEMM puts groups on grid axis 1 (at most {_GRID_YZ_MAX}), "
                             f"got groups={g.groups}")
        flat = cg < FLAT_K_MAX_C
        grid = lambda meta: (triton.cdiv(kg, meta["BLOCK_M"])  # noqa: E731
                             * (triton.cdiv(cg * rs, meta["BLOCK_N"]) if flat else rs * triton.cdiv(cg, meta["BLOCK_N"])),
                             g.groups, split)
        conv2d_bwd_dw_implicit_gemm[grid](*args, FLAT_N=flat, INT64=int64, PRECISION=precision)
        _record("conv2d_bwd_dw_implicit_gemm", int64, ("flat" if flat else "taps"))
        launched(f"conv2d_bwd_dw_implicit_gemm[split={split}]")
    if split > 1:
        _sum_splits(out, dw, split)
    return dw


def _grad_b(dy, g: ConvGeometry):
    db = empty((g.K,), dy.dtype, dy.device)
    npq = g.N * g.P * g.Q
    split, split_len = split_k(npq, triton.cdiv(g.K, 64), _num_sms(str(dy.device)))
    out = db if split == 1 else empty((split, g.K), torch.float32, dy.device)
    sos = 0 if split == 1 else out.stride(0)
    int64 = needs_int64(_layouts(dy, out), extents=(npq + split_len,))
    grid = lambda meta: (triton.cdiv(g.K, meta["BLOCK_N"]), split)  # noqa: E731
    conv2d_bwd_db[grid](dy, out, g.N, g.K, g.P, g.Q, split, split_len, *dy.stride(), sos, INT64=int64)
    _record("conv2d_bwd_db", int64, f"split={split}")
    if split > 1:
        _sum_splits(out, db, split)
    return db


def conv2d_backward(dy, x, w, g: ConvGeometry, need_dx: bool = True, need_dw: bool = True,
                    need_db: bool = True, precision: str = "ieee"):
    """Gradients of conv2d_forward on torch tensors.

    dy: (N, K, P, Q), x: (N, C, H, W), w: (K, C/groups, R, S), any strides. Returns
    (dx (N, C, H, W) | None, dw (K, C/groups, R, S) | None, db (K,) | None) of x's dtype; dx is
    channels-last when x is, dw and db are contiguous; entries not asked for are None and cost
    nothing. Algorithms per pass: :func:`choose_bwd_algos`; dW and db split their N*P*Q reduction
    (:func:`split_k`) into an fp32 workspace summed deterministically.
    """
    dx_algo, dw_algo = choose_bwd_algos(g)
    precision = _dot_precision(x, precision)
    dx = _grad_x(dy, w, x, g, dx_algo, precision) if need_dx else None
    dw = _grad_w(dy, x, g, dw_algo, precision) if need_dw else None
    db = _grad_b(dy, g) if need_db else None
    return dx, dw, db
