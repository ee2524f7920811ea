"""The ops as functions, forward and backward, with argument checking and backend dispatch.

Every function takes native arrays of one backend (numpy.ndarray, cupy.ndarray or torch.Tensor);
the backend is inferred from the first array unless ``backend=`` names one, in which case the
arrays must be that backend's type. Arguments are validated here, once, and turned into the
geometry records of ``cnngpu.geometry``; bad input raises ValueError/TypeError naming the argument
and the shapes before any kernel runs.

Every forward op has ``torch.nn.functional``'s name, argument names, order, defaults and return
value; cnngpu's own options are keyword-only (``backend=``, ``relu=``, ``algo=``, ``precision=``),
and what a backward needs comes back on request: ``return_stats=True`` (the norms),
``return_indices=True`` (max_pool2d, as torch), ``return_probs=True`` (cross_entropy). Special
values (NaN, Inf) and empty tensors behave as in torch on every backend. The one deliberate
extension: ``conv2d(padding='same')`` with stride > 1 (TensorFlow's rule), which torch refuses.

Layout convention: images are NCHW (any strides: channels-last or sliced inputs are accepted),
conv weights are (K, C/groups, R, S), linear weights are (out_features, in_features).
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Optional, Sequence, Tuple, Union

from . import backends as _backends
from ._typing import Array, IntOrPair, Padding
from .backends.conv_policy import ALGOS as _ALGOS
from .dtypes import FLOAT_NAMES, dtype_name
from .geometry import ConvGeometry, PoolGeometry, conv_output_size, pair, same_padding


__all__ = [
    "Padding", "dtype_name", "conv2d_geometry", "pool2d_geometry",
    "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward", "group_norm", "group_norm_backward",
    "relu", "relu_backward", "linear", "linear_backward", "cross_entropy", "cross_entropy_backward",
    "conv2d_bn_relu", "conv2d_bn_relu_backward",
]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _shape(x: Array) -> Tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _resolve(backend: Optional[str], *arrays: Any) -> ModuleType:
    """Pick the backend module and check every non-None array is of its native type.

    arrays: (name, value) pairs (or bare values, named by position), so that a list, a scalar or
    an array of another backend is reported by the argument's name.
    """
    named = [a if isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) else (f"argument {i}", a)
             for i, a in enumerate(arrays)]
    for name, a in named:
        if a is not None and _backends.backend_of(a) is None:
            raise TypeError(f"{name} must be a numpy.ndarray, cupy.ndarray or torch.Tensor, "
                            f"got {type(a).__name__}: {_short(a)}")
    first = next(((n, a) for n, a in named if a is not None), None)
    if backend is None:
        if first is None:
            raise TypeError("expected a numpy.ndarray, cupy.ndarray or torch.Tensor, got None")
        backend = _backends.backend_of(first[1])
    be = _backends.get_backend(backend)
    for name, a in named:
        if a is not None and not isinstance(a, be.array_type):
            ref = "" if first is None or first[0] == name else f" (as {first[0]} is)"
            raise TypeError(f"{name} is a {type(a).__module__}.{type(a).__name__}, but backend {be.name!r}{ref} "
                            f"takes {be.array_type.__module__}.{be.array_type.__name__} arrays: do not mix backends")
    return be


def _numel_of(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _numel(x: Array) -> int:
    return _numel_of(_shape(x))


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _empty(be: ModuleType, like: Array, shape: Sequence[int], dtype: Optional[str] = None) -> Array:
    """A native empty (or zero-filled) array of ``shape`` on ``like``'s backend: results of empty inputs."""
    import numpy as np
    return be.asarray(np.zeros(tuple(int(s) for s in shape), dtype=np.float32 if dtype is None else dtype),
                      dtype=dtype_name(like) if dtype is None else dtype)


def _zeros_like(be: ModuleType, like: Array) -> Array:
    return _empty(be, like, _shape(like))


def _check_float(be: ModuleType, name: str, x: Array) -> str:
    dt = dtype_name(x)
    if dt not in FLOAT_NAMES:
        raise TypeError(f"{name} must be a floating-point array, got dtype {dt} with shape {_shape(x)}")
    if dt not in be.DTYPES:
        raise TypeError(f"backend {be.name!r} does not support dtype {dt} for {name} "
                        f"(supported: {', '.join(be.DTYPES)})")
    return dt


def _check_same_dtype(ref_name: str, ref: Array, name: str, x: Array) -> None:
    if x is not None and dtype_name(x) != dtype_name(ref):
        raise TypeError(f"{name} has dtype {dtype_name(x)} but {ref_name} has dtype {dtype_name(ref)}; "
                        f"they must match")


