"""The emulation runtime (cnngpu.testing.cudaemu) on tiny custom kernels: barriers, shuffles,
dynamic shared memory, NaN-filled shared memory, and every check it promises to fail loudly on
(out-of-bounds writes, races between thread orders, divergent barriers, warp collectives after an
exit, deadlock, argument types), plus the translator and the compile cache."""
import numpy as np
import pytest

from cnngpu.testing import cudaemu
from cnngpu.testing.cudaemu import build, cupy_api as cp, translate

SRC = r'''
extern "C" __global__ void __launch_bounds__(128) block_sum(const float* x, float* y) {
    __shared__ float s[128];
    s[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) s[threadIdx.x] += s[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) y[blockIdx.x] = s[0];
}
extern "C" __global__ void shuffles(const int* x, int* y) {
    const int l = threadIdx.x, v = x[l];
    y[l] = __shfl_xor_sync(0xffffffffu, v, 5);
    y[32 + l] = __shfl_down_sync(0xffffffffu, v, 3);
    y[64 + l] = __shfl_up_sync(0xffffffffu, v, 2, 8);
    y[96 + l] = __shfl_sync(0xffffffffu, v, 7, 16);
}
extern "C" __global__ void dyn_reverse(const float* x, float* y, int n) {
    extern __shared__ float buf[];
    const int t = threadIdx.x;
    buf[t] = x[t];
    __syncthreads();
    y[t] = buf[n - 1 - t];
}
extern "C" __global__ void read_unwritten_shared(float* y) {
    __shared__ float s[64];
    if (threadIdx.x < 32) s[threadIdx.x] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void write_past_end(float* y, int n) {
    y[threadIdx.x] = 1.0f;  // launched with more threads than n
}
extern "C" __global__ void shared_overflow(float* y) {
    __shared__ float s[32];
    s[threadIdx.x] = 2.0f;  // launched with 33 threads
    __syncthreads();
    y[0] = s[0];
}
extern "C" __global__ void racy_neighbour(float* y) {
    __shared__ float s[64];
    s[threadIdx.x] = (float)threadIdx.x;
    // missing __syncthreads(): the neighbour may not have written yet
    y[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}
extern "C" __global__ void divergent_sync(float* y) {
    if (threadIdx.x < 16)
        __syncthreads();
    else
        __syncthreads();  // barriers are told apart by source line
    y[threadIdx.x] = 0.0f;
}
extern "C" __global__ void sync_after_exit(float* y) {
    if (threadIdx.x == 5) return;
    __syncthreads();
    y[threadIdx.x] = 0.0f;
}
extern "C" __global__ void shfl_after_exit(float* y) {
    if (threadIdx.x == 3) return;
    y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
extern "C" __global__ void deadlock(float* y) {
    if (threadIdx.x < 32) y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    else __syncthreads();
}
extern "C" __global__ void write_const(const float* x) {
    const_cast<float*>(x)[threadIdx.x] = 0.0f;
}
extern "C" __global__ void typed(const float* x, long long n, int k, float a, double b, unsigned short* h) {
    h[0] = (unsigned short)(x[0] + n + k + a + b);
}
'''


@pytest.fixture(scope="module")
def mod():
    return cudaemu.RawModule(code=SRC, options=("--std=c++17",))


def f32(a):
    return cp.asarray(np.asarray(a, np.float32))


def test_block_barrier_reduction(mod):
    x = np.random.default_rng(0).standard_normal(3 * 128).astype(np.float32)
    y = cp.empty((3,), np.float32)
    for order in ("forward", "reverse"):
        with cudaemu.schedule(order):
            mod.get_function("block_sum")((3,), (128,), (f32(x), y))
        np.testing.assert_allclose(cp.asnumpy(y), x.reshape(3, 128).sum(1), rtol=1e-5)


