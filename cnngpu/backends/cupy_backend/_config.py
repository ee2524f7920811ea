"""Launch configurations of the cupy backend's non-conv kernels, as pure functions of the problem
size (and the device's SM count where occupancy matters), so they can be unit-tested without a GPU.

Every function returns plain ints/tuples: grids and blocks in CUDA order (x, y, z), chunk sizes,
workspace lengths in float32 elements. Limits respected everywhere: gridDim.x < 2**31,
gridDim.y <= 65535, block size a multiple of 32 and <= 1024.
"""
from __future__ import annotations

from typing import Dict, Tuple

from ...geometry import ceil_div
from ..limits import GRID_YZ_MAX

BLOCK = 256                 # threads per block of the 1-D kernels
MAX_BLOCK_COUNT = 2 ** 22   # elements per block-partial: float counts stay exact (< 2**24)

# Constants a kernels/cuda file and its launcher share are written here, once, and reach the .cu
# files as -D defines (which #error without them): KERNEL_DEFINES for every non-conv file,
# CONV_DEFINES (with SCALAR_T and VEC, conv.defines) for conv2d_fwd.cu / conv2d_bwd.cu.
COLSUM_TX, COLSUM_TY = 32, 8            # (32, 8) blocks of the column sums (linear.cu, layer_norm.cu)
KERNEL_DEFINES = {"COLSUM_TX": COLSUM_TX, "COLSUM_TY": COLSUM_TY}
IG_BM, IG_BN, IG_THREADS = 128, 128, 256  # implicit-GEMM tile (rows x columns) and block
IG_BN_NARROW = 64                        # columns of the _narrow entry points (<= 64 columns per group)
IG_ASYNC_STAGES = 3                      # cp.async shared-memory stages of the 16-bit implicit GEMMs
DIRECT_TILE, DIRECT_THREADS = 16, 256    # direct forward: 16 x 16 output pixels, one per thread
RED_THREADS = 256                        # block of the split reductions (dW direct, db, split sums)
DX_MAX_TAPS = 32                         # R, S limit of the dX implicit GEMM's tap tables
FUSED_STAGE_PAD = 4                      # floats after each staged column of the fused block's statistics
CONV_DEFINES = {"IG_BM": IG_BM, "IG_BN": IG_BN, "IG_BN_NARROW": IG_BN_NARROW, "IG_THREADS": IG_THREADS,
                "DIRECT_TILE": DIRECT_TILE, "DIRECT_THREADS": DIRECT_THREADS, "RED_THREADS": RED_THREADS,
                "DX_MAX_TAPS": DX_MAX_TAPS, "FUSED_STAGE_PAD": FUSED_STAGE_PAD}


def igemm_spec(dtype_name: str, vec_a: int, vec_b: int | None = None, tf32: bool = False) -> Dict[str, int]:
    """The per-specialisation -D constants of the implicit-GEMM main loop (conv2d_igemm.cuh) whose
    operands A and B load ``vec_a`` and ``vec_b`` (default: vec_a) elements at a time:
    IG_BK (reduction slice: 32 for the 16-bit mma path, 16 for fp32 FFMA), IG_PAD (shared row
    padding: 16 bytes, which keeps ldmatrix free of bank conflicts and cp.async 16-byte aligned),
    IG_ASYNC (the cp.async ring: a 16-bit type with 16-byte loads on at least one operand; the
    other, if scalar, is register-staged inside the ring), IG_STAGES
    (IG_ASYNC_STAGES with cp.async, else 2 register-staged) and IG_OPERAND_BYTES (one operand's
    stage: the larger of the [rows][BK + PAD] and [BK][rows + PAD] layouts for 16-bit, fp32 keeps
    the second; the kernel asserts its layouts fit), IG_TF32 (float32 on the m16n8k8 tf32 tensor
    cores: ``tf32``, precision='tf32') and
    IG_MIN_BLOCKS (the kernels' __launch_bounds__ minimum of resident blocks: 2 when both operands
    are copied by cp.async, which fits 128 registers, 1 when any operand is register-staged (the
    2-stage path and the mixed ring), which needs more to not spill)."""
    if dtype_name not in SCALAR_T:
        raise TypeError(f"the cupy conv2d kernels take float32, float16 or bfloat16, got {dtype_name}")
    item = 4 if dtype_name == "float32" else 2
    bk, pad = (16, 8) if item == 4 else (32, 8)   # fp32: 8 keeps the tf32 fragment reads conflict-free
    vec_b = vec_a if vec_b is None else vec_b
    use_async = item == 2 and 16 in (int(vec_a) * item, int(vec_b) * item)
    rows = max(IG_BM, IG_BN)
    return {"IG_BK": bk, "IG_PAD": pad, "IG_ASYNC": int(use_async),
            "IG_STAGES": IG_ASYNC_STAGES if use_async else 2,
            "IG_OPERAND_BYTES": item * (max(rows * (bk + pad), bk * (rows + pad)) if item == 2
                                        else bk * (rows + pad)),
            "IG_TF32": int(bool(tf32) and item == 4),
            "IG_MIN_BLOCKS": 2 if item == 2 and int(vec_a) * item == int(vec_b) * item == 16 else 1}


