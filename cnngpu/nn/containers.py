"""Sequential: a chain of layers run forward in order and backward in reverse."""
from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

from ..geometry import receptive_field as _receptive_field
from .module import Module
from .._typing import Array


class Sequential(Module):
    """``Sequential(l1, l2, ...)``: forward(x) = ln(...l1(x)); backward(dy) runs each layer's
    backward in reverse and returns dx of the first layer. Parameters are named like torch's
    ('0.weight', '1.running_mean', ...). The container's backend is that of its first layer."""

    def __init__(self, *layers: Module) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        first = layers[0]
        if not isinstance(first, Module):
            raise TypeError(f"layer 0 must be a cnngpu.nn.Module, got {type(first).__name__}")
        super().__init__(first.backend, first.dtype)
        for i, layer in enumerate(layers):
            self._add_child(str(i), layer)
            if layer.backend != self.backend:
                raise ValueError(f"layer {i} ({type(layer).__name__}) runs on backend {layer.backend!r} but layer 0 "
                                 f"on {self.backend!r}; all layers of a Sequential must share one backend")
        self.layers = list(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def forward(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: Array) -> Array:
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        """The output shape for ``input_shape``, computed layer by layer from the geometry (no
        kernels run); raises the layer's ValueError where a shape does not fit."""
        shape = tuple(int(s) for s in input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def output_shapes(self, input_shape: Sequence[int]) -> List[Tuple[Module, Tuple[int, ...]]]:
        """[(layer, output shape)] for every layer, for a summary table."""
        out, shape = [], tuple(int(s) for s in input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            out.append((layer, shape))
        return out

    def receptive_field(self) -> Tuple[int, int]:
        """(rows, cols) of input pixels that one output pixel of the last spatial layer sees:
        r += (dilation*(k-1)) * jump, jump *= stride over the conv/pool layers."""
        return _receptive_field(self.layers)
