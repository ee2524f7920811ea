// Fused conv -> BatchNorm -> (+ residual) -> (ReLU), the passes after the convolution (cupy backend,
// cupy_backend/fused.py; definition: the NumPy reference numpy_backend/fused.py). y, residual and
// out are NCHW contiguous (N, C, HW). Parameters, statistics and split-K partials are float32.
// Specialisation: -DSCALAR_T=float|f16_t|bf16_t.
//
//   conv_bn_apply_residual_relu          out = relu((y - mean[c]) * (invstd[c] * weight[c]) + bias[c]
//                                        + residual): the training normalize pass (one read of y and
//                                        of the residual, one write), and the composed block's
//   conv_bn_sum_splits_residual_relu     eval under split-K: out = relu(sum_s ws[s] + residual) (the
//                                        BN-folded bias rode in split 0)
//   conv_bn_sum_splits_welford_partials  training under split-K: y = sum_s ws[s] and the per-(channel,
//                                        chunk) Welford partials of the fp32 sums, batch_norm.cu's
//                                        layout for its batch_norm_fwd_finalize_stats
// Without split-K the conv epilogue (conv2d_fwd_operands.cuh FwdBnEpilogue) does the last two.
#include "scalar.cuh"
#include "reduce.cuh"

// Grid: 1-D grid-stride loop, one thread per element of y; has_res / relu switch the residual add
// and the ReLU (NaN propagates: a NaN is not < 0).
extern "C" __global__ void conv_bn_apply_residual_relu(
    const scalar_t* __restrict__ y, const scalar_t* __restrict__ residual, scalar_t* __restrict__ out,
    const float* __restrict__ mean, const float* __restrict__ invstd, const float* __restrict__ weight,
    const float* __restrict__ bias, long long total, long long HW, int C, int has_res, int relu) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int c = (int)((i / HW) % C);
    float v = (load(y, i) - mean[c]) * (invstd[c] * weight[c]) + bias[c];
    if (has_res) v += load(residual, i);
    if (relu && v < 0.0f) v = 0.0f;
    store(out, i, v);
  }
}

// Grid: 1-D grid-stride loop over the total elements of out; ws (splits, total) fp32 partials
// summed in split order (sum_splits_at: deterministic, as conv2d_bwd_sum_splits).
extern "C" __global__ void conv_bn_sum_splits_residual_relu(
    const float* __restrict__ ws, int splits, long long total, const scalar_t* __restrict__ residual,
    int has_res, int relu, scalar_t* __restrict__ out) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    float v = sum_splits_at(ws, splits, total, i);
    if (has_res) v += load(residual, i);
    if (relu && v < 0.0f) v = 0.0f;
    store(out, i, v);
  }
}

// Grid: (C, B) blocks as batch_norm_fwd_welford_partials (its launcher's bn_partition); block (c, b)
// sums the splits of values j in [b*chunk, min((b+1)*chunk, M)) of channel c (M = N*HW), writes
// them to y and their Welford statistics to partial c*B + b. Block: 1-D, a multiple of 32 threads.
extern "C" __global__ void conv_bn_sum_splits_welford_partials(
    const float* __restrict__ ws, int splits, scalar_t* __restrict__ y, float* __restrict__ part_n,
    float* __restrict__ part_mean, float* __restrict__ part_m2, int C, long long HW, long long M,
    long long chunk) {
  __shared__ float smem[3 * 32];
  const int c = blockIdx.x, b = blockIdx.y, B = gridDim.y;
  const long long start = (long long)b * chunk, end = min(start + chunk, M), total = M * C;
  Welford a = welford_empty();
  for (long long j = start + threadIdx.x; j < end; j += blockDim.x) {
    const long long o = bn_offset(j, c, C, HW);
    const float v = sum_splits_at(ws, splits, total, o);
    store(y, o, v);
    welford_push(a, v);
  }
  a = block_welford(a, smem);
  if (threadIdx.x == 0) welford_store(a, part_n, part_mean, part_m2, (long long)c * B + b);
}
