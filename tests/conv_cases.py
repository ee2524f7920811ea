"""The conv2d geometry table every conv test draws from (parity on every backend, the policy and the
cupy launch plans), and the helpers that turn a row into shapes, options and native arrays."""
from __future__ import annotations

from cnngpu import functional as F
from cnngpu.geometry import ConvGeometry
from harness import cupy_module, native, randn, relayout, rng

# (id, N, C, H, W, K, R, S, stride, padding, dilation, groups, bias)
GEOMETRIES = [
    ("3x2_s2", 2, 3, 9, 7, 5, 3, 2, 2, 1, 1, 1, True),              # R != S, H != W, C=3, odd sizes
    ("c1_s3", 2, 1, 8, 7, 4, 3, 3, 3, 2, 1, 1, True),               # C=1, stride 3, padding 2
    ("same_asym", 1, 3, 7, 6, 4, 2, 4, 1, "same", 1, 1, True),      # 'same', even kernel: extra zero at end
    ("same_s2_d2", 1, 2, 9, 8, 3, 3, 3, 2, "same", 2, 1, False),    # 'same' stride 2 dilation 2 (asym in W)
    ("groups2", 2, 4, 6, 7, 6, 3, 3, (2, 1), 1, (1, 2), 2, True),   # groups, stride/dilation pairs
    ("depthwise", 2, 5, 7, 6, 5, 3, 3, 2, 1, 1, 5, True),           # depthwise, stride 2
    ("dw_mult2", 1, 3, 6, 5, 6, 3, 3, 1, 1, 1, 3, False),           # depthwise, channel multiplier 2
    ("1x1", 2, 8, 5, 6, 6, 1, 1, 1, 0, 1, 1, True),                 # the 1x1 fast path
    ("1x1_s2_g2", 1, 4, 7, 5, 6, 1, 1, 2, 0, 1, 2, True),           # 1x1 stride 2, groups: classes without taps
    ("valid_5x5", 1, 3, 6, 6, 2, 5, 5, 1, 0, 1, 1, True),           # kernel nearly covers the input
    ("s3_d2_pad", 1, 2, 11, 10, 3, 3, 2, 3, (2, 1), 2, 1, True),    # stride 3 with dilation 2
]
# larger shapes: several M/N tiles, 16-byte loads (channels % 8 == 0), split-K (N*P*Q >= 4096)
BIG = [
    ("c64_3x3", 2, 64, 12, 11, 72, 3, 3, 1, 1, 1, 1, True),
    ("c16_s2_g2", 4, 32, 17, 15, 48, 3, 3, 2, 1, 1, 2, True),
    ("c24_1x1_split", 8, 24, 24, 23, 40, 1, 1, 1, 0, 1, 1, True),
    ("c8_5x3_d2", 3, 8, 13, 14, 16, 5, 3, 1, "same", (2, 1), 1, False),
    ("dw32_split", 16, 32, 20, 18, 32, 3, 3, 1, 1, 1, 32, True),
]


def ids(cases):
    return [c[0] for c in cases]


def pick(*names):
    """The GEOMETRIES rows with these ids, in this order."""
    by = {c[0]: c for c in GEOMETRIES}
    return [by[n] for n in names]


def split(case):
    """x shape, w shape, the conv options and whether there is a bias."""
    _, N, C, H, W, K, R, S, stride, padding, dilation, groups, bias = case
    return (N, C, H, W), (K, C // groups, R, S), dict(stride=stride, padding=padding, dilation=dilation,
                                                       groups=groups), bias


def geometry(case) -> ConvGeometry:
    xs, ws, opts, _ = split(case)
    return F.conv2d_geometry(xs, ws, **opts)


def fwd_reduction(case) -> int:
    g = geometry(case)
    return g.c_per_group * g.R * g.S


def fwd_inputs(be_name: str, case, dtype: str, seed: int, layout: str = "nchw"):
    """(x, w, b) as float64 NumPy, the same as native arrays (x in ``layout``), and the options."""
    xs, ws, opts, has_bias = split(case)
    gen = rng(seed)
    x, w = randn(gen, xs, dtype), randn(gen, ws, dtype)
    b = randn(gen, (ws[0],), dtype) if has_bias else None
    nx = relayout(native(be_name, x, dtype), layout)
    nb = native(be_name, b, dtype) if has_bias else None
    return (x, w, b), (nx, native(be_name, w, dtype), nb), opts


def bwd_inputs(be_name: str, case, dtype: str, seed: int, layout: str = "nchw"):
    """(dy, x, w) as float64 NumPy, the same as native arrays (dy and x in ``layout``), the options
    and the geometry."""
    xs, ws, opts, _ = split(case)
    g = geometry(case)
    gen = rng(seed)
    x, w = randn(gen, xs, dtype), randn(gen, ws, dtype)
    dy = randn(gen, (g.N, g.K, g.P, g.Q), dtype)
    nat = tuple(relayout(native(be_name, a, dtype), layout) for a in (dy, x)) + (native(be_name, w, dtype),)
    return (dy, x, w), nat, opts, g


def permuted_storage(w):
    """The same values as w (K, C, R, S) stored (K, R, S, C): other strides."""
    if type(w).__module__.startswith("torch"):
        return w.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    cupy = cupy_module()
    return cupy.ascontiguousarray(w.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def strided_vector(b):
    """The same values as the vector b with stride 2."""
    if type(b).__module__.startswith("torch"):
        import torch
        return torch.stack([b, b], 1)[:, 0]
    cupy = cupy_module()
    return cupy.stack([b, b], 1)[:, 0]

