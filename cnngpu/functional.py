"""The ops as functions, forward and backward, with argument checking and backend dispatch.

Every function takes native arrays of one backend (numpy.ndarray, cupy.ndarray or torch.Tensor);
the backend is inferred from the first array unless ``backend=`` names one, in which case the
arrays must be that backend's type. Arguments are validated here, once, and turned into the
geometry records of ``cnngpu.geometry``; bad input raises ValueError/TypeError naming the argument
and the shapes before any kernel runs.

Layout convention: images are NCHW (any strides: channels-last or sliced inputs are accepted),
conv weights are (K, C/groups, R, S), linear weights are (out_features, in_features).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

from . import backends as _backends
from .backends.conv_policy import ALGOS as _ALGOS
from .dtypes import FLOAT_NAMES, dtype_name
from .geometry import ConvGeometry, PoolGeometry, conv_output_size, pair, same_padding

Padding = Union[int, Sequence[int], str]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _shape(x) -> Tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _resolve(backend: Optional[str], *arrays):
    """Pick the backend module and check every non-None array is of its native type."""
    first = next((a for a in arrays if a is not None), None)
    if backend is None:
        backend = _backends.backend_of(first) if first is not None else None
        if backend is None:
            raise TypeError(f"expected a numpy.ndarray, cupy.ndarray or torch.Tensor, got {type(first).__name__}")
    be = _backends.get_backend(backend)
    for a in arrays:
        if a is not None and not isinstance(a, be.array_type):
            raise TypeError(f"backend {be.name!r} takes {be.array_type.__module__}.{be.array_type.__name__} "
                            f"arrays, got {type(a).__module__}.{type(a).__name__}")
    return be


def _check_float(be, name: str, x) -> str:
    dt = dtype_name(x)
    if dt not in FLOAT_NAMES:
        raise TypeError(f"{name} must be a floating-point array, got dtype {dt} with shape {_shape(x)}")
    if dt not in be.DTYPES:
        raise TypeError(f"backend {be.name!r} does not support dtype {dt} for {name} "
                        f"(supported: {', '.join(be.DTYPES)})")
    return dt


def _check_same_dtype(ref_name: str, ref, name: str, x):
    if x is not None and dtype_name(x) != dtype_name(ref):
        raise TypeError(f"{name} has dtype {dtype_name(x)} but {ref_name} has dtype {dtype_name(ref)}; "
                        f"they must match")


def _check_ndim(name: str, x, ndim: int, layout: str):
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D ({layout}), got shape {_shape(x)}")


def _param_dtype_ok(x, p) -> bool:
    """Norm parameters share x's dtype, or are float32 when x is half precision."""
    dx, dp = dtype_name(x), dtype_name(p)
    return dp == dx or (dx in ("float16", "bfloat16") and dp == "float32")


def _check_vector(name: str, v, length: int, what: str, x=None):
    if v is None:
        return
    if tuple(v.shape) != (length,):
        where = f", x shape {_shape(x)}" if x is not None else ""
        raise ValueError(f"{name} must have shape ({length},) ({what}{where}), got {_shape(v)}")
    if x is not None and not _param_dtype_ok(x, v):
        raise TypeError(f"{name} has dtype {dtype_name(v)}, x has dtype {dtype_name(x)}: parameters must "
                        f"match x (or be float32 for half-precision x)")


