"""cnngpu: GPU kernels for convolutional neural networks (Triton and CuPy/CUDA C) with a NumPy
reference backend. ``import cnngpu`` gives the functional ops, the layer API and the registry."""
import logging as _logging

from . import functional
from . import nn
from .backends import BackendUnavailableError, available_backends, default_backend, get_backend, is_available
from .convert import convert, shares_memory, to_numpy
from .geometry import conv_output_size, receptive_field
from .nn import (SGD, AvgPool2d, BatchNorm2d, Conv2d, CrossEntropyLoss, Flatten, GroupNorm, InstanceNorm2d,
                 LayerNorm, Linear, MaxPool2d, Module, Parameter, ReLU, Sequential)

__version__ = "0.1.0"

__all__ = [
    "__version__", "functional", "nn",
    "BackendUnavailableError", "available_backends", "default_backend", "get_backend", "is_available",
    "convert", "shares_memory", "to_numpy", "conv_output_size", "receptive_field",
    "Module", "Parameter", "Sequential", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "Linear", "Flatten",
    "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm2d", "CrossEntropyLoss", "SGD",
]

# A library logs and lets the application decide where records go (the CLI prints its own output).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
