"""The weight layouts the cupy conv kernels read, one function per layout.

Each takes the user's weight w (K, C/groups, R, S; any strides; 16-bit floats as their raw uint16
bits, so no cupy arithmetic on bfloat16 is needed) and returns the C-contiguous array a kernel
wants: w's own memory when it already has that order (a channels-last w for the forward GEMMs, a
C-contiguous one for the direct kernels: no copy), else a copy made once per parameter version
(``cnngpu.backends.weight_cache``: the version cnngpu.torch / cnngpu.nn declare for w; a cupy
array without one is re-laid on every call). Every copy made is recorded in LAUNCHES as
``conv2d_weight_relayout`` (the name the triton backend uses).
"""
from __future__ import annotations

from typing import Any, Callable, Hashable

from .. import weight_cache
from ._common import launched
from ._cupy import cupy
from ._launch import raw_bits


def _laid(w, layout: Hashable, view: Callable[[Any], Any]):
    """``view(raw w)`` itself when C-contiguous, else its contiguous copy (cached per version)."""
    v = view(raw_bits(w))
    if v.flags.c_contiguous:
        return v

    def make():
        launched("conv2d_weight_relayout")
        return cupy.ascontiguousarray(v)
    return weight_cache.relaid(w, layout, make)


def weight_kcrs(w):
    """(K, C/groups, R, S) C-contiguous: the direct kernels' weight (fwd and dX)."""
    return _laid(w, "kcrs", lambda r: r)


def weight_krsc(w):
    """(K, R, S, C/groups) C-contiguous: operand B of the forward implicit GEMMs (mma.sync and
    sm_90 wgmma; reduction index (r, s, c) with c fastest)."""
    return _laid(w, "krsc", lambda r: r.transpose(0, 2, 3, 1))


def weight_grsck(w, groups: int):
    """(groups, R, S, C/groups, K/groups) C-contiguous: operand B of the dX implicit GEMMs (per
    group and tap, a C/g x K/g matrix with k fastest: the reduction runs over k)."""
    K, Cg, R, S = (int(d) for d in w.shape)
    return _laid(w, ("grsck", groups),
                 lambda r: r.reshape(groups, K // groups, Cg, R, S).transpose(0, 3, 4, 2, 1))
