// Elementwise kernels: ReLU forward and backward, and float32 <-> storage-type casts, on contiguous
// arrays of any shape.
// Specialisation: -DSCALAR_T=float|f16_t|bf16_t. Flat indices are 64-bit.
#include "scalar.cuh"

// y = max(x, 0); NaN propagates (as numpy.maximum / torch.relu).
// Grid: 1-D grid-stride loop, one thread per element.
extern "C" __global__ void relu_fwd(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, long long total) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const float v = load(x, i);
    store(y, i, v < 0.0f ? 0.0f : v);
  }
}

// dx = 0 where y <= 0, else dy (y is the forward output; NaN y passes dy, as torch's threshold_backward).
// Grid: 1-D grid-stride loop, one thread per element.
extern "C" __global__ void relu_bwd_mask(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y,
                                         scalar_t* __restrict__ dx, long long total) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride)
    store(dx, i, load(y, i) <= 0.0f ? 0.0f : load(dy, i));
}

// Widen to float32: out[i] = float(x[i]) (exact for every storage type).
// Grid: 1-D grid-stride loop, one thread per element.
extern "C" __global__ void cast_to_float32(const scalar_t* __restrict__ x, float* __restrict__ out, long long total) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) out[i] = load(x, i);
}

// Narrow from float32: out[i] = x[i] rounded to the storage type (nearest even).
// Grid: 1-D grid-stride loop, one thread per element.
extern "C" __global__ void cast_from_float32(const float* __restrict__ x, scalar_t* __restrict__ out, long long total) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) store(out, i, x[i]);
}