def _check_ndim(name: str, x: Array, ndim: int, layout: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D ({layout}), got shape {_shape(x)}")


def _param_dtype_ok(x: Array, p: Any) -> bool:
    """Norm parameters share x's dtype, or are float32 when x is half precision."""
    dx, dp = dtype_name(x), dtype_name(p)
    return dp == dx or (dx in ("float16", "bfloat16") and dp == "float32")


def _check_vector(name: str, v: Any, length: int, what: str, x: Any = None) -> None:
    if v is None:
        return
    if tuple(v.shape) != (length,):
        where = f", shape {_shape(x)}" if x is not None else ""
        raise ValueError(f"{name} must have shape ({length},) ({what}{where}), got {_shape(v)}")
    if x is not None and not _param_dtype_ok(x, v):
        raise TypeError(f"{name} has dtype {dtype_name(v)}, x has dtype {dtype_name(x)}: parameters must "
                        f"match x (or be float32 for half-precision x)")


def _positive_pair(value: Any, name: str) -> Tuple[int, int]:
    p = pair(value, name)
    if p[0] < 1 or p[1] < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return p


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------
def conv2d_geometry(x_shape: Sequence[int], w_shape: Sequence[int], stride: IntOrPair = 1, padding: Padding = 0,
                    dilation: IntOrPair = 1, groups: int = 1) -> ConvGeometry:
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
    if min(C, H, W) < 1 or min(K, R, S) < 1 or N < 0:
        raise ValueError(f"empty dimension (only the batch N may be 0): x shape {tuple(x_shape)}, weight shape {tuple(w_shape)}")
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


def pool2d_geometry(x_shape: Sequence[int], kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False) -> PoolGeometry:
    """Validate pooling arguments (PyTorch semantics) and return the PoolGeometry."""
    if len(x_shape) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    N, C, H, W = (int(s) for s in x_shape)
    if min(C, H, W) < 1 or N < 0:
        raise ValueError(f"x has an empty dimension (only the batch N may be 0): shape {tuple(x_shape)}")
    k = _positive_pair(kernel_size, "kernel_size")
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)   # torch: () too
    s = k if no_stride else _positive_pair(stride, "stride")
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


def _check_conv_opts(algo: Any, precision: Any) -> None:
    if algo not in _ALGOS:
        raise ValueError(f"algo must be one of {_ALGOS}, got {algo!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")


def conv2d(input: Array, weight: Array, bias: Optional[Array] = None, stride: IntOrPair = 1, padding: Padding = 0,
           dilation: IntOrPair = 1, groups: int = 1, *, algo: str = "auto", precision: str = "ieee",
           backend: Optional[str] = None) -> Array:
    """2-D convolution (cross-correlation, as in every DL framework).

    x: (N, C, H, W); weight: (K, C/groups, R, S); bias: (K,) or None -> y: (N, K, P, Q) with
    P = floor((H + pad_top + pad_bottom - dilation*(R-1) - 1) / stride) + 1 (likewise Q).
    padding: int, (ph, pw), 'valid', or 'same' (output ceil(H/stride); extra zero at the end).
    algo: 'direct', 'implicit_gemm' or 'auto' (backend heuristic); 'tma' is the triton backend's opt-in,
    unmeasured forward for 1x1 stride-1 unpadded NCHW convolutions. precision: for float32 inputs on
    tensor-core backends, 'ieee' (exact fp32 FMA) or 'tf32'. Half inputs accumulate in float32.
    """
    x = input
    be = _resolve(backend, ("input", x), ("weight", weight), ("bias", bias))
    _check_conv_opts(algo, precision)
    _check_ndim("input", x, 4, "N, C, H, W")
    _check_float(be, "input", x)
    _check_same_dtype("input", x, "weight", weight)
    g = conv2d_geometry(_shape(x), _shape(weight), stride, padding, dilation, groups)
    if bias is not None:
        _check_same_dtype("input", x, "bias", bias)
        _check_vector("bias", bias, g.K, "C_out of weight")
    if g.N == 0:
        return _empty(be, x, (0, g.K, g.P, g.Q))
    return be.conv2d_forward(x, weight, bias, g, algo=algo, precision=precision)


def conv2d_backward(dy: Array, x: Array, weight: Array, stride: IntOrPair = 1, padding: Padding = 0,
                    dilation: IntOrPair = 1, groups: int = 1, *, need_dx: bool = True, need_dw: bool = True,
                    need_db: bool = True, algo: str = "auto",
                    precision: str = "ieee", backend: Optional[str] = None
                    ) -> Tuple[Optional[Array], Optional[Array], Optional[Array]]:
    """Gradients of conv2d: returns (dx, dweight, dbias); entries not asked for are None.

    dy: (N, K, P, Q) as produced by ``conv2d`` with the same arguments; dx: (N, C, H, W);
    dweight: (K, C/groups, R, S); dbias: (K,). algo: 'auto' (the backend picks per pass; also for
    'tma', a forward-only path), or 'direct' / 'implicit_gemm' for both dX and dW (the direct kernel where a backend's implicit
    GEMM cannot run the geometry). precision as for ``conv2d``.
    """
    be = _resolve(backend, ("dy", dy), ("x", x), ("weight", weight))
    _check_conv_opts(algo, precision)
    _check_ndim("x", x, 4, "N, C, H, W")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "weight", weight)
    _check_same_dtype("x", x, "dy", dy)
    g = conv2d_geometry(_shape(x), _shape(weight), stride, padding, dilation, groups)
    if _shape(dy) != (g.N, g.K, g.P, g.Q):
        raise ValueError(f"dy must have shape {(g.N, g.K, g.P, g.Q)} (the conv2d output for x {_shape(x)} "
                         f"and weight {_shape(weight)}), got {_shape(dy)}")
    if g.N == 0:
        return (_empty(be, x, _shape(x)) if need_dx else None, _zeros_like(be, weight) if need_dw else None,
                _empty(be, x, (g.K,)) if need_db else None)
    return be.conv2d_backward(dy, x, weight, g, need_dx=need_dx, need_dw=need_dw, need_db=need_db,
                              algo=algo, precision=precision)


