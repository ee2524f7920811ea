// cudaemu.h - CUDA C built-ins for compiling cnngpu's kernels/cuda sources with g++ (CPU emulation).
//
// Force-included (g++ -include cudaemu.h) into a source that cnngpu.testing.cudaemu.translate has
// prepared: every asm statement became a call to ::cudaemu::ptx_exec, every __shared__ variable a
// reference into the block's emulated shared window (::cudaemu::shared_var / dynamic_shared), and
// every extern "C" __global__ entry point is registered (::cudaemu::register_kernel) so the launcher
// can check arguments against its C signature. The runtime (cudaemu_rt.cpp) runs each block's
// threads as cooperative fibers; this header only declares what device code sees.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>

#define CUDAEMU_API __attribute__((visibility("default")))

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

namespace cudaemu {

struct ThreadState;                 // one per emulated thread (cudaemu_rt.cpp)
struct ThreadView {
    uint3 tid;                      // threadIdx of the running fiber
};
extern ThreadView* g_cur;           // the running thread (changes at every fiber switch)
extern uint3 g_blockIdx;
extern dim3 g_blockDim, g_gridDim;

// ---- synchronisation and warp collectives (all fail loudly on misuse) -------------------------
void syncthreads(const char* site);
unsigned long long shfl(unsigned mask, unsigned long long bits, int mode, int arg, int width, const char* site);
enum { SHFL_XOR = 0, SHFL_DOWN = 1, SHFL_UP = 2, SHFL_IDX = 3 };
void fail(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

template <class T>
__attribute__((always_inline)) inline T shfl_t(unsigned mask, T v, int mode, int arg, int width, const char* site) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = shfl(mask, bits, mode, arg, width, site);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}

// ---- shared memory ------------------------------------------------------------------------------
// The address of the __shared__ variable identified by `key` (a function-local static of the
// declaring function: one per template instantiation) in the current launch's shared window.
void* shared_var(const void* key, size_t size, size_t align, const char* name, const char* site);
void* dynamic_shared(size_t align, const char* site);
constexpr size_t max_align(size_t a, size_t b) { return a > b ? a : b; }

// ---- inline PTX -------------------------------------------------------------------------------
struct Operand {
    char mode;       // '=' output, '+' input/output, 'i' input
    char cons;       // constraint letter: h r l f d n
    unsigned size;   // bytes of the C++ object
    void* p;         // the object
};
struct PtxProgram;
struct PtxSite {     // constant-initialised static at each asm site; parsed on first execution
    PtxProgram* prog;
};
void ptx_exec(PtxSite* site, const char* text, const char* loc, std::initializer_list<Operand> ops);

template <class T>
inline Operand ptx_out(char mode, char cons, T& v) {
    return Operand{mode, cons, (unsigned)sizeof(T), (void*)&v};
}
template <class T>
inline Operand ptx_in(char cons, const T& v) {
    return Operand{'i', cons, (unsigned)sizeof(T), (void*)&v};
}

// ---- kernel registry (filled by the translator's register_kernel calls) -----------------------
struct ParamDesc {
    int kind;             // 0 integer, 1 floating, 2 pointer, 3 other (bool, enum, struct)
    int size;             // bytes of the parameter
    int is_signed;
    int pointee_kind;     // for pointers: 0 integer, 1 floating, 3 struct/other, 4 void
    int pointee_size;
    int pointee_signed;
    int pointee_const;
    const char* type_name;
};
typedef void (*Invoker)(void* fn, void** args);
int add_kernel(const char* name, void* fn, Invoker inv, int nparams, const ParamDesc* params, int max_threads);

inline std::string type_from_signature(const char* f) {   // "... [with T = float*]" -> "float*"
    std::string s = f;
    size_t b = s.find("T = ");
    if (b == std::string::npos) return "?";
    b += 4;
    return s.substr(b, s.find_first_of(";]", b) - b);
}
template <class T>
const char* type_name() {
    static std::string s = type_from_signature(__PRETTY_FUNCTION__);
    return s.c_str();
}

template <class T>
constexpr int kind_of() {
    return std::is_same<T, bool>::value ? 3
           : std::is_integral<T>::value ? 0
           : std::is_floating_point<T>::value ? 1
           : std::is_pointer<T>::value ? 2
           : std::is_void<T>::value ? 4 : 3;
}

template <class T>
ParamDesc describe() {
    typedef typename std::remove_cv<T>::type U;
    ParamDesc d{};
    d.kind = kind_of<U>();
    d.size = sizeof(U);
    d.is_signed = std::is_signed<U>::value;
    if constexpr (std::is_pointer<U>::value) {
        typedef typename std::remove_pointer<U>::type P;
        typedef typename std::remove_cv<P>::type PU;
        d.pointee_kind = kind_of<PU>();
        if constexpr (std::is_void<PU>::value) d.pointee_size = 0;
        else d.pointee_size = sizeof(PU);
        d.pointee_signed = std::is_signed<PU>::value;
        d.pointee_const = std::is_const<P>::value;
    }
    d.type_name = type_name<T>();
    return d;
}

template <class... A, size_t... I>
void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}

