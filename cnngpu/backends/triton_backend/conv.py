"""conv2d on the triton backend: launchers for ``cnngpu.kernels.triton.conv2d_fwd`` / ``conv2d_bwd``.

Tensors are torch tensors of any strides (NCHW, channels-last, sliced views): every kernel takes
all strides, so nothing is copied. Outputs follow x's memory format (channels-last x gives a
channels-last y / dx), have x's dtype, and are accumulated in float32.

Algorithm choice (``algo='auto'``, see :func:`choose_algo`): the direct FMA kernel when the GEMM view
would be mostly padding on tensor cores -- a reduction (C/groups)*R*S shorter than one 16-wide
tensor-core K step, or fewer than 8 output channels per group (depthwise and similar) -- else the
implicit-GEMM kernel. Within the implicit GEMM the launcher specialises 1x1/stride-1/no-pad
convolutions (IS_1X1) and small C/groups (< 16, FLAT_K: flattened (c, r, s) reduction).

Index width: kernels use int32 offsets unless some tensor's largest element offset or an index
extent (e.g. N*P*Q) reaches ``INT32_LIMIT``; then INT64=True makes them compute offsets in int64
(:func:`needs_int64`). Launches are recorded in LAUNCHES under the kernel name, plus
``'<name>[int64]'`` when the int64 variant ran and ``'<name>[<variant>]'`` for the implicit-GEMM
reduction variant ('1x1', 'flat' or 'taps').
"""
from __future__ import annotations

from typing import Iterable, Sequence, Tuple

import torch
import triton

from ...geometry import ConvGeometry
from ._common import empty, launched

from cnngpu.kernels.triton.conv2d_fwd import conv2d_fwd_direct, conv2d_fwd_implicit_gemm

INT32_LIMIT = 2 ** 31
# headroom for index values of masked lanes past the end (tile rounding: BLOCK sizes <= 256)
_EXTENT_HEADROOM = 2 ** 16
# Grid axes 1 and 2 are limited to 65535 programs on CUDA.
_GRID_YZ_MAX = 65535
FLAT_K_MAX_C = 16


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


def conv2d_backward(dy, x, w, g: ConvGeometry, need_dx: bool = True, need_dw: bool = True,
                    need_db: bool = True, precision: str = "ieee"):
    raise NotImplementedError("conv2d backward: being written")
