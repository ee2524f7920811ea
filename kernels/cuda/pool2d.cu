// 2-D max and average pooling, forward and backward, NCHW contiguous, PyTorch semantics.
//
// Window of output (p, q): rows p*sh - ph + r*dh (r < kh), cols q*sw - pw + s*dw (s < kw).
// Backward passes are gathers (one thread per input pixel, no atomics): each pixel visits only
// the windows that can contain it. Specialisation: -DSCALAR_T=float|f16_t|bf16_t.
// Flat indices and plane offsets are 64-bit: N*C*H*W may pass 2^31.
#include "scalar.cuh"

// Max pooling forward: y = window max, argmax = flat h*W + w of the winner in its (n, c) plane.
// Scan in row-major window order; a value wins if it is greater than the best so far or NaN, and
// the first in-bounds tap always seeds the scan, so padding never wins, ties keep the first
// maximum and NaN propagates (the last NaN wins), exactly as the PyTorch kernels.
// Grid: 1-D grid-stride loop, one thread per output element i = ((n*C + c)*P + p)*Q + q.
extern "C" __global__ void max_pool2d_fwd_window_argmax(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ y, long long* __restrict__ argmax,
    long long total, int H, int W, int P, int Q, int kh, int kw, int sh, int sw, int ph, int pw,
    int dh, int dw) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int q = (int)(i % Q);
    const long long t = i / Q;
    const int p = (int)(t % P);
    const long long plane = t / P;
    const scalar_t* xp = x + plane * ((long long)H * W);
    const int h0 = p * sh - ph, w0 = q * sw - pw;
    float best = __int_as_float((int)0xff800000u);  // -inf: a window with no real pixel (dilation
    int best_idx = -1;                               // can skip them all) gives -inf, argmax -1
    for (int r = 0; r < kh; ++r) {
      const int h = h0 + r * dh;
      if (h < 0 || h >= H) continue;
      for (int s = 0; s < kw; ++s) {
        const int w = w0 + s * dw;
        if (w < 0 || w >= W) continue;
        const int idx = h * W + w;
        const float v = load(xp, idx);
        if (best_idx < 0 || v > best || isnan(v)) {
          best = v;
          best_idx = idx;
        }
      }
    }
    store(y, i, best);
    argmax[i] = best_idx;
  }
}

// Max pooling backward as a gather: dx[n, c, h, w] = sum of dy over the windows whose argmax is
// (h, w). Row tap r of window p reads h = p*sh - ph + r*dh, so p = (h + ph - r*dh) / sh when that
// divides exactly and lies in [0, P); distinct taps give distinct windows (no double counting).
// Grid: 1-D grid-stride loop, one thread per input element i = ((n*C + c)*H + h)*W + w.
extern "C" __global__ void max_pool2d_bwd_gather_argmax(
    const scalar_t* __restrict__ dy, const long long* __restrict__ argmax, scalar_t* __restrict__ dx,
    long long total, int H, int W, int P, int Q, int kh, int kw, int sh, int sw, int ph, int pw,
    int dh, int dw) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long plane_in = (long long)H * W, plane_out = (long long)P * Q;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long plane = i / plane_in;
    const int hw = (int)(i - plane * plane_in);
    const int h = hw / W, w = hw - (hw / W) * W;
    const long long obase = plane * plane_out;
    float acc = 0.0f;
    for (int r = 0; r < kh; ++r) {
      const int tp = h + ph - r * dh;
      if (tp < 0) break;                       // decreases with r
      if (tp % sh != 0) continue;
      const int p = tp / sh;
      if (p >= P) continue;
      for (int s = 0; s < kw; ++s) {
        const int tq = w + pw - s * dw;
        if (tq < 0) break;
        if (tq % sw != 0) continue;
        const int q = tq / sw;
        if (q >= Q) continue;
        const long long o = obase + (long long)p * Q + q;
        if (argmax[o] == hw) acc += load(dy, o);
      }
    }
    store(dx, i, acc);
  }
}

// Divisor of window (p, q) of an average pool (PyTorch's rule): the window clipped to the padded
// plane [-pad, size + pad) when count_include_pad, else the number of real pixels it covers.
__device__ __forceinline__ int avg_pool_divisor(int p, int q, int H, int W, int kh, int kw, int sh,
                                                int sw, int ph, int pw, int count_include_pad) {
  const int hs = p * sh - ph, ws = q * sw - pw;
  const int he = min(hs + kh, H + ph), we = min(ws + kw, W + pw);
  if (count_include_pad) return (he - hs) * (we - ws);
  return (min(he, H) - max(hs, 0)) * (min(we, W) - max(ws, 0));
}

// Average pooling forward: y = (sum of the real pixels of the window) / divisor (no dilation).
// Grid: 1-D grid-stride loop, one thread per output element i = ((n*C + c)*P + p)*Q + q.
extern "C" __global__ void avg_pool2d_fwd_window_mean(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ y, long long total, int H, int W, int P,
    int Q, int kh, int kw, int sh, int sw, int ph, int pw, int count_include_pad) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int q = (int)(i % Q);
    const long long t = i / Q;
    const int p = (int)(t % P);
    const long long plane = t / P;
    const scalar_t* xp = x + plane * ((long long)H * W);
    const int hs = p * sh - ph, ws = q * sw - pw;
    const int h_lo = max(hs, 0), h_hi = min(hs + kh, H);
    const int w_lo = max(ws, 0), w_hi = min(ws + kw, W);
    float acc = 0.0f;
    for (int h = h_lo; h < h_hi; ++h)
      for (int w = w_lo; w < w_hi; ++w) acc += load(xp, h * W + w);
    const int div = avg_pool_divisor(p, q, H, W, kh, kw, sh, sw, ph, pw, count_include_pad);
    store(y, i, acc / (float)div);
  }
}

// Average pooling backward as a gather: dx[h, w] = sum over windows (p, q) covering (h, w) of
// dy[p, q] / divisor(p, q). Window p covers row h iff p*sh - ph <= h < p*sh - ph + kh, i.e.
// p in [floor((h + ph - kh) / sh) + 1, floor((h + ph) / sh)] (first bound 0 when h + ph < kh),
// clipped to [0, P). h < H <= H + ph, so the clip of a window to the padded plane never hides h.
// Grid: 1-D grid-stride loop, one thread per input element i = ((n*C + c)*H + h)*W + w.
extern "C" __global__ void avg_pool2d_bwd_gather_windows(
    const scalar_t* __restrict__ dy, scalar_t* __restrict__ dx, long long total, int H, int W, int P,
    int Q, int kh, int kw, int sh, int sw, int ph, int pw, int count_include_pad) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long plane_in = (long long)H * W, plane_out = (long long)P * Q;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long plane = i / plane_in;
    const int hw = (int)(i - plane * plane_in);
    const int h = hw / W, w = hw - (hw / W) * W;
    const int p_lo = (h + ph < kh) ? 0 : (h + ph - kh) / sh + 1;
    const int p_hi = min((h + ph) / sh, P - 1);
    const int q_lo = (w + pw < kw) ? 0 : (w + pw - kw) / sw + 1;
    const int q_hi = min((w + pw) / sw, Q - 1);
    const scalar_t* dyp = dy + plane * plane_out;
    float acc = 0.0f;
    for (int p = p_lo; p <= p_hi; ++p)
      for (int q = q_lo; q <= q_hi; ++q) {
        const int div = avg_pool_divisor(p, q, H, W, kh, kw, sh, sw, ph, pw, count_include_pad);
        acc += load(dyp, (long long)p * Q + q) / (float)div;
      }
    store(dx, i, acc);
  }
}