def _positive_pair(value, name: str) -> Tuple[int, int]:
    p = pair(value, name)
    if p[0] < 1 or p[1] < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return p


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------
def conv2d_geometry(x_shape, w_shape, stride=1, padding: Padding = 0, dilation=1, groups=1) -> ConvGeometry:
    """Validate conv2d arguments and return the ConvGeometry (x: N,C,H,W; w: K,C/groups,R,S)."""
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"weight must be 4-D (C_out, C_in/groups, R, S), got shape {tuple(w_shape)}")
    N, C, H, W = (int(s) for s in x_shape)
    K, Cg, R, S = (int(s) for s in w_shape)
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if C % groups != 0:
        raise ValueError(f"x has C_in={C} channels (shape {tuple(x_shape)}), not divisible by groups={groups}")
    if K % groups != 0:
        raise ValueError(f"weight has C_out={K} (shape {tuple(w_shape)}), not divisible by groups={groups}")
    if Cg != C // groups:
        raise ValueError(f"weight shape {tuple(w_shape)} expects C_in/groups={Cg}, but x shape {tuple(x_shape)} "
                         f"with groups={groups} gives {C // groups}")
    if min(N, C, H, W) < 1 or min(K, R, S) < 1:
        raise ValueError(f"empty dimension: x shape {tuple(x_shape)}, weight shape {tuple(w_shape)}")
    st = _positive_pair(stride, "stride")
    dil = _positive_pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "same":
            ph = same_padding(H, R, st[0], dil[0])
            pw = same_padding(W, S, st[1], dil[1])
        elif padding == "valid":
            ph, pw = (0, 0), (0, 0)
        else:
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        p = pair(padding, "padding")
        if p[0] < 0 or p[1] < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        ph, pw = (p[0], p[0]), (p[1], p[1])
    P = conv_output_size(H, R, st[0], ph[0], dil[0], pad_end=ph[1])
    Q = conv_output_size(W, S, st[1], pw[0], dil[1], pad_end=pw[1])
    if P < 1 or Q < 1:
        raise ValueError(f"kernel {R}x{S} (dilation {dil}) is larger than the padded input: x shape "
                         f"{tuple(x_shape)}, padding {(ph, pw)} gives output {P}x{Q}")
    return ConvGeometry(N, C, H, W, K, R, S, P, Q, st, (ph[0], pw[0]), (ph[1], pw[1]), dil, groups)


def pool2d_geometry(x_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> PoolGeometry:
    """Validate pooling arguments (PyTorch semantics) and return the PoolGeometry."""
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    N, C, H, W = (int(s) for s in x_shape)
    if min(N, C, H, W) < 1:
        raise ValueError(f"x has an empty dimension: shape {tuple(x_shape)}")
    k = _positive_pair(kernel_size, "kernel_size")
    s = k if stride is None else _positive_pair(stride, "stride")
    d = _positive_pair(dilation, "dilation")
    p = pair(padding, "padding")
    if p[0] < 0 or p[1] < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"padding {p} must be at most half the kernel_size {k} (else a window sees only padding)")
    P = conv_output_size(H, k[0], s[0], p[0], d[0], ceil_mode=bool(ceil_mode))
    Q = conv_output_size(W, k[1], s[1], p[1], d[1], ceil_mode=bool(ceil_mode))
    if P < 1 or Q < 1:
        raise ValueError(f"kernel_size {k} (dilation {d}) is larger than the padded input: x shape "
                         f"{tuple(x_shape)}, padding {p} gives output {P}x{Q}")
    return PoolGeometry(N, C, H, W, P, Q, k, s, p, d, bool(ceil_mode))


# ----------------------------------------------------------------------------------------------
# conv2d
# ----------------------------------------------------------------------------------------------
_PRECISIONS = ("ieee", "tf32")


def _check_conv_opts(algo, precision):
    if algo not in _ALGOS:
        raise ValueError(f"algo must be one of {_ALGOS}, got {algo!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")


