"""conv2d on the cupy backend: launchers for kernels/cuda/conv2d_fwd.cu and conv2d_bwd.cu.

Arrays are cupy.ndarray (float32, float16, bfloat16); accumulation is always float32. The direct
kernels read x / dy through their strides (no copy). The implicit-GEMM kernels read the activations
(x; dy) without a per-call re-layout (``conv_policy.gemm_activation_layout``, :func:`gemm_layout`):
C-contiguous NCHW arrays in place, for every geometry (operands FwdNchwOpA, DxNchwOpA, DwNchwOpA /
DwNchwOpB: rows or reduction along the pixels; the activations load scalars, 16-byte vectors only
for 1x1 stride-1 unpadded convs, :func:`nchw_vectors`; launches recorded as ``'<family>[nchw]'``),
channels-last arrays as NHWC views (16-byte cp.async loads where channels allow). The vector width
is per operand (VEC_A / VEC_B, :func:`operand_vecs`): for fp16/bf16 a scalar operand A (the NCHW
activations) next to a 16-byte operand B (the weights of the forward, C/groups*R*S % 8 == 0, and of
dX, K/groups % 8 == 0; dW's dy, P*Q % 8 == 0) runs the mixed cp.async ring of conv2d_igemm.cuh
(A register-staged inside the 3-stage ring, B by cp.async); the 2-stage register-staged main loop
only when neither operand can be vectorised (or for float32). Any other strides -- or every NCHW input with the policy switch
``CNNGPU_CONV_RELAYOUT=1``, kept so the GPU report can time both (which is faster per layer is
unmeasured) -- are copied to NHWC once per call, recorded as ``launched('conv2d_input_relayout')``
(:func:`gemm_operand`). The sm_90 wgmma kernels read NCHW activations in place too (register-staged
scalar loads written into their swizzled shared layouts). The forward on NCHW x reduces over
(c, r, s), the weights' own order: w is used as given (contiguous); the NHWC forward and dX take
re-laid-out weights (``conv_weights``: one function per layout; w itself when it has the layout
already, else a copy made once per parameter version that cnngpu.torch / cnngpu.nn declare,
``cnngpu.backends.weight_cache``; a bare cupy array has no version and is re-laid on every call). 16-bit tensors are re-laid-out through a
uint16 view, so no cupy arithmetic on bfloat16 is needed. Outputs are new C-contiguous arrays of
x's dtype.

Algorithms (``cnngpu.backends.conv_policy``, shared with the triton backend, which also sizes the
split-K reductions; this module says where each kernel can run: :func:`direct_fwd_plan`,
:func:`dx_igemm_grid`):
  forward  direct (smem halo tile, 4 or 1 output channels per thread) | implicit GEMM (128 x 128
           tiles, 128 x 64 for <= 64 columns per group (the ``_narrow`` entry points); fp16/bf16:
           mma.sync m16n8k16 fed by a 3-stage cp.async pipeline when channels allow 16-byte loads
           -- on one operand suffices, the other then register-staged in the ring -- else 2
           register-staged stages; exact fp32 FFMA for float32); split-K when the output
           tiles fill under two waves of SMs (``conv_policy.gemm_split_k``); on sm_90 devices
           fp16/bf16 with C/groups % 8 == 0 (NCHW x: C/groups*R*S % 8 == 0) take
           conv2d_fwd_sm90.cu instead: wgmma, 128 x 128 tiles, 4-stage pipeline (cp.async; NCHW x
           register-staged), built by NVRTC for sm_90a, split-K alike
  dX       implicit GEMM per stride-residue class (no zero-inserted dY), split-K like the forward
           (on sm_90 devices fp16/bf16 with K/groups % 8 == 0: conv2d_bwd_dx_sm90.cu, wgmma, split-K
           alike) | direct gather
  dW       implicit GEMM with split-K over N*P*Q (on sm_90 devices fp16/bf16 with C/groups and
           K/groups % 8 == 0, or NCHW x and dy: conv2d_bwd_dw_sm90.cu, wgmma on MN-major (NHWC) or
           K-major (NCHW) operands) | direct (a block
           per weight element), split too
  db       a block per channel, split too
Split-K partials go to an fp32 workspace (splits, ...) summed in a fixed order by
conv2d_bwd_sum_splits (the forward's too; its split 0 carries the bias): results are deterministic.
The implicit GEMMs take dynamic shared memory (:func:`igemm_smem`), above 48 KiB with the opt-in
attribute ``max_dynamic_shared_size_bytes``.
``precision``: float32 implicit GEMMs use exact fp32 FMA, or with precision='tf32' the tf32 tensor
cores (mma.sync m16n8k8, operands rounded to tf32 as they leave shared memory, fp32 accumulation);
the direct kernels are fp32 FMA either way.

The fused conv -> BatchNorm block (cupy_backend/fused.py) runs the same implicit GEMMs through
:func:`implicit_gemm_forward` with a :class:`FusedEpilogue`: the ``*_bn_relu`` entry points, the
plain main loops with conv2d_fwd_operands.cuh's FwdBnEpilogue (same plan, operands and split-K).

Every launch is recorded in LAUNCHES under the entry point's name and its family name
(``conv2d_fwd_direct``, ``conv2d_fwd_implicit_gemm``, ``conv2d_bwd_dx_direct``, ...), plus
``'<family>[split=S]'`` for the split reductions and split-K GEMMs, ``'<family>[nchw]'`` for an
implicit GEMM that read NCHW activations in place, ``conv2d_input_relayout`` for every activation
copied to NHWC and ``conv2d_weight_relayout`` for every weight copy made.
"""
from __future__ import annotations

import os
from typing import Dict, List, Protocol, Tuple

import numpy as np

