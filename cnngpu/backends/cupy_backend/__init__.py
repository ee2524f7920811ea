"""CuPy backend: CUDA C kernels from ``cnngpu.kernels`` (kernels/cuda/*.cu) loaded with
cupy.RawModule, compiled once per device and specialisation. Arrays are cupy.ndarray; torch CUDA
tensors convert zero-copy with ``cupy.from_dlpack``. Under ``CNNGPU_CUDA_EMULATE=1`` (see _cupy.py)
the same launchers run the same kernels on the CPU emulation, cnngpu.testing.cudaemu."""
import numpy as np

from ._common import LAUNCHES  # noqa: F401
from .basic import (cross_entropy_backward, cross_entropy_forward, linear_backward,  # noqa: F401
                    linear_forward, relu_backward, relu_forward)
from .conv import conv2d_backward, conv2d_forward  # noqa: F401
from .fused import conv2d_bn_relu_backward, conv2d_bn_relu_forward  # noqa: F401
from ._cupy import cupy
from .norm import (batch_norm_backward, batch_norm_forward, group_norm_backward,  # noqa: F401
                   group_norm_forward, layer_norm_backward, layer_norm_forward)
from .pool import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,  # noqa: F401
                   max_pool2d_forward)

name = "cupy"
array_type = cupy.ndarray
DTYPES = ("float16", "bfloat16", "float32")  # bfloat16: numpy dtype from ml_dtypes (cupy >= 14)


def asarray(a, dtype=None):
    """NumPy array, torch CUDA tensor (via DLPack) or cupy array -> cupy array on the current device."""
    if type(a).__module__.startswith("torch"):
        a = cupy.from_dlpack(a)
    elif not isinstance(a, cupy.ndarray):
        # host data: convert the dtype with NumPy (ml_dtypes' bfloat16 included) before the copy
        a = np.asarray(a, dtype=dtype)
    return cupy.asarray(a, dtype=dtype)


def to_numpy(x):
    return cupy.asnumpy(x)