def conv2d(x, weight, bias=None, stride=1, padding: Padding = 0, dilation=1, groups=1, *,
           algo: str = "auto", precision: str = "ieee", backend: Optional[str] = None):
    """2-D convolution (cross-correlation, as in every DL framework).

    x: (N, C, H, W); weight: (K, C/groups, R, S); bias: (K,) or None -> y: (N, K, P, Q) with
    P = floor((H + pad_top + pad_bottom - dilation*(R-1) - 1) / stride) + 1 (likewise Q).
    padding: int, (ph, pw), 'valid', or 'same' (output ceil(H/stride); extra zero at the end).
    algo: 'direct', 'implicit_gemm' or 'auto' (backend heuristic). precision: for float32 inputs on
    tensor-core backends, 'ieee' (exact fp32 FMA) or 'tf32'. Half inputs accumulate in float32.
    """
    be = _resolve(backend, x, weight, bias)
    _check_conv_opts(algo, precision)
    _check_ndim("x", x, 4, "N, C, H, W")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "weight", weight)
    g = conv2d_geometry(_shape(x), _shape(weight), stride, padding, dilation, groups)
    if bias is not None:
        _check_same_dtype("x", x, "bias", bias)
        _check_vector("bias", bias, g.K, "C_out of weight")
    return be.conv2d_forward(x, weight, bias, g, algo=algo, precision=precision)


def conv2d_backward(dy, x, weight, stride=1, padding: Padding = 0, dilation=1, groups=1, *,
                    need_dx: bool = True, need_dw: bool = True, need_db: bool = True,
                    algo: str = "auto", precision: str = "ieee", backend: Optional[str] = None):
    """Gradients of conv2d: returns (dx, dweight, dbias); entries not asked for are None.

    dy: (N, K, P, Q) as produced by ``conv2d`` with the same arguments; dx: (N, C, H, W);
    dweight: (K, C/groups, R, S); dbias: (K,). algo: 'auto' (the backend picks per pass), or
    'direct' / 'implicit_gemm' for both dX and dW (the direct kernel where a backend's implicit
    GEMM cannot run the geometry). precision as for ``conv2d``.
    """
    be = _resolve(backend, dy, x, weight)
    _check_conv_opts(algo, precision)
    _check_ndim("x", x, 4, "N, C, H, W")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "weight", weight)
    _check_same_dtype("x", x, "dy", dy)
    g = conv2d_geometry(_shape(x), _shape(weight), stride, padding, dilation, groups)
    if _shape(dy) != (g.N, g.K, g.P, g.Q):
        raise ValueError(f"dy must have shape {(g.N, g.K, g.P, g.Q)} (the conv2d output for x {_shape(x)} "
                         f"and weight {_shape(weight)}), got {_shape(dy)}")
    return be.conv2d_backward(dy, x, weight, g, need_dx=need_dx, need_dw=need_dw, need_db=need_db,
                              algo=algo, precision=precision)


# ----------------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------------
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
               backend: Optional[str] = None):
    """Max pooling. x: (N, C, H, W) -> (y, argmax), both (N, C, P, Q).

    argmax (int64) is the flat index ``h * W + w`` of the winning input pixel in its (n, c) plane
    (the first maximum in row-major window order on ties); padding never wins.
    """
    be = _resolve(backend, x)
    _check_ndim("x", x, 4, "N, C, H, W")
    _check_float(be, "x", x)
    g = pool2d_geometry(_shape(x), kernel_size, stride, padding, dilation, ceil_mode)
    return be.max_pool2d_forward(x, g)


