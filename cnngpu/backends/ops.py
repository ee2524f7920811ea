"""The operation contract every backend implements (same names, same signatures).

Arguments arrive validated by ``cnngpu.functional`` (geometry records from ``cnngpu.geometry``);
arrays are the backend's native type. Outputs are freshly allocated native arrays of x's dtype
unless stated. Statistics (mean/invstd/rstd) are float32, or float64 for float64 inputs.

conv2d_forward(x, w, b, g: ConvGeometry, algo='auto', precision='ieee') -> y (N, K, P, Q)
conv2d_backward(dy, x, w, g, need_dx=True, need_dw=True, need_db=True, precision='ieee')
    -> (dx | None, dw | None, db | None)
max_pool2d_forward(x, g: PoolGeometry) -> (y, argmax int64, flat h*W+w index in the input plane)
max_pool2d_backward(dy, argmax, g) -> dx (N, C, H, W)
avg_pool2d_forward(x, g, count_include_pad: bool) -> y
avg_pool2d_backward(dy, g, count_include_pad: bool) -> dx
batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps, relu)
    -> (y, mean (C,), invstd (C,)); x (N, C, H, W) or (N, C); running stats updated in place
       when training (unbiased variance); weight/bias may be None (identity affine)
batch_norm_backward(dy, x, y, weight, mean, invstd, training, relu) -> (dx, dweight|None, dbias|None)
layer_norm_forward(x, normalized_ndim, weight, bias, eps) -> (y, mean (M,), rstd (M,))
layer_norm_backward(dy, x, weight, mean, rstd, normalized_ndim) -> (dx, dweight|None, dbias|None)
group_norm_forward(x, num_groups, weight, bias, eps) -> (y, mean (N, G), rstd (N, G))
group_norm_backward(dy, x, num_groups, weight, mean, rstd) -> (dx, dweight|None, dbias|None)
relu_forward(x) -> y
relu_backward(dy, y) -> dx
linear_forward(x, w, b) -> y (M, out)
linear_backward(dy, x, w, need_db=True) -> (dx, dw, db | None)
cross_entropy_forward(logits, labels) -> (loss 0-d, probs (M, classes))
cross_entropy_backward(probs, labels, dloss) -> dlogits (M, classes)
"""

OPS = (
    "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "batch_norm_forward", "batch_norm_backward",
    "layer_norm_forward", "layer_norm_backward",
    "group_norm_forward", "group_norm_backward",
    "relu_forward", "relu_backward",
    "linear_forward", "linear_backward",
    "cross_entropy_forward", "cross_entropy_backward",
)

HELPERS = ("name", "array_type", "DTYPES", "asarray", "to_numpy", "LAUNCHES")
