"""CrossEntropyLoss: softmax cross-entropy (torch's options), with its gradient."""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

from .. import backends as _backends
from .. import functional as F
from ..convert import convert
from .._typing import Array


class CrossEntropyLoss:
    """``loss = CrossEntropyLoss()(logits, labels)`` -> Python float; ``backward()`` -> dlogits.

    Arguments as ``torch.nn.CrossEntropyLoss`` (weight, ignore_index=-100, reduction='mean',
    label_smoothing=0.0; see ``cnngpu.functional.cross_entropy``). logits: (N, C) or (N, C, d1, ...)
    float native array; labels: int64 class indices (a NumPy array is moved to the logits'
    backend) or class probabilities. backend=None uses the logits' backend. The call returns a
    Python float (reduction 'mean'/'sum') or the per-entry losses (reduction='none');
    ``backward(dloss=1.0)`` returns the gradient w.r.t. the logits from the probabilities cached by
    forward (dloss: per-entry array for reduction='none').
    """

    def __init__(self, weight: Optional[Array] = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, backend: Optional[str] = None) -> None:
        if backend is not None:
            _backends.get_backend(backend)  # unknown / unavailable backend raises here
        self.backend = backend
        self.weight, self.ignore_index, self.reduction = weight, ignore_index, reduction
        self.label_smoothing = label_smoothing
        self._cache: Optional[Tuple[Array, Array, Optional[str]]] = None

    def _opts(self) -> Any:
        return dict(ignore_index=self.ignore_index, reduction=self.reduction, label_smoothing=self.label_smoothing)

    def forward(self, logits: Array, labels: Array) -> Union[float, Array]:
        backend = self.backend or _backends.backend_of(logits)
        if backend is not None and _backends.backend_of(labels) not in (None, backend) and backend in _backends.NAMES:
            labels = convert(labels, backend)
        weight = self.weight
        if weight is not None and backend is not None and _backends.backend_of(weight) not in (None, backend):
            weight = convert(weight, backend)
        loss, probs = F.cross_entropy(logits, labels, weight, return_probs=True, backend=backend, **self._opts())
        self._cache = (probs, labels, backend)
        self._weight = weight
        return loss if self.reduction == "none" else float(loss)

    __call__ = forward

    def backward(self, dloss: Any = 1.0) -> Array:
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward called before forward (or twice after one forward)")
        probs, labels, backend = self._cache
        self._cache = None
        return F.cross_entropy_backward(probs, labels, dloss, self._weight, backend=backend, **self._opts())

    def __repr__(self) -> str:
        return f"CrossEntropyLoss(reduction={self.reduction!r}, backend={self.backend!r})"