from ...geometry import ConvGeometry, ceil_div
from .. import conv_policy as policy
from ..limits import GRID_X_MAX, GRID_YZ_MAX
from . import _module
from ._common import empty, launched
from ._config import (CONV_DEFINES, DIRECT_THREADS, DIRECT_TILE, DX_MAX_TAPS, IG_BM, IG_BN, IG_BN_NARROW, IG_THREADS,
                      RED_THREADS, SCALAR_T, W90_ARCH, W90_BK, W90_BM, W90_BN, W90_DEFINES, W90_SMEM_BYTES,
                      W90_THREADS, igemm_smem_bytes, igemm_spec)
from ._cupy import EMULATED
from ._cupy import cupy
from ._launch import dtype_of, i32, sm_count
from ._launch import raw_bits as _raw
from .conv_weights import weight_grsck, weight_kcrs, weight_krsc

FWD_FILE = "conv2d_fwd.cu"
BWD_FILE = "conv2d_bwd.cu"
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}

SMEM_DEFAULT_MAX = 48 * 1024        # dynamic shared memory without an opt-in attribute
FLAT_GRID_MAX = 65535 * 32          # blocks of the grid-stride kernels

WS_MAX_BYTES = 256 * 2 ** 20        # fp32 split-K workspace at most

FWD_ENTRIES = ["conv2d_fwd_direct_4ch", "conv2d_fwd_direct_1ch", "conv2d_fwd_implicit_gemm",
               "conv2d_fwd_implicit_gemm_narrow",
               # the fused conv -> BatchNorm -> (+ residual) -> (ReLU) block (cupy_backend/fused.py)
               "conv2d_fwd_implicit_gemm_bn_relu", "conv2d_fwd_implicit_gemm_bn_relu_narrow"]
BWD_ENTRIES = ["conv2d_bwd_dx_implicit_gemm", "conv2d_bwd_dx_implicit_gemm_narrow", "conv2d_bwd_dx_direct",
               "conv2d_bwd_dw_implicit_gemm", "conv2d_bwd_dw_implicit_gemm_narrow", "conv2d_bwd_dw_direct",
               "conv2d_bwd_db", "conv2d_bwd_sum_splits"]
IGEMM_ENTRIES = frozenset(e for e in FWD_ENTRIES + BWD_ENTRIES if "implicit_gemm" in e)


# ------------------------------------------------------------------------------------------------
# specialisations (pure)
# ------------------------------------------------------------------------------------------------
def bk(dtype: str) -> int:
    """Reduction slice of the implicit-GEMM main loop: 16 for float32 (FFMA), 32 for 16-bit (mma)."""
    return igemm_spec(dtype, 1)["IG_BK"]


Vecs = Tuple[int, int]  # (VEC_A, VEC_B): elements per global load of the GEMM operands A and B


def max_vec(dtype: str) -> int:
    """Elements in one 16-byte load."""
    return 16 // ITEMSIZE[dtype]


def vec_width(dtype: str, *counts: int, ptrs=()) -> int:
    """VEC for an implicit GEMM whose vectorised runs have lengths ``counts`` (channels per group):
    16-byte loads when every count is a multiple of them and every operand base address in
    ``ptrs`` is 16-byte aligned (a channels-last view of a slice may not be), else scalar loads."""
    v = max_vec(dtype)
    ok = all(int(c) % v == 0 for c in counts) and all(int(p) % 16 == 0 for p in ptrs)
    return v if ok else 1


def operand_vecs(dtype: str, vec_a: int, vec_b: int) -> Vecs:
    """(VEC_A, VEC_B) of an implicit GEMM whose operands allow ``vec_a`` / ``vec_b`` (each
    :func:`vec_width` of its own runs and base, or 1 where its geometry forbids vectors). fp16 /
    bf16: a scalar A with a 16-byte B is the mixed cp.async ring (A register-staged, B by cp.async:
    NCHW activations read in place, weights / dW's dy vectorised); a 16-byte A with a scalar B
    (a misaligned weight copy, never made by the launchers) falls back to scalars on both. float32
    has no cp.async path: one width for both, 16-byte only when both allow it."""
    va, vb = int(vec_a), int(vec_b)
    if ITEMSIZE[dtype] == 2 and vb == max_vec(dtype):
        return va, vb
    v = min(va, vb)
    return v, v


def defines(dtype: str, vec: int | Vecs = 1, tf32: bool = False) -> Dict[str, object]:
    """The -D defines of one specialisation of conv2d_fwd.cu / conv2d_bwd.cu: the element type, the
    vector widths of the implicit GEMMs' loads (``vec``: one for both operands, or (VEC_A, VEC_B)
    from :func:`operand_vecs`), their main-loop constants (``_config.igemm_spec``: the cp.async ring
    with 16-byte loads of 16-bit types on either operand; ``tf32``: float32 on the tf32 tensor
    cores) and the shared constants (CONV_DEFINES)."""
    va, vb = (vec, vec) if isinstance(vec, int) else vec
    try:
        return {"SCALAR_T": SCALAR_T[dtype], "VEC_A": int(va), "VEC_B": int(vb),
                **igemm_spec(dtype, va, vb, tf32=tf32), **CONV_DEFINES}
    except KeyError:
        raise TypeError(f"the cupy conv2d kernels take float32, float16 or bfloat16, got {dtype}") from None


def igemm_smem(dtype: str, vec: int | Vecs) -> int:
    """Dynamic shared memory (bytes) of an implicit-GEMM launch of this specialisation."""
    va, vb = (vec, vec) if isinstance(vec, int) else vec
    return igemm_smem_bytes(igemm_spec(dtype, va, vb))