template <class... A>
void invoke(void* fn, void** args) {
    call_with(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
}

template <class... A>
int register_kernel(const char* name, void (*f)(A...), int max_threads) {
    static const ParamDesc params[sizeof...(A) + 1] = {describe<A>()..., ParamDesc{}};
    return add_kernel(name, reinterpret_cast<void*>(f), &invoke<A...>, (int)sizeof...(A), params, max_threads);
}

inline float bits_to_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned float_to_bits(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }

}  // namespace cudaemu

// ---- qualifiers ---------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__ static
#define __managed__
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 900
#endif
#define CUDAEMU 1

// ---- built-in variables -------------------------------------------------------------------------
#define threadIdx (static_cast<const uint3&>(::cudaemu::g_cur->tid))
#define blockIdx (static_cast<const uint3&>(::cudaemu::g_blockIdx))
#define blockDim (static_cast<const dim3&>(::cudaemu::g_blockDim))
#define gridDim (static_cast<const dim3&>(::cudaemu::g_gridDim))
#define warpSize 32

#define CUDAEMU_STR2(x) #x
#define CUDAEMU_STR(x) CUDAEMU_STR2(x)
#define CUDAEMU_SITE __FILE__ ":" CUDAEMU_STR(__LINE__)

// ---- barriers and warp shuffles -----------------------------------------------------------------
#define __syncthreads() ::cudaemu::syncthreads(CUDAEMU_SITE)
#define __syncwarp(...) ((void)0)
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)
#define __shfl_xor_sync(mask, v, ...) ::cudaemu::shfl_at(CUDAEMU_SITE, ::cudaemu::SHFL_XOR, mask, v, __VA_ARGS__)
#define __shfl_down_sync(mask, v, ...) ::cudaemu::shfl_at(CUDAEMU_SITE, ::cudaemu::SHFL_DOWN, mask, v, __VA_ARGS__)
#define __shfl_up_sync(mask, v, ...) ::cudaemu::shfl_at(CUDAEMU_SITE, ::cudaemu::SHFL_UP, mask, v, __VA_ARGS__)
#define __shfl_sync(mask, v, ...) ::cudaemu::shfl_at(CUDAEMU_SITE, ::cudaemu::SHFL_IDX, mask, v, __VA_ARGS__)
namespace cudaemu {
template <class T>
__attribute__((always_inline)) inline T shfl_at(const char* site, int mode, unsigned mask, T v, int arg, int width = 32) {
    return shfl_t(mask, v, mode, arg, width, site);
}
}

// ---- math and bit-cast intrinsics ---------------------------------------------------------------
using std::isinf;
using std::isnan;
using std::isfinite;
__forceinline__ float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
__forceinline__ int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
__forceinline__ float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
__forceinline__ unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
__forceinline__ double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
__forceinline__ long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, 8); return i; }
__forceinline__ float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
__forceinline__ double rsqrt(double x) { return 1.0 / std::sqrt(x); }
__forceinline__ float __fdividef(float a, float b) { return a / b; }
__forceinline__ float __expf(float x) { return std::exp(x); }
__forceinline__ float __logf(float x) { return std::log(x); }
__forceinline__ float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
__forceinline__ float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
__forceinline__ int __popc(unsigned x) { return __builtin_popcount(x); }
__forceinline__ int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
__forceinline__ int __ffs(int x) { return __builtin_ffs(x); }
// CUDA's min/max are overloaded for every arithmetic pair; the usual arithmetic conversions apply.
template <class A, class B>
__forceinline__ typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    if constexpr (std::is_floating_point<C>::value) return std::fmin((C)a, (C)b);  // fminf: NaN-ignoring
    else return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B>
__forceinline__ typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    if constexpr (std::is_floating_point<C>::value) return std::fmax((C)a, (C)b);
    else return (C)a < (C)b ? (C)b : (C)a;
}
