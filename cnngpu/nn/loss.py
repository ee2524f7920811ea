"""CrossEntropyLoss: mean softmax cross-entropy over a batch, with its gradient."""
from __future__ import annotations

from typing import Optional, Tuple

from .. import backends as _backends
from .. import functional as F
from ..convert import convert
from .._typing import Array


class CrossEntropyLoss:
    """``loss = CrossEntropyLoss()(logits, labels)`` -> Python float; ``backward()`` -> dlogits.

    logits: (M, classes) float native array; labels: (M,) integer array (a NumPy array is moved to
    the logits' backend). backend=None uses the logits' backend. ``backward(dloss=1.0)`` returns
    dloss * (softmax(logits) - onehot(labels)) / M from the probabilities cached by forward.
    """

    def __init__(self, backend: Optional[str] = None) -> None:
        if backend is not None:
            _backends.get_backend(backend)  # unknown / unavailable backend raises here
        self.backend = backend
        self._cache: Optional[Tuple[Array, Array, Optional[str]]] = None

    def forward(self, logits: Array, labels: Array) -> float:
        backend = self.backend or _backends.backend_of(logits)
        if backend is not None and _backends.backend_of(labels) not in (None, backend) and backend in _backends.NAMES:
            labels = convert(labels, backend)
        loss, probs = F.cross_entropy(logits, labels, backend=backend)
        self._cache = (probs, labels, backend)
        return float(loss)

    __call__ = forward

    def backward(self, dloss: float = 1.0) -> Array:
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward called before forward")
        probs, labels, backend = self._cache
        return F.cross_entropy_backward(probs, labels, dloss, backend=backend)

    def __repr__(self) -> str:
        return f"CrossEntropyLoss(backend={self.backend!r})"