# Hopper forward and dX (wgmma; conv_policy.use_wgmma): built for W90_ARCH only (BUILD_ARCH); for
# any other target their entry points are traps.
FWD_SM90_FILE = "conv2d_fwd_sm90.cu"
FWD_SM90_ENTRIES = ["conv2d_fwd_implicit_gemm_sm90", "conv2d_fwd_implicit_gemm_sm90_bn_relu"]
DX_SM90_FILE = "conv2d_bwd_dx_sm90.cu"
DX_SM90_ENTRIES = ["conv2d_bwd_dx_implicit_gemm_sm90"]
DW_SM90_FILE = "conv2d_bwd_dw_sm90.cu"
DW_SM90_ENTRIES = ["conv2d_bwd_dw_implicit_gemm_sm90"]
BUILD_ARCH = {FWD_SM90_FILE: W90_ARCH, DX_SM90_FILE: W90_ARCH, DW_SM90_FILE: W90_ARCH}  # passed as -arch


def w90_defines(dtype: str) -> Dict[str, object]:
    """The -D defines of the wgmma conv files (conv2d_{fwd,bwd_dx,bwd_dw}_sm90.cu) for fp16 / bf16."""
    if dtype not in ("float16", "bfloat16"):
        raise TypeError(f"the wgmma conv2d kernels take float16 or bfloat16, got {dtype}")
    return {"SCALAR_T": SCALAR_T[dtype], "DX_MAX_TAPS": DX_MAX_TAPS, **W90_DEFINES}


# Every specialisation the launchers below can request (the CPU compile test builds them all).
CUDA_BUILDS: List[Tuple[str, List[str], Dict[str, object]]] = [
    (fname, list(entries), defines(dt, v, tf32))
    for fname, entries in ((FWD_FILE, FWD_ENTRIES), (BWD_FILE, BWD_ENTRIES))
    for dt, tf32 in (("float32", False), ("float32", True), ("float16", False), ("bfloat16", False))
    for v in sorted({operand_vecs(dt, va, vb) for va in (1, max_vec(dt)) for vb in (1, max_vec(dt))})
]  + [(fname, list(entries), w90_defines(dt))
      for fname, entries in ((FWD_SM90_FILE, FWD_SM90_ENTRIES), (DX_SM90_FILE, DX_SM90_ENTRIES),
                             (DW_SM90_FILE, DW_SM90_ENTRIES))
      for dt in ("float16", "bfloat16")]

# Test hook: the compute capability the launchers plan for (e.g. CNNGPU_CUPY_ARCH=90 runs the
# sm_90a wgmma path on the CPU emulation). Unset: the device's; on the emulation, whose device
# reports 90, 80 -- so the suite keeps exercising the mma.sync kernels unless a test asks.
ARCH_ENV = "CNNGPU_CUPY_ARCH"


def device_arch() -> int:
    """Compute capability (major * 10 + minor) the conv launchers plan for (see ARCH_ENV)."""
    env = os.environ.get(ARCH_ENV)
    if env:
        return int(env)
    if EMULATED:
        return 80
    return int(cupy.cuda.Device().compute_capability)


def use_tf32(dtype: str, precision: str) -> bool:
    """float32 implicit GEMMs run on the tf32 tensor cores (mma m16n8k8) with precision='tf32'."""
    return dtype == "float32" and precision == "tf32"


# ------------------------------------------------------------------------------------------------
# decisions (pure functions of the geometry; unit-tested on CPU)
# ------------------------------------------------------------------------------------------------
def direct_fwd_plan(g: ConvGeometry):
    """(entry point, KB, grid, dynamic smem bytes) of the direct forward, or None when it cannot
    run: its halo tile (16*stride + dilated kernel)^2 + KB*R*S floats must fit 48 KiB, and the grid
    (16x16 output tiles, groups*ceil(Kg/KB), N) must fit CUDA's limits."""
    kb = 4 if g.k_per_group >= 4 else 1
    ih = (DIRECT_TILE - 1) * g.stride[0] + (g.R - 1) * g.dilation[0] + 1
    iw = (DIRECT_TILE - 1) * g.stride[1] + (g.S - 1) * g.dilation[1] + 1
    smem = 4 * (ih * iw + kb * g.R * g.S)
    grid = (ceil_div(g.P, DIRECT_TILE) * ceil_div(g.Q, DIRECT_TILE),
            g.groups * ceil_div(g.k_per_group, kb), g.N)
    if smem > SMEM_DEFAULT_MAX or grid[0] > GRID_X_MAX or max(grid[1:]) > GRID_YZ_MAX:
        return None
    return f"conv2d_fwd_direct_{kb}ch", kb, grid, smem


def igemm_bn(cols: int) -> int:
    """Columns of the implicit-GEMM tile for a GEMM with ``cols`` columns per group: the _narrow
    entry points' IG_BN_NARROW when that covers them (half the padding work of IG_BN), else IG_BN."""
    return IG_BN_NARROW if cols <= IG_BN_NARROW else IG_BN


def igemm_entry(base: str, cols: int) -> str:
    """The implicit-GEMM entry point for ``cols`` columns per group (:func:`igemm_bn`)."""
    return base + ("_narrow" if igemm_bn(cols) == IG_BN_NARROW else "")


def fwd_igemm_grid(g: ConvGeometry) -> Tuple[int, int, int]:
    """(tiles of 128 output pixels, tiles of igemm_bn(K/groups) channels of a group, groups)."""
    grid = (ceil_div(g.N * g.P * g.Q, IG_BM), ceil_div(g.k_per_group, igemm_bn(g.k_per_group)), g.groups)
    if max(grid[1:]) > GRID_YZ_MAX:
        raise ValueError(f"conv2d implicit GEMM grid {grid} exceeds CUDA's limit {GRID_YZ_MAX} on y/z "
                         f"(groups={g.groups}); use algo='direct'")
    return grid