def test_shuffles_follow_cuda_semantics(mod):
    x = np.arange(100, 132, dtype=np.int32)
    y = cp.empty((128,), np.int32)
    mod.get_function("shuffles")((1,), (32,), (cp.asarray(x), y))
    got, lanes = cp.asnumpy(y).reshape(4, 32), np.arange(32)
    np.testing.assert_array_equal(got[0], x[lanes ^ 5])
    np.testing.assert_array_equal(got[1], x[np.where(lanes + 3 < 32, lanes + 3, lanes)])          # own value past the end
    np.testing.assert_array_equal(got[2], x[np.where(lanes % 8 >= 2, lanes - 2, lanes)])           # width 8 segments
    np.testing.assert_array_equal(got[3], x[(lanes // 16) * 16 + 7])                               # width 16 index


def test_dynamic_shared_memory(mod):
    x = np.arange(64, dtype=np.float32)
    y = cp.empty((64,), np.float32)
    mod.get_function("dyn_reverse")((1,), (64,), (f32(x), y, np.int32(64)), shared_mem=64 * 4)
    np.testing.assert_array_equal(cp.asnumpy(y), x[::-1])


def test_dynamic_shared_overflow_detected(mod):
    with pytest.raises(cudaemu.CudaEmuError, match="dynamic shared memory"):
        mod.get_function("dyn_reverse")((1,), (64,), (f32(np.ones(64)), cp.empty((64,), np.float32), np.int32(64)),
                                        shared_mem=32 * 4)


def test_shared_memory_starts_as_nan(mod):
    y = cp.empty((64,), np.float32)
    mod.get_function("read_unwritten_shared")((1,), (64,), (y,))
    got = cp.asnumpy(y)
    assert (got[:32] == 1).all() and np.isnan(got[32:]).all()


def test_write_past_end_of_buffer_detected(mod):
    y = cp.empty((40,), np.float32)
    with pytest.raises(cudaemu.OutOfBoundsError, match=r"write_past_end wrote 0 bytes past the end of argument 0"):
        mod.get_function("write_past_end")((1,), (41,), (y, np.int32(40)))


def test_write_past_end_of_a_view_detected(mod):
    """Arguments are staged separately: part[0] overflowing into part[1] is caught."""
    part = cp.empty((2, 32), np.float32)
    with pytest.raises(cudaemu.OutOfBoundsError, match="past the end"):
        mod.get_function("write_past_end")((1,), (33,), (part[0], np.int32(32)))


def test_shared_variable_overflow_detected(mod):
    with pytest.raises(cudaemu.CudaEmuError, match=r"past the end of __shared__ s"):
        mod.get_function("shared_overflow")((1,), (33,), (cp.empty((1,), np.float32),))


def test_race_shows_between_orders(mod):
    outs = []
    for order in ("forward", "reverse"):
        y = cp.empty((64,), np.float32)
        with cudaemu.schedule(order):
            mod.get_function("racy_neighbour")((1,), (64,), (y,))
        outs.append(cp.asnumpy(y))
    assert not np.array_equal(outs[0], outs[1], equal_nan=True)


def test_divergent_syncthreads_detected(mod):
    with pytest.raises(cudaemu.CudaEmuError, match="__syncthreads reached from different places"):
        mod.get_function("divergent_sync")((1,), (32,), (cp.empty((32,), np.float32),))


def test_syncthreads_after_exit_detected(mod):
    with pytest.raises(cudaemu.CudaEmuError, match=r"had exited"):
        mod.get_function("sync_after_exit")((1,), (32,), (cp.empty((32,), np.float32),))


def test_shuffle_after_lane_exit_detected(mod):
    with pytest.raises(cudaemu.CudaEmuError, match=r"exited"):
        mod.get_function("shfl_after_exit")((1,), (32,), (cp.empty((32,), np.float32),))


def test_deadlock_detected(mod):
    with pytest.raises(cudaemu.CudaEmuError, match="deadlock"):
        mod.get_function("deadlock")((1,), (64,), (cp.empty((64,), np.float32),))


def test_write_to_const_argument_detected(mod):
    with pytest.raises(cudaemu.OutOfBoundsError, match="wrote into const argument 0"):
        mod.get_function("write_const")((1,), (4,), (f32(np.ones(4)),))


def test_launch_bounds_enforced(mod):
    with pytest.raises(cudaemu.CudaEmuError, match=r"__launch_bounds__\(128\)"):
        mod.get_function("block_sum")((1,), (256,), (f32(np.ones(256)), cp.empty((1,), np.float32)))


def test_signature_and_arguments_checked(mod):
    k = mod.get_function("typed")
    assert k.signature == "typed(const float*, long long int, int, float, double, short unsigned int*)"
    x, h = f32([1.0]), cp.empty((1,), np.uint16)
    k((1,), (1,), (x, 2, np.int32(3), np.float32(4), 5.0, h))   # Python int -> long long, float -> double
    assert cp.asnumpy(h)[0] == 15
    bad = [
        ((x, np.int32(2), np.int32(3), np.float32(4), 5.0, h), r"argument 1 \(long long int\) got int32"),
        ((x, 2, 3, np.float32(4), 5.0, h), r"argument 2 \(int\) got int64"),
        ((x, 2, np.int32(3), 4.0, 5.0, h), r"argument 3 \(float\) got float64"),
        ((x, 2, np.int32(3), np.uint32(4), 5.0, h), r"argument 3 \(float\)"),
        ((np.ones(1, np.float32), 2, np.int32(3), np.float32(4), 5.0, h), "host numpy.ndarray"),
        ((cp.empty((1,), np.float16), 2, np.int32(3), np.float32(4), 5.0, h), r"argument 0 \(const float\*\) got an array of float16"),
        ((x, 2, np.int32(3), np.float32(4), 5.0, cp.empty((1,), np.int16)), r"argument 5 .* got an array of int16"),
        ((x, 2, np.int32(3), np.float32(4), 5.0), "takes 6 arguments, got 5"),
    ]
    for args, msg in bad:
        with pytest.raises(cudaemu.ArgumentError, match=msg):
            k((1,), (1,), args)


def test_translator_rewrites_asm_and_shared():
    src = ('__device__ void f(unsigned& a, const void* p) {\n'
           '  __shared__ __align__(16) float s[2][8], t;\n'
           '  asm volatile("{ .reg .u64 q; cvta.to.shared.u64 q, %1; cvt.u32.u64 %0, q; }"\n'
           '      : "=r"(a) : "l"(p) : "memory");\n'
           '}\n'
           'extern "C" __global__ void __launch_bounds__(64, 2) k() {}\n')
    out = translate(src, "x.cu")
    assert "asm" not in out.replace("asm text", "")
    assert "ptx_out('=', 'r', a)" in out and "ptx_in('l', p)" in out and '"x.cu:3"' in out
    assert 'shared_var(&__cuemu_key' in out and '"s"' in out and '"t"' in out and "max_align(16" in out
    assert 'register_kernel("k", &k, (int)(64))' in out
    assert out.splitlines()[6] == src.splitlines()[5]   # after '#line 1', the source's line numbers are kept
    with pytest.raises(cudaemu.TranslateError, match="namespace scope"):
        translate("__shared__ float g[4];\n", "y.cu")


def test_compile_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNGPU_CUDAEMU_CACHE", str(tmp_path))
    src = 'extern "C" __global__ void k(float* y) { y[threadIdx.x] = VALUE; }\n'
    cudaemu.RawModule(code=src, options=("-DVALUE=1.0f",))
    assert build.LAST_BUILD["cached"] is False
    cudaemu.RawModule(code=src, options=("-DVALUE=1.0f",))
    assert build.LAST_BUILD["cached"] is True
    m = cudaemu.RawModule(code=src, options=("-DVALUE=2.0f",))      # another specialisation: rebuilt
    assert build.LAST_BUILD["cached"] is False
    y = cp.empty((4,), np.float32)
    m.get_function("k")((1,), (4,), (y,))
    assert (cp.asnumpy(y) == 2).all()
    with pytest.raises(ValueError, match="not understood"):
        cudaemu.RawModule(code=src, options=("--bogus",))


def test_far_out_of_bounds_access_is_an_error_not_a_crash():
    src = ('extern "C" __global__ void far(float* y, long long off) { y[off] = 1.0f; }\n'
           'extern "C" __global__ void far_read(const float* x, float* y, long long off) { y[0] = x[off]; }\n')
    m = cudaemu.RawModule(code=src)
    y = cp.empty((4,), np.float32)
    for off in (100_000, -100_000):
        with pytest.raises(cudaemu.CudaEmuError, match="illegal memory access"):
            m.get_function("far")((1,), (1,), (y, off))
    with pytest.raises(cudaemu.CudaEmuError, match="illegal memory access"):
        m.get_function("far_read")((1,), (1,), (f32([1, 2]), y, 1 << 22))
    m.get_function("far")((1,), (1,), (y, 3))   # the runtime is usable after a fault
    assert cp.asnumpy(y)[3] == 1


def test_dynamic_shared_memory_opt_in(mod):
    """Above 48 KiB a launch needs max_dynamic_shared_size_bytes (cudaFuncAttributeMaxDynamicSharedMemorySize),
    kept per module and kernel; the dynamic size must not exceed it."""
    n, smem = 1024, 64 * 1024
    x = np.arange(n, dtype=np.float32)
    m = cudaemu.RawModule(code=SRC, options=("--std=c++17",))
    with pytest.raises(cudaemu.CudaEmuError, match="exceed 48 KiB"):
        m.get_function("dyn_reverse")((1,), (n,), (f32(x), cp.empty((n,), np.float32), np.int32(n)),
                                      shared_mem=smem)
    m.get_function("dyn_reverse").max_dynamic_shared_size_bytes = smem - 4
    k = m.get_function("dyn_reverse")
    assert k.max_dynamic_shared_size_bytes == smem - 4
    with pytest.raises(cudaemu.CudaEmuError, match="exceed its max_dynamic_shared_size_bytes"):
        k((1,), (n,), (f32(x), cp.empty((n,), np.float32), np.int32(n)), shared_mem=smem)
    k.max_dynamic_shared_size_bytes = smem
    y = cp.empty((n,), np.float32)
    k((1,), (n,), (f32(x), y, np.int32(n)), shared_mem=smem)
    np.testing.assert_array_equal(cp.asnumpy(y), x[::-1])