def max_pool2d_backward(dy, argmax, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, backend: Optional[str] = None):
    """Gradient of max_pool2d: dx (x_shape) gets dy at each window's argmax (summed over windows)."""
    be = _resolve(backend, dy, argmax)
    g = pool2d_geometry(tuple(x_shape), kernel_size, stride, padding, dilation, ceil_mode)
    _check_float(be, "dy", dy)
    for name, a in (("dy", dy), ("argmax", argmax)):
        if _shape(a) != (g.N, g.C, g.P, g.Q):
            raise ValueError(f"{name} must have shape {(g.N, g.C, g.P, g.Q)} for x_shape {tuple(x_shape)}, "
                             f"got {_shape(a)}")
    if not dtype_name(argmax).startswith("int"):
        raise TypeError(f"argmax must be an integer array, got dtype {dtype_name(argmax)}")
    return be.max_pool2d_backward(dy, argmax, g)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *,
               backend: Optional[str] = None):
    """Average pooling (PyTorch semantics). x: (N, C, H, W) -> y: (N, C, P, Q).

    count_include_pad: divide by the window size including zero padding (but not the part of a
    ceil_mode window past the padded input), else by the number of real pixels in the window.
    """
    be = _resolve(backend, x)
    _check_ndim("x", x, 4, "N, C, H, W")
    _check_float(be, "x", x)
    g = pool2d_geometry(_shape(x), kernel_size, stride, padding, 1, ceil_mode)
    return be.avg_pool2d_forward(x, g, count_include_pad=bool(count_include_pad))


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, *, backend: Optional[str] = None):
    """Gradient of avg_pool2d: each input pixel gathers dy / divisor from the windows covering it."""
    be = _resolve(backend, dy)
    _check_float(be, "dy", dy)
    g = pool2d_geometry(tuple(x_shape), kernel_size, stride, padding, 1, ceil_mode)
    if _shape(dy) != (g.N, g.C, g.P, g.Q):
        raise ValueError(f"dy must have shape {(g.N, g.C, g.P, g.Q)} for x_shape {tuple(x_shape)}, got {_shape(dy)}")
    return be.avg_pool2d_backward(dy, g, count_include_pad=bool(count_include_pad))


# ----------------------------------------------------------------------------------------------
# normalization
# ----------------------------------------------------------------------------------------------
def _check_eps_momentum(eps, momentum=None):
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if momentum is not None and not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")


def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None, *, training: bool = True,
               momentum: float = 0.1, eps: float = 1e-5, relu: bool = False, backend: Optional[str] = None):
    """BatchNorm over (N, H, W) per channel, optionally fused with ReLU. x: (N, C, H, W) or (N, C).

    Returns (y, mean, invstd); mean/invstd (C,) float32 (float64 for float64 x) are what backward
    needs. training=True normalizes with the batch statistics (biased variance) and, when running
    stats are given, updates them in place: r = (1-momentum)*r + momentum*stat, with the unbiased
    variance. training=False uses the running stats (required) in one fused pass.
    """
    be = _resolve(backend, x, weight, bias, running_mean, running_var)
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be 2-D (N, C) or 4-D (N, C, H, W), got shape {_shape(x)}")
    _check_float(be, "x", x)
    _check_eps_momentum(eps, momentum)
    C = int(x.shape[1])
    for name, v in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        _check_vector(name, v, C, "one per channel of x", x)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if not training and running_mean is None:
        raise ValueError("batch_norm with training=False needs running_mean and running_var")
    if training:
        count = int(x.shape[0]) * (int(x.shape[2]) * int(x.shape[3]) if x.ndim == 4 else 1)
        if count < 2:
            raise ValueError(f"batch_norm training needs more than one value per channel, x shape {_shape(x)}")
    return be.batch_norm_forward(x, weight, bias, running_mean, running_var, training=bool(training),
                                 momentum=float(momentum), eps=float(eps), relu=bool(relu))


