"""Benchmark shape lists with their analytic work: FLOPs for convolutions, minimum bytes for the
bandwidth-bound ops (pooling, BatchNorm+ReLU, LayerNorm, GroupNorm).

Counting rules (the report's TFLOP/s, GB/s and % of ceiling all come from these):
- conv FLOPs = 2 * N*K*P*Q * (C/groups)*R*S (one multiply-add = 2 FLOPs, padding taps included,
  as every library counts). dX and dW do the same number of multiply-adds as the forward.
- bytes = the fewest bytes the op must move through device memory: every input of the op's
  contract (cnngpu/backends/ops.py) read once plus every output written once. Per-channel
  statistics and BatchNorm parameters are float32 (4 bytes); max-pool indices are int64 (8 bytes);
  LayerNorm/GroupNorm weight and bias have x's dtype; their mean/rstd are float32.

Tags on a shape: ``cpu`` (small enough for numpy vs torch-CPU benchmarks; the others run only on
a GPU unless asked for), ``quick`` (what ``gpu_report`` times first, and all that ``gpu_report
--quick`` times), ``tiny`` (one shape per op family: ``gpu_report --cpu-dry-run`` and the smoke test).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Tuple

from cnngpu.geometry import conv_output_size

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "tf32": 4, "float64": 8}
INDEX_BYTES = 8   # int64 max-pool argmax
STAT_BYTES = 4    # float32 mean / invstd / rstd / running stats / BN parameters

CONV_OPS = ("conv_fwd", "conv_dx", "conv_dw")
POOL_OPS = ("maxpool_fwd", "maxpool_bwd", "avgpool_fwd", "avgpool_bwd")
BN_OPS = ("bn_relu_fwd", "bn_relu_bwd")
LAYER_NORM_OPS = ("layernorm_fwd", "layernorm_bwd")
GROUP_NORM_OPS = ("groupnorm_fwd", "groupnorm_bwd")
ALL_OPS = CONV_OPS + POOL_OPS + BN_OPS + LAYER_NORM_OPS + GROUP_NORM_OPS


def out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """floor((size + 2*pad - dilation*(kernel-1) - 1) / stride) + 1 (cnngpu's own formula)."""
    return conv_output_size(size, kernel, stride, pad, dilation)


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


@dataclass(frozen=True)
class ConvShape:
    """conv2d x (N, C, H, W) * w (K, C/groups, R, S) -> y (N, K, P, Q), symmetric padding."""
    name: str
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    groups: int = 1
    tags: FrozenSet[str] = field(default_factory=frozenset)

    metric = "flops"

    @property
    def P(self) -> int:
        return out_size(self.H, self.R, self.stride, self.pad, self.dilation)

    @property
    def Q(self) -> int:
        return out_size(self.W, self.S, self.stride, self.pad, self.dilation)

    @property
    def x_shape(self) -> Tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    @property
    def w_shape(self) -> Tuple[int, int, int, int]:
        return (self.K, self.C // self.groups, self.R, self.S)

    @property
    def y_shape(self) -> Tuple[int, int, int, int]:
        return (self.N, self.K, self.P, self.Q)

    def conv_args(self) -> Dict[str, int]:
        """Keyword arguments of cnngpu.functional.conv2d / torch.nn.functional.conv2d."""
        return dict(stride=self.stride, padding=self.pad, dilation=self.dilation, groups=self.groups)

    def flops(self, op: str) -> int:
        """2 * N*K*P*Q * (C/groups)*R*S, the same for conv_fwd, conv_dx and conv_dw."""
        if op not in CONV_OPS:
            raise ValueError(f"{op!r} is not a conv op {CONV_OPS}")
        return 2 * self.N * self.K * self.P * self.Q * (self.C // self.groups) * self.R * self.S

    def bytes(self, op: str, dtype: str) -> int:
        """fwd: read x, w, write y; dx: read dy, w, write dx; dw: read dy, x, write dw (no bias)."""
        x, w, y = _prod(self.x_shape), _prod(self.w_shape), _prod(self.y_shape)
        elems = {"conv_fwd": x + w + y, "conv_dx": y + w + x, "conv_dw": y + x + w}[op]
        return elems * ITEMSIZE[dtype]


@dataclass(frozen=True)
class PoolShape:
    """max/avg pool2d x (N, C, H, W) -> y (N, C, P, Q); kernel, stride, pad square."""
    name: str
    N: int
    C: int
    H: int
    W: int
    kernel: int
    stride: int
    pad: int = 0
    tags: FrozenSet[str] = field(default_factory=frozenset)

    metric = "bytes"

    @property
    def P(self) -> int:
        return out_size(self.H, self.kernel, self.stride, self.pad)

    @property
    def Q(self) -> int:
        return out_size(self.W, self.kernel, self.stride, self.pad)

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def y_shape(self):
        return (self.N, self.C, self.P, self.Q)

    def pool_args(self) -> Dict[str, int]:
        return dict(kernel_size=self.kernel, stride=self.stride, padding=self.pad)

    def flops(self, op: str) -> int:
        return 0

    def bytes(self, op: str, dtype: str) -> int:
        """max fwd: x + y + argmax; max bwd: dy + argmax + dx; avg fwd: x + y; avg bwd: dy + dx."""
        it = ITEMSIZE[dtype]
        x, y = _prod(self.x_shape), _prod(self.y_shape)
        return {"maxpool_fwd": (x + y) * it + y * INDEX_BYTES,
                "maxpool_bwd": (y + x) * it + y * INDEX_BYTES,
                "avgpool_fwd": (x + y) * it,
                "avgpool_bwd": (y + x) * it}[op]


@dataclass(frozen=True)
class BNShape:
    """Training-mode BatchNorm2d fused with ReLU on x (N, C, H, W); parameters float32."""
    name: str
    N: int
    C: int
    H: int
    W: int
    tags: FrozenSet[str] = field(default_factory=frozenset)

    metric = "bytes"

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    def flops(self, op: str) -> int:
        return 0

    def bytes(self, op: str, dtype: str) -> int:
        """fwd: read x, weight, bias, running mean/var; write y, running mean/var, mean, invstd.
        bwd: read dy, x, y (ReLU mask), weight, mean, invstd; write dx, dweight, dbias."""
        x = _prod(self.x_shape) * ITEMSIZE[dtype]
        c = self.C * STAT_BYTES
        if op == "bn_relu_fwd":
            return 2 * x + 8 * c
        if op == "bn_relu_bwd":
            return 4 * x + 5 * c
        raise ValueError(f"{op!r} is not a BN op {BN_OPS}")


@dataclass(frozen=True)
class NormShape:
    """LayerNorm over the trailing ``normalized_ndim`` dims of x, or GroupNorm with ``groups``
    groups over x (N, C, H, W). kind: 'layer' or 'group'. Affine weight/bias in x's dtype."""
    name: str
    kind: str
    shape: Tuple[int, ...]
    normalized_ndim: int = 1
    groups: int = 1
    tags: FrozenSet[str] = field(default_factory=frozenset)

    metric = "bytes"

    @property
    def x_shape(self):
        return tuple(self.shape)

    @property
    def param_shape(self) -> Tuple[int, ...]:
        """Shape of weight/bias: normalized_shape (layer) or (C,) (group)."""
        if self.kind == "layer":
            return tuple(self.shape[len(self.shape) - self.normalized_ndim:])
        return (self.shape[1],)

    @property
    def n_stats(self) -> int:
        """Number of (mean, rstd) pairs: M rows for layer norm, N*G for group norm."""
        if self.kind == "layer":
            return _prod(self.shape[:len(self.shape) - self.normalized_ndim])
        return self.shape[0] * self.groups

    @property
    def ops(self):
        return LAYER_NORM_OPS if self.kind == "layer" else GROUP_NORM_OPS

    def flops(self, op: str) -> int:
        return 0

    def bytes(self, op: str, dtype: str) -> int:
        """fwd: read x, weight, bias; write y, mean, rstd.
        bwd: read dy, x, weight, mean, rstd; write dx, dweight, dbias."""
        it = ITEMSIZE[dtype]
        x = _prod(self.shape) * it
        p = _prod(self.param_shape) * it
        s = self.n_stats * STAT_BYTES
        if op.endswith("_fwd"):
            return 2 * x + 2 * p + 2 * s
        return 3 * x + 3 * p + 2 * s


# ----------------------------------------------------------------------------------------------
# shape lists
# ----------------------------------------------------------------------------------------------
def _t(*tags) -> FrozenSet[str]:
    return frozenset(tags)


# Batch-1 ResNet layers with at most this many FLOPs are also benchmarked on the CPU (all of them
# today: the largest, the stem, is 236 MFLOP, ~20 ms in the numpy backend on two cores).
CPU_MAX_FLOPS = 250e6


# batch-1 (latency) ResNet layers that the GPU report also times in its first, ``quick`` pass
QUICK_BATCH1 = ("3x3_64_56", "1x1_256to128_56", "3x3_512_7")


def _resnet50_convs():
    # (name, C, H, K, R, stride, pad): ResNet-50 layers at their own resolutions (v1.5: stride
    # on the 3x3 conv). The stem sees 224x224; the 1x1s and 3x3s the stage resolutions.
    layers = [
        ("stem7x7_3to64_s2_224", 3, 224, 64, 7, 2, 3),
        ("1x1_64to64_56", 64, 56, 64, 1, 1, 0),
        ("1x1_64to256_56", 64, 56, 256, 1, 1, 0),
        ("1x1_256to128_56", 256, 56, 128, 1, 1, 0),
        ("1x1_1024to256_14", 1024, 14, 256, 1, 1, 0),
        ("3x3_64_56", 64, 56, 64, 3, 1, 1),
        ("3x3_128_s2_56", 128, 56, 128, 3, 2, 1),
        ("3x3_128_28", 128, 28, 128, 3, 1, 1),
        ("3x3_256_14", 256, 14, 256, 3, 1, 1),
        ("3x3_512_7", 512, 7, 512, 3, 1, 1),
    ]
    out = []
    for n in (1, 32):
        for name, C, H, K, R, s, p in layers:
            P = out_size(H, R, s, p)
            flops = 2 * n * K * P * P * C * R * R
            tags = {"quick"} if n == 32 else ({"cpu"} if flops <= CPU_MAX_FLOPS else set())
            if n == 1 and name in QUICK_BATCH1:
                tags.add("quick")
            out.append(ConvShape(f"r50_{name}_n{n}", n, C, H, H, K, R, R, stride=s, pad=p, tags=frozenset(tags)))
    return out


def _small_convs():
    # LeNet-5 (valid 5x5 convs) and a CIFAR-10 VGG-style stack (3x3, pad 1); batch 8 on the CPU
    # and 128 on the GPU (a typical training batch for these nets).
    layers = [
        ("lenet_c1_5x5_1to6_32", 1, 32, 6, 5, 0),
        ("lenet_c3_5x5_6to16_14", 6, 14, 16, 5, 0),
        ("cifar_3x3_3to32_32", 3, 32, 32, 3, 1),
        ("cifar_3x3_32to32_32", 32, 32, 32, 3, 1),
        ("cifar_3x3_32to64_16", 32, 16, 64, 3, 1),
        ("cifar_3x3_64to128_8", 64, 8, 128, 3, 1),
    ]
    out = []
    for n in (8, 128):
        for name, C, H, K, R, p in layers:
            tags = {"cpu"} if n == 8 else set()
            if n == 8 and name.startswith("lenet_c3"):
                tags.add("tiny")
            if n == 128 and name in ("lenet_c1_5x5_1to6_32", "cifar_3x3_32to32_32"):
                tags.add("quick")
            out.append(ConvShape(f"{name}_n{n}", n, C, H, H, K, R, R, stride=1, pad=p, tags=frozenset(tags)))
    return out


CONV_SHAPES = tuple(_resnet50_convs() + _small_convs())

POOL_SHAPES = (
    PoolShape("r50_stem_maxpool_3x3_s2_112_64ch_n1", 1, 64, 112, 112, 3, 2, 1, _t("cpu")),
    PoolShape("r50_stem_maxpool_3x3_s2_112_64ch_n32", 32, 64, 112, 112, 3, 2, 1, _t("quick")),
    PoolShape("r50_global_avgpool_7x7_2048ch_n32", 32, 2048, 7, 7, 7, 7, 0, _t("quick")),
    PoolShape("lenet_s2_2x2_6ch_28_n8", 8, 6, 28, 28, 2, 2, 0, _t("cpu", "tiny")),
    PoolShape("lenet_s2_2x2_6ch_28_n128", 128, 6, 28, 28, 2, 2, 0),
    PoolShape("lenet_s4_2x2_16ch_10_n128", 128, 16, 10, 10, 2, 2, 0),
    PoolShape("cifar_2x2_32ch_32_n8", 8, 32, 32, 32, 2, 2, 0, _t("cpu")),
    PoolShape("cifar_2x2_32ch_32_n128", 128, 32, 32, 32, 2, 2, 0, _t("quick")),
)


def _bn_shapes():
    # ResNet-50 activations that a BN(+ReLU) sees, at batch 32 (GPU), plus CPU-sized ones.
    acts = [(64, 112), (64, 56), (256, 56), (128, 28), (512, 28), (256, 14), (1024, 14), (512, 7), (2048, 7)]
    out = [BNShape(f"r50_bn_{c}ch_{h}_n32", 32, c, h, h,
                   _t("quick") if (c, h) in ((64, 112), (256, 56), (1024, 14), (2048, 7)) else _t())
           for c, h in acts]
    out += [
        BNShape("r50_bn_64ch_56_n1", 1, 64, 56, 56, _t("cpu")),
        BNShape("r50_bn_256ch_14_n1", 1, 256, 14, 14, _t("cpu")),
        BNShape("lenet_bn_6ch_28_n8", 8, 6, 28, 28, _t("cpu", "tiny")),
        BNShape("cifar_bn_32ch_32_n8", 8, 32, 32, 32, _t("cpu")),
        BNShape("cifar_bn_32ch_32_n128", 128, 32, 32, 32, _t()),
    ]
    return tuple(out)


BN_SHAPES = _bn_shapes()

NORM_SHAPES = (
    # LayerNorm over channels of channels-last activations (ConvNeXt-T stages at batch 32),
    # and over (C, H, W) per sample.
    NormShape("ln_rows_100352x96", "layer", (32 * 56 * 56, 96), 1, tags=_t("quick")),
    NormShape("ln_rows_25088x192", "layer", (32 * 28 * 28, 192), 1),
    NormShape("ln_rows_6272x384", "layer", (32 * 14 * 14, 384), 1),
    NormShape("ln_rows_1568x768", "layer", (32 * 7 * 7, 768), 1, tags=_t("quick")),
    NormShape("ln_chw_64ch_56_n32", "layer", (32, 64, 56, 56), 3, tags=_t("quick")),
    NormShape("ln_rows_1024x64", "layer", (1024, 64), 1, tags=_t("cpu", "tiny")),
    NormShape("ln_chw_6ch_28_n8", "layer", (8, 6, 28, 28), 3, tags=_t("cpu")),
    # GroupNorm (32 groups, as in ResNet-GN) and InstanceNorm (groups == C).
    NormShape("gn32_256ch_56_n32", "group", (32, 256, 56, 56), groups=32, tags=_t("quick")),
    NormShape("gn32_512ch_28_n32", "group", (32, 512, 28, 28), groups=32),
    NormShape("gn32_1024ch_14_n32", "group", (32, 1024, 14, 14), groups=32, tags=_t("quick")),
    NormShape("in_64ch_56_n32", "group", (32, 64, 56, 56), groups=64, tags=_t("quick")),
    NormShape("gn8_32ch_32_n8", "group", (8, 32, 32, 32), groups=8, tags=_t("cpu", "tiny")),
    NormShape("in_6ch_28_n8", "group", (8, 6, 28, 28), groups=6, tags=_t("cpu")),
)


def shapes_for(op: str):
    """All shapes an op is benchmarked on."""
    if op in CONV_OPS:
        return CONV_SHAPES
    if op in POOL_OPS:
        return POOL_SHAPES
    if op in BN_OPS:
        return BN_SHAPES
    if op in LAYER_NORM_OPS:
        return tuple(s for s in NORM_SHAPES if s.kind == "layer")
    if op in GROUP_NORM_OPS:
        return tuple(s for s in NORM_SHAPES if s.kind == "group")
    raise ValueError(f"unknown op {op!r}; choose one of {ALL_OPS}")


def select(op: str, tag: str | None = None, gpu: bool = True):
    """Shapes of ``op`` carrying ``tag`` (None: all); ``gpu=False`` keeps only the CPU-sized ones."""
    return tuple(s for s in shapes_for(op)
                 if (tag is None or tag in s.tags) and (gpu or "cpu" in s.tags))


# ------------------------------------------------------------------------------------------------
# ResNet BasicBlock (conv3x3-BN-ReLU, conv3x3-BN, + identity, ReLU; stride 1, C in = C out):
# analytic traffic of each implementation, kernel by kernel (issue 16)
# ------------------------------------------------------------------------------------------------
# Per variant and mode, the kernels that move activation-sized tensors (A = N*C*H*W elements, all
# activations of one block have that size): (kernel, activation reads, activation writes). Weights
# (2 convs of C*C*9) are read once per conv pass and dW written once; BN statistics and parameters
# (a few C-vectors) are not counted. torch eager = what torch.nn's modules launch (cuDNN conv, BN,
# ReLU, add as separate kernels; BN training reads x twice: statistics, then normalize).
# cnngpu = cnngpu.torch.convert (BatchNorm2d and ReLU separate modules: BN, then ReLU); cnngpu_fused =
# cnngpu.torch.fuse: eval = 2 convs with folded BN, residual + ReLU in the second epilogue; train
# forward = conv writes y (+ statistics partials), one apply pass; the backward reads the output as
# the ReLU mask (batch_norm backward: partial sums pass, dx pass, which also writes the residual's
# gradient). Backward conv passes: dX reads dy and writes dx, dW reads dy and x.
_BN_BWD = [("bn_bwd_sums", 2, 0), ("bn_bwd_dx", 2, 1)]            # torch: reads dy, x (no mask)
_CONV_BWD = [("conv_dx", 1, 1), ("conv_dw", 2, 0)]
BLOCK_TRAFFIC: Dict[Tuple[str, str], list] = {
    ("torch", "eval"): [("conv1", 1, 1), ("bn1", 1, 1), ("relu1", 1, 1), ("conv2", 1, 1), ("bn2", 1, 1),
                        ("add", 2, 1), ("relu2", 1, 1)],
    ("cnngpu", "eval"): [("conv1", 1, 1), ("bn1", 1, 1), ("relu1", 1, 1), ("conv2", 1, 1), ("bn2", 1, 1),
                         ("add", 2, 1), ("relu2", 1, 1)],
    ("cnngpu_fused", "eval"): [("conv1+bn1+relu", 1, 1), ("conv2+bn2+add+relu", 2, 1)],
    ("torch", "train"): [("conv1", 1, 1), ("bn1_stats", 1, 0), ("bn1", 1, 1), ("relu1", 1, 1), ("conv2", 1, 1),
                         ("bn2_stats", 1, 0), ("bn2", 1, 1), ("add", 2, 1), ("relu2", 1, 1),
                         ("relu2_bwd", 2, 1), *_BN_BWD, *_CONV_BWD, ("relu1_bwd", 2, 1), *_BN_BWD, *_CONV_BWD,
                         ("dx_add_identity", 2, 1)],
    ("cnngpu", "train"): [("conv1", 1, 1), ("bn1_stats", 1, 0), ("bn1", 1, 1), ("relu1", 1, 1), ("conv2", 1, 1),
                          ("bn2_stats", 1, 0), ("bn2", 1, 1), ("add", 2, 1), ("relu2", 1, 1),
                          ("relu2_bwd", 2, 1), *_BN_BWD, *_CONV_BWD, ("relu1_bwd", 2, 1), *_BN_BWD, *_CONV_BWD,
                          ("dx_add_identity", 2, 1)],
    ("cnngpu_fused", "train"): [("conv1+stats", 1, 1), ("apply1", 1, 1), ("conv2+stats", 1, 1), ("apply2+add", 2, 1),
                                ("bn2_bwd_sums", 3, 0), ("bn2_bwd_dx+dresidual", 3, 2), *_CONV_BWD,
                                ("bn1_bwd_sums", 3, 0), ("bn1_bwd_dx", 3, 1), *_CONV_BWD, ("dx_add_identity", 2, 1)],
}
BLOCK_VARIANTS = ("torch", "cnngpu", "cnngpu_fused")
BLOCK_MODES = ("eval", "train")


@dataclass(frozen=True)
class BlockShape:
    """A ResNet BasicBlock with C channels on (N, C, H, W) (stride 1, no downsample)."""
    name: str
    N: int
    C: int
    H: int
    W: int
    tags: FrozenSet[str] = field(default_factory=frozenset)

    @property
    def x_shape(self):
        return (self.N, self.C, self.H, self.W)

    def flops(self, mode: str) -> int:
        """2 convs of 2*N*C*H*W*C*9 FLOPs; train adds dX and dW (3x)."""
        fwd = 2 * 2 * _prod(self.x_shape) * self.C * 9
        return fwd * (3 if mode == "train" else 1)

    def bytes(self, variant: str, mode: str, dtype: str) -> int:
        """Analytic bytes the variant moves (BLOCK_TRAFFIC activations + conv weights, dW in train)."""
        s = ITEMSIZE[dtype]
        act = sum(r + w for _, r, w in BLOCK_TRAFFIC[(variant, mode)]) * _prod(self.x_shape) * s
        wbytes = 2 * self.C * self.C * 9 * s
        return act + wbytes * (5 if mode == "train" else 1)    # train: fwd, dX, dW reads + dW writes


BLOCK_SHAPES = (
    BlockShape("resnet_basic_56x56x64_b32", 32, 64, 56, 56, _t("quick")),
    BlockShape("resnet_basic_14x14x256_b32", 32, 256, 14, 14),
    BlockShape("tiny_basic_6x6x8_b2", 2, 8, 6, 6, _t("cpu", "tiny")),
)