def fwd_w90_grid(g: ConvGeometry) -> Tuple[int, int, int]:
    """(tiles of 128 output pixels, tiles of 128 channels of a group, groups) of the wgmma forward."""
    grid = (ceil_div(g.N * g.P * g.Q, W90_BM), ceil_div(g.k_per_group, W90_BN), g.groups)
    if max(grid[1:]) > GRID_YZ_MAX:
        raise ValueError(f"conv2d wgmma implicit GEMM grid {grid} exceeds CUDA's limit {GRID_YZ_MAX} on y/z "
                         f"(groups={g.groups}); use algo='direct'")
    return grid


def dx_igemm_grid(g: ConvGeometry):
    """(pixel tiles of the largest residue class, tiles of igemm_bn(C/groups) input channels,
    groups * sh * sw), or None when the dX implicit GEMM cannot run (R or S > DX_MAX_TAPS, grid
    over the limits)."""
    sh, sw = g.stride
    grid = (ceil_div(g.N * ceil_div(g.H, sh) * ceil_div(g.W, sw), IG_BM),
            ceil_div(g.c_per_group, igemm_bn(g.c_per_group)),
            g.groups * sh * sw)
    if max(g.R, g.S) > DX_MAX_TAPS or max(grid[1:]) > GRID_YZ_MAX:
        return None
    return grid


def dx_w90_grid(g: ConvGeometry) -> Tuple[int, int, int]:
    """(pixel tiles of the largest residue class, tiles of 128 input channels, groups * sh * sw) of
    the wgmma dX (its tap limits are dx_igemm_grid's, checked first by the caller)."""
    sh, sw = g.stride
    return (ceil_div(g.N * ceil_div(g.H, sh) * ceil_div(g.W, sw), W90_BM), ceil_div(g.c_per_group, W90_BN),
            g.groups * sh * sw)


