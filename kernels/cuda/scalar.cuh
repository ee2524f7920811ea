// Storage type of the tensors a kernel reads and writes, chosen at build time with
// -DSCALAR_T=float | half_t | bf16_t (default float). Kernels compute in float and convert on load
// and store (round to nearest even).
//
// half_t / bf16_t are 16-bit storage structs converted with PTX cvt instructions, so the sources
// need no CUDA headers: cupy.RawModule compiles with NVRTC, and the NVRTC of the PyPI wheels
// (nvidia-cuda-nvrtc-cu12) ships no cuda_fp16.h and CuPy passes no CUDA include path then.
// Without __CUDA_ARCH__ (a host compiler, e.g. the CPU emulation in tests/cuda_emu) the same
// conversions are done with integer arithmetic.
#pragma once

struct __align__(2) half_t { unsigned short bits; };
struct __align__(2) bf16_t { unsigned short bits; };

#ifndef SCALAR_T
#define SCALAR_T float
#endif
typedef SCALAR_T scalar_t;

__device__ __forceinline__ float to_float(float v) { return v; }

__device__ __forceinline__ float to_float(bf16_t v) { return __uint_as_float(((unsigned)v.bits) << 16); }

__device__ __forceinline__ float to_float(half_t v) {
#ifdef __CUDA_ARCH__
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
#else
  const unsigned s = (unsigned)(v.bits & 0x8000u) << 16, e = (v.bits >> 10) & 0x1fu, m = v.bits & 0x3ffu;
  if (e == 0x1fu) return __uint_as_float(s | 0x7f800000u | (m << 13));          // inf / nan
  if (e != 0) return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));        // normal
  const float mag = (float)m * 5.9604644775390625e-08f;                          // subnormal: m * 2^-24
  return s ? -mag : mag;
#endif
}

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }

template <> __device__ __forceinline__ half_t from_float<half_t>(float v) {
  half_t h;
#ifdef __CUDA_ARCH__
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
#else
  const unsigned u = __float_as_uint(v), s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) h.bits = (unsigned short)(s | 0x7e00u);                  // nan
  else if (a >= 0x477ff000u) h.bits = (unsigned short)(s | 0x7c00u);            // >= 65520: inf
  else if (a < 0x38800000u)                                                     // < 2^-14: subnormal
    h.bits = (unsigned short)(s | (unsigned)rintf(__uint_as_float(a) * 16777216.0f));
  else {
    const unsigned r = a - 0x38000000u;                                         // rebias 127 -> 15
    h.bits = (unsigned short)(s | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
  }
#endif
  return h;
}

template <> __device__ __forceinline__ bf16_t from_float<bf16_t>(float v) {
  bf16_t h;
#ifdef __CUDA_ARCH__
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));   // sm_80+
#else
  const unsigned u = __float_as_uint(v);
  h.bits = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)((u >> 16) | 0x40u)  // quiet nan
                                           : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
  return h;
}

// Read element i as float / write float v to element i.
__device__ __forceinline__ float load(const scalar_t* __restrict__ p, long long i) { return to_float(p[i]); }
__device__ __forceinline__ void store(scalar_t* __restrict__ p, long long i, float v) {
  p[i] = from_float<scalar_t>(v);
}
