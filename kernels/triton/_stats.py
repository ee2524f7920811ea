"""Device helpers shared by the normalization kernels (batch_norm, layer_norm, group_norm)."""
import triton
import triton.language as tl  # noqa: F401  (Triton requires triton.language visible to @triton.jit code)


@triton.jit
def chan_merge(count, mean, m2, nb, bmean, bm2):
    """Merge running statistics (count, mean, M2 = sum of squared deviations) with a block's
    (nb, bmean, bm2) by Chan et al.'s parallel update; returns the merged (count, mean, M2).
    Works elementwise on scalars or on per-channel vectors."""
    tot = count + nb
    delta = bmean - mean
    frac = nb / tot
    return tot, mean + delta * frac, m2 + (bm2 + delta * delta * (count * frac))


@triton.jit
def store_channel_stats(mean, m2, count, cs, cmask, eps, momentum, unbias, mean_ptr, invstd_ptr, rmean_ptr,
                        rvar_ptr, HAS_RUNNING: tl.constexpr):
    """Finalize per-channel batch statistics: store mean and 1/sqrt(var + eps) (var = M2 / count,
    biased) at channels ``cs``; with HAS_RUNNING update the running stats in place as torch does:
    r = (1 - momentum) * r + momentum * stat, the variance unbiased by ``unbias`` = n / (n - 1)."""
    var = m2 / count
    invstd = 1.0 / tl.sqrt_rn(var + eps)
    tl.store(mean_ptr + cs, mean, mask=cmask)
    tl.store(invstd_ptr + cs, invstd, mask=cmask)
    if HAS_RUNNING:
        rm = tl.load(rmean_ptr + cs, mask=cmask, other=0.0).to(tl.float32)
        rv = tl.load(rvar_ptr + cs, mask=cmask, other=0.0).to(tl.float32)
        rm = (1.0 - momentum) * rm + momentum * mean
        rv = (1.0 - momentum) * rv + momentum * (var * unbias)
        tl.store(rmean_ptr + cs, rm.to(rmean_ptr.dtype.element_ty), mask=cmask)
        tl.store(rvar_ptr + cs, rv.to(rvar_ptr.dtype.element_ty), mask=cmask)