# ----------------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------------
def max_pool2d(input: Array, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               dilation: IntOrPair = 1, ceil_mode: bool = False, return_indices: bool = False, *,
               backend: Optional[str] = None) -> Union[Array, Tuple[Array, Array]]:
    """Max pooling (``torch.nn.functional.max_pool2d``). input: (N, C, H, W) -> y (N, C, P, Q), or
    (y, argmax) with ``return_indices=True`` (what ``max_pool2d_backward`` needs).

    argmax (int64) is the flat index ``h * W + w`` of the winning input pixel in its (n, c) plane
    (the first maximum in row-major window order on ties, the last NaN when the window holds NaN,
    as torch); padding never wins. A window that sees only padding (possible with dilation > 1)
    gives y = -inf and argmax = -1, and no gradient.
    """
    be = _resolve(backend, ("input", input))
    _check_ndim("input", input, 4, "N, C, H, W")
    _check_float(be, "input", input)
    g = pool2d_geometry(_shape(input), kernel_size, stride, padding, dilation, ceil_mode)
    if g.N * g.C == 0:
        y, idx = _empty(be, input, (g.N, g.C, g.P, g.Q)), _empty(be, input, (g.N, g.C, g.P, g.Q), "int64")
    else:
        y, idx = be.max_pool2d_forward(input, g)
    return (y, idx) if return_indices else y


def max_pool2d_backward(dy: Array, argmax: Array, x_shape: Sequence[int], kernel_size: IntOrPair,
                        stride: Optional[IntOrPair] = None, padding: IntOrPair = 0, dilation: IntOrPair = 1,
                        ceil_mode: bool = False, *, backend: Optional[str] = None) -> Array:
    """Gradient of max_pool2d: dx (x_shape) gets dy at each window's argmax (summed over windows);
    argmax -1 (a window that saw only padding) sends nothing."""
    be = _resolve(backend, ("dy", dy), ("argmax", argmax))
    g = pool2d_geometry(tuple(x_shape), kernel_size, stride, padding, dilation, ceil_mode)
    _check_float(be, "dy", dy)
    for name, a in (("dy", dy), ("argmax", argmax)):
        if _shape(a) != (g.N, g.C, g.P, g.Q):
            raise ValueError(f"{name} must have shape {(g.N, g.C, g.P, g.Q)} for x_shape {tuple(x_shape)}, "
                             f"got {_shape(a)}")
    if not dtype_name(argmax).startswith("int"):
        raise TypeError(f"argmax must be an integer array, got dtype {dtype_name(argmax)}")
    if g.N * g.C == 0:
        return _empty(be, dy, (g.N, g.C, g.H, g.W))
    lo, hi = int(argmax.min()), int(argmax.max())
    if lo < -1 or hi >= g.H * g.W:
        raise ValueError(f"argmax must hold flat indices in [0, {g.H * g.W}) of the (H, W) = {(g.H, g.W)} plane "
                         f"(or -1), got values in [{lo}, {hi}]")
    return be.max_pool2d_backward(dy, argmax, g)


def _divisor_scale(be: ModuleType, like: Array, g: PoolGeometry, divisor_override: Any) -> Optional[Array]:
    """(P, Q) factor turning the count_include_pad mean into sum / divisor_override."""
    if divisor_override is None:
        return None
    if isinstance(divisor_override, bool) or not isinstance(divisor_override, int) or divisor_override == 0:
        raise ValueError(f"divisor_override must be a non-zero int or None, got {divisor_override!r}")
    from .backends.numpy_backend.pool import _avg_divisor
    return be.asarray(_avg_divisor(g, True) / float(divisor_override), dtype=dtype_name(like))


def avg_pool2d(input: Array, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Optional[int] = None, *,
               backend: Optional[str] = None) -> Array:
    """Average pooling (``torch.nn.functional.avg_pool2d``). input: (N, C, H, W) -> y: (N, C, P, Q).

    count_include_pad: divide by the window size including zero padding (but not the part of a
    ceil_mode window past the padded input), else by the number of real pixels in the window.
    divisor_override: divide every window sum by this number instead.
    """
    x = input
    be = _resolve(backend, ("input", x))
    _check_ndim("input", x, 4, "N, C, H, W")
    _check_float(be, "input", x)
    g = pool2d_geometry(_shape(x), kernel_size, stride, padding, 1, ceil_mode)
    scale = _divisor_scale(be, x, g, divisor_override)
    if g.N * g.C == 0:
        return _empty(be, x, (g.N, g.C, g.P, g.Q))
    if scale is not None:
        return be.avg_pool2d_forward(x, g, count_include_pad=True) * scale
    return be.avg_pool2d_forward(x, g, count_include_pad=bool(count_include_pad))


