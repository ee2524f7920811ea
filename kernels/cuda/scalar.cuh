// Storage type of the tensors a kernel reads and writes, chosen at build time with
// -DSCALAR_T=float | f16_t | bf16_t (default float; the 16-bit storage types and conversions are
// common.cuh's, header-free so NVRTC needs no CUDA include path). Kernels compute in float:
// load() converts on the way in, store() rounds to nearest even on the way out.
#pragma once
#include "common.cuh"

#ifndef SCALAR_T
#define SCALAR_T float
#endif
typedef SCALAR_T scalar_t;

// Read element i as float / write float v to element i.
__device__ __forceinline__ float load(const scalar_t* __restrict__ p, long long i) { return to_float(p[i]); }
__device__ __forceinline__ void store(scalar_t* __restrict__ p, long long i, float v) {
  p[i] = from_float<scalar_t>(v);
}