def _w90_split(grid: Tuple[int, int, int], reduction: int, out_numel: int, num_sms: int):
    """(grid with z * splits, splits, kt_chunk) of a wgmma forward / dX GEMM of ``reduction`` terms
    (``conv_policy.gemm_split_k`` over its W90_BK-slices)."""
    gx, gy, gz = grid
    splits, chunk = policy.gemm_split_k(ceil_div(reduction, W90_BK), gx * gy * gz, num_sms, out_numel=out_numel,
                                        ws_max_bytes=WS_MAX_BYTES, max_split=GRID_YZ_MAX // gz)
    return (gx, gy, gz * splits), splits, max(chunk, 1)


def fwd_w90_plan(g: ConvGeometry, num_sms: int):
    """(grid, splits, kt_chunk) of the wgmma forward: :func:`fwd_w90_grid` with z = groups * splits."""
    return _w90_split(fwd_w90_grid(g), g.c_per_group * g.R * g.S, g.N * g.K * g.P * g.Q, num_sms)


def dx_w90_plan(g: ConvGeometry, num_sms: int):
    """(grid, splits, kt_chunk) of the wgmma dX: :func:`dx_w90_grid` with z = groups * sh * sw *
    splits, sized on the residue class with the most taps."""
    taps = max(r[5] * r[8] for r in policy.residue_classes(g)[0])
    return _w90_split(dx_w90_grid(g), taps * g.k_per_group, g.N * g.C * g.H * g.W, num_sms)


def fwd_igemm_plan(g: ConvGeometry, dtype: str, num_sms: int):
    """(grid, splits, kt_chunk) of the forward implicit GEMM: :func:`fwd_igemm_grid` with z =
    groups * splits; split s runs the BK-slices [s * kt_chunk, +kt_chunk) of the R*S*C/groups
    reduction (``conv_policy.gemm_split_k``: only when the tiles fill under two waves of SMs)."""
    gx, gy, gz = fwd_igemm_grid(g)
    steps = ceil_div(g.c_per_group * g.R * g.S, bk(dtype))
    splits, chunk = policy.gemm_split_k(steps, gx * gy * gz, num_sms, out_numel=g.N * g.K * g.P * g.Q,
                                        ws_max_bytes=WS_MAX_BYTES, max_split=GRID_YZ_MAX // gz)
    return (gx, gy, gz * splits), splits, max(chunk, 1)


def dx_igemm_plan(g: ConvGeometry, dtype: str, num_sms: int):
    """(grid, splits, kt_chunk) of the dX implicit GEMM, or None when it cannot run
    (:func:`dx_igemm_grid`): z = groups * sh * sw * splits; each split runs the BK-slices
    [s * kt_chunk, +kt_chunk) of its class's reduction (taps * K/groups), sized on the class with
    the most taps (``conv_policy.gemm_split_k``)."""
    grid = dx_igemm_grid(g)
    if grid is None:
        return None
    gx, gy, gz = grid
    taps = max(r[5] * r[8] for r in policy.residue_classes(g)[0])
    steps = ceil_div(taps * g.k_per_group, bk(dtype))
    splits, chunk = policy.gemm_split_k(steps, gx * gy * gz, num_sms, out_numel=g.N * g.C * g.H * g.W,
                                        ws_max_bytes=WS_MAX_BYTES, max_split=GRID_YZ_MAX // gz)
    return (gx, gy, gz * splits), splits, max(chunk, 1)


def _split(length: int, blocks: int, num_sms: int, granule: int, out_numel: int, max_split=None):
    return policy.split_k(length, blocks, num_sms, granule=granule, out_numel=out_numel,
                          ws_max_bytes=WS_MAX_BYTES, max_split=max_split)


def dw_igemm_plan(g: ConvGeometry, dtype: str, num_sms: int):
    """(grid, splits, kt_chunk) of the dW implicit GEMM: grid (tiles of 128 rows of Cg*R*S, tiles of
    igemm_bn(K/groups) channels, groups * splits); each split runs kt_chunk BK-slices of the N*P*Q
    reduction."""
    b = bk(dtype)
    rows = g.c_per_group * g.R * g.S
    bn = igemm_bn(g.k_per_group)
    tiles = ceil_div(rows, IG_BM) * ceil_div(g.k_per_group, bn) * g.groups
    splits, chunk = _split(g.N * g.P * g.Q, tiles, num_sms, b, g.K * rows,
                           max_split=min(policy.MAX_SPLIT, GRID_YZ_MAX // g.groups))
    return (ceil_div(rows, IG_BM), ceil_div(g.k_per_group, bn), g.groups * splits), splits, chunk // b


def dw_w90_plan(g: ConvGeometry, num_sms: int):
    """(grid, splits, kt_chunk) of the wgmma dW: grid (tiles of 128 rows of Cg*R*S, tiles of 128
    channels, groups * splits); each split runs kt_chunk W90_BK-slices of the N*P*Q reduction."""
    rows = g.c_per_group * g.R * g.S
    tiles = ceil_div(rows, W90_BM) * ceil_div(g.k_per_group, W90_BN) * g.groups
    splits, chunk = _split(g.N * g.P * g.Q, tiles, num_sms, W90_BK, g.K * rows,
                           max_split=min(policy.MAX_SPLIT, GRID_YZ_MAX // g.groups))
    return (ceil_div(rows, W90_BM), ceil_div(g.k_per_group, W90_BN), g.groups * splits), splits, chunk // W90_BK


def dw_direct_plan(g: ConvGeometry, num_sms: int):
    """(grid, splits, chunk) of the direct dW: a block per weight element and split."""
    numel = g.K * g.c_per_group * g.R * g.S
    splits, chunk = _split(g.N * g.P * g.Q, numel, num_sms, RED_THREADS, numel)
    return (numel, splits, 1), splits, chunk


def db_plan(g: ConvGeometry, num_sms: int):
    """(grid, splits, chunk) of db: a block per output channel and split."""
    splits, chunk = _split(g.N * g.P * g.Q, g.K, num_sms, RED_THREADS, g.K)
    return (g.K, splits, 1), splits, chunk


def flat_grid(total: int, block: int = 256) -> Tuple[int, int, int]:
    """Grid of a grid-stride kernel over ``total`` elements."""
    return (max(1, min(ceil_div(total, block), FLAT_GRID_MAX)), 1, 1)


# ------------------------------------------------------------------------------------------------
# device helpers
# ------------------------------------------------------------------------------------------------
def _strides(a) -> Tuple[np.int64, ...]:
    """Strides in elements as int64 kernel arguments."""
    return tuple(np.int64(s // a.itemsize) for s in a.strides)


def memory_layout(a) -> str:
    """'nchw' (C-contiguous), 'channels_last' (contiguous as (N, H, W, C)) or 'other' strides of a
    4-d activation (conv_policy.gemm_activation_layout's vocabulary)."""
    if a.flags.c_contiguous:
        return "nchw"
    return "channels_last" if a.transpose(0, 2, 3, 1).flags.c_contiguous else "other"


def gemm_layout(*activations, reads_nchw: bool = True) -> str:
    """'nchw' or 'nhwc': how an implicit-GEMM pass reads these activations
    (``conv_policy.gemm_activation_layout``; ``reads_nchw`` False for kernels that read NHWC only)."""
    return policy.gemm_activation_layout((memory_layout(a) for a in activations), reads_nchw)


def gemm_operand(a, layout: str):
    """Activation a (N, C, H, W) as the implicit GEMMs read it, raw bits: for 'nchw' a itself (read
    in place: C-contiguous, which gemm_layout checked); for 'nhwc' (N, H, W, C) contiguous -- a view
    when a is channels-last, else a copy, recorded as ``launched('conv2d_input_relayout')`` (the
    name the triton backend records too)."""
    if layout == "nchw":
        return _raw(a)
    t = _raw(a).transpose(0, 2, 3, 1)
    if t.flags.c_contiguous:
        return t
    launched("conv2d_input_relayout")
    return cupy.ascontiguousarray(t)


def nchw_vectors(g: ConvGeometry) -> bool:
    """Whether the kernels' in-place NCHW operands may load 16-byte vectors (vec_width still checks
    the run lengths and alignment): only 1x1, stride-1, unpadded convs, whose pixels -- the GEMM
    rows (forward, dX) or reduction (dW) -- are contiguous along H*W = P*Q. Any other geometry
    reads scalars (padding, stride and the taps leave the W offset of a row unaligned)."""
    return (g.R == g.S == 1 and tuple(g.stride) == (1, 1) and tuple(g.pad) == (0, 0) and g.P == g.H
            and g.Q == g.W)


def fwd_weight(w, layout: str):
    """The forward implicit GEMM's weights, raw bits, in the order of its reduction: for NCHW x
    (reduction (c, r, s)) w itself as (K, C/groups, R, S) contiguous; for NHWC x (reduction (r, s, c))
    w re-laid as (K, R, S, C/groups)."""
    return weight_kcrs(w) if layout == "nchw" else weight_krsc(w)


def _geom_args(g: ConvGeometry):
    return tuple(i32(v) for v in (g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q, g.stride[0], g.stride[1],
                                   g.pad[0], g.pad[1], g.dilation[0], g.dilation[1], g.groups))


def _launch_w90(fname: str, entry: str, family: str, dtype: str, grid, args):
    """Launch a Hopper wgmma kernel (sm_90a build, W90_SMEM_BYTES of opted-in dynamic shared memory)."""
    kern = _module.get_function(fname, entry, w90_defines(dtype), BUILD_ARCH[fname])
    _module.set_max_dynamic_shared(kern, W90_SMEM_BYTES)
    kern(tuple(int(v) for v in grid), (W90_THREADS, 1, 1), tuple(args), shared_mem=W90_SMEM_BYTES)
    launched(entry)
    launched(family)


def _w90(dt: str, *chunked_channels: int, ptrs=()) -> bool:
    """Whether the Hopper wgmma kernel runs this GEMM (``policy.use_wgmma`` on this device): the
    operands it copies by 16-byte cp.async have runs ``chunked_channels`` (multiples of 8) and bases
    ``ptrs`` 16-byte aligned. NCHW activations read in place go through registers: no condition."""
    return policy.use_wgmma(dt, device_arch(), *chunked_channels,
                            aligned=vec_width(dt, *chunked_channels, ptrs=ptrs) == max_vec(dt))


def _launch(fname: str, entry: str, family: str, dtype: str, vec: int | Vecs, grid, block, args, shared_mem=0,
            tf32: bool = False):
    kern = _module.get_function(fname, entry, defines(dtype, vec, tf32=tf32))
    if shared_mem and entry in IGEMM_ENTRIES:  # static tables + dynamic stages may pass 48 KiB: opt in
        kern.max_dynamic_shared_size_bytes = int(shared_mem)
    kern(tuple(int(v) for v in grid), tuple(int(v) for v in block), tuple(args), shared_mem=int(shared_mem))
    launched(entry)
    if family != entry:
        launched(family)


def _workspace(splits: int, numel: int):
    """fp32 split-K partials (splits, numel) (poisoned like any output), or a 1-element dummy."""
    return empty((splits, numel) if splits > 1 else (1,), np.float32)


# ------------------------------------------------------------------------------------------------
# forward
# ------------------------------------------------------------------------------------------------
def conv2d_forward(x, w, b, g: ConvGeometry, algo: str = "auto", precision: str = "ieee"):
    """y = conv2d(x, w) + b on cupy arrays.

    x: (N, C, H, W) any strides; w: (K, C/groups, R, S); b: (K,) or None. Returns a new
    C-contiguous y (N, K, P, Q) of x's dtype. algo: 'direct', 'implicit_gemm' or 'auto'
    (:func:`choose_algo`); precision='tf32' runs float32 implicit GEMMs on the tf32 tensor cores.
    """
    dt = dtype_of(x)
    policy.check_extents(g, "cupy")
    algo = fwd_algo(g, algo)
    y = empty((g.N, g.K, g.P, g.Q), x.dtype)
    has_bias = np.int32(b is not None)
    bias = cupy.ascontiguousarray(_raw(b)) if b is not None else y
    if algo == "direct":
        plan = direct_fwd_plan(g)
        if plan is None:
            raise ValueError(f"conv2d direct kernel cannot run this geometry (shared-memory tile or grid "
                             f"too large: stride {g.stride}, dilation {g.dilation}, kernel {(g.R, g.S)}, "
                             f"groups {g.groups}, N {g.N}); use algo='implicit_gemm'")
        entry, _, grid, smem = plan
        args = (x, *_strides(x), weight_kcrs(w), bias, has_bias, y, *_geom_args(g))
        _launch(FWD_FILE, entry, "conv2d_fwd_direct", dt, 1, grid, (DIRECT_THREADS,), args, smem)
        return y
    if algo != "implicit_gemm":
        raise ValueError(f"algo must be 'auto', 'direct' or 'implicit_gemm', got {algo!r}")
    return implicit_gemm_forward(x, w, b, g, precision, y=y)


def fwd_algo(g: ConvGeometry, algo: str) -> str:
    """The forward algorithm conv2d_forward runs for ``algo`` ('auto': ``policy.choose_algo``)."""
    return policy.choose_algo(g, direct_fits=direct_fwd_plan(g) is not None) if algo == "auto" else algo


class FusedEpilogue(Protocol):
    """A fused epilogue of the forward implicit GEMMs (cupy_backend/fused.py): its entry points are
    the plain ones + ``suffix`` taking the plain arguments + ``args(...)``."""
    suffix: str

    def args(self, grid: Tuple[int, int, int], splits: int, tile: Tuple[int, int]) -> tuple:
        """The extra kernel arguments for this launch (grid x = the M tiles, tile = (rows, cols))."""

    def smem(self, tile: Tuple[int, int]) -> int:
        """Dynamic shared memory (bytes) the epilogue needs for a (rows, cols) tile."""

    def finish_splits(self, ws, splits: int, y) -> None:
        """Replaces the plain split-K sum (splits > 1)."""


def implicit_gemm_forward(x, w, b, g: ConvGeometry, precision: str = "ieee", y=None,
                          epilogue: FusedEpilogue | None = None):
    """The implicit-GEMM forward of :func:`conv2d_forward` (algo='implicit_gemm'): y (N, K, P, Q),
    new C-contiguous (or ``y``) of x's dtype. ``epilogue``: the fused entry points instead (the
    plain ones + epilogue.suffix, their extra arguments, and its split-K finish)."""
    dt = dtype_of(x)
    if y is None:
        y = empty((g.N, g.K, g.P, g.Q), x.dtype)
    has_bias = np.int32(b is not None)
    bias = cupy.ascontiguousarray(_raw(b)) if b is not None else y
    sfx = epilogue.suffix if epilogue is not None else ""
    grid, splits, kt_chunk = fwd_igemm_plan(g, dt, sm_count())
    layout = gemm_layout(x)
    xa, wm = gemm_operand(x, layout), fwd_weight(w, layout)
    nchw = layout == "nchw"
    # wgmma: the weights (and NHWC x) by 16-byte cp.async along the reduction; NCHW x by scalars
    if (_w90(dt, g.c_per_group * g.R * g.S, ptrs=(wm.data.ptr,)) if nchw
            else _w90(dt, g.c_per_group, ptrs=(xa.data.ptr, wm.data.ptr))):
        grid, splits, kt_chunk = fwd_w90_plan(g, sm_count())
        ws = _workspace(splits, y.size)
        extra = epilogue.args(grid, splits, (W90_BM, W90_BN)) if epilogue is not None else ()
        args = (xa, wm, bias, has_bias, y, ws, np.int32(splits), i32(kt_chunk), np.int32(nchw), *_geom_args(g),
                *extra)
        _launch_w90(FWD_SM90_FILE, FWD_SM90_ENTRIES[0] + sfx, "conv2d_fwd_implicit_gemm" + sfx, dt, grid, args)
    else:
        # the 16-byte vectors' runs: x's pixels (NCHW) or channels (NHWC); the weights' reduction
        # (NCHW: C/groups*R*S, any geometry -- the mixed ring when x is scalar) or channels (NHWC)
        if nchw:
            vec = operand_vecs(dt, vec_width(dt, g.H * g.W, ptrs=(xa.data.ptr,)) if nchw_vectors(g) else 1,
                               vec_width(dt, g.c_per_group * g.R * g.S, ptrs=(wm.data.ptr,)))
        else:
            vec = operand_vecs(dt, vec_width(dt, g.c_per_group, ptrs=(xa.data.ptr,)),
                               vec_width(dt, g.c_per_group, ptrs=(wm.data.ptr,)))
        ws = _workspace(splits, y.size)
        tile = (IG_BM, igemm_bn(g.k_per_group))
        extra = epilogue.args(grid, splits, tile) if epilogue is not None else ()
        smem = max(igemm_smem(dt, vec), epilogue.smem(tile) if epilogue is not None else 0)
        args = (xa, wm, bias, has_bias, y, ws, np.int32(splits), i32(kt_chunk), np.int32(nchw),
                *_geom_args(g), *extra)
        _launch(FWD_FILE, igemm_entry("conv2d_fwd_implicit_gemm" + sfx, g.k_per_group),
                "conv2d_fwd_implicit_gemm" + sfx, dt, vec, grid, (IG_THREADS,), args, smem,
                tf32=use_tf32(dt, precision))
    launched(f"conv2d_fwd_implicit_gemm{sfx}[split={splits}]")
    if nchw:
        launched(f"conv2d_fwd_implicit_gemm{sfx}[nchw]")
    if splits > 1:
        if epilogue is not None:
            epilogue.finish_splits(ws, splits, y)
        else:
            _sum_splits(ws, splits, y, dt)
    return y


# ------------------------------------------------------------------------------------------------
# backward
# ------------------------------------------------------------------------------------------------
def _sum_splits(ws, splits: int, out, dt: str) -> None:
    numel = out.size
    _launch(BWD_FILE, "conv2d_bwd_sum_splits", "conv2d_bwd_sum_splits", dt, 1, flat_grid(numel, RED_THREADS),
            (RED_THREADS,), (ws, np.int32(splits), np.int64(numel), out))


def _grad_x(dy, w, g: ConvGeometry, algo: str, operand, dt: str, tf32: bool = False):
    dx = empty((g.N, g.C, g.H, g.W), dy.dtype)
    if algo == "implicit_gemm":
        grid, splits, kt_chunk = dx_igemm_plan(g, dt, sm_count())
        G, Kg, Cg = g.groups, g.k_per_group, g.c_per_group
        w_grsck = weight_grsck(w, G)
        layout = gemm_layout(dy)
        d = operand("dy", layout)
        nchw = layout == "nchw"
        # wgmma: the weights (and NHWC dy) by 16-byte cp.async along k; NCHW dy by scalars
        if _w90(dt, Kg, ptrs=(w_grsck.data.ptr,) + (() if nchw else (d.data.ptr,))):
            grid, splits, kt_chunk = dx_w90_plan(g, sm_count())
            ws = _workspace(splits, dx.size)
            args = (d, w_grsck, dx, ws, np.int32(splits), i32(kt_chunk), np.int32(nchw), *_geom_args(g))
            _launch_w90(DX_SM90_FILE, DX_SM90_ENTRIES[0], "conv2d_bwd_dx_implicit_gemm", dt, grid, args)
        else:
            ws = _workspace(splits, dx.size)
            args = (d, w_grsck, dx, ws, np.int32(splits), i32(kt_chunk), np.int32(nchw), *_geom_args(g))
            # dy's pixels (NCHW) or channels (NHWC); the weights' K/groups (the mixed ring when dy is scalar)
            va = vec_width(dt, g.H * g.W if nchw else Kg, ptrs=(d.data.ptr,)) if not nchw or nchw_vectors(g) else 1
            vec = operand_vecs(dt, va, vec_width(dt, Kg, ptrs=(w_grsck.data.ptr,)))
            _launch(BWD_FILE, igemm_entry("conv2d_bwd_dx_implicit_gemm", Cg), "conv2d_bwd_dx_implicit_gemm", dt,
                    vec, grid, (IG_THREADS,), args, igemm_smem(dt, vec), tf32=tf32)
        launched(f"conv2d_bwd_dx_implicit_gemm[split={splits}]")
        if nchw:
            launched("conv2d_bwd_dx_implicit_gemm[nchw]")
        if splits > 1:
            _sum_splits(ws, splits, dx, dt)
        return dx
    args = (dy, *_strides(dy), weight_kcrs(w), dx, *_geom_args(g))
    _launch(BWD_FILE, "conv2d_bwd_dx_direct", "conv2d_bwd_dx_direct", dt, 1, flat_grid(dx.size, DIRECT_THREADS),
            (DIRECT_THREADS,), args)
    return dx


def _grad_w(dy, x, g: ConvGeometry, algo: str, operand, dt: str, tf32: bool = False):
    dw = empty((g.K, g.c_per_group, g.R, g.S), x.dtype)
    if algo == "implicit_gemm":
        layout = gemm_layout(x, dy)
        xn, d = operand("x", layout), operand("dy", layout)
        nchw = layout == "nchw"
        # wgmma: NHWC x and dy by 16-byte cp.async along the channels; NCHW ones by scalars
        w90 = _w90(dt) if nchw else _w90(dt, g.c_per_group, g.k_per_group, ptrs=(xn.data.ptr, d.data.ptr))
        grid, splits, kt_chunk = dw_w90_plan(g, sm_count()) if w90 else dw_igemm_plan(g, dt, sm_count())
        ws = _workspace(splits, dw.size)
        if w90:
            args = (xn, d, dw, ws, np.int32(splits), i32(kt_chunk), np.int32(nchw), *_geom_args(g))
            _launch_w90(DW_SM90_FILE, DW_SM90_ENTRIES[0], "conv2d_bwd_dw_implicit_gemm", dt, grid, args)
        else:
            args = (xn, d, dw, ws, np.int32(splits), i32(kt_chunk), np.int32(nchw), *_geom_args(g))
            # NCHW: x's pixels (A, only nchw_vectors geometries) and dy's pixels P*Q (B, any geometry:
            # the mixed ring when x is scalar); NHWC: channels of both
            if nchw:
                vec = operand_vecs(dt, vec_width(dt, g.H * g.W, ptrs=(xn.data.ptr,)) if nchw_vectors(g) else 1,
                                   vec_width(dt, g.P * g.Q, ptrs=(d.data.ptr,)))
            else:
                vec = operand_vecs(dt, vec_width(dt, g.c_per_group, g.k_per_group, ptrs=(xn.data.ptr,)),
                                   vec_width(dt, g.c_per_group, g.k_per_group, ptrs=(d.data.ptr,)))
            _launch(BWD_FILE, igemm_entry("conv2d_bwd_dw_implicit_gemm", g.k_per_group),
                    "conv2d_bwd_dw_implicit_gemm", dt, vec, grid, (IG_THREADS,), args, igemm_smem(dt, vec),
                    tf32=tf32)
        launched(f"conv2d_bwd_dw_implicit_gemm[split={splits}]")
        if nchw:
            launched("conv2d_bwd_dw_implicit_gemm[nchw]")
    else:
        grid, splits, chunk = dw_direct_plan(g, sm_count())
        ws = _workspace(splits, dw.size)
        args = (dy, *_strides(dy), x, *_strides(x), dw, ws, np.int32(splits), np.int64(chunk), *_geom_args(g))
        _launch(BWD_FILE, "conv2d_bwd_dw_direct", "conv2d_bwd_dw_direct", dt, 1, grid, (RED_THREADS,), args)
        launched(f"conv2d_bwd_dw_direct[split={splits}]")
    if splits > 1:
        _sum_splits(ws, splits, dw, dt)
    return dw


def _grad_b(dy, g: ConvGeometry, dt: str):
    db = empty((g.K,), dy.dtype)
    grid, splits, chunk = db_plan(g, sm_count())
    ws = _workspace(splits, g.K)
    args = (dy, *_strides(dy), db, ws, np.int32(splits), np.int64(chunk),
            i32(g.N), i32(g.K), i32(g.P), i32(g.Q))
    _launch(BWD_FILE, "conv2d_bwd_db", "conv2d_bwd_db", dt, 1, grid, (RED_THREADS,), args)
    launched(f"conv2d_bwd_db[split={splits}]")
    if splits > 1:
        _sum_splits(ws, splits, db, dt)
    return db


def conv2d_backward(dy, x, w, g: ConvGeometry, need_dx: bool = True, need_dw: bool = True,
                    need_db: bool = True, algo: str = "auto", precision: str = "ieee"):
    """Gradients of conv2d_forward on cupy arrays.

    dy: (N, K, P, Q), x: (N, C, H, W), w: (K, C/groups, R, S), any strides. Returns
    (dx (N, C, H, W) | None, dw (K, C/groups, R, S) | None, db (K,) | None), new C-contiguous
    arrays of x's dtype; entries not asked for are None and cost nothing. algo: 'auto' (per pass,
    ``conv_policy.choose_bwd_algos``), 'direct' or 'implicit_gemm' (both passes; the direct kernel
    where the implicit GEMM cannot run). dW and db split N*P*Q (``conv_policy.split_k``)
    deterministically.
    """
    dt = dtype_of(x)
    policy.check_extents(g, "cupy")
    dx_algo, dw_algo = policy.choose_bwd_algos(g, algo, dx_gemm_fits=dx_igemm_grid(g) is not None,
                                               dw_gemm_fits=g.groups <= GRID_YZ_MAX)
    cache: Dict[Tuple[str, str], object] = {}

    def operand(name: str, layout: str):  # x / dy as the GEMMs read them, made once per layout
        if (name, layout) not in cache:
            cache[(name, layout)] = gemm_operand(x if name == "x" else dy, layout)
        return cache[(name, layout)]

    tf32 = use_tf32(dt, precision)
    dx = _grad_x(dy, w, g, dx_algo, operand, dt, tf32) if need_dx else None
    dw = _grad_w(dy, x, g, dw_algo, operand, dt, tf32) if need_dw else None
    db = _grad_b(dy, g, dt) if need_db else None
    return dx, dw, db
