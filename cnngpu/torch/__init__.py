"""torch interop: our kernels as ``torch.autograd.Function``s and ``torch.nn.Module``s.

    import cnngpu.torch as ct
    net = torch.nn.Sequential(ct.Conv2d(1, 6, 5, padding=2), ct.BatchNorm2d(6, relu=True),
                              ct.MaxPool2d(2), ...)          # parameters are torch nn.Parameters
    loss = torch.nn.functional.cross_entropy(net(x), y); loss.backward(); opt.step()

Which backend runs (``backend=None``):
- CUDA tensors: the triton backend directly on the tensors (else cupy, when triton is missing);
- CPU tensors: the numpy backend, zero-copy through ``Tensor.numpy()`` (float16/32/64; so
  ``torch.autograd.gradcheck`` in float64 works on any machine).
``backend='cupy'`` on CUDA tensors goes through DLPack (zero-copy both ways); ``backend='triton'``
on CPU tensors runs Triton's interpreter (``TRITON_INTERPRET=1``, a verification tool);
``backend='numpy'`` on CUDA tensors copies to the host and back.

Every wrapper computes forward and backward with ``cnngpu.functional`` (argument validation
included); double backward is not supported. BatchNorm running statistics are module buffers,
updated in place by the kernels (copied back on the numpy-on-CUDA path). The modules subclass
torch's (``Conv2d`` is an ``nn.Conv2d``, ``BatchNorm2d`` an ``nn.BatchNorm2d``, ...), so parameter
names, buffers, initialisation and ``isinstance`` checks are torch's; ``convert(model)`` swaps a
torch.nn model's supported modules for these in place and reports what it swapped and left.
While ``torch.compile`` traces, conv2d and batch_norm run as ``torch.library`` custom ops
(``cnngpu::conv2d``, ``cnngpu::batch_norm`` and their backward ops).
"""
from __future__ import annotations

from ._bridge import pick_backend
from .convert import ConvertReport, convert
from .fused import Conv2dBNReLU, FuseReport, conv2d_bn_relu, fuse
from .functional import (avg_pool2d, batch_norm, conv2d, cross_entropy, group_norm, instance_norm, layer_norm,
                         linear, max_pool2d, relu)
from .modules import (AvgPool2d, BatchNorm2d, Conv2d, CrossEntropyLoss, GroupNorm, InstanceNorm2d, LayerNorm,
                      Linear, MaxPool2d, ReLU)

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "layer_norm", "group_norm", "instance_norm",
           "linear", "relu", "cross_entropy", "Linear", "ReLU", "CrossEntropyLoss", "InstanceNorm2d",
           "Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d", "LayerNorm", "GroupNorm", "pick_backend",
           "convert", "ConvertReport", "conv2d_bn_relu", "Conv2dBNReLU", "fuse", "FuseReport"]
