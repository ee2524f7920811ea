// Mean softmax cross-entropy over M rows of K logits (row-major contiguous); forward and backward.
//
// Forward: per row, m = max, s = sum exp(x - m), probs = exp(x - m) / s and
// row_loss = log(s) - (x[label] - m) (stable: every exponent is <= 0); then one block averages the
// row losses. Backward: dlogits = dloss / M * (probs - onehot(label)). Labels are int64.
// Specialisation: -DSCALAR_T=float|f16_t|bf16_t. Offsets are 64-bit.
#include "scalar.cuh"
#include "reduce.cuh"

// Grid: 1-D; row = blockIdx.x*blockDim.y + threadIdx.y striding by gridDim.x*blockDim.y; a row
// is a warp (blockDim = (32, rows per block)) or the whole block (blockDim = (threads, 1)).
extern "C" __global__ void softmax_xent_fwd_rows(
    const scalar_t* __restrict__ logits, const long long* __restrict__ labels, scalar_t* __restrict__ probs,
    float* __restrict__ row_loss, long long M, int K) {
  __shared__ float smem[32];
  for (long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y; row < M;
       row += (long long)gridDim.x * blockDim.y) {
    const scalar_t* z = logits + row * K;
    float m = NEG_INF_F;
    for (int j = threadIdx.x; j < K; j += blockDim.x) m = fmaxf(m, load(z, j));
    m = row_max(m, smem);
    float s = 0.0f;
    for (int j = threadIdx.x; j < K; j += blockDim.x) s += expf(load(z, j) - m);
    s = row_sum(s, smem);
    const float inv_s = 1.0f / s;
    scalar_t* pr = probs + row * K;
    for (int j = threadIdx.x; j < K; j += blockDim.x) store(pr, j, expf(load(z, j) - m) * inv_s);
    if (threadIdx.x == 0) row_loss[row] = logf(s) - (load(z, labels[row]) - m);
  }
}

// loss = mean of row_loss. Grid: a single 1-D block (multiple of 32 threads) striding over M.
extern "C" __global__ void softmax_xent_loss_mean(const float* __restrict__ row_loss, long long M,
                                                  float* __restrict__ loss) {
  __shared__ float smem[32];
  float s = 0.0f;
  for (long long i = threadIdx.x; i < M; i += blockDim.x) s += row_loss[i];
  s = block_sum(s, smem);
  if (threadIdx.x == 0) loss[0] = s / (float)M;
}

// dlogits[i] = scale * (probs[i] - (col == label[row])), scale = dloss / M.
// Grid: 1-D grid-stride loop, one thread per element i = row*K + col.
extern "C" __global__ void softmax_xent_bwd(
    const scalar_t* __restrict__ probs, const long long* __restrict__ labels, scalar_t* __restrict__ dlogits,
    long long total, int K, float scale) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long row = i / K;
    const int col = (int)(i - row * K);
    float g = load(probs, i);
    if (col == labels[row]) g -= 1.0f;
    store(dlogits, i, g * scale);
  }
}
