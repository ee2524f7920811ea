"""Type aliases of the public API (annotations only; nothing here runs at import beyond typing)."""
from __future__ import annotations

from typing import Any, Sequence, Union

# A native array of one backend: numpy.ndarray, cupy.ndarray or torch.Tensor. cupy and torch are
# optional dependencies, so the alias cannot name them; functions state which one they return.
Array = Any
IntOrPair = Union[int, Sequence[int]]      # an int or an (h, w) pair
Padding = Union[int, Sequence[int], str]   # an int, a (pad_h, pad_w) pair, or "same" / "valid"

__all__ = ["Array", "IntOrPair", "Padding"]
