"""Layer API: stateful layers over ``cnngpu.functional`` with explicit forward/backward.

    net = Sequential(Conv2d(1, 6, 5, padding=2), BatchNorm2d(6, relu=True), MaxPool2d(2), ...)
    logits = net(x); loss = crit(logits, labels); net.backward(crit.backward()); opt.step()
"""
from .containers import Sequential
from .fused import Conv2dBNReLU
from .layers import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU
from .loss import CrossEntropyLoss
from .module import Module, Parameter
from .norm import BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm
from .optim import SGD

__all__ = ["Module", "Parameter", "Sequential", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "Linear", "Flatten",
           "BatchNorm2d", "Conv2dBNReLU", "LayerNorm", "GroupNorm", "InstanceNorm2d", "CrossEntropyLoss", "SGD"]