def igemm_smem_bytes(spec: Dict[str, int]) -> int:
    """Dynamic shared memory of an implicit-GEMM launch: IG_STAGES stages of two operands."""
    return spec["IG_STAGES"] * 2 * spec["IG_OPERAND_BYTES"]


def fused_stage_bytes(tile_m: int, tile_n: int) -> int:
    """Shared memory the fused block's training epilogue stages its fp32 tile in (after the main
    loop, in the same dynamic shared memory; conv2d_fwd_operands.cuh FwdBnEpilogue): tile_n columns
    of tile_m + FUSED_STAGE_PAD floats (the pad spreads an accumulator fragment's stores over the
    32 banks)."""
    return 4 * tile_n * (tile_m + FUSED_STAGE_PAD)


# Hopper implicit GEMM (conv2d_fwd_sm90.cu, built for W90_ARCH): 128 x 128 tiles of two warpgroups,
# 64-wide K slices (128-byte swizzled rows), W90_STAGES shared-memory stages; dynamic shared memory
# W90_SMEM_BYTES (stages + 1 KiB to align the base to the swizzle pattern), above 48 KiB: opt-in.
W90_ARCH = "sm_90a"
W90_BM, W90_BN, W90_BK, W90_STAGES, W90_THREADS = 128, 128, 64, 4, 256
W90_SMEM_BYTES = W90_STAGES * (W90_BM + W90_BN) * W90_BK * 2 + 1024
assert W90_SMEM_BYTES >= fused_stage_bytes(W90_BM, W90_BN), "the fused statistics stage reuses the wgmma stages"
W90_DEFINES = {"W90_BM": W90_BM, "W90_BN": W90_BN, "W90_BK": W90_BK, "W90_STAGES": W90_STAGES,
               "W90_THREADS": W90_THREADS, "FUSED_STAGE_PAD": FUSED_STAGE_PAD}


def elementwise_grid(total: int, block: int = BLOCK, max_blocks: int = 65535 * 32) -> Tuple[int]:
    """1-D grid for a grid-stride loop over ``total`` elements: one element per thread up to
    ``max_blocks`` blocks, beyond that each thread loops."""
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    return (min(ceil_div(total, block), max_blocks),)


