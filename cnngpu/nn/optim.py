"""SGD with momentum, weight decay and Nesterov (torch.optim.SGD semantics, dampening 0)."""
from __future__ import annotations

from typing import Iterable, List

from .module import Parameter
from .._typing import Array


def _clone(a: Array) -> Array:
    """A copy of a numpy/cupy array or torch tensor."""
    return a.clone() if hasattr(a, "clone") else a.copy()


class SGD:
    """Stochastic gradient descent, updating ``Parameter.data`` in place.

    For each parameter p with gradient g (torch.optim.SGD, dampening=0):
        g <- g + weight_decay * p
        v <- g (first step), else v <- momentum * v + g        (when momentum > 0)
        g <- g + momentum * v (nesterov) or g <- v
        p <- p - lr * g
    The in-place expressions are valid for numpy, cupy and torch arrays alike; ``p.data -= ...`` is
    an assignment to ``Parameter.data``, so each step bumps ``Parameter.version`` (re-laid conv
    weights cached for the old values are not reused).
    """

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        self.params: List[Parameter] = list(params)
        if not self.params:
            raise ValueError("SGD got an empty parameter list")
        for p in self.params:
            if not isinstance(p, Parameter):
                raise TypeError(f"SGD params must be cnngpu.nn.Parameter objects, got {type(p).__name__}")
        for name, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if nesterov and momentum <= 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.nesterov = bool(nesterov)
        self._velocity = [None] * len(self.params)

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                v = self._velocity[i]
                if v is None:
                    v = self._velocity[i] = _clone(g)
                else:
                    v *= self.momentum
                    v += g
                g = g + self.momentum * v if self.nesterov else v
            p.data -= self.lr * g

    def zero_grad(self) -> None:
        """Drop every gradient (set to None, like torch's default)."""
        for p in self.params:
            p.grad = None

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"nesterov={self.nesterov}, params={len(self.params)})")
