"""The ``cnngpu::`` torch.library custom ops: every op cnngpu.torch runs, eager or traced.

Each forward op has a backward op, a fake (shape) kernel for both, ``register_autograd`` and a
vmap rule; the implementations call ``cnngpu.functional`` on the tensors (triton: the torch
tensors themselves; cupy: DLPack views; numpy: ``Tensor.numpy()`` views of CPU tensors). The
``backend`` argument is ``''`` (chosen per call from the tensors' device) or a backend name.
``OPS`` lists them (for ``torch.library.opcheck``).
"""
from __future__ import annotations

from typing import Any, Dict

from ._ops_act import cross_entropy, cross_entropy_backward, relu, relu_backward
from ._ops_conv import conv2d, conv2d_backward, linear, linear_backward, pad_args
from ._ops_norm import (batch_norm, batch_norm_backward, group_norm, group_norm_backward, instance_norm,
                        layer_norm, layer_norm_backward)
from ._ops_pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

OPS: Dict[str, Any] = {op._qualname.split("::")[1]: op for op in (
    conv2d, conv2d_backward, linear, linear_backward, max_pool2d, max_pool2d_backward, avg_pool2d,
    avg_pool2d_backward, batch_norm, batch_norm_backward, layer_norm, layer_norm_backward, group_norm,
    group_norm_backward, instance_norm, relu, relu_backward, cross_entropy, cross_entropy_backward)}

__all__ = ["OPS", "pad_args"] + list(OPS)
