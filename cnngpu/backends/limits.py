"""Device limits every GPU backend's launchers respect, the int32/int64 index decision, and the SM
count assumed off a GPU."""
from __future__ import annotations

from typing import Iterable, Sequence, Tuple

INT32_LIMIT = 2 ** 31           # kernels index with 32-bit ints below this
EXTENT_HEADROOM = 2 ** 16       # index values of masked lanes past an extent (tile rounding) must fit too
GRID_X_MAX = 2 ** 31 - 1        # CUDA grid limits: axis 0 (x) ...
GRID_YZ_MAX = 65535             # ... and axes 1 and 2 (y, z)
# SMs that launch plans assume when the arrays are not on a GPU (Triton's interpreter, CPU runs):
# small, so the interpreter runs few programs, yet split reductions still split at tiny sizes
OFF_GPU_SMS = 2


def max_offset(shape: Sequence[int], strides: Sequence[int]) -> int:
    """Largest element offset of a strided view (0 for an empty one)."""
    if any(int(s) == 0 for s in shape):
        return 0
    return sum((int(s) - 1) * abs(int(st)) for s, st in zip(shape, strides))


def extent_overflows(extent: int) -> bool:
    """True when a flat index extent (e.g. N*P*Q) comes within a tile of the 32-bit limit."""
    return int(extent) >= INT32_LIMIT - EXTENT_HEADROOM


def needs_int64(layouts: Iterable[Tuple[Sequence[int], Sequence[int]]], extents: Iterable[int] = (),
                offset_headroom: int = 0) -> bool:
    """True when int32 index math could overflow: any (shape, strides) view has an element offset
    >= INT32_LIMIT - offset_headroom (a kernel whose masked lanes step past the last element asks
    for headroom), or an index extent comes within a tile of the limit (:func:`extent_overflows`)."""
    if any(max_offset(sh, st) >= INT32_LIMIT - offset_headroom for sh, st in layouts):
        return True
    return any(extent_overflows(e) for e in extents)
