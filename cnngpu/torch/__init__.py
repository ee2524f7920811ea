"""torch interop: our kernels as ``torch.library`` custom ops and ``torch.nn.Module``s.

    import cnngpu.torch as ct
    net = torch.nn.Sequential(ct.Conv2d(1, 6, 5, padding=2), ct.BatchNorm2d(6, relu=True),
                              ct.MaxPool2d(2), ...)          # parameters are torch nn.Parameters
    loss = torch.nn.functional.cross_entropy(net(x), y); loss.backward(); opt.step()

One path: every function (conv2d, max_pool2d, avg_pool2d, batch_norm, layer_norm, group_norm,
instance_norm, linear, relu, cross_entropy) calls a ``cnngpu::`` custom op
(``torch.library.custom_op``) with a backward op (instance_norm's is group_norm_backward),
``register_autograd``, a fake (shape) kernel and a vmap rule, eager or traced. So ``torch.compile(fullgraph=True)``, ``torch.export``,
``torch.fx.symbolic_trace``, meta tensors (``device='meta'``), ``torch.func.vmap`` and
``torch.library.opcheck`` work; the ops are opaque to the tracers (they never read the numpy or
triton code). ``torch.func.grad`` is refused by torch itself for custom ops (torch 2.13); plain
autograd, also through a vmapped forward, works. Double backward is not supported.

Which backend runs (``backend=None``, decided inside the op per call, so a traced or exported
graph is device-agnostic):
- CUDA tensors: the triton backend directly on the tensors (else cupy, when triton is missing);
- CPU tensors: the numpy backend, zero-copy through ``Tensor.numpy()`` (float16/32/64; bfloat16
  is computed in float32 and rounded to bfloat16, as torch's CPU kernels do; float64 makes
  ``torch.autograd.gradcheck`` work on any machine).
``backend='cupy'`` on CUDA tensors goes through DLPack (zero-copy both ways); ``backend='triton'``
on CPU tensors runs Triton's interpreter (``TRITON_INTERPRET=1``, a verification tool);
``backend='numpy'`` on CUDA tensors copies to the host and back.

Shapes as torch: unbatched (C, H, W) images for conv2d and the pools, batch_norm on (N, C),
(N, C, L), (N, C, H, W) and (N, C, D, H, W); outputs keep a channels_last input's format. The
batch_norm op is functional (it returns the updated running statistics, which the wrapper copies
into the buffers), so compile/export see a buffer update, not a mutating op; it never saves its
output (inplace ReLU and residual adds after it keep the backward valid). ``relu(x, inplace=True)``
is the op then ``x.copy_``: x's version counter moves and autograd is torch's relu_'s.
The modules subclass torch's (``Conv2d`` is an ``nn.Conv2d``, ``BatchNorm2d`` an
``nn.BatchNorm2d``, ``BatchNorm1d`` an ``nn.BatchNorm1d``, ...), so parameter names, buffers,
initialisation and ``isinstance`` checks are torch's; ``convert(model)`` swaps a torch.nn model's
supported modules for these in place and reports what it swapped and left.
"""
from __future__ import annotations

from ._bridge import pick_backend
from .convert import ConvertReport, convert
from .fused import Conv2dBNReLU, FuseReport, conv2d_bn_relu, fuse
from .functional import (avg_pool2d, batch_norm, conv2d, cross_entropy, group_norm, instance_norm, layer_norm,
                         linear, max_pool2d, relu)
from .modules import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, CrossEntropyLoss, GroupNorm, InstanceNorm2d,
                      LayerNorm, Linear, MaxPool2d, ReLU)

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm", "group_norm", "instance_norm",
           "linear", "relu", "cross_entropy", "Linear", "ReLU", "CrossEntropyLoss", "InstanceNorm2d",
           "Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "pick_backend",
           "convert", "ConvertReport", "conv2d_bn_relu", "Conv2dBNReLU", "fuse", "FuseReport"]

from .sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm  # noqa: E402

__all__ += ["SyncBatchNorm", "convert_sync_batchnorm"]
