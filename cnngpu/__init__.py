"""cnngpu: GPU kernels for convolutional neural networks (Triton and CuPy/CUDA C) with a NumPy
reference backend. ``import cnngpu`` gives the functional ops, the layer API and the registry."""
from . import functional  # noqa: F401
from . import nn  # noqa: F401
from .backends import (BackendUnavailableError, available_backends, default_backend,  # noqa: F401
                       get_backend, is_available)
from .convert import convert, shares_memory, to_numpy  # noqa: F401
from .geometry import conv_output_size, receptive_field  # noqa: F401
from .nn import (SGD, AvgPool2d, BatchNorm2d, Conv2d, CrossEntropyLoss, Flatten, GroupNorm,  # noqa: F401
                 InstanceNorm2d, LayerNorm, Linear, MaxPool2d, Module, Parameter, ReLU, Sequential)

__version__ = "0.1.0"
