"""Softmax cross-entropy (mean over the batch), forward and backward.

logits (M, classes) strided, labels (M,) int32/int64 strided; probs (M, classes) and dlogits are
contiguous outputs; all arithmetic in fp32.

* ``cross_entropy_fwd_softmax_rows``: per row, an online max / sum-of-exponentials pass over the
  classes in BLOCK_C chunks (m_new = max(m, chunk max); s = s*exp(m - m_new) + sum exp(z - m_new)),
  then a second pass writing probs = exp(z - m) / s, and the row loss
  nll = (m + log s) - z[label]. Every exponent is <= 0, so large logits cannot overflow.
* ``cross_entropy_fwd_mean``: one program sums the M row losses in a fixed order (deterministic,
  no atomics) and writes loss = sum / M.
* ``cross_entropy_bwd_softmax_minus_onehot``: dlogits = (probs - onehot(label)) * (dloss / M).
"""
import triton
import triton.language as tl

from ._config import config

# forward rows: BLOCK_C classes per chunk (16..1024) and as many rows as keep BLOCK_M * BLOCK_C
# within 4096 elements (registers, no spills), at most 64; the launcher picks by the class count
FWD_CONFIGS = [config(BLOCK_M=min(64, 4096 // bc), BLOCK_C=bc) for bc in (16, 32, 64, 128, 256, 512, 1024)]
MEAN_CONFIGS = [config(BLOCK=1024)]                 # the single-program mean
BWD_CONFIGS = [config(BLOCK_M=16, BLOCK_C=128)]     # tiles of dlogits


@triton.jit
def cross_entropy_fwd_softmax_rows(
    logits_ptr, labels_ptr, probs_ptr, nll_ptr,   # logits (M, C) strided, labels (M,), probs (M, C), nll (M,) fp32
    M, C,
    slm, slc, s_lab,                             # logits strides (row, class), labels stride
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # grid: (cdiv(M, BLOCK_M),); program i owns rows [i*BLOCK_M, (i+1)*BLOCK_M), all classes.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols0 = tl.arange(0, BLOCK_C)
    z_rows = logits_ptr + rows[:, None] * slm
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_M], tl.float32)
    # pass 1: running max and rescaled sum of exponentials
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + cols0
        ok = row_ok[:, None] & (cols < C)[None, :]
        z = tl.load(z_rows + cols[None, :] * slc, mask=ok, other=float("-inf")).to(tl.float32)
        z = tl.where(row_ok[:, None], z, 0.0)            # rows past M: finite dummies, never stored
        m_new = tl.maximum(m, tl.max(z, axis=1))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), axis=1)
        m = m_new
    # pass 2: normalised probabilities
    inv_s = 1.0 / s
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + cols0
        ok = row_ok[:, None] & (cols < C)[None, :]
        z = tl.load(z_rows + cols[None, :] * slc, mask=ok, other=0.0).to(tl.float32)
        p = tl.exp(z - m[:, None]) * inv_s[:, None]
        tl.store(probs_ptr + rows[:, None] * C + cols[None, :], p.to(probs_ptr.dtype.element_ty), mask=ok)
    # row loss: log-sum-exp minus the label's logit
    lab = tl.load(labels_ptr + rows * s_lab, mask=row_ok, other=0).to(tl.int64)
    z_lab = tl.load(logits_ptr + rows * slm + lab * slc, mask=row_ok, other=0.0).to(tl.float32)
    nll = m + tl.log(s) - z_lab
    tl.store(nll_ptr + rows, nll, mask=row_ok)


@triton.jit
def cross_entropy_fwd_mean(
    nll_ptr, loss_ptr,                # nll (M,) fp32 row losses; loss 0-d fp32
    M,
    BLOCK: tl.constexpr,
):
    # grid: (1,); one program accumulates BLOCK lanes over the rows in order, then reduces the lanes.
    offs0 = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.float32)
    for r0 in range(0, M, BLOCK):
        offs = r0 + offs0
        acc += tl.load(nll_ptr + offs, mask=offs < M, other=0.0)
    tl.store(loss_ptr, tl.sum(acc, axis=0) / M)


@triton.jit
def cross_entropy_bwd_softmax_minus_onehot(
    probs_ptr, labels_ptr, dlogits_ptr,           # probs (M, C) strided, labels (M,), dlogits (M, C)
    M, C,
    spm, spc, s_lab,
    scale,                                        # dloss / M, fp32
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # grid: (cdiv(M, BLOCK_M), cdiv(C, BLOCK_C)); each program one BLOCK_M x BLOCK_C tile of dlogits.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < M
    ok = row_ok[:, None] & (cols < C)[None, :]
    p = tl.load(probs_ptr + rows[:, None] * spm + cols[None, :] * spc, mask=ok, other=0.0).to(tl.float32)
    lab = tl.load(labels_ptr + rows * s_lab, mask=row_ok, other=-1).to(tl.int64)
    g = (p - tl.where(cols[None, :] == lab[:, None], 1.0, 0.0)) * scale
    tl.store(dlogits_ptr + rows[:, None] * C + cols[None, :], g.to(dlogits_ptr.dtype.element_ty), mask=ok)


def fwd_config(classes: int):
    """The FWD_CONFIGS entry for ``classes``: the whole row in one chunk when it fits the largest
    BLOCK_C, else chunks of the largest."""
    bc = triton.next_power_of_2(int(classes))
    return next((c for c in FWD_CONFIGS if c.kwargs["BLOCK_C"] >= bc), FWD_CONFIGS[-1])
