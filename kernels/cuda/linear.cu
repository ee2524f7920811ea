// Linear layer helpers around the float32 cuBLAS GEMMs (cupy.matmul in the launcher): the forward
// epilogue (bias add + one rounding to the storage type) and the bias gradient (column sums of dy
// over the M rows).
// Specialisation: -DSCALAR_T=float|f16_t|bf16_t. Offsets are 64-bit.
#include "scalar.cuh"

// Forward epilogue: y[row, j] = acc[row, j] + bias[j] (bias only when has_bias), rounded to the
// storage type once; acc is the float32 cuBLAS GEMM result x @ w.T.
// Grid: 1-D grid-stride loop, one thread per element i = row*out + j.
extern "C" __global__ void linear_fwd_bias_epilogue(const float* __restrict__ acc, const scalar_t* __restrict__ bias,
                                                    scalar_t* __restrict__ y, long long total, int out,
                                                    int has_bias) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    float v = acc[i];
    if (has_bias) v += load(bias, i % out);
    store(y, i, v);
  }
}

#if !defined(COLSUM_TX) || !defined(COLSUM_TY)
#error "COLSUM_TX and COLSUM_TY are -D defines from cupy_backend/_config.py KERNEL_DEFINES"
#endif

// part[g, j] = sum of dy[row, j] over the rows of chunk g (float32).
// Grid: (ceil(out / 32), G); block (32, 8): thread (tx, ty) owns column blockIdx.x*32 + tx and rows
// chunk_start + ty, + 8, ...; the 8 row-partials meet in shared memory. Loads coalesce along rows.
extern "C" __global__ void linear_bias_grad_partials(const scalar_t* __restrict__ dy, float* __restrict__ part,
                                                     long long M, int out, long long rows_per_chunk) {
  __shared__ float s[COLSUM_TY][COLSUM_TX + 1];
  const int j = blockIdx.x * COLSUM_TX + threadIdx.x;
  const long long r0 = (long long)blockIdx.y * rows_per_chunk;
  const long long r1 = min(r0 + rows_per_chunk, M);
  float acc = 0.0f;
  if (j < out)
    for (long long row = r0 + threadIdx.y; row < r1; row += COLSUM_TY) acc += load(dy, row * out + j);
  s[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < out) {
    for (int t = 1; t < COLSUM_TY; ++t) acc += s[t][threadIdx.x];
    part[(long long)blockIdx.y * out + j] = acc;
  }
}

// db[j] = sum_g part[g, j], rounded to the storage type once.
// Grid: 1-D, one thread per column j.
extern "C" __global__ void linear_bias_grad_finalize(const float* __restrict__ part, int G, int out,
                                                     scalar_t* __restrict__ db) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= out) return;
  float acc = 0.0f;
  for (int g = 0; g < G; ++g) acc += part[(long long)g * out + j];
  store(db, j, acc);
}
