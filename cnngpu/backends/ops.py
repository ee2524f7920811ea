"""The operation contract every backend implements: the same names with the same signatures.

``CONTRACT`` maps each op to its reference ``inspect.Signature`` (parameter names, order, kinds and
defaults) and what it returns; tests/test_backend_contract.py checks every backend module against
it, so a backend cannot drift. Arguments arrive validated by ``cnngpu.functional`` (geometry
records from ``cnngpu.geometry``); arrays are the backend's native type. Outputs are freshly
allocated native arrays of x's dtype unless stated. Statistics (mean/invstd/rstd) are float32, or
float64 for float64 inputs. ``algo`` is 'auto', 'direct' or 'implicit_gemm'; ``precision`` is
'ieee' or 'tf32' (float32 tensor-core dots; backends without them compute exact fp32 either way).
"""
from __future__ import annotations

from inspect import Parameter, Signature, signature
from typing import Dict, Tuple


def _sig(*params: str, **defaults) -> Signature:
    """Positional-or-keyword parameters ``params``, then ``defaults`` (name=default) in order."""
    kind = Parameter.POSITIONAL_OR_KEYWORD
    return Signature([Parameter(p, kind) for p in params] +
                     [Parameter(p, kind, default=d) for p, d in defaults.items()])


# op name -> (signature, returns)
CONTRACT: Dict[str, Tuple[Signature, str]] = {
    "conv2d_forward": (_sig("x", "w", "b", "g", algo="auto", precision="ieee"),
                       "y (N, K, P, Q); g: ConvGeometry"),
    "conv2d_backward": (_sig("dy", "x", "w", "g", need_dx=True, need_dw=True, need_db=True, algo="auto",
                             precision="ieee"),
                        "(dx | None, dw | None, db | None); algo forces both dX and dW unless 'auto'"),
    "max_pool2d_forward": (_sig("x", "g"),
                           "(y, argmax int64: flat h*W+w index in the input plane); g: PoolGeometry"),
    "max_pool2d_backward": (_sig("dy", "argmax", "g"), "dx (N, C, H, W)"),
    "avg_pool2d_forward": (_sig("x", "g", count_include_pad=True), "y (N, C, P, Q)"),
    "avg_pool2d_backward": (_sig("dy", "g", count_include_pad=True), "dx (N, C, H, W)"),
    "batch_norm_forward": (_sig("x", "weight", "bias", "running_mean", "running_var", "training", "momentum",
                                "eps", "relu"),
                           "(y, mean (C,), invstd (C,)); x (N, C, H, W) or (N, C); running stats updated in "
                           "place when training (unbiased variance); weight/bias may be None"),
    "batch_norm_backward": (_sig("dy", "x", "y", "weight", "mean", "invstd", "training", "relu"),
                            "(dx, dweight | None, dbias | None)"),
    "conv2d_bn_relu_forward": (_sig("x", "w", "b", "g", "weight", "bias", "running_mean", "running_var", "residual",
                                    "training", "momentum", "eps", "relu", algo="auto", precision="ieee"),
                               "(out (N, K, P, Q), y: conv output (training) | None (eval), mean (K,), invstd (K,)); "
                               "out = relu(bn(conv(x, w) + b) + residual); running stats updated as batch_norm"),
    "conv2d_bn_relu_backward": (_sig("dout", "out", "x", "w", "b", "y", "g", "weight", "mean", "invstd", "training",
                                     "relu", "has_residual", need_dx=True, need_dw=True, need_db=True, algo="auto",
                                     precision="ieee"),
                                "(dx | None, dw | None, db | None, dweight | None, dbias | None, "
                                "dresidual | None); y None (eval): recomputed from x, w, b"),
    "layer_norm_forward": (_sig("x", "normalized_ndim", "weight", "bias", "eps"), "(y, mean (M,), rstd (M,))"),
    "layer_norm_backward": (_sig("dy", "x", "weight", "mean", "rstd", "normalized_ndim"),
                            "(dx, dweight | None, dbias | None)"),
    "group_norm_forward": (_sig("x", "num_groups", "weight", "bias", "eps"), "(y, mean (N, G), rstd (N, G))"),
    "group_norm_backward": (_sig("dy", "x", "num_groups", "weight", "mean", "rstd"),
                            "(dx, dweight | None, dbias | None)"),
    "relu_forward": (_sig("x"), "y"),
    "relu_backward": (_sig("dy", "y"), "dx"),
    "linear_forward": (_sig("x", "w", "b", precision="ieee"), "y (M, out)"),
    "linear_backward": (_sig("dy", "x", "w", need_db=True, precision="ieee"), "(dx, dw, db | None)"),
    "cross_entropy_forward": (_sig("logits", "labels"), "(loss 0-d, probs (M, classes))"),
    "cross_entropy_backward": (_sig("probs", "labels", "dloss"), "dlogits (M, classes)"),
}

OPS = tuple(CONTRACT)

HELPERS = ("name", "array_type", "DTYPES", "asarray", "to_numpy", "LAUNCHES")


def drift(fn, op: str) -> str | None:
    """None when ``fn`` has op's contract signature (names, order, kinds, defaults; annotations
    are not compared), else a sentence saying how it differs."""
    want = CONTRACT[op][0]
    got = Signature([p.replace(annotation=Parameter.empty) for p in signature(fn).parameters.values()])
    return None if got == want else f"{op}{got} differs from the contract {op}{want}"

