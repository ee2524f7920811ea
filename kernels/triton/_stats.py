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
