"""cnngpu.to_numpy / convert / shares_memory: DLPack moves between numpy, torch and cupy, zero-copy
where both sides share a device (numpy <-> torch CPU here; torch CUDA <-> cupy on a GPU)."""
from __future__ import annotations

import numpy as np
import pytest

import cnngpu
from cnngpu import backends

torch = pytest.importorskip("torch")


def _a(shape=(2, 3, 4), dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_to_numpy_numpy_is_identity():
    a = _a()
    assert cnngpu.to_numpy(a) is a


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.int64])
def test_to_numpy_torch_cpu_zero_copy(dtype):
    t = (torch.randn(3, 4) * 10).to(dtype)
    a = cnngpu.to_numpy(t)
    assert isinstance(a, np.ndarray) and a.dtype == np.dtype(str(dtype).replace("torch.", ""))
    assert cnngpu.shares_memory(a, t)
    np.testing.assert_array_equal(a, t.numpy())


def test_to_numpy_torch_special_cases():
    w = torch.randn(4, 5, requires_grad=True)  # needs detach
    np.testing.assert_array_equal(cnngpu.to_numpy(w), w.detach().numpy())
    t = torch.randn(4, 6)
    view = t.t()[1:, ::2]  # non-contiguous view: still shares memory
    a = cnngpu.to_numpy(view)
    assert cnngpu.shares_memory(a, t) and a.shape == (5, 2)
    np.testing.assert_array_equal(a, view.numpy())
    bf = torch.tensor([1.0, -2.5, 3008.0], dtype=torch.bfloat16)  # exact in bf16; NumPy has none: widened
    b = cnngpu.to_numpy(bf)
    assert b.dtype == np.float32 and np.array_equal(b, [1.0, -2.5, 3008.0])


def test_to_numpy_lists_scalars_and_parameters():
    assert np.array_equal(cnngpu.to_numpy([1, 2, 3]), [1, 2, 3])
    assert cnngpu.to_numpy(2.5).shape == ()
    lin = cnngpu.Linear(3, 2, backend="numpy", seed=0)
    assert cnngpu.to_numpy(lin.weight) is lin.weight.data


def test_convert_numpy_to_torch_shares_memory():
    if not backends.is_available("triton"):
        pytest.skip(backends._why_unavailable("triton"))
    if torch.cuda.is_available():
        pytest.skip("with CUDA the triton backend's tensors live on the GPU (a copy); see the gpu test")
    for dtype in (np.float16, np.float32, np.float64, np.int64):
        a = _a(dtype=dtype)
        t = cnngpu.convert(a, "triton")
        assert isinstance(t, torch.Tensor) and t.dtype == getattr(torch, np.dtype(dtype).name)
        assert cnngpu.shares_memory(t, a)
        a.flat[0] = 42
        assert t.flatten()[0].item() == 42  # same memory, both ways
    strided = _a((4, 6))[:, ::2]
    t = cnngpu.convert(strided, "triton")
    assert cnngpu.shares_memory(t, strided) and np.array_equal(t.numpy(), strided)
    ro = _a()
    ro.flags.writeable = False  # DLPack refuses read-only arrays: a copy instead
    t = cnngpu.convert(ro, "triton")
    assert not cnngpu.shares_memory(t, ro) and np.array_equal(t.numpy(), ro)
    rev = _a((5,))[::-1]  # negative stride
    assert np.array_equal(cnngpu.convert(rev, "triton").numpy(), rev)


def test_convert_torch_to_numpy_and_round_trip():
    t = torch.randn(2, 3, dtype=torch.float64)
    a = cnngpu.convert(t, "numpy")
    assert isinstance(a, np.ndarray) and cnngpu.shares_memory(a, t)
    assert cnngpu.convert(a, "numpy") is a
    if backends.is_available("triton") and not torch.cuda.is_available():
        back = cnngpu.convert(a, "triton")
        assert cnngpu.shares_memory(back, t) and back.dtype == torch.float64


def test_shares_memory_false_for_copies():
    a = _a()
    assert cnngpu.shares_memory(a, a[1])
    assert not cnngpu.shares_memory(a, a.copy())
    t = torch.from_numpy(a.copy())
    assert not cnngpu.shares_memory(a, t)


def test_convert_errors():
    with pytest.raises(ValueError, match="unknown backend"):
        cnngpu.convert(_a(), "jax")
    if not backends.is_available("cupy"):
        with pytest.raises(backends.BackendUnavailableError, match="cupy"):
            cnngpu.convert(_a(), "cupy")


# ---- CUDA only ------------------------------------------------------------------------------
@pytest.mark.gpu
def test_cuda_torch_cupy_zero_copy():
    cupy = pytest.importorskip("cupy")
    if not backends.is_available("cupy"):
        pytest.skip(backends._why_unavailable("cupy"))
    a = _a()
    c = cnngpu.convert(a, "cupy")  # host -> device: a copy
    assert isinstance(c, cupy.ndarray) and c.dtype == a.dtype
    np.testing.assert_array_equal(cnngpu.to_numpy(c), a)
    t = cnngpu.convert(c, "triton")  # cupy -> torch CUDA: DLPack, same memory
    assert t.is_cuda and t.data_ptr() == c.data.ptr
    c2 = cnngpu.convert(t, "cupy")  # torch CUDA -> cupy: DLPack, same memory
    assert c2.data.ptr == t.data_ptr()
    c2[0, 0, 0] = 7
    assert t[0, 0, 0].item() == 7
    tc = torch.randn(3, 4, device="cuda")
    np.testing.assert_array_equal(cnngpu.to_numpy(tc), tc.cpu().numpy())
    np.testing.assert_array_equal(cnngpu.to_numpy(tc.bfloat16()), tc.bfloat16().float().cpu().numpy())
    np.testing.assert_array_equal(cnngpu.convert(tc, "numpy"), tc.cpu().numpy())


@pytest.mark.gpu
def test_cuda_numpy_to_triton_copies_to_device():
    if not backends.is_available("triton"):
        pytest.skip(backends._why_unavailable("triton"))
    a = _a()
    t = cnngpu.convert(a, "triton")
    assert t.is_cuda and t.dtype == torch.float32
    np.testing.assert_array_equal(cnngpu.to_numpy(t), a)
