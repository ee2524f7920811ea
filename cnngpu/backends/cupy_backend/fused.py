"""Fused conv -> BatchNorm -> (+ residual) -> (ReLU) on the cupy backend (definition: the NumPy
reference, ``cnngpu.backends.numpy_backend.fused``).

Composed from the CUDA kernels, for now: conv2d_forward, the batch_norm statistics kernels
(training: Welford partials + finalize with the running-stat update; eval: the running
statistics), then one pass of kernels/cuda/conv_bn_relu.cu (normalize + affine + residual + ReLU).
The conv-epilogue fusion (folded BN in eval, statistics partials in training) waits for the CUDA
implicit-GEMM mainloop of issue 15 (kernels/cuda/conv2d_igemm.cuh), which is being rewritten.
Backward: the batch_norm backward kernels on (dout, y, out) (masked dout, dgamma / dbeta partial
sums in one pass, then dy), relu_bwd_mask for dresidual, then conv2d_backward of dy.
"""
from __future__ import annotations

from ._cupy import cupy

from ._common import empty
from ._config import BLOCK, SCALAR_T, elementwise_grid, scalar_define
from ._launch import contiguous, dtype_of, float_param, i32, i64, run
from .basic import relu_backward
from .conv import conv2d_backward, conv2d_forward
from .norm import batch_norm_backward, batch_norm_stats

_FILE = "conv_bn_relu.cu"
CUDA_BUILDS = [(_FILE, ["conv_bn_apply_residual_relu"], scalar_define(dt)) for dt in SCALAR_T]


def conv2d_bn_relu_forward(x, w, b, g, weight, bias, running_mean, running_var, residual, training, momentum, eps,
                           relu, algo="auto", precision="ieee"):
    """out = relu(bn(conv2d(x, w) + b) + residual) -> (out, y (training) | None, mean, invstd float32)."""
    y = contiguous(conv2d_forward(x, w, b, g, algo=algo, precision=precision))
    mean, invstd = batch_norm_stats(y, running_mean, running_var, training, momentum, eps)
    out = empty(y.shape, y.dtype)
    res = contiguous(residual) if residual is not None else y
    run(_FILE, "conv_bn_apply_residual_relu", dtype_of(y), elementwise_grid(y.size), (BLOCK,),
        (y, res, out, mean, invstd, float_param(weight, g.K, 1.0), float_param(bias, g.K, 0.0), i64(y.size),
         i64(g.P * g.Q), i32(g.K), i32(residual is not None), i32(bool(relu))))
    return out, (y if training else None), mean, invstd


def conv2d_bn_relu_backward(dout, out, x, w, b, y, g, weight, mean, invstd, training, relu, has_residual,
                            need_dx=True, need_dw=True, need_db=True, algo="auto", precision="ieee"):
    """Gradients of the block (as the reference): (dx, dw, db, dweight, dbias, dresidual)."""
    if y is None:                           # eval forward: the conv output was not kept
        y = conv2d_forward(x, w, b, g, algo=algo, precision=precision)
    dy, dweight, dbias = batch_norm_backward(dout, y, out, weight, mean, invstd, training, relu)
    dres = None
    if has_residual:
        dres = relu_backward(dout, out) if relu else cupy.array(dout, copy=True)
    dx, dw, db = conv2d_backward(dy, x, w, g, need_dx=need_dx, need_dw=need_dw, need_db=need_db, algo=algo,
                                 precision=precision)
    return dx, dw, db, dweight, dbias, dres