def warp_per_item_grid(items: int, block: int = BLOCK) -> Tuple[int]:
    """Grid giving each of ``items`` (channels, planes) one warp of a ``block``-thread block."""
    return (ceil_div(items, block // 32),)


def thread_per_item_grid(items: int, block: int = BLOCK) -> Tuple[int]:
    """Grid giving each of ``items`` one thread."""
    return (ceil_div(items, block),)


def bn_partition(C: int, M: int, num_sms: int, block: int = BLOCK, min_per_thread: int = 4,
                 blocks_per_sm: int = 4) -> Tuple[int, int]:
    """Split each channel's M = N*H*W values into B contiguous chunks, one block each.

    Returns (B, chunk) with B * chunk >= M > (B - 1) * chunk (no empty block). Aims at
    ``blocks_per_sm * num_sms`` blocks over all C channels, but gives a block at least
    ``block * min_per_thread`` values; more than one block per channel whenever C is small next to
    the SM count and M is large enough. B <= 65535 (gridDim.y); chunk <= 2**22 (exact float counts).
    """
    if C < 1 or M < 1 or num_sms < 1:
        raise ValueError(f"C, M and num_sms must be >= 1, got {C}, {M}, {num_sms}")
    target = ceil_div(blocks_per_sm * num_sms, C)
    most_useful = ceil_div(M, block * min_per_thread)
    B = max(1, min(target, most_useful, GRID_YZ_MAX))
    B = max(B, ceil_div(M, MAX_BLOCK_COUNT))
    if B > GRID_YZ_MAX:
        raise ValueError(f"batch_norm: {M} values per channel is more than this kernel handles")
    chunk = ceil_div(M, B)
    return ceil_div(M, chunk), chunk


def bn_workspace(C: int, B: int, training_forward: bool) -> int:
    """float32 elements of the per-(channel, chunk) partials: 3 arrays (count, mean, M2) for the
    training forward, 2 (sum g, sum g*(x-mean)) for the backward."""
    return (3 if training_forward else 2) * C * B


def row_launch(M: int, D: int, max_grid: int = 65535) -> Tuple[Tuple[int, int, int], Tuple[int]]:
    """(block, grid) for the row kernels (layer norm, softmax cross-entropy) over M rows of D.

    D <= 1024: a warp per row, 8 rows per 256-thread block. Larger rows: one block per row with
    enough threads that each handles about 8 values (64..1024, a power of two). Rows beyond
    ``max_grid * rows_per_block`` are covered by the kernels' block-stride loop.
    """
    if M < 1 or D < 1:
        raise ValueError(f"M and D must be >= 1, got {M}, {D}")
    if D <= 1024:
        block = (32, BLOCK // 32, 1)
    else:
        tx = 64
        while tx < 1024 and tx * 8 < D:
            tx *= 2
        block = (tx, 1, 1)
    return block, (min(ceil_div(M, block[1]), max_grid),)


def column_partition(M: int, D: int, num_sms: int, min_rows: int = 32,
                     blocks_per_sm: int = 4) -> Tuple[Tuple[int, int, int], int]:
    """Grid and rows per chunk of the column-sum kernels ((32, 8) blocks over a (M, D) array):
    grid (ceil(D / 32), G), each block summing ``rows`` consecutive rows of 32 columns.
    G (<= 1024) is the number of float32 partial rows the finalize kernel adds up."""
    if M < 1 or D < 1 or num_sms < 1:
        raise ValueError(f"M, D and num_sms must be >= 1, got {M}, {D}, {num_sms}")
    tiles = ceil_div(D, COLSUM_TX)
    G = max(1, min(ceil_div(M, min_rows), ceil_div(blocks_per_sm * num_sms, tiles), 1024))
    rows = ceil_div(M, G)
    G = ceil_div(M, rows)
    return (tiles, G, 1), rows


def group_norm_threads(L: int) -> int:
    """Threads of the one-block-per-group forward kernel: about 4 values per thread, 32..512."""
    t = 32
    while t < 512 and t * 4 < L:
        t *= 2
    return t


SCALAR_T = {"float32": "float", "float16": "f16_t", "bfloat16": "bf16_t"}


def scalar_define(dtype_name: str) -> dict:
    """The -D defines of a non-conv kernel file for tensors of ``dtype_name``: SCALAR_T and the
    shared constants (KERNEL_DEFINES)."""
    try:
        return {"SCALAR_T": SCALAR_T[dtype_name], **KERNEL_DEFINES}
    except KeyError:
        raise TypeError(f"the cupy kernels take float32, float16 or bfloat16, got {dtype_name}") from None