def batch_norm_backward(dy, x, y, weight, mean, invstd, *, training: bool = True, relu: bool = False,
                        backend: Optional[str] = None):
    """Gradient of batch_norm: returns (dx, dweight, dbias) (dweight/dbias None when weight is None).

    y is the forward output (its sign gives the ReLU mask when relu=True); mean/invstd as returned
    by the forward. In eval mode (training=False) the statistics are constants.
    """
    be = _resolve(backend, dy, x, y, weight)
    if _shape(dy) != _shape(x) or _shape(y) != _shape(x):
        raise ValueError(f"dy {_shape(dy)} and y {_shape(y)} must have x's shape {_shape(x)}")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "dy", dy)
    C = int(x.shape[1])
    _check_vector("weight", weight, C, "one per channel of x", x)
    _check_vector("mean", mean, C, "one per channel of x")
    _check_vector("invstd", invstd, C, "one per channel of x")
    return be.batch_norm_backward(dy, x, y, weight, mean, invstd, training=bool(training), relu=bool(relu))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5, *, backend: Optional[str] = None):
    """LayerNorm over the trailing dims ``normalized_shape``. Returns (y, mean, rstd).

    x: (..., *normalized_shape); weight/bias: normalized_shape or None; mean/rstd: (M,) with M the
    product of the leading dims, float32 (float64 for float64 x).
    """
    be = _resolve(backend, x, weight, bias)
    _check_float(be, "x", x)
    _check_eps_momentum(eps)
    ns = (int(normalized_shape),) if isinstance(normalized_shape, int) else tuple(int(s) for s in normalized_shape)
    if len(ns) == 0 or len(ns) > x.ndim or _shape(x)[x.ndim - len(ns):] != ns:
        raise ValueError(f"normalized_shape {ns} must be the trailing dims of x, got x shape {_shape(x)}")
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None:
            if _shape(v) != ns:
                raise ValueError(f"{name} must have shape {ns} (normalized_shape), got {_shape(v)}")
            if not _param_dtype_ok(x, v):
                raise TypeError(f"{name} has dtype {dtype_name(v)}, x has dtype {dtype_name(x)}")
    return be.layer_norm_forward(x, len(ns), weight, bias, float(eps))


def layer_norm_backward(dy, x, weight, mean, rstd, normalized_ndim: int, *, backend: Optional[str] = None):
    """Gradient of layer_norm: returns (dx, dweight, dbias) (None for absent weight)."""
    be = _resolve(backend, dy, x, weight)
    if _shape(dy) != _shape(x):
        raise ValueError(f"dy shape {_shape(dy)} must equal x shape {_shape(x)}")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "dy", dy)
    if not 1 <= normalized_ndim <= x.ndim:
        raise ValueError(f"normalized_ndim must be in [1, {x.ndim}], got {normalized_ndim}")
    return be.layer_norm_backward(dy, x, weight, mean, rstd, int(normalized_ndim))


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5, *, backend: Optional[str] = None):
    """GroupNorm: x (N, C, *) normalized over (C/G, *) per (n, group). Returns (y, mean, rstd).

    weight/bias: (C,) or None; mean/rstd: (N, G). InstanceNorm is num_groups == C.
    """
    be = _resolve(backend, x, weight, bias)
    if x.ndim < 2:
        raise ValueError(f"x must be at least 2-D (N, C, ...), got shape {_shape(x)}")
    _check_float(be, "x", x)
    _check_eps_momentum(eps)
    C = int(x.shape[1])
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"num_groups must be an int, got {num_groups!r}")
    if num_groups < 1 or C % num_groups != 0:
        raise ValueError(f"num_groups={num_groups} must be >= 1 and divide C={C} (x shape {_shape(x)})")
    for name, v in (("weight", weight), ("bias", bias)):
        _check_vector(name, v, C, "one per channel of x", x)
    return be.group_norm_forward(x, num_groups, weight, bias, float(eps))


def group_norm_backward(dy, x, num_groups: int, weight, mean, rstd, *, backend: Optional[str] = None):
    """Gradient of group_norm: returns (dx, dweight, dbias) (None for absent weight)."""
    be = _resolve(backend, dy, x, weight)
    if _shape(dy) != _shape(x):
        raise ValueError(f"dy shape {_shape(dy)} must equal x shape {_shape(x)}")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "dy", dy)
    C = int(x.shape[1])
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"num_groups must be an int, got {num_groups!r}")
    if num_groups < 1 or C % num_groups != 0:
        raise ValueError(f"num_groups={num_groups} must be >= 1 and divide C={C} (x shape {_shape(x)})")
    return be.group_norm_backward(dy, x, num_groups, weight, mean, rstd)