def avg_pool2d_backward(dy: Array, x_shape: Sequence[int], kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                        padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: Optional[int] = None, *, backend: Optional[str] = None) -> Array:
    """Gradient of avg_pool2d: each input pixel gathers dy / divisor from the windows covering it."""
    be = _resolve(backend, ("dy", dy))
    _check_float(be, "dy", dy)
    g = pool2d_geometry(tuple(x_shape), kernel_size, stride, padding, 1, ceil_mode)
    if _shape(dy) != (g.N, g.C, g.P, g.Q):
        raise ValueError(f"dy must have shape {(g.N, g.C, g.P, g.Q)} for x_shape {tuple(x_shape)}, got {_shape(dy)}")
    scale = _divisor_scale(be, dy, g, divisor_override)
    if g.N * g.C == 0:
        return _empty(be, dy, (g.N, g.C, g.H, g.W))
    if scale is not None:
        return be.avg_pool2d_backward(dy * scale, g, count_include_pad=True)
    return be.avg_pool2d_backward(dy, g, count_include_pad=bool(count_include_pad))


# ----------------------------------------------------------------------------------------------
# normalization
# ----------------------------------------------------------------------------------------------
def _check_eps_momentum(eps: Any, momentum: Any = None) -> None:
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))):
        raise TypeError(f"momentum must be a number in [0, 1], got {type(momentum).__name__} {momentum!r}")
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")


def _check_writable(name: str, v: Any) -> None:
    """Running statistics are updated in place: they must be writable."""
    flags = getattr(v, "flags", None)
    if flags is not None and hasattr(flags, "writeable") and not flags.writeable:
        raise ValueError(f"{name} is read-only (numpy flags.writeable is False), but batch_norm with "
                         f"training=True updates it in place; pass a writable copy")


def batch_norm(input: Array, running_mean: Optional[Array], running_var: Optional[Array],
               weight: Optional[Array] = None, bias: Optional[Array] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, relu: bool = False, return_stats: bool = False,
               backend: Optional[str] = None) -> Union[Array, Tuple[Array, Array, Array]]:
    """BatchNorm over (N, H, W) per channel (``torch.nn.functional.batch_norm``: same argument
    order and defaults), optionally fused with ReLU (``relu=True``). input: (N, C, H, W) or (N, C).

    Returns y; with ``return_stats=True`` returns (y, mean, invstd), mean/invstd (C,) float32
    (float64 for float64 input): what ``batch_norm_backward`` needs. training=True normalizes with
    the batch statistics (biased variance) and, when running stats are given, updates them in place:
    r = (1-momentum)*r + momentum*stat, with the unbiased variance. training=False uses the running
    stats (required) in one fused pass.
    """
    x = input
    be = _resolve(backend, ("input", x), ("running_mean", running_mean), ("running_var", running_var),
                  ("weight", weight), ("bias", bias))
    if x.ndim not in (2, 4):
        raise ValueError(f"input must be 2-D (N, C) or 4-D (N, C, H, W), got shape {_shape(x)}")
    _check_float(be, "input", x)
    if momentum is None:
        raise TypeError("momentum must be a number in [0, 1], got None (torch.nn.functional.batch_norm takes a "
                        "float; the cumulative average of momentum=None is a layer feature: nn.BatchNorm2d)")
    # momentum is read only in training (torch ignores it in eval): its range is checked there
    _check_eps_momentum(eps, momentum if training else None)
    if not isinstance(momentum, (int, float)) or isinstance(momentum, bool):
        raise TypeError(f"momentum must be a number in [0, 1], got {type(momentum).__name__} {momentum!r}")
    C = int(x.shape[1])
    for name, v in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        _check_vector(name, v, C, "one per channel of input", x)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if not training and running_mean is None:
        raise ValueError("batch_norm with training=False needs running_mean and running_var")
    if training:
        for name, v in (("running_mean", running_mean), ("running_var", running_var)):
            _check_writable(name, v)
        count = int(x.shape[0]) * (int(x.shape[2]) * int(x.shape[3]) if x.ndim == 4 else 1)
        if count == 1 and C > 0:       # torch: an empty batch (count 0) is fine, one value is not
            raise ValueError(f"batch_norm training needs more than one value per channel, input shape {_shape(x)}")
    if _numel(x) == 0:
        # nothing to normalize (C == 0 or an empty batch): empty y, running statistics unchanged (torch)
        sdt = "float64" if dtype_name(x) == "float64" else "float32"
        y = _empty(be, x, _shape(x))
        stats = (_empty(be, x, (C,), sdt), _empty(be, x, (C,), sdt))
        return (y,) + stats if return_stats else y
    out = be.batch_norm_forward(x, weight, bias, running_mean, running_var, training=bool(training),
                                momentum=float(momentum), eps=float(eps), relu=bool(relu))
    return out if return_stats else out[0]


