// Fused conv -> BatchNorm -> (+ residual) -> (ReLU), the pass after the convolution (cupy backend):
// out = relu((y - mean[c]) * (invstd[c] * weight[c]) + bias[c] + residual). y, residual and out are
// NCHW contiguous (N, C, HW). Until the CUDA conv mainloop (issue 15) settles, the cupy backend
// composes the block: conv2d, the batch_norm statistics kernels, then this one pass (the residual
// add rides along, so conv, BN, add and ReLU are one read of y and of the residual, one write).
// Parameters and statistics are float32. Specialisation: -DSCALAR_T=float|f16_t|bf16_t.
#include "scalar.cuh"

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
