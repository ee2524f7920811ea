"""cnngpu: GPU kernels for convolutional neural networks (Triton and CuPy/CUDA C) with a NumPy
reference backend. ``import cnngpu`` gives the functional ops, the layer API and the registry."""
from . import functional  # noqa: F401
from .backends import (BackendUnavailableError, available_backends, default_backend,  # noqa: F401
                       get_backend, is_available)
from .geometry import conv_output_size, receptive_field  # noqa: F401

__version__ = "0.1.0"
