"""Conv2dBNReLU: conv -> BatchNorm -> (+ residual) -> (ReLU) as one layer over the fused ops
``cnngpu.functional.conv2d_bn_relu`` / ``conv2d_bn_relu_backward``."""
from __future__ import annotations

from typing import Any, Optional, Tuple

from .. import functional as F
from .._typing import Array, IntOrPair, Padding
from ..convert import to_numpy
from .containers import Sequential
from .layers import Conv2d, ReLU
from .module import Module
from .norm import BatchNorm2d


class Conv2dBNReLU(Module):
    """conv -> BatchNorm2d -> (+ residual) -> (ReLU) fused (``relu=False``: no ReLU).

    Children ``conv`` (a Conv2d, ``bias=False`` by default: BatchNorm cancels it) and ``bn`` (a
    BatchNorm2d), so parameters, buffers and the state_dict keys are those of
    ``Sequential`` children named conv and bn ('conv.weight', 'bn.weight', 'bn.running_mean', ...).
    ``forward(x, residual=None)``: residual (the conv output's shape) is added before the ReLU;
    ``backward(dy)`` returns dx, accumulates the parameter gradients and leaves the residual's
    gradient in ``residual_grad`` (None without a residual). Training mode: batch statistics and
    running-stat updates as BatchNorm2d (momentum=None: cumulative average); eval: the running
    statistics folded into the convolution. ``fold()`` returns that folded convolution as layers.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: Padding = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = False,
                 eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, relu: bool = True, algo: str = "auto", precision: str = "ieee",
                 backend: Optional[str] = None, dtype: str = "float32", seed: Optional[int] = None) -> None:
        super().__init__(backend, dtype)
        self.conv = Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, algo,
                           precision, self.backend, dtype, seed)
        self.bn = BatchNorm2d(out_channels, eps, momentum, affine, track_running_stats, False, self.backend, dtype)
        self._add_child("conv", self.conv)
        self._add_child("bn", self.bn)
        self.relu = bool(relu)
        self.residual_grad: Optional[Array] = None
        self._cache: Optional[Tuple[Any, ...]] = None

    def _conv_kw(self) -> dict:
        c = self.conv
        return dict(stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups)

    def forward(self, x: Array, residual: Optional[Array] = None) -> Array:
        c, bn = self.conv, self.bn
        batch_stats = self.training or not bn.track_running_stats
        track = bn.track_running_stats and self.training
        momentum = bn.momentum
        if track:
            bn.num_batches_tracked += 1
            if momentum is None:                     # torch: cumulative moving average
                momentum = 1.0 / bn.num_batches_tracked
        use_running = track or not batch_stats
        w = None if bn.weight is None else bn.weight.data
        b = None if bn.bias is None else bn.bias.data
        with c.weight.versioned() as cw:             # re-laid conv weights cached per Parameter.version
            out, y, mean, invstd = F.conv2d_bn_relu(
                x, cw, None if c.bias is None else c.bias.data, w, b,
                bn.running_mean if use_running else None, bn.running_var if use_running else None, residual,
                training=batch_stats, momentum=0.1 if momentum is None else momentum, eps=bn.eps, relu=self.relu,
                return_stats=True, algo=c.algo, precision=c.precision, backend=self.backend, **self._conv_kw())
        self._cache = (x, out, y, mean, invstd, batch_stats, residual is not None)
        return out

    def __call__(self, x: Array, residual: Optional[Array] = None) -> Array:
        return self.forward(x, residual)

    def backward(self, dy: Array) -> Array:
        if self._cache is None:
            raise RuntimeError("Conv2dBNReLU.backward called before forward")
        x, out, y, mean, invstd, batch_stats, has_res = self._cache
        c, bn = self.conv, self.bn
        with c.weight.versioned() as cw:
            dx, dw, db, dgamma, dbeta, dres = F.conv2d_bn_relu_backward(
                dy, out, x, cw, None if c.bias is None else c.bias.data, y,
                None if bn.weight is None else bn.weight.data, mean, invstd, training=batch_stats, relu=self.relu,
                has_residual=has_res, need_db=c.bias is not None, algo=c.algo, precision=c.precision,
                backend=self.backend,
                **self._conv_kw())
        c.weight.accumulate(dw)
        if c.bias is not None:
            c.bias.accumulate(db)
        if bn.weight is not None and bn.bias is not None:
            bn.weight.accumulate(dgamma)
            bn.bias.accumulate(dbeta)
        self.residual_grad = dres
        return dx

    def fold(self) -> Module:
        """The eval-mode block as plain layers: a Conv2d with BatchNorm folded into its weight and bias
        (w' = w * s, b' = (b - running_mean) * s + beta, s = gamma / sqrt(running_var + eps)), followed
        by ReLU when relu=True; same backend and dtype. Needs running statistics."""
        from ..backends.numpy_backend.fused import fold_bn
        c, bn = self.conv, self.bn
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("fold() needs running statistics (track_running_stats=True)")
        f64 = (lambda a: None if a is None else to_numpy(a).astype("float64"))
        import numpy as np
        wf, bf = fold_bn(f64(c.weight.data), f64(None if c.bias is None else c.bias.data),
                         f64(None if bn.weight is None else bn.weight.data),
                         f64(None if bn.bias is None else bn.bias.data), f64(bn.running_mean), f64(bn.running_var),
                         bn.eps, np.dtype("float64"))
        K, Cg, R, S = c.weight.shape
        conv = Conv2d(Cg * c.groups, K, (R, S), c.stride, c.padding, c.dilation, c.groups, True, c.algo,
                      c.precision, self.backend, self.dtype)
        conv.load_state_dict({"weight": wf, "bias": bf})
        return Sequential(conv, ReLU(backend=self.backend)) if self.relu else conv

    # the conv's geometry, for Sequential.receptive_field
    @property
    def kernel_size(self) -> Tuple[int, int]:
        return self.conv.kernel_size

    @property
    def stride(self) -> Tuple[int, int]:
        return self.conv.stride

    @property
    def dilation(self) -> Tuple[int, int]:
        return self.conv.dilation

    def output_shape(self, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
        return self.conv.output_shape(input_shape)

    def extra_repr(self) -> str:
        return f"relu={self.relu}, backend={self.backend!r}, dtype={self.dtype!r}"