def batch_norm_backward(dy: Array, x: Array, y: Array, weight: Array, mean: Array, invstd: Array, *,
                        training: bool = True, relu: bool = False, backend: Optional[str] = None
                        ) -> Tuple[Array, Optional[Array], Optional[Array]]:
    """Gradient of batch_norm: returns (dx, dweight, dbias) (dweight/dbias None when weight is None).

    y is the forward output (its sign gives the ReLU mask when relu=True); mean/invstd as returned
    by the forward. In eval mode (training=False) the statistics are constants.
    """
    be = _resolve(backend, ("dy", dy), ("x", x), ("y", y), ("weight", weight), ("mean", mean), ("invstd", invstd))
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be 2-D (N, C) or 4-D (N, C, H, W), got shape {_shape(x)}")
    if _shape(dy) != _shape(x) or _shape(y) != _shape(x):
        raise ValueError(f"dy {_shape(dy)} and y {_shape(y)} must have x's shape {_shape(x)}")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "dy", dy)
    C = int(x.shape[1])
    _check_vector("weight", weight, C, "one per channel of x", x)
    _check_vector("mean", mean, C, "one per channel of x")
    _check_vector("invstd", invstd, C, "one per channel of x")
    if _numel(x) == 0:
        pg = None if weight is None else _zeros_like(be, weight)
        return _empty(be, x, _shape(x)), pg, None if weight is None else _zeros_like(be, weight)
    return be.batch_norm_backward(dy, x, y, weight, mean, invstd, training=bool(training), relu=bool(relu))


def _normalized_shape(normalized_shape: Any) -> Tuple[int, ...]:
    ns = (normalized_shape,) if not isinstance(normalized_shape, (tuple, list)) else tuple(normalized_shape)
    for d in ns:
        if isinstance(d, bool) or not isinstance(d, int) and not (hasattr(d, "__index__") and
                                                                   not isinstance(d, float)):
            raise TypeError(f"normalized_shape must be an int or a sequence of ints, got {normalized_shape!r}")
    return tuple(int(d) for d in ns)


def layer_norm(input: Array, normalized_shape: Union[int, Sequence[int]], weight: Optional[Array] = None,
               bias: Optional[Array] = None, eps: float = 1e-5, *, return_stats: bool = False,
               backend: Optional[str] = None) -> Union[Array, Tuple[Array, Array, Array]]:
    """LayerNorm over the trailing dims ``normalized_shape`` (``torch.nn.functional.layer_norm``).

    Returns y; with ``return_stats=True`` (y, mean, rstd), mean/rstd (M,) with M the product of
    the leading dims, float32 (float64 for float64 input). weight/bias: normalized_shape or None.
    """
    x = input
    be = _resolve(backend, ("input", x), ("weight", weight), ("bias", bias))
    _check_float(be, "input", x)
    _check_eps_momentum(eps)
    ns = _normalized_shape(normalized_shape)
    if len(ns) == 0 or len(ns) > x.ndim or _shape(x)[x.ndim - len(ns):] != ns:
        raise ValueError(f"normalized_shape {ns} must be the trailing dims of input, got input shape {_shape(x)}")
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None:
            if _shape(v) != ns:
                raise ValueError(f"{name} must have shape {ns} (normalized_shape), got {_shape(v)}")
            if not _param_dtype_ok(x, v):
                raise TypeError(f"{name} has dtype {dtype_name(v)}, input has dtype {dtype_name(x)}")
    if _numel(x) == 0:
        M = 1
        for d in _shape(x)[:x.ndim - len(ns)]:
            M *= d
        sdt = "float64" if dtype_name(x) == "float64" else "float32"
        y = _empty(be, x, _shape(x))
        st = _empty(be, x, (M,), sdt)
        if M and _numel(x) == 0:   # empty normalized dims: torch gives NaN statistics
            st = st * float("nan")
        return (y, st, st) if return_stats else y
    out = be.layer_norm_forward(x, len(ns), weight, bias, float(eps))
    return out if return_stats else out[0]


def layer_norm_backward(dy: Array, x: Array, weight: Array, mean: Array, rstd: Array, normalized_ndim: int, *,
                        backend: Optional[str] = None) -> Tuple[Array, Optional[Array], Optional[Array]]:
    """Gradient of layer_norm: returns (dx, dweight, dbias) (None for absent weight)."""
    be = _resolve(backend, ("dy", dy), ("x", x), ("weight", weight), ("mean", mean), ("rstd", rstd))
    if _shape(dy) != _shape(x):
        raise ValueError(f"dy shape {_shape(dy)} must equal x shape {_shape(x)}")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "dy", dy)
    if isinstance(normalized_ndim, bool) or not isinstance(normalized_ndim, int):
        raise TypeError(f"normalized_ndim must be an int, got {normalized_ndim!r}")
    if not 1 <= normalized_ndim <= x.ndim:
        raise ValueError(f"normalized_ndim must be in [1, {x.ndim}], got {normalized_ndim}")
    ns = _shape(x)[x.ndim - normalized_ndim:]
    M = _numel_of(_shape(x)[:x.ndim - normalized_ndim])
    for name, v in (("mean", mean), ("rstd", rstd)):
        if _numel(v) != M:
            raise ValueError(f"{name} must hold one value per normalized row of x: {M} for x shape {_shape(x)} "
                             f"and normalized_ndim={normalized_ndim}, got shape {_shape(v)}")
    if weight is not None and _shape(weight) != ns:
        raise ValueError(f"weight must have shape {ns} (the normalized dims of x), got {_shape(weight)}")
    if _numel(x) == 0:
        pg = None if weight is None else _zeros_like(be, weight)
        return _empty(be, x, _shape(x)), pg, None if weight is None else _zeros_like(be, weight)
    return be.layer_norm_backward(dy, x, weight, mean, rstd, int(normalized_ndim))