# ----------------------------------------------------------------------------------------------
# relu, linear, loss
# ----------------------------------------------------------------------------------------------
def relu(x, *, backend: Optional[str] = None):
    """max(x, 0), elementwise, any shape."""
    be = _resolve(backend, x)
    _check_float(be, "x", x)
    return be.relu_forward(x)


def relu_backward(dy, y, *, backend: Optional[str] = None):
    """dy * (y > 0), with y the relu output."""
    be = _resolve(backend, dy, y)
    if _shape(dy) != _shape(y):
        raise ValueError(f"dy shape {_shape(dy)} must equal y shape {_shape(y)}")
    _check_float(be, "dy", dy)
    return be.relu_backward(dy, y)


def linear(x, weight, bias=None, *, backend: Optional[str] = None):
    """y = x @ weight.T + bias. x: (M, in_features); weight: (out_features, in_features); bias: (out,)."""
    be = _resolve(backend, x, weight, bias)
    _check_ndim("x", x, 2, "batch, in_features")
    _check_ndim("weight", weight, 2, "out_features, in_features")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "weight", weight)
    if int(x.shape[1]) != int(weight.shape[1]):
        raise ValueError(f"x has {int(x.shape[1])} features (shape {_shape(x)}) but weight expects "
                         f"{int(weight.shape[1])} (shape {_shape(weight)})")
    if bias is not None:
        _check_same_dtype("x", x, "bias", bias)
        _check_vector("bias", bias, int(weight.shape[0]), "out_features of weight")
    return be.linear_forward(x, weight, bias)


def linear_backward(dy, x, weight, *, need_db: bool = True, backend: Optional[str] = None):
    """Gradient of linear: returns (dx (M, in), dweight (out, in), dbias (out,) or None)."""
    be = _resolve(backend, dy, x, weight)
    _check_ndim("x", x, 2, "batch, in_features")
    _check_ndim("weight", weight, 2, "out_features, in_features")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "dy", dy)
    if _shape(dy) != (int(x.shape[0]), int(weight.shape[0])):
        raise ValueError(f"dy must have shape {(int(x.shape[0]), int(weight.shape[0]))}, got {_shape(dy)}")
    return be.linear_backward(dy, x, weight, need_db=bool(need_db))


def cross_entropy(logits, labels, *, backend: Optional[str] = None):
    """Mean softmax cross-entropy. logits: (M, classes) float; labels: (M,) int in [0, classes).

    Returns (loss, probs): loss a 0-d float32 array (float64 for float64 logits), probs (M, classes)
    the softmax, which backward reuses.
    """
    be = _resolve(backend, logits, labels)
    _check_ndim("logits", logits, 2, "batch, classes")
    _check_float(be, "logits", logits)
    _check_labels(labels, logits, "logits")
    return be.cross_entropy_forward(logits, labels)


def _check_labels(labels, ref, ref_name: str):
    """labels: (M,) integers in [0, classes) for ref (M, classes)."""
    if labels.ndim != 1 or int(labels.shape[0]) != int(ref.shape[0]):
        raise ValueError(f"labels must have shape ({int(ref.shape[0])},) to match {ref_name} {_shape(ref)}, "
                         f"got {_shape(labels)}")
    if not dtype_name(labels).startswith(("int", "uint")):
        raise TypeError(f"labels must be an integer array, got dtype {dtype_name(labels)}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= int(ref.shape[1]):
        raise ValueError(f"labels must lie in [0, {int(ref.shape[1])}), got values in [{lo}, {hi}]")


def cross_entropy_backward(probs, labels, dloss: float = 1.0, *, backend: Optional[str] = None):
    """Gradient of the mean cross-entropy w.r.t. logits: dloss * (probs - onehot(labels)) / M."""
    be = _resolve(backend, probs, labels)
    _check_ndim("probs", probs, 2, "batch, classes")
    _check_float(be, "probs", probs)
    _check_labels(labels, probs, "probs")
    return be.cross_entropy_backward(probs, labels, float(dloss))
