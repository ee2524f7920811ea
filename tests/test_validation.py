"""Bad input raises ValueError/TypeError (or BackendUnavailableError) before any kernel runs, with a
message naming the argument and the shapes involved. Functional ops and layers, numpy backend."""
import re

import numpy as np
import pytest

import cnngpu
import harness
from cnngpu import backends
from cnngpu import functional as F
from cnngpu import nn


def f32(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


X = f32(2, 4, 8, 8)
W = f32(6, 4, 3, 3)
B = f32(6)


def esc(s):
    return re.escape(s)


# (id, callable, exception type, regex the message must match)
CASES = [
    # wrong ndim
    ("conv_x_3d", lambda: F.conv2d(f32(4, 8, 8), W), ValueError, esc("input must be 4-D (N, C, H, W), got shape (4, 8, 8)")),
    ("conv_w_3d", lambda: F.conv2d(X, f32(6, 4, 3)), ValueError, esc("weight must be 4-D") + ".*" + esc("(6, 4, 3)")),
    ("pool_x_2d", lambda: F.max_pool2d(f32(8, 8), 2), ValueError, esc("input must be 4-D (N, C, H, W), got shape (8, 8)")),
    ("avgpool_x_5d", lambda: F.avg_pool2d(f32(1, 2, 3, 4, 5), 2), ValueError, esc("input must be 4-D") + ".*" + esc("(1, 2, 3, 4, 5)")),
    ("linear_x_4d", lambda: F.linear(X, f32(3, 4)), ValueError, esc("input has 8 features (shape (2, 4, 8, 8)) but weight expects 4 (shape (3, 4))")),
    ("bn_x_3d", lambda: F.batch_norm(f32(2, 4, 8), None, None, training=True), ValueError, esc("input must be 2-D (N, C) or 4-D (N, C, H, W), got shape (2, 4, 8)")),
    ("groupnorm_x_1d", lambda: F.group_norm(f32(8), 2), ValueError, esc("input must be at least 2-D (N, C, ...), got shape (8,)")),
    ("target_3d_input", lambda: F.cross_entropy(f32(2, 3, 4), np.zeros(2, np.int64)), ValueError, esc("target must have shape (2, 4) to match input (2, 3, 4)")),
    # channels / groups
    ("conv_channel_mismatch", lambda: F.conv2d(X, f32(6, 3, 3, 3)), ValueError,
     esc("weight shape (6, 3, 3, 3) expects C_in/groups=3, but x shape (2, 4, 8, 8) with groups=1 gives 4")),
    ("conv_C_not_div_groups", lambda: F.conv2d(f32(1, 5, 8, 8), f32(6, 1, 3, 3), groups=3), ValueError,
     esc("x has C_in=5 channels (shape (1, 5, 8, 8)), not divisible by groups=3")),
    ("conv_K_not_div_groups", lambda: F.conv2d(X, f32(5, 2, 3, 3), groups=2), ValueError,
     esc("weight has C_out=5 (shape (5, 2, 3, 3)), not divisible by groups=2")),
    ("conv_groups_zero", lambda: F.conv2d(X, W, groups=0), ValueError, esc("groups must be >= 1, got 0")),
    ("conv_groups_float", lambda: F.conv2d(X, W, groups=1.0), TypeError, esc("groups must be an int, got 1.0")),
    ("linear_features", lambda: F.linear(f32(3, 5), f32(2, 4)), ValueError,
     esc("input has 5 features (shape (3, 5)) but weight expects 4 (shape (2, 4))")),
    # geometry
    ("conv_kernel_too_large", lambda: F.conv2d(f32(1, 4, 4, 4), f32(2, 4, 5, 5)), ValueError,
     esc("kernel 5x5 (dilation (1, 1)) is larger than the padded input: x shape (1, 4, 4, 4)")),
    ("conv_dilated_too_large", lambda: F.conv2d(f32(1, 4, 6, 6), f32(2, 4, 3, 3), dilation=3), ValueError,
     "larger than the padded input.*" + esc("(1, 4, 6, 6)")),
    ("pool_kernel_too_large", lambda: F.max_pool2d(f32(1, 1, 3, 3), 4), ValueError,
     esc("kernel_size (4, 4) (dilation (1, 1)) is larger than the padded input: x shape (1, 1, 3, 3)")),
    ("conv_stride_zero", lambda: F.conv2d(X, W, stride=0), ValueError, esc("stride must be positive, got 0")),
    ("conv_stride_neg_pair", lambda: F.conv2d(X, W, stride=(1, -2)), ValueError, esc("stride must be positive, got (1, -2)")),
    ("conv_dilation_zero", lambda: F.conv2d(X, W, dilation=0), ValueError, esc("dilation must be positive, got 0")),
    ("pool_stride_zero", lambda: F.avg_pool2d(X, 2, stride=0), ValueError, esc("stride must be positive, got 0")),
    ("pool_dilation_zero", lambda: F.max_pool2d(X, 2, dilation=(0, 1)), ValueError, esc("dilation must be positive, got (0, 1)")),
    ("conv_negative_padding", lambda: F.conv2d(X, W, padding=-1), ValueError, esc("padding must be >= 0, got -1")),
    ("conv_bad_padding_string", lambda: F.conv2d(X, W, padding="full"), ValueError,
     esc("padding must be an int, a pair, 'same' or 'valid', got 'full'")),
    ("conv_padding_triple", lambda: F.conv2d(X, W, padding=(1, 1, 1)), ValueError, esc("padding must be an int or a pair of ints, got 3 values")),
    ("conv_padding_float", lambda: F.conv2d(X, W, padding=1.5), TypeError, esc("padding must be an int or a pair of ints, got float")),
    ("conv_stride_bool", lambda: F.conv2d(X, W, stride=True), TypeError, esc("stride must be an int or a pair of ints, got bool")),
    ("pool_padding_over_half", lambda: F.max_pool2d(X, 3, padding=2), ValueError,
     esc("padding (2, 2) must be at most half the kernel_size (3, 3)")),
    ("pool_negative_padding", lambda: F.avg_pool2d(X, 2, padding=-1), ValueError, esc("padding must be >= 0, got -1")),
    ("conv_bad_algo", lambda: F.conv2d(X, W, algo="winograd"), ValueError, "algo must be one of.*'winograd'"),
    ("conv_bad_precision", lambda: F.conv2d(X, W, precision="fp8"), ValueError, "precision must be one of.*'fp8'"),
    ("conv_backward_bad_algo", lambda: F.conv2d_backward(F.conv2d(X, W), X, W, algo="fft"), ValueError,
     "algo must be one of.*'fft'"),
    # dtypes
    ("conv_int_x", lambda: F.conv2d(X.astype(np.int32), W.astype(np.int32)), TypeError,
     esc("input must be a floating-point array, got dtype int32 with shape (2, 4, 8, 8)")),
    ("relu_int", lambda: F.relu(np.arange(6).reshape(2, 3)), TypeError, esc("input must be a floating-point array, got dtype int64 with shape (2, 3)")),
    ("pool_bool", lambda: F.max_pool2d(X > 0, 2), TypeError, esc("input must be a floating-point array, got dtype bool with shape (2, 4, 8, 8)")),
    ("conv_dtype_mismatch", lambda: F.conv2d(X.astype(np.float64), W), TypeError,
     esc("weight has dtype float32 but input has dtype float64; they must match")),
    ("conv_bias_dtype", lambda: F.conv2d(X, W, B.astype(np.float64)), TypeError, esc("bias has dtype float64 but input has dtype float32")),
    ("linear_dtype_mismatch", lambda: F.linear(f32(3, 4).astype(np.float16), f32(2, 4)), TypeError,
     esc("weight has dtype float32 but input has dtype float16")),
    ("conv_backward_dy_dtype", lambda: F.conv2d_backward(f32(2, 6, 6, 6).astype(np.float64), X, W), TypeError,
     esc("dy has dtype float64 but x has dtype float32")),
    ("bn_weight_dtype", lambda: F.batch_norm(X.astype(np.float64), None, None, B[:4], training=True), TypeError, esc("weight has dtype float32, x has dtype float64")),
    # vectors of the wrong length
    ("conv_bias_length", lambda: F.conv2d(X, W, f32(5)), ValueError, esc("bias must have shape (6,) (C_out of weight), got (5,)")),
    ("linear_bias_length", lambda: F.linear(f32(3, 4), f32(2, 4), f32(3)), ValueError, esc("bias must have shape (2,) (out_features of weight), got (3,)")),
    ("bn_weight_length", lambda: F.batch_norm(X, None, None, f32(3), training=True), ValueError, esc("weight must have shape (4,) (one per channel of input") + ".*" + esc("got (3,)")),
    ("bn_running_mean_length", lambda: F.batch_norm(X, running_mean=f32(5), running_var=f32(4)), ValueError,
     esc("running_mean must have shape (4,)") + ".*" + esc("got (5,)")),
    ("bn_running_alone", lambda: F.batch_norm(X, running_mean=f32(4), running_var=None), ValueError, "running_mean and running_var must be given together"),
    ("bn_eval_no_stats", lambda: F.batch_norm(X, None, None, training=False), ValueError, "training=False needs running_mean and running_var"),
    ("bn_single_value", lambda: F.batch_norm(f32(1, 3), None, None, training=True), ValueError, esc("more than one value per channel, input shape (1, 3)")),
    ("groupnorm_weight_length", lambda: F.group_norm(X, 2, f32(3)), ValueError, esc("weight must have shape (4,)") + ".*" + esc("got (3,)")),
    ("layernorm_shape", lambda: F.layer_norm(X, (8, 7)), ValueError, esc("normalized_shape (8, 7) must be the trailing dims of input, got input shape (2, 4, 8, 8)")),
    ("layernorm_weight_shape", lambda: F.layer_norm(X, (8, 8), f32(8)), ValueError, esc("weight must have shape (8, 8) (normalized_shape), got (8,)")),
    # dy of the wrong shape
    ("conv_dy_shape", lambda: F.conv2d_backward(f32(2, 6, 5, 6), X, W), ValueError,
     esc("dy must have shape (2, 6, 6, 6) (the conv2d output for x (2, 4, 8, 8) and weight (6, 4, 3, 3)), got (2, 6, 5, 6)")),
    ("maxpool_dy_shape", lambda: F.max_pool2d_backward(f32(2, 4, 3, 4), np.zeros((2, 4, 3, 4), np.int64), (2, 4, 8, 8), 2),
     ValueError, esc("dy must have shape (2, 4, 4, 4) for x_shape (2, 4, 8, 8), got (2, 4, 3, 4)")),
    ("maxpool_argmax_dtype", lambda: F.max_pool2d_backward(f32(2, 4, 4, 4), f32(2, 4, 4, 4), (2, 4, 8, 8), 2),
     TypeError, esc("argmax must be an integer array, got dtype float32")),
    ("avgpool_dy_shape", lambda: F.avg_pool2d_backward(f32(2, 4, 4), (2, 4, 8, 8), 2), ValueError,
     esc("dy must have shape (2, 4, 4, 4) for x_shape (2, 4, 8, 8), got (2, 4, 4)")),
    ("bn_dy_shape", lambda: F.batch_norm_backward(f32(2, 4, 8, 7), X, X, None, f32(4), f32(4)), ValueError,
     esc("dy (2, 4, 8, 7) and y (2, 4, 8, 8) must have x's shape (2, 4, 8, 8)")),
    ("layernorm_dy_shape", lambda: F.layer_norm_backward(f32(2, 4, 8), X, None, f32(8), f32(8), 1), ValueError,
     esc("dy shape (2, 4, 8) must equal x shape (2, 4, 8, 8)")),
    ("groupnorm_dy_shape", lambda: F.group_norm_backward(f32(2, 4, 8), X, 2, None, f32(2, 2), f32(2, 2)), ValueError,
     esc("dy shape (2, 4, 8) must equal x shape (2, 4, 8, 8)")),
    ("relu_dy_shape", lambda: F.relu_backward(f32(3, 4), f32(3, 5)), ValueError, esc("dy shape (3, 4) must equal y shape (3, 5)")),
    ("linear_dy_shape", lambda: F.linear_backward(f32(3, 3), f32(3, 4), f32(2, 4)), ValueError, esc("dy must have shape (3, 2), got (3, 3)")),
    # labels
    ("labels_out_of_range", lambda: F.cross_entropy(f32(3, 4), np.array([0, 4, 1])), ValueError,
     esc("target class indices must lie in [0, 4) (or equal ignore_index=-100), got values in [0, 4]")),
    ("labels_negative", lambda: F.cross_entropy(f32(3, 4), np.array([0, -1, 1])), ValueError, esc("target class indices must lie in [0, 4) (or equal ignore_index=-100), got values in [-1, 1]")),
    ("labels_float", lambda: F.cross_entropy(f32(3, 4), np.array([0.0, 1.0, 2.0])), TypeError,
     esc("target has dtype float64 and shape (3,): class probabilities must have input's shape (3, 4)")),
    ("labels_length", lambda: F.cross_entropy(f32(3, 4), np.array([0, 1])), ValueError,
     esc("target must have shape (3,) to match input (3, 4) (class indices), got (2,)")),
    ("ce_backward_labels_float", lambda: F.cross_entropy_backward(f32(3, 4), np.array([0.0, 1.0, 2.0])), TypeError,
     esc("target has dtype float64 and shape (3,): class probabilities must have probs's shape (3, 4)")),
    ("ce_backward_labels_range", lambda: F.cross_entropy_backward(f32(3, 4), np.array([0, 1, 7])), ValueError,
     esc("target class indices must lie in [0, 4) (or equal ignore_index=-100), got values in [0, 7]")),
    # norms: groups, eps, momentum
    ("groupnorm_groups_not_dividing", lambda: F.group_norm(X, 3), ValueError, esc("num_groups=3 must be >= 1 and divide C=4 (input shape (2, 4, 8, 8))")),
    ("groupnorm_groups_zero", lambda: F.group_norm(X, 0), ValueError, esc("num_groups=0 must be >= 1")),
    ("groupnorm_groups_float", lambda: F.group_norm(X, 2.0), TypeError, esc("num_groups must be an int, got 2.0")),
    ("groupnorm_backward_groups", lambda: F.group_norm_backward(X, X, 3, None, f32(2, 3), f32(2, 3)), ValueError,
     esc("num_groups=3 must be >= 1 and divide C=4 (x shape (2, 4, 8, 8))")),
    ("groupnorm_backward_groups_float", lambda: F.group_norm_backward(X, X, 2.0, None, f32(2, 2), f32(2, 2)), TypeError,
     esc("num_groups must be an int, got 2.0")),
    ("ce_backward_probs_int", lambda: F.cross_entropy_backward(np.zeros((3, 4), np.int64), np.array([0, 1, 2])), TypeError,
     esc("probs must be a floating-point array, got dtype int64 with shape (3, 4)")),
    ("bn_eps_zero", lambda: F.batch_norm(X, None, None, eps=0.0), ValueError, esc("eps must be a positive number, got 0.0")),
    ("layernorm_eps_negative", lambda: F.layer_norm(X, 8, eps=-1e-5), ValueError, esc("eps must be a positive number, got -1e-05")),
    ("groupnorm_eps_nan", lambda: F.group_norm(X, 2, eps=float("nan")), ValueError, "eps must be a positive number, got nan"),
    ("bn_momentum_high", lambda: F.batch_norm(X, None, None, training=True, momentum=1.5), ValueError, esc("momentum must be a number in [0, 1], got 1.5")),
    ("bn_momentum_negative", lambda: F.batch_norm(X, None, None, training=True, momentum=-0.1), ValueError, esc("momentum must be a number in [0, 1], got -0.1")),
    # backends and array types
    ("unknown_backend", lambda: F.relu(X, backend="opencl"), ValueError, esc("unknown backend 'opencl'; choose one of ('numpy', 'cupy', 'triton')")),
    ("backend_not_str", lambda: cnngpu.get_backend(3), TypeError, "backend must be a str"),
    ("list_input", lambda: F.relu([1.0, 2.0]), TypeError, esc("input must be a numpy.ndarray, cupy.ndarray or torch.Tensor, got list: [1.0, 2.0]")),
    ("mixed_arrays", lambda: F.linear(f32(3, 4), _torch_tensor((2, 4))), TypeError,
     esc("weight is a torch.Tensor, but backend 'numpy' (as input is) takes numpy.ndarray arrays")),
]


def _torch_tensor(shape):
    import torch
    return torch.zeros(shape)


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_functional_rejects_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_wrong_array_type_for_triton_backend():
    try:
        harness.require("triton")
    except ImportError as e:  # the triton backend's op modules are still being written
        pytest.skip(f"triton backend does not import yet: {e}")
    with pytest.raises(TypeError, match="input is a numpy.ndarray, but backend 'triton' takes torch.Tensor arrays"):
        F.relu(X, backend="triton")
    with pytest.raises(TypeError, match="dtype must be one of .* on backend 'triton', got 'float64'"):
        nn.Conv2d(3, 4, 3, backend="triton", dtype="float64")


def test_unavailable_backend_says_why():
    if backends.is_available("cupy"):
        pytest.skip("cupy can run here: nothing unavailable to test")
    with pytest.raises(backends.BackendUnavailableError, match="cupy backend needs a CUDA device"):
        cnngpu.get_backend("cupy")
    with pytest.raises(backends.BackendUnavailableError, match="cupy backend needs"):
        F.relu(X, backend="cupy")
    with pytest.raises(backends.BackendUnavailableError, match="cupy backend needs"):
        nn.Conv2d(3, 4, 3, backend="cupy")
    with pytest.raises(backends.BackendUnavailableError, match="cupy backend needs"):
        cnngpu.convert(X, "cupy")
    assert "cupy" not in cnngpu.available_backends()


LAYER_CASES = [
    ("conv_in_groups", lambda: nn.Conv2d(5, 6, 3, groups=2, backend="numpy"), ValueError,
     esc("in_channels=5 and out_channels=6 must both be divisible by groups=2")),
    ("conv_zero_channels", lambda: nn.Conv2d(0, 6, 3, backend="numpy"), ValueError, esc("in_channels must be a positive int, got 0")),
    ("conv_kernel_zero", lambda: nn.Conv2d(3, 6, (3, 0), backend="numpy"), ValueError, esc("kernel_size must be positive, got (3, 0)")),
    ("conv_stride_zero", lambda: nn.Conv2d(3, 6, 3, stride=0, backend="numpy"), ValueError, esc("stride must be positive, got 0")),
    ("conv_padding_neg", lambda: nn.Conv2d(3, 6, 3, padding=-2, backend="numpy"), ValueError, esc("padding must be >= 0, got -2")),
    ("conv_padding_str", lambda: nn.Conv2d(3, 6, 3, padding="half", backend="numpy"), ValueError, "'same' or 'valid', got 'half'"),
    ("conv_int_dtype", lambda: nn.Conv2d(3, 6, 3, dtype="int32", backend="numpy"), TypeError,
     esc("dtype must be one of ('float16', 'float32', 'float64') on backend 'numpy', got 'int32'")),
    ("conv_bad_algo", lambda: nn.Conv2d(3, 6, 3, algo="fft", backend="numpy"), ValueError, "algo must be one of"),
    ("unknown_backend", lambda: nn.ReLU(backend="metal"), ValueError, "unknown backend 'metal'"),
    ("pool_padding", lambda: nn.MaxPool2d(2, padding=2, backend="numpy"), ValueError,
     esc("padding (2, 2) must be at most half the kernel_size (2, 2)")),
    ("bn_momentum", lambda: nn.BatchNorm2d(4, momentum=2.0, backend="numpy"), ValueError, esc("momentum must be a number in [0, 1], got 2.0")),
    ("bn_eps", lambda: nn.BatchNorm2d(4, eps=0, backend="numpy"), ValueError, esc("eps must be a positive number, got 0")),
    ("groupnorm_groups", lambda: nn.GroupNorm(3, 8, backend="numpy"), ValueError, esc("num_groups=3 must divide num_channels=8")),
    ("layernorm_eps", lambda: nn.LayerNorm(8, eps=-1.0, backend="numpy"), ValueError, "eps must be a positive number"),
    ("sequential_empty", lambda: nn.Sequential(), ValueError, "at least one layer"),
    ("sequential_not_module", lambda: nn.Sequential(nn.ReLU(backend="numpy"), lambda x: x), TypeError, "layer 1 must be a cnngpu.nn.Module"),
    ("sgd_negative_lr", lambda: nn.SGD(nn.Linear(2, 2, backend="numpy").parameters(), lr=-0.1), ValueError, esc("lr must be a number >= 0, got -0.1")),
    ("sgd_nesterov", lambda: nn.SGD(nn.Linear(2, 2, backend="numpy").parameters(), lr=0.1, nesterov=True), ValueError,
     "nesterov momentum needs momentum > 0"),
    ("sgd_not_params", lambda: nn.SGD([np.zeros(3)], lr=0.1), TypeError, "SGD params must be cnngpu.nn.Parameter objects, got ndarray"),
    # forward with inputs that do not fit the layer
    ("conv_forward_channels", lambda: nn.Conv2d(3, 6, 3, backend="numpy")(f32(1, 4, 8, 8)), ValueError,
     esc("weight shape (6, 3, 3, 3) expects C_in/groups=3, but x shape (1, 4, 8, 8)")),
    ("conv_forward_dtype", lambda: nn.Conv2d(4, 6, 3, backend="numpy")(X.astype(np.float64)), TypeError,
     esc("weight has dtype float32 but input has dtype float64")),
    ("conv_forward_torch_tensor", lambda: nn.Conv2d(4, 6, 3, backend="numpy")(_torch_tensor((1, 4, 8, 8))), TypeError,
     "input is a torch.Tensor, but backend 'numpy' takes numpy.ndarray arrays"),
    ("linear_forward_features", lambda: nn.Linear(5, 3, backend="numpy")(f32(2, 4)), ValueError,
     esc("input has 4 features (shape (2, 4)) but weight expects 5 (shape (3, 5))")),
    ("bn_forward_channels", lambda: nn.BatchNorm2d(6, backend="numpy")(X), ValueError,
     esc("weight must have shape (4,) (one per channel of input, shape (2, 4, 8, 8)), got (6,)")),
    ("groupnorm_forward_channels", lambda: nn.GroupNorm(2, 6, backend="numpy")(X), ValueError,
     esc("GroupNorm expects x with C=6 channels, got x shape (2, 4, 8, 8)")),
    ("backward_before_forward", lambda: nn.Conv2d(3, 6, 3, backend="numpy").backward(f32(1, 6, 6, 6)), RuntimeError,
     "backward called before forward"),
    ("loss_labels_range", lambda: nn.CrossEntropyLoss()(f32(2, 3), np.array([0, 3])), ValueError, esc("target class indices must lie in [0, 3)") + ".*" + esc("got values in [0, 3]")),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES])
def test_layers_reject_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_layer_backward_rejects_wrong_dy_shape():
    conv = nn.Conv2d(4, 6, 3, backend="numpy")
    conv(X)
    with pytest.raises(ValueError, match=esc("dy must have shape (2, 6, 6, 6)") + ".*" + esc("got (2, 6, 6, 5)")):
        conv.backward(f32(2, 6, 6, 5))
    pool = nn.MaxPool2d(2, backend="numpy")
    pool(X)
    with pytest.raises(ValueError, match=esc("dy must have shape (2, 4, 4, 4) for x_shape (2, 4, 8, 8)")):
        pool.backward(f32(2, 4, 4, 3))