def group_norm(input: Array, num_groups: int, weight: Optional[Array] = None, bias: Optional[Array] = None,
               eps: float = 1e-5, *, return_stats: bool = False, backend: Optional[str] = None
               ) -> Union[Array, Tuple[Array, Array, Array]]:
    """GroupNorm (``torch.nn.functional.group_norm``): input (N, C, *) normalized over (C/G, *) per
    (n, group). Returns y; with ``return_stats=True`` (y, mean, rstd), mean/rstd (N, G).

    weight/bias: (C,) or None. InstanceNorm is num_groups == C.
    """
    x = input
    be = _resolve(backend, ("input", x), ("weight", weight), ("bias", bias))
    if x.ndim < 2:
        raise ValueError(f"input must be at least 2-D (N, C, ...), got shape {_shape(x)}")
    _check_float(be, "input", x)
    _check_eps_momentum(eps)
    C = int(x.shape[1])
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"num_groups must be an int, got {num_groups!r}")
    if num_groups < 1 or C % num_groups != 0:
        raise ValueError(f"num_groups={num_groups} must be >= 1 and divide C={C} (input shape {_shape(x)})")
    for name, v in (("weight", weight), ("bias", bias)):
        _check_vector(name, v, C, "one per channel of input", x)
    if _numel(x) == 0:
        sdt = "float64" if dtype_name(x) == "float64" else "float32"
        st = _empty(be, x, (int(x.shape[0]), num_groups), sdt)
        y = _empty(be, x, _shape(x))
        return (y, st, st) if return_stats else y
    out = be.group_norm_forward(x, num_groups, weight, bias, float(eps))
    return out if return_stats else out[0]


def group_norm_backward(dy: Array, x: Array, num_groups: int, weight: Array, mean: Array, rstd: Array, *,
                        backend: Optional[str] = None) -> Tuple[Array, Optional[Array], Optional[Array]]:
    """Gradient of group_norm: returns (dx, dweight, dbias) (None for absent weight)."""
    be = _resolve(backend, ("dy", dy), ("x", x), ("weight", weight), ("mean", mean), ("rstd", rstd))
    if x.ndim < 2:
        raise ValueError(f"x must be at least 2-D (N, C, ...), got shape {_shape(x)}")
    if _shape(dy) != _shape(x):
        raise ValueError(f"dy shape {_shape(dy)} must equal x shape {_shape(x)}")
    _check_float(be, "x", x)
    _check_same_dtype("x", x, "dy", dy)
    C = int(x.shape[1])
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"num_groups must be an int, got {num_groups!r}")
    if num_groups < 1 or C % num_groups != 0:
        raise ValueError(f"num_groups={num_groups} must be >= 1 and divide C={C} (x shape {_shape(x)})")
    _check_vector("weight", weight, C, "one per channel of x", x)
    for name, v in (("mean", mean), ("rstd", rstd)):
        if _numel(v) != int(x.shape[0]) * num_groups:
            raise ValueError(f"{name} must have shape {(int(x.shape[0]), num_groups)} (N, num_groups), "
                             f"got {_shape(v)}")
    if _numel(x) == 0:
        pg = None if weight is None else _zeros_like(be, weight)
        return _empty(be, x, _shape(x)), pg, None if weight is None else _zeros_like(be, weight)
    return be.group_norm_backward(dy, x, num_groups, weight, mean, rstd)


# ----------------------------------------------------------------------------------------------
# relu, linear, loss
# ----------------------------------------------------------------------------------------------
def relu(input: Array, inplace: bool = False, *, backend: Optional[str] = None) -> Array:
    """max(input, 0), elementwise, any shape (NaN stays NaN, as in torch). inplace=True writes the
    result into input and returns input."""
    be = _resolve(backend, ("input", input))
    _check_float(be, "input", input)
    if _numel(input) == 0:
        return input if inplace else _empty(be, input, _shape(input))
    y = be.relu_forward(input)
    if inplace:
        input[...] = y
        return input
    return y


def relu_backward(dy: Array, y: Array, *, backend: Optional[str] = None) -> Array:
    """dy where y > 0 or y is NaN (torch's threshold_backward: 0 where y <= 0), y the relu output."""
    be = _resolve(backend, ("dy", dy), ("y", y))
    if _shape(dy) != _shape(y):
        raise ValueError(f"dy shape {_shape(dy)} must equal y shape {_shape(y)}")
    _check_float(be, "dy", dy)
    if _numel(dy) == 0:
        return _empty(be, dy, _shape(dy))
    return be.relu_backward(dy, y)


