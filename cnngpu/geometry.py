"""Shape arithmetic shared by every backend: output sizes, padding resolution, receptive fields.

The front end (``cnngpu.functional``) turns user arguments (ints, pairs, ``'same'``) into the
frozen geometry records below once; every backend op takes the record and never re-parses
arguments. Padding is kept as (begin, end) per axis so that ``'same'`` with an even kernel, which
needs one more zero on the bottom/right, is exact; kernels only ever need the *begin* padding plus
the output size, because an input index is ``out * stride - pad_begin + tap * dilation``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Tuple, Union

IntOrPair = Union[int, Sequence[int]]


def pair(value: IntOrPair, name: str) -> Tuple[int, int]:
    """Return ``(v, v)`` for an int or a length-1 sequence (as torch, which repeats a single value per
    spatial dim) and ``tuple(value)`` for a length-2 sequence of ints.

    Raises TypeError for non-integers (bools and floats included) and ValueError for a wrong length.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got bool {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not hasattr(value, "__len__")):
        v = int(value)
        return (v, v)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {type(value).__name__}") from None
    if len(items) == 1:
        items = items * 2
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {len(items)} values: {items!r}")
    out = []
    for it in items:
        if isinstance(it, bool) or not hasattr(it, "__index__"):
            raise TypeError(f"{name} must hold ints, got {items!r}")
        out.append(int(it))
    return (out[0], out[1])


def conv_output_size(size: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1,
                     pad_end: int | None = None, ceil_mode: bool = False) -> int:
    """Output length of a sliding window: ``floor((size + pad + pad_end - d*(k-1) - 1) / s) + 1``.

    With ``dilation=1`` and symmetric padding this is the lecture formula ``(W - K + 2P)/S + 1``.
    ``ceil_mode`` rounds up instead, but (as in PyTorch) never starts a window inside the end padding.
    """
    pad_end = pad if pad_end is None else pad_end
    span = size + pad + pad_end - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1 if span >= 0 else 0
    # ceil(span / stride) + 1, also for a window longer than the padded input (span < 0): PyTorch
    # then still gives one window that starts in the input and overhangs its end
    out = -(-span // stride) + 1
    if out > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return max(out, 0)


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> Tuple[int, int]:
    """(begin, end) zero padding that makes the output length ``ceil(size / stride)``.

    For stride 1 the output has the input's size; odd totals put the extra zero at the end
    (the convention of PyTorch and TensorFlow).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class ConvGeometry:
    """Everything a conv2d kernel needs. x: (N, C, H, W); w: (K, C // groups, R, S); y: (N, K, P, Q)."""
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    stride: Tuple[int, int]
    pad: Tuple[int, int]          # begin padding (top, left); end padding is implied by P, Q
    pad_end: Tuple[int, int]      # (bottom, right), kept for references that pad explicitly
    dilation: Tuple[int, int]
    groups: int

    @property
    def c_per_group(self) -> int:
        return self.C // self.groups

    @property
    def k_per_group(self) -> int:
        return self.K // self.groups

    @property
    def flops(self) -> int:
        """Multiply-adds counted as 2 FLOPs: 2 * N*K*P*Q * (C/groups)*R*S."""
        return 2 * self.N * self.K * self.P * self.Q * self.c_per_group * self.R * self.S


@dataclass(frozen=True)
class PoolGeometry:
    """A 2-D pooling window. x: (N, C, H, W); y: (N, C, P, Q)."""
    N: int
    C: int
    H: int
    W: int
    P: int
    Q: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    pad: Tuple[int, int]
    dilation: Tuple[int, int]
    ceil_mode: bool


def receptive_field(layers: Iterable[Any]) -> Tuple[int, int]:
    """Receptive field (rows, cols) of one output pixel of a stack of conv/pool layers.

    ``layers`` is an iterable of objects with optional ``kernel_size``, ``stride`` and ``dilation``
    attributes (ints or pairs); layers without them (ReLU, norms) leave the field unchanged.
    Uses r_out = r_in + (k_eff - 1) * jump, jump *= stride, with k_eff = d*(k-1)+1.
    """
    rf = [1, 1]
    jump = [1, 1]
    for layer in layers:
        k = getattr(layer, "kernel_size", None)
        if k is None:
            continue
        k = pair(k, "kernel_size")
        s = pair(getattr(layer, "stride", 1) or 1, "stride")
        d = pair(getattr(layer, "dilation", 1) or 1, "dilation")
        for a in range(2):
            rf[a] += (d[a] * (k[a] - 1)) * jump[a]
            jump[a] *= s[a]
    return rf[0], rf[1]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
