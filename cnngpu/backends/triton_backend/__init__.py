"""Triton backend: @triton.jit kernels from ``cnngpu.kernels.triton`` on torch tensors.

Arrays are torch.Tensor on CUDA, or on CPU under ``TRITON_INTERPRET=1`` (Triton's interpreter,
a verification tool). float32 (ieee or tf32 dots), float16 and bfloat16 (fp32 accumulation).
"""
import numpy as np
import torch

from ._common import LAUNCHES  # noqa: F401
from .basic import (cross_entropy_backward, cross_entropy_forward, linear_backward,  # noqa: F401
                    linear_forward, relu_backward, relu_forward)
from .conv import conv2d_backward, conv2d_forward  # noqa: F401
from .fused import conv2d_bn_relu_backward, conv2d_bn_relu_forward  # noqa: F401
from .norm import (batch_norm_backward, batch_norm_forward, group_norm_backward,  # noqa: F401
                   group_norm_forward, layer_norm_backward, layer_norm_forward)
from .pool import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,  # noqa: F401
                   max_pool2d_forward)

name = "triton"
array_type = torch.Tensor
DTYPES = ("float16", "bfloat16", "float32")


def device() -> torch.device:
    """Where this backend's tensors live: the current CUDA device, or CPU under the interpreter."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def asarray(a, dtype=None):
    """NumPy (or any DLPack/array-like) -> torch tensor on this backend's device."""
    if isinstance(a, torch.Tensor):
        t = a.to(device())
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(a))).to(device())
    if dtype is not None:
        t = t.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return t


def to_numpy(x):
    x = x.detach()
    if x.dtype == torch.bfloat16:
        x = x.float()
    return x.cpu().numpy()
