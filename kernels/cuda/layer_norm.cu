// LayerNorm over the last D elements of each of M contiguous rows; forward and backward.
//
// Row kernels give each row a warp (blockDim = (32, rows per block)) or a whole block
// (blockDim = (threads, 1)); reductions use warp shuffles (+ shared memory across warps). Row
// statistics are two-pass (mean, then mean squared deviation) in float32. weight/bias are float32
// (ones/zeros when absent, supplied by the launcher). Specialisation: -DSCALAR_T=float|f16_t|
// bf16_t. Row offsets are 64-bit (M*D may pass 2^31).
#include "scalar.cuh"
#include "reduce.cuh"

// y = (x - mean) * rstd * weight + bias per row; writes mean[row], rstd[row].
// Grid: 1-D, rows blockIdx.x*blockDim.y + threadIdx.y, striding by gridDim.x*blockDim.y (the loop
// bound is uniform over the block when blockDim.y == 1, so block reductions are safe).
extern "C" __global__ void layer_norm_fwd_rows(
    const scalar_t* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ bias,
    scalar_t* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, long long M, int D,
    float eps) {
  __shared__ float smem[32];
  const float inv_d = 1.0f / (float)D;
  for (long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y; row < M;
       row += (long long)gridDim.x * blockDim.y) {
    const scalar_t* xr = x + row * D;
    float s = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) s += load(xr, j);
    const float mu = row_sum(s, smem) * inv_d;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
      const float d = load(xr, j) - mu;
      ss += d * d;
    }
    const float r = rsqrtf(row_sum(ss, smem) * inv_d + eps);
    scalar_t* yr = y + row * D;
    for (int j = threadIdx.x; j < D; j += blockDim.x) store(yr, j, (load(xr, j) - mu) * r * weight[j] + bias[j]);
    if (threadIdx.x == 0) {
      mean[row] = mu;
      rstd[row] = r;
    }
  }
}

// dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)) per row, gw = dy * weight,
// xhat = (x - mean) * rstd. Grid: as layer_norm_fwd_rows.
extern "C" __global__ void layer_norm_bwd_dx_rows(
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x, const float* __restrict__ weight,
    const float* __restrict__ mean, const float* __restrict__ rstd, scalar_t* __restrict__ dx,
    long long M, int D) {
  __shared__ float smem[32];
  const float inv_d = 1.0f / (float)D;
  for (long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y; row < M;
       row += (long long)gridDim.x * blockDim.y) {
    const long long base = row * D;
    const float mu = mean[row], r = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
      const float gw = load(dy, base + j) * weight[j];
      sg += gw;
      sgx += gw * (load(x, base + j) - mu) * r;
    }
    const float mg = row_sum(sg, smem) * inv_d;
    const float mgx = row_sum(sgx, smem) * inv_d;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
      const float gw = load(dy, base + j) * weight[j];
      const float xhat = (load(x, base + j) - mu) * r;
      store(dx, base + j, r * (gw - mg - xhat * mgx));
    }
  }
}

#if !defined(COLSUM_TX) || !defined(COLSUM_TY)
#error "COLSUM_TX and COLSUM_TY are -D defines from cupy_backend/_config.py KERNEL_DEFINES"
#endif

// Column partial sums for the parameter gradients: over the rows of chunk g,
// part_dw[g, j] = sum dy * xhat, part_db[g, j] = sum dy.
// Grid: (ceil(D / 32), G); block (32, 8): thread (tx, ty) owns column blockIdx.x*32 + tx and rows
// chunk_start + ty, + 8, ...; the 8 row-partials of a column meet in shared memory. Loads are
// coalesced along the 32 columns of a row.
extern "C" __global__ void layer_norm_bwd_dwdb_partials(
    const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x, const float* __restrict__ mean,
    const float* __restrict__ rstd, float* __restrict__ part_dw, float* __restrict__ part_db, long long M,
    int D, long long rows_per_chunk) {
  __shared__ float s_dw[COLSUM_TY][COLSUM_TX + 1];
  __shared__ float s_db[COLSUM_TY][COLSUM_TX + 1];
  const int j = blockIdx.x * COLSUM_TX + threadIdx.x;
  const long long r0 = (long long)blockIdx.y * rows_per_chunk;
  const long long r1 = min(r0 + rows_per_chunk, M);
  float dw = 0.0f, db = 0.0f;
  if (j < D) {
    for (long long row = r0 + threadIdx.y; row < r1; row += COLSUM_TY) {
      const float g = load(dy, row * D + j);
      dw += g * (load(x, row * D + j) - mean[row]) * rstd[row];
      db += g;
    }
  }
  s_dw[threadIdx.y][threadIdx.x] = dw;
  s_db[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y == 0 && j < D) {
    for (int t = 1; t < COLSUM_TY; ++t) {
      dw += s_dw[t][threadIdx.x];
      db += s_db[t][threadIdx.x];
    }
    part_dw[(long long)blockIdx.y * D + j] = dw;
    part_db[(long long)blockIdx.y * D + j] = db;
  }
}

// dweight[j] = sum_g part_dw[g, j], dbias[j] = sum_g part_db[g, j].
// Grid: 1-D, one thread per column j.
extern "C" __global__ void layer_norm_bwd_dwdb_finalize(
    const float* __restrict__ part_dw, const float* __restrict__ part_db, int G, int D,
    float* __restrict__ dweight, float* __restrict__ dbias) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= D) return;
  float dw = 0.0f, db = 0.0f;
  for (int g = 0; g < G; ++g) {
    dw += part_dw[(long long)g * D + j];
    db += part_db[(long long)g * D + j];
  }
  dweight[j] = dw;
  dbias[j] = db;
}
