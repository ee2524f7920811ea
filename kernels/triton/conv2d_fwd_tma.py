"""Opt-in TMA forward of 1x1, stride-1, unpadded convolutions on NCHW tensors (``algo='tma'``).

Such a convolution is one GEMM per image: y[n] (K, L) = W (K, C) @ x[n] (C, L), L = H*W, with x[n]
and y[n] contiguous along L on NCHW tensors. The kernel reads both operands through device-side
tensor descriptors (``tl.make_tensor_descriptor``: TMA on sm_90, plain loads elsewhere and in the
interpreter), so NCHW activations are loaded tile by tile without the channels-last copy the
implicit GEMM makes; tiles that overhang an edge (K, C or L) are zero-filled by the descriptor and
the output tile is clipped by the descriptor store.

Requirements (checked by the launcher, ``triton_backend.conv_tma``): groups 1; x NCHW-contiguous;
16-byte aligned base addresses and row strides (L and C times the element size multiples of 16
bytes); on a GPU, a triton allocator for the descriptors (the launcher installs a torch one when
none is set). Padded or strided convolutions are not covered: their tap offsets along W are not
16-byte aligned, which the hardware accepts but the interpreter's descriptor check does not, so
such a path could not be verified on a CPU.

Unmeasured: no GPU has timed this path; it is not chosen by ``algo='auto'``.
"""
import triton
import triton.language as tl

from ._config import INTERP_GEMM_CONFIGS, gemm_config, tuned

# (BLOCK_M over output channels K, BLOCK_N over pixels L, BLOCK_K over input channels C)
TMA_1X1_CONFIGS = [
    gemm_config(128, 128, 64, 3, 8),
    gemm_config(128, 64, 64, 4, 4),
    gemm_config(64, 128, 64, 4, 4),
    gemm_config(64, 64, 64, 4, 4),
]
TMA_1X1_SM80_CONFIGS = [
    gemm_config(128, 128, 32, 4, 4),
    gemm_config(128, 64, 32, 4, 4),
    gemm_config(64, 64, 32, 4, 4),
]


def _prune_1x1(configs, named_args, **kwargs):
    """Drop tiles far larger than the problem (K rows, L columns); keep at least one."""
    k, ll = named_args["K"], named_args["L"]
    keep = [c for c in configs
            if c.kwargs["BLOCK_M"] <= max(64, triton.next_power_of_2(k))
            and c.kwargs["BLOCK_N"] <= max(64, triton.next_power_of_2(ll))]
    return keep or configs[-1:]


@triton.autotune(configs=tuned(TMA_1X1_CONFIGS, INTERP_GEMM_CONFIGS), key=["N", "C", "L", "K", "PRECISION"],
                 prune_configs_by={"early_config_prune": _prune_1x1})
@triton.jit
def conv2d_fwd_1x1_tma(
    x_ptr, w_ptr, b_ptr, y_ptr,       # x (N, C, L), w (K, C), y (N, K, L): contiguous; b (K,) or dummy
    N, C, L, K, sb,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """y[n, k, l] = b[k] + sum_c w[k, c] * x[n, c, l], fp32 accumulation.

    Grid: (cdiv(L, BLOCK_N), cdiv(K, BLOCK_M), N); program (j, i, n) owns the BLOCK_M x BLOCK_N tile
    y[n, i*BLOCK_M:, j*BLOCK_N:] and walks C in BLOCK_K steps (GROUP_M is unused: tiles of one image
    follow each other along L, sharing the weight tile).
    """
    pid_l = tl.program_id(0)
    pid_k = tl.program_id(1)
    n = tl.program_id(2)
    # strides in int64: C*L and K*L may pass 2**31 for large planes (L >= 8 by the alignment rule, so
    # never the constant 1 that launch specialisation makes of K or C = 1)
    xd = tl.make_tensor_descriptor(x_ptr, shape=[N, C, L], strides=[L.to(tl.int64) * C, L, 1],
                                   block_shape=[1, BLOCK_K, BLOCK_N])
    wd = tl.make_tensor_descriptor(w_ptr, shape=[K, C], strides=[C, 1], block_shape=[BLOCK_M, BLOCK_K])
    yd = tl.make_tensor_descriptor(y_ptr, shape=[N, K, L], strides=[L.to(tl.int64) * K, L, 1],
                                   block_shape=[1, BLOCK_M, BLOCK_N])
    k0 = pid_k * BLOCK_M
    l0 = pid_l * BLOCK_N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_K):
        a = wd.load([k0, c0])                                             # (BLOCK_M, BLOCK_K)
        b = tl.reshape(xd.load([n, c0, l0]), [BLOCK_K, BLOCK_N])         # (BLOCK_K, BLOCK_N)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if HAS_BIAS:
        ks = k0 + tl.arange(0, BLOCK_M)
        bv = tl.load(b_ptr + ks * sb, mask=ks < K, other=0.0)
        acc += bv.to(tl.float32)[:, None]
    yd.store([n, k0, l0], tl.reshape(acc.to(y_ptr.dtype.element_ty), [1, BLOCK_M, BLOCK_N]))


conv2d_fwd_1x1_tma.sm80_configs = TMA_1X1_SM80_CONFIGS
