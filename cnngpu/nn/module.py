"""Parameter and the Module base class shared by every layer.

A module holds its parameters (``Parameter``: ``.data``, ``.grad``, ``.name``) and buffers
(running statistics) as native arrays of one backend, chosen at construction (``backend=None``
means ``cnngpu.default_backend()``). Parameters are created in NumPy with a seeded generator and
converted once with the backend's ``asarray``; after that every computation goes through
``cnngpu.functional`` so a layer runs unchanged on numpy, cupy and triton.

Caching contract: ``forward(x)`` always (training and eval) keeps what ``backward`` needs
(inputs, outputs, statistics) on the module, so ``backward(dy)`` may follow any forward; it
returns dx and *accumulates* parameter gradients into ``.grad`` (as torch does; ``zero_grad()``
resets them to None). A second forward overwrites the cache. One forward allows one backward:
a second ``backward`` without a new forward raises RuntimeError (torch: "Trying to backward
through the graph a second time"), instead of accumulating the gradients again.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .. import backends as _backends
from ..backends import weight_cache
from ..convert import to_numpy
from .._typing import Array


class Parameter:
    """A trainable array: ``data`` (native array), ``grad`` (native array or None), ``name``, and
    ``version``, a counter of the updates cnngpu makes to ``data``.

    ``version`` goes up on every assignment to ``data`` -- ``p.data = a`` (``load_state_dict``)
    and augmented assignments such as ``p.data -= lr * g`` (``SGD.step``), which Python also
    turns into an assignment -- and on :meth:`bump_version`. The GPU backends cache re-laid copies
    of conv weights per version (``cnngpu.backends.weight_cache``), so a write that bypasses the
    attribute -- ``p.data[...] = v``, an in-place op on another reference to the array, a kernel or
    DLPack alias writing the memory -- must be followed by ``p.bump_version()``, or the next
    forward may use the copy made before it.
    """

    __slots__ = ("_data", "grad", "name", "_version", "__weakref__")

    def __init__(self, data: Array, name: str = "") -> None:
        self._version = 0
        self._data = data
        self.grad = None
        self.name = name

    @property
    def data(self) -> Array:
        return self._data

    @data.setter
    def data(self, value: Array) -> None:
        self._data = value
        self._version += 1

    @property
    def version(self) -> int:
        """Updates made to ``data`` so far (assignments and :meth:`bump_version` calls)."""
        return self._version

    def bump_version(self) -> None:
        """Declare that ``data`` was changed in place by a write this class cannot see (see the
        class docstring): cached re-laid copies of it are then made afresh."""
        self._version += 1

    def versioned(self) -> Any:
        """Context manager declaring ``data``'s version to the backends for one call
        (``weight_cache.versioned(data, self, version)``); the layers wrap their conv calls in it."""
        return weight_cache.versioned(self._data, self, self._version)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    def accumulate(self, g: Array) -> None:
        """grad += g (the first call stores g itself; backend ops return fresh arrays)."""
        if g is None:
            return
        if self.grad is None:
            self.grad = g
        else:
            self.grad += g

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, shape={self.shape}, dtype={self.data.dtype})"


def resolve_backend(backend: Optional[str]) -> str:
    """Validate a backend name (None -> the default) and check it can run here."""
    name = _backends.default_backend() if backend is None else backend
    _backends.get_backend(name)  # raises ValueError (unknown) / BackendUnavailableError (why)
    return name


def check_dtype(backend: str, dtype: str) -> str:
    be = _backends.get_backend(backend)
    if not isinstance(dtype, str) or dtype not in be.DTYPES:
        raise TypeError(f"dtype must be one of {be.DTYPES} on backend {backend!r}, got {dtype!r}")
    return dtype


def param_dtype(dtype: str) -> str:
    """Norm parameters and statistics are float32 for half-precision activations."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def kaiming_uniform(gen: np.random.Generator, shape: Sequence[int], fan_in: int) -> np.ndarray:
    """torch's default init for conv/linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform_ with a=sqrt(5) reduces to this bound)."""
    bound = 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0
    return gen.uniform(-bound, bound, size=shape)


def _once_per_forward(cls: type) -> None:
    """Wrap ``cls``'s own forward/backward so that each forward arms exactly one backward."""
    fwd, bwd = cls.__dict__.get("forward"), cls.__dict__.get("backward")
    if fwd is not None:
        @functools.wraps(fwd)
        def forward(self: "Module", x: Array, *args: Any, **kwargs: Any) -> Array:
            out = fwd(self, x, *args, **kwargs)
            self.__dict__["_backward_armed"] = True
            return out
        setattr(cls, "forward", forward)
    if bwd is not None:
        @functools.wraps(bwd)
        def backward(self: "Module", dy: Array) -> Array:
            if self.__dict__.get("_backward_armed") is False:
                raise RuntimeError(f"{type(self).__name__}.backward called a second time after one forward: "
                                   f"run forward again first (torch: 'Trying to backward through the graph a "
                                   f"second time')")
            out = bwd(self, dy)
            self.__dict__["_backward_armed"] = False
            return out
        setattr(cls, "backward", backward)


