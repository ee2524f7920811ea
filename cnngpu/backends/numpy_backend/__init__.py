"""NumPy reference backend: the executable specification every kernel is checked against.

Vectorized (sliding-window views + tensordot/einsum; no Python loops over pixels or batch items),
float16 (computed in float32), float32 and float64.
"""
import numpy as np

from ._common import LAUNCHES  # noqa: F401
from .basic import (cross_entropy_backward, cross_entropy_forward, linear_backward, linear_forward,
                    relu_backward, relu_forward)
from .conv import conv2d_backward, conv2d_forward
from .fused import conv2d_bn_relu_backward, conv2d_bn_relu_forward
from .norm import (batch_norm_backward, batch_norm_forward, group_norm_backward, group_norm_forward,
                   layer_norm_backward, layer_norm_forward)
from .pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward

name = "numpy"
array_type = np.ndarray
DTYPES = ("float16", "float32", "float64")


def asarray(a, dtype=None):
    """Any array-like (NumPy, or a device array exposing __array__/DLPack on the host) -> numpy."""
    return np.asarray(a, dtype=dtype)


def to_numpy(x):
    return np.asarray(x)