def _flat2d(x: Array, features: int) -> Array:
    """(..., features) -> (M, features) view or copy."""
    return x.reshape(-1, features) if x.ndim != 2 else x


def _linear_features(be: ModuleType, name: str, x: Array, weight: Array) -> Tuple[int, int]:
    """(in_features, out_features) of a linear layer after checking ``x`` (*, in_features) (named
    ``name``) and ``weight`` (out_features, in_features)."""
    if x.ndim < 1:
        raise ValueError(f"{name} must be at least 1-D (*, in_features), got shape {_shape(x)}")
    _check_ndim("weight", weight, 2, "out_features, in_features")
    _check_float(be, name, x)
    fin, fout = int(weight.shape[1]), int(weight.shape[0])
    if int(x.shape[-1]) != fin:
        raise ValueError(f"{name} has {int(x.shape[-1])} features (shape {_shape(x)}) but weight expects "
                         f"{fin} (shape {_shape(weight)})")
    return fin, fout


def linear(input: Array, weight: Array, bias: Optional[Array] = None, *, backend: Optional[str] = None) -> Array:
    """y = input @ weight.T + bias (``torch.nn.functional.linear``). input: (*, in_features) (any
    number of leading dims, or none); weight: (out_features, in_features); bias: (out,) or None."""
    x = input
    be = _resolve(backend, ("input", x), ("weight", weight), ("bias", bias))
    fin, fout = _linear_features(be, "input", x, weight)
    _check_same_dtype("input", x, "weight", weight)
    if bias is not None:
        _check_same_dtype("input", x, "bias", bias)
        _check_vector("bias", bias, fout, "out_features of weight")
    out_shape = _shape(x)[:-1] + (fout,)
    if _numel(x) == 0 or fout == 0:
        y = _empty(be, x, out_shape)
        if bias is not None and _numel(y):
            y = y + bias
        return y
    return be.linear_forward(_flat2d(x, fin), weight, bias).reshape(out_shape)


def linear_backward(dy: Array, x: Array, weight: Array, *, need_db: bool = True, backend: Optional[str] = None
                    ) -> Tuple[Array, Array, Optional[Array]]:
    """Gradient of linear: returns (dx (*, in), dweight (out, in), dbias (out,) or None)."""
    be = _resolve(backend, ("dy", dy), ("x", x), ("weight", weight))
    fin, fout = _linear_features(be, "x", x, weight)
    _check_same_dtype("x", x, "dy", dy)
    if _shape(dy) != _shape(x)[:-1] + (fout,):
        raise ValueError(f"dy must have shape {_shape(x)[:-1] + (fout,)}, got {_shape(dy)}")
    if _numel(x) == 0 or fout == 0:
        # in_features == 0 with rows: y was the bias alone, so dbias is still the sum of dy
        db = None
        if need_db:
            db = _flat2d(dy, fout).sum(0) if _numel(dy) else _empty(be, x, (fout,))
        return _empty(be, x, _shape(x)), _empty(be, x, _shape(weight)), db
    dx, dw, db = be.linear_backward(_flat2d(dy, fout), _flat2d(x, fin), weight, need_db=bool(need_db))
    return dx.reshape(_shape(x)), dw, db


_REDUCTIONS = ("mean", "sum", "none")


def _xent_args(be: ModuleType, input: Array, target: Array, weight: Optional[Array], ignore_index: Any,
               reduction: Any, label_smoothing: Any, input_name: str) -> bool:
    """Validate cross_entropy arguments as torch does; True for class-index targets, False for
    class probabilities."""
    if input.ndim < 1:
        raise ValueError(f"{input_name} must be (C,), (N, C) or (N, C, d1, ...), got shape {_shape(input)}")
    _check_float(be, input_name, input)
    C = int(input.shape[1]) if input.ndim >= 2 else int(input.shape[0])
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    if weight is not None:
        _check_same_dtype(input_name, input, "weight", weight)
        _check_vector("weight", weight, C, f"one per class of {input_name}")
    tdt = dtype_name(target)
    if tdt in FLOAT_NAMES:                       # class probabilities: input's shape and dtype
        if _shape(target) != _shape(input):
            raise TypeError(f"target has dtype {tdt} and shape {_shape(target)}: class probabilities must have "
                            f"{input_name}'s shape {_shape(input)}, class indices must be int64")
        _check_same_dtype(input_name, input, "target", target)
        return False
    if tdt not in ("int64", "uint8"):
        raise TypeError(f"target must hold int64 class indices (torch's Long; or uint8) or float class "
                        f"probabilities, got dtype {tdt} with shape {_shape(target)}")
    want = _shape(input)[:1] + _shape(input)[2:] if input.ndim >= 2 else ()
    if _shape(target) != want:
        raise ValueError(f"target must have shape {want} to match {input_name} {_shape(input)} (class indices), "
                         f"got {_shape(target)}")
    if _numel(target):
        valid = target[target != ignore_index]
        if _numel(valid):
            lo, hi = int(valid.min()), int(valid.max())
            if lo < 0 or hi >= C:
                raise ValueError(f"target class indices must lie in [0, {C}) (or equal ignore_index="
                                 f"{ignore_index}), got values in [{lo}, {hi}]")
    return True


