"""Linear layer GEMMs: y = x @ W^T + b (forward), dX = dY @ W, dW = dY^T @ X, db = sum_m dY.

All three products are one strided GEMM kernel, ``linear_gemm``: C[M, N] = A[M, K] @ B[K, N], with
A and B read through explicit (row, column) strides, so a transposed operand (W^T in the forward,
dY^T in dW) is just swapped strides, never a copy. Epilogue options:

* HAS_BIAS: C += bias[n] (forward bias, fused).
* ROW_SUM_A: also write rowsum[m] = sum_k A[m, k] in fp32 -- with A = dY^T this is db, fused
  into the dW GEMM (the column-tile-0 programs store it; the A tiles are loaded anyway).

fp16/bf16 operands run on tensor cores (wgmma on sm_90) with fp32 accumulation; fp32 operands use
``input_precision`` PRECISION = 'ieee' (exact fp32 FMA) or 'tf32' (tensor cores).
INT64=True computes every offset in int64 (some operand's element offset can pass 2^31).

Launch configs (convention: ``_config.py``): ``GEMM_CONFIGS`` is the sm_90 table and
``GEMM_SM80_CONFIGS`` the Ampere one (the kernel's ``sm80_configs``). The launcher picks one config
per shape from them (``triton_backend._tuning.pick_config``: pruned by :func:`_prune`, the first that
fills the SMs); ``GEMM_CONFIGS`` is also the autotuner's list under ``CNNGPU_AUTOTUNE=1`` (keyed on
M, N, K, the operand strides and the precision; the autotuner adds the dtypes).
"""
import triton
import triton.language as tl

from ._config import INTERP_GEMM_CONFIGS, tuned
from ._config import gemm_config as _cfg
from ._gemm import grouped_tile_ids

GEMM_KEY = ["M", "N", "K", "sam", "sak", "sbk", "sbn", "PRECISION"]


# H100-oriented tiles (BLOCK_M a multiple of 64 and 4/8 warps so wgmma applies), plus small tiles
# for the narrow classifier GEMMs of small CNNs (N = 10..120, K = 84..400).
GEMM_CONFIGS = [
    _cfg(128, 128, 64, 3, 8),
    _cfg(128, 128, 32, 4, 8),
    _cfg(128, 64, 64, 4, 4),
    _cfg(64, 128, 64, 4, 4),
    _cfg(64, 64, 64, 4, 4),
    _cfg(64, 32, 64, 3, 4),
    _cfg(64, 16, 128, 3, 4),
]
# Ampere (sm_80, 164 KB shared memory, mma.sync): K step 32, 4 warps, as the conv tables
GEMM_SM80_CONFIGS = [
    _cfg(128, 128, 32, 4, 4),
    _cfg(128, 64, 32, 4, 4),
    _cfg(64, 128, 32, 4, 4),
    _cfg(64, 64, 32, 4, 4),
    _cfg(64, 32, 32, 4, 4),
    _cfg(64, 16, 64, 4, 4),
]


def _prune(configs, named_args, **kwargs):
    """Drop tiles far larger than the problem (M rows, N columns); keep at least one config."""
    m, n = named_args["M"], named_args["N"]
    keep = [c for c in configs
            if c.kwargs["BLOCK_M"] <= max(64, triton.next_power_of_2(m))
            and c.kwargs["BLOCK_N"] <= max(16, triton.next_power_of_2(n))]
    return keep or configs[-1:]


@triton.autotune(configs=tuned(GEMM_CONFIGS, INTERP_GEMM_CONFIGS), key=GEMM_KEY,
                 prune_configs_by={"early_config_prune": _prune})
@triton.jit
def linear_gemm(
    a_ptr, b_ptr, bias_ptr, c_ptr, rowsum_ptr,   # A (M, K), B (K, N), bias (N,), C (M, N), rowsum (M,)
    M, N, K,
    sam, sak,                                    # A strides (row, column), elements
    sbk, sbn,                                    # B strides
    scm, scn,                                    # C strides
    s_bias, s_rowsum,
    HAS_BIAS: tl.constexpr, ROW_SUM_A: tl.constexpr, INT64: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """C = A @ B (+ bias[n]) with fp32 accumulation; optionally rowsum = A summed over K.

    Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),); each program owns one BLOCK_M x BLOCK_N tile of C,
    tiles visited in grouped order (GROUP_M row tiles per column sweep). It walks K in BLOCK_K
    steps, masked at the M/N/K edges (zeros contribute nothing to the dot).
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = grouped_tile_ids(pid, num_m, num_n, GROUP_M)
    rk = tl.arange(0, BLOCK_K)
    if INT64:
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
        rk = rk.to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    a_rows = a_ptr + offs_m[:, None] * sam
    b_cols = b_ptr + offs_n[None, :] * sbn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    rsum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + rk
        k_ok = k < K
        a = tl.load(a_rows + (k * sak)[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_cols + (k * sbk)[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if ROW_SUM_A:
            rsum += tl.sum(a.to(tl.float32), axis=1)
    if HAS_BIAS:
        bv = tl.load(bias_ptr + offs_n * s_bias, mask=n_ok, other=0.0)
        acc += bv.to(tl.float32)[None, :]
    c_off = offs_m[:, None] * scm + offs_n[None, :] * scn
    tl.store(c_ptr + c_off, acc.to(c_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    if ROW_SUM_A:
        if pid_n == 0:
            tl.store(rowsum_ptr + offs_m * s_rowsum, rsum.to(rowsum_ptr.dtype.element_ty), mask=m_ok)


linear_gemm.sm80_configs = GEMM_SM80_CONFIGS