class Module:
    """Base class: parameters, buffers, children, train/eval, backend/dtype bookkeeping."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _once_per_forward(cls)

    def __init__(self, backend: Optional[str] = None, dtype: str = "float32") -> None:
        self.backend = resolve_backend(backend)
        self.dtype = check_dtype(self.backend, dtype)
        self.training = True
        self._params: "OrderedDict[str, Parameter]" = OrderedDict()
        self._buffers: List[str] = []
        self._children: "OrderedDict[str, Module]" = OrderedDict()

    # -- construction helpers -----------------------------------------------------------------
    def _asarray(self, a: np.ndarray, dtype: str) -> Array:
        return _backends.get_backend(self.backend).asarray(np.asarray(a), dtype=dtype)

    def _add_param(self, name: str, value: np.ndarray, dtype: Optional[str] = None) -> Parameter:
        p = Parameter(self._asarray(value, dtype or self.dtype), name)
        self._params[name] = p
        object.__setattr__(self, name, p)
        return p

    def _add_buffer(self, name: str, value: np.ndarray, dtype: Optional[str] = None) -> None:
        self._buffers.append(name)
        object.__setattr__(self, name, self._asarray(value, dtype or self.dtype))

    def _add_child(self, name: str, module: "Module") -> None:
        if not isinstance(module, Module):
            raise TypeError(f"layer {name} must be a cnngpu.nn.Module, got {type(module).__name__}")
        self._children[name] = module

    # -- public API ---------------------------------------------------------------------------
    def forward(self, x: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def named_parameters(self, prefix: str = "") -> Iterator[Tuple[str, Parameter]]:
        for n, p in self._params.items():
            yield prefix + n, p
        for cn, c in self._children.items():
            yield from c.named_parameters(prefix + cn + ".")

    def parameters(self) -> List[Parameter]:
        """All Parameter objects of this module and its children (in registration order)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[Tuple[str, object]]:
        for n in self._buffers:
            yield prefix + n, getattr(self, n)
        for cn, c in self._children.items():
            yield from c.named_buffers(prefix + cn + ".")

    def modules(self) -> Iterator["Module"]:
        yield self
        for c in self._children.values():
            yield from c.modules()

    def train(self, mode: bool = True) -> "Module":
        """Training mode (BatchNorm uses batch statistics and updates its running stats)."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode (BatchNorm uses its running statistics)."""
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of parameters and buffers as NumPy arrays, keyed like torch ('0.weight', ...)."""
        out: Dict[str, np.ndarray] = OrderedDict()
        for n, p in self.named_parameters():
            out[n] = np.array(to_numpy(p.data))
        for n, b in self.named_buffers():
            out[n] = np.array(to_numpy(b))
        return out

    def load_state_dict(self, state: Dict[str, object], strict: bool = True) -> None:
        """Copy arrays (NumPy, torch, cupy) into parameters and buffers, keeping this module's
        backend and dtypes. strict: every key must match and every entry must be given. torch's
        BatchNorm ``num_batches_tracked`` entries are ignored, so a torch state_dict loads."""
        targets = {}
        for mod_prefix, m in self._prefixed_modules(""):
            for n, p in m._params.items():
                targets[mod_prefix + n] = (m, n, True)
            for n in m._buffers:
                targets[mod_prefix + n] = (m, n, False)
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # torch BN counter
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
        for k, (m, n, is_param) in targets.items():
            if k not in state:
                continue
            value = to_numpy(state[k])
            old = m._params[n].data if is_param else getattr(m, n)
            if tuple(value.shape) != tuple(int(s) for s in old.shape):
                raise ValueError(f"state_dict[{k!r}] has shape {tuple(value.shape)}, expected {tuple(old.shape)}")
            new = m._asarray(value, str(old.dtype).replace("torch.", ""))
            if is_param:
                m._params[n].data = new
            else:
                object.__setattr__(m, n, new)

    def _prefixed_modules(self, prefix: str) -> Iterator[Tuple[str, "Module"]]:
        yield prefix, self
        for cn, c in self._children.items():
            yield from c._prefixed_modules(prefix + cn + ".")

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        """Shape of forward's output for an input of ``input_shape`` (no kernels run).
        Shape-preserving layers keep this default."""
        return tuple(int(s) for s in input_shape)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        if not self._children:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}({extra}"]
        for n, c in self._children.items():
            body = repr(c).replace("\n", "\n  ")
            lines.append(f"  ({n}): {body}")
        return "\n".join(lines) + "\n)"