def _xent_plain(input: Array, target: Array, weight: Any, ignore_index: int, reduction: str,
                label_smoothing: float, classes: bool) -> bool:
    """The case the fused kernels run: (M, C) logits, int64 class indices, none ignored, mean,
    no class weights and no smoothing."""
    return (classes and input.ndim == 2 and weight is None and reduction == "mean" and label_smoothing == 0
            and dtype_name(target) in ("int64", "uint8") and _numel(input) > 0
            and not bool((target == ignore_index).any()))


def cross_entropy(input: Array, target: Array, weight: Optional[Array] = None, size_average: Any = None,
                  ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, return_probs: bool = False, backend: Optional[str] = None
                  ) -> Union[Array, Tuple[Array, Array]]:
    """Softmax cross-entropy (``torch.nn.functional.cross_entropy``: same arguments and defaults).

    input: (C,), (N, C) or (N, C, d1, ...) logits; target: int64 class indices of shape (), (N,)
    or (N, d1, ...) (entries equal to ``ignore_index`` contribute nothing), or class probabilities
    of input's shape. weight: (C,) class weights or None. reduction: 'mean' (weighted mean over the
    non-ignored entries; over all entries for probability targets), 'sum' or 'none' (per-entry
    losses, target's shape). Returns the loss (float32 0-d array, float64 for float64 input, for
    'mean'/'sum'); with ``return_probs=True`` (loss, probs), probs the softmax over C, input's
    shape, what ``cross_entropy_backward`` needs. size_average/reduce: torch's deprecated
    arguments, which must stay None.
    """
    be = _resolve(backend, ("input", input), ("target", target), ("weight", weight))
    if size_average is not None or reduce is not None:
        raise ValueError("size_average and reduce are deprecated in torch; use reduction= ('mean', 'sum', 'none')")
    classes = _xent_args(be, input, target, weight, ignore_index, reduction, label_smoothing, "input")
    if _xent_plain(input, target, weight, ignore_index, reduction, label_smoothing, classes):
        loss, probs = be.cross_entropy_forward(input, target)
    else:
        from .backends.numpy_backend import basic as ref
        loss_n, probs_n = ref.cross_entropy_general_forward(
            be.to_numpy(input), be.to_numpy(target), None if weight is None else be.to_numpy(weight),
            int(ignore_index), reduction, float(label_smoothing), classes)
        sdt = "float64" if dtype_name(input) == "float64" else "float32"
        loss = be.asarray(loss_n, dtype=sdt if reduction != "none" else dtype_name(input))
        probs = be.asarray(probs_n, dtype=dtype_name(input))
    return (loss, probs) if return_probs else loss


def cross_entropy_backward(probs: Array, target: Array, dloss: Any = 1.0, weight: Optional[Array] = None,
                           ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0, *,
                           backend: Optional[str] = None) -> Array:
    """Gradient of ``cross_entropy`` w.r.t. its input, from the probs it returned: for the plain
    case dloss * (probs - onehot(target)) / M. dloss: a number (or a 0-d array) for 'mean'/'sum',
    an array of target's per-entry shape for reduction='none'. The other arguments as given to
    the forward."""
    be = _resolve(backend, ("probs", probs), ("target", target), ("weight", weight))
    classes = _xent_args(be, probs, target, weight, ignore_index, reduction, label_smoothing, "probs")
    if reduction == "none":
        want = _shape(target) if classes else _shape(probs)[:1] + _shape(probs)[2:]
        if _backend_of_value(dloss) is None or _shape(dloss) != want:
            raise ValueError(f"dloss must be an array of shape {want} for reduction='none', got {_short(dloss)}")
    elif _backend_of_value(dloss) is not None:
        if _numel(dloss) != 1:
            raise ValueError(f"dloss must be a number or a one-element array for reduction={reduction!r}, "
                             f"got shape {_shape(dloss)}")
        dloss = float(dloss.reshape(-1)[0])
    elif isinstance(dloss, bool) or not isinstance(dloss, (int, float)):
        raise TypeError(f"dloss must be a number, got {_short(dloss)}")
    if _xent_plain(probs, target, weight, ignore_index, reduction, label_smoothing, classes):
        return be.cross_entropy_backward(probs, target, float(dloss))
    from .backends.numpy_backend import basic as ref
    dl = be.to_numpy(dloss) if reduction == "none" else float(dloss)
    g = ref.cross_entropy_general_backward(
        be.to_numpy(probs), be.to_numpy(target), dl, None if weight is None else be.to_numpy(weight),
        int(ignore_index), reduction, float(label_smoothing), classes)
    return be.asarray(g, dtype=dtype_name(probs))


def _backend_of_value(v: Any) -> Optional[str]:
    return None if v is None else _backends.backend_of(v)


# the fused blocks live in their own module (one op family per file) and are part of this API
from .functional_fused import conv2d_bn_relu, conv2d_bn_relu_backward  # noqa: E402,F401
