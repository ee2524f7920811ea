"""One parity harness for every backend: random inputs, tolerances by dtype scaled with the
reduction length, conversion to/from native arrays, and a check that the backend really ran."""
from __future__ import annotations

import math
import zlib

import ml_dtypes
import numpy as np
import pytest

from cnngpu import backends

# TF32 (tensor-core float32: 10 stored mantissa bits) is no storage dtype, so ml_dtypes and
# torch.finfo have no entry for it; its unit round-off is written here.
_TF32_UNIT = 2.0 ** -11


def unit_roundoff(dtype: str) -> float:
    """Half the machine epsilon of ``dtype`` (ml_dtypes.finfo also knows bfloat16)."""
    if dtype == "tf32":
        return _TF32_UNIT
    return float(ml_dtypes.finfo(getattr(ml_dtypes, dtype) if dtype == "bfloat16" else np.dtype(dtype)).eps) / 2


def rng(seed=None):
    """A fresh generator; seeded from the test's own seed so failures reproduce."""
    return np.random.default_rng(seed)


def randn(gen, shape, dtype="float32", scale=1.0):
    """Random normal values (never zeros), rounded to ``dtype`` and returned as float64 NumPy
    (the exact values the device sees)."""
    a = gen.standard_normal(shape) * scale
    return round_to(a, dtype)


def round_to(a, dtype):
    """``a`` rounded to ``dtype`` (round to nearest even), as float64. bfloat16 by ml_dtypes, which
    rounds float64 once (no double rounding through float32). 'tf32' rounds to float32 only: a tf32
    operand is a float32 tensor that the tensor cores round inside the dot, which the tf32
    tolerance accounts for (there is no tf32 array dtype to round to)."""
    a = np.asarray(a, dtype=np.float64)
    if dtype == "bfloat16":
        return a.astype(ml_dtypes.bfloat16).astype(np.float64)
    if dtype == "tf32":
        dtype = "float32"
    return a.astype(dtype).astype(np.float64)


def tolerance(dtype: str, reduction_len: int = 1, factor: float = 8.0) -> float:
    """Relative error bound: factor * u * sqrt(reduction_len) + u for output rounding."""
    u = unit_roundoff(dtype)
    return factor * u * math.sqrt(max(reduction_len, 1)) + u


def assert_close(actual, expected, dtype: str, reduction_len: int = 1, what: str = "", factor: float = 8.0):
    """|actual - expected| <= tol * (|expected| + scale), scale = RMS of expected (so that values
    near zero, produced by cancellation in a long sum, are judged against the sum's magnitude):
    torch.testing.assert_close with rtol = tol and atol = tol * scale, both in float64."""
    import torch

    actual = np.array(actual, dtype=np.float64)   # copies: torch.from_numpy warns on read-only views
    expected = np.array(expected, dtype=np.float64)
    # Checked here, not by torch: torch accepts inf == inf, and its message would not point at the
    # likely cause (output elements the kernel never wrote).
    if actual.shape == expected.shape and not np.all(np.isfinite(actual)):
        raise AssertionError(f"{what}: {np.sum(~np.isfinite(actual))} of {actual.size} non-finite values "
                             f"(unwritten output?)")
    tol = tolerance(dtype, reduction_len, factor)
    scale = float(np.sqrt(np.mean(expected ** 2))) if expected.size else 0.0
    atol = tol * (scale + 1e-30)
    torch.testing.assert_close(
        torch.from_numpy(actual), torch.from_numpy(expected), rtol=tol, atol=atol, equal_nan=False,
        msg=lambda m: f"{what}: dtype {dtype}, reduction {reduction_len}: tol {tol:.2e} relative "
                      f"+ {atol:.2e} absolute (tol * RMS of expected)\n{m}")


def native(backend_name: str, a: np.ndarray, dtype: str):
    """NumPy float64 -> the backend's native array of ``dtype`` (torch CPU under the interpreter)."""
    if backend_name == "numpy":
        return np.asarray(a, dtype=dtype)
    if backend_name == "triton":
        import torch
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64) if a.dtype.kind == "f" else np.ascontiguousarray(a))
        tdt = getattr(torch, dtype)
        return t.to(device=dev, dtype=tdt)
    if backend_name == "cupy":
        cupy = cupy_module()
        if dtype == "bfloat16":   # from the bit pattern: no cupy arithmetic on bfloat16 needed
            bits = (round_to(a, "bfloat16").astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
            return cupy.asarray(bits).view(cupy.dtype("bfloat16"))
        return cupy.asarray(np.asarray(a, dtype=dtype))
    raise ValueError(backend_name)


def cupy_module():
    """The cupy module the cupy backend runs on (cupy itself, or the CPU emulation's stand-in
    under CNNGPU_CUDA_EMULATE=1)."""
    from cnngpu.backends.cupy_backend._cupy import cupy
    return cupy


def relayout(a, layout: str):
    """The same values as ``a`` (N, C, H, W; numpy, torch or cupy) in another memory layout:
    'nchw' (contiguous), 'channels_last', or 'sliced' (a strided view into a larger buffer filled
    with NaN, or -1 for integers, so a read outside the view shows)."""
    if type(a).__module__.startswith("torch"):
        import torch
        if layout in ("nchw", "channels_last"):
            return a.contiguous(memory_format=torch.channels_last if layout == "channels_last" else
                                torch.contiguous_format)
        full = lambda shape, v: torch.full(shape, v, dtype=a.dtype, device=a.device)  # noqa: E731
        floating = a.is_floating_point()
    else:
        xp = cupy_module() if backends.backend_of(a) == "cupy" else np
        if layout in ("nchw", "channels_last"):
            return (xp.ascontiguousarray(a) if layout == "nchw" else
                    xp.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2))
        full = lambda shape, v: xp.full(shape, v, dtype=a.dtype)  # noqa: E731
        floating = a.dtype.kind == "f"
    if layout != "sliced":
        raise ValueError(layout)
    N, C, H, W = a.shape
    big = full((N, 2 * C, H + 1, 2 * W + 1), float("nan") if floating else -1)
    big[:, ::2, 1:, 1::2] = a
    return big[:, ::2, 1:, 1::2]


def to_f64(x) -> np.ndarray:
    """Any native array -> float64 (or int64) NumPy."""
    owner = backends.backend_of(x)
    if owner == "numpy":
        return x.astype(np.float64) if x.dtype.kind == "f" else x
    if owner == "triton":
        import torch
        x = x.detach()
        return x.to("cpu", torch.float64).numpy() if x.is_floating_point() else x.cpu().numpy()
    if owner == "cupy":
        cupy = cupy_module()
        if str(x.dtype) == "bfloat16":
            bits = cupy.asnumpy(cupy.ascontiguousarray(x).view(cupy.uint16)).astype(np.uint32) << 16
            return bits.view(np.float32).astype(np.float64)
        return cupy.asnumpy(x).astype(np.float64) if x.dtype.kind == "f" else cupy.asnumpy(x)
    raise TypeError(type(x))


# The backends a parity body runs on. 'cupy-reverse' is the cupy backend on the CPU emulation with
# threads and blocks scheduled in reverse order: a result that differs from 'cupy' is a race.
PARITY_BACKENDS = ["triton", pytest.param("cupy", marks=pytest.mark.cupy),
                   pytest.param("cupy-reverse", marks=pytest.mark.cupy)]


def backend_under_test(name: str):
    """Generator for a parity test's ``be`` fixture over PARITY_BACKENDS: yields the backend module
    (skipping with the registry's reason where it cannot run), for 'cupy-reverse' inside
    ``cudaemu.schedule('reverse')`` (skipped where cupy is not emulated: a GPU has no such switch)."""
    if name != "cupy-reverse":
        yield require(name)
        return
    be = require("cupy")
    if not backends._cupy_emulated():
        pytest.skip("thread order is chosen on the CPU emulation only (CNNGPU_CUDA_EMULATE=1)")
    from cnngpu.testing import cudaemu
    with cudaemu.schedule("reverse"):
        yield be


def require(backend_name: str):
    """Skip the test when the backend cannot run here, with the registry's reason."""
    if not backends.is_available(backend_name):
        pytest.skip(backends._why_unavailable(backend_name))
    return backends.get_backend(backend_name)


class launches:
    """Context manager asserting that ``kernel`` was launched on backend ``be`` inside the block."""

    def __init__(self, be, *kernels):
        self.be, self.kernels = be, kernels

    def __enter__(self):
        self.before = {k: self.be.LAUNCHES[k] for k in self.kernels}
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            for k in self.kernels:
                assert self.be.LAUNCHES[k] > self.before[k], f"kernel {k!r} did not run on backend {self.be.name!r}"
        return False


def seed_of(*args) -> int:
    """A reproducible seed from test parameters (str hashes are salted per process)."""
    return zlib.crc32(repr(args).encode())


def check_backward(forward, backward, inputs, names, *, eps=1e-6, rtol=1e-5, atol=1e-6):
    """A NumPy (forward, backward) pair checked by ``torch.autograd.gradcheck`` in float64: the full
    Jacobian from ``backward`` (one call per output element) against central differences of
    ``forward`` with step ``eps``, elementwise |analytic - numeric| <= atol + rtol * |numeric|.

    ``forward(*arrays) -> ndarray``; ``backward(dy, *arrays) -> gradients`` aligned with ``inputs``
    (float64 arrays, not modified; anything else the pair needs is captured by the closures);
    ``names`` label the gradients in messages. The torch.autograd.Function wrapper is what makes
    gradcheck check the NumPy backward (not torch's autograd of some torch forward). rtol and atol
    default tighter than gradcheck's (1e-3, 1e-5), as the hand-written check before them."""
    import torch

    class NumpyPair(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *ts):
            ctx.save_for_backward(*ts)
            return torch.from_numpy(np.array(forward(*(t.detach().numpy() for t in ts)), dtype=np.float64))

        @staticmethod
        def backward(ctx, dy):
            grads = backward(dy.detach().numpy(), *(t.detach().numpy() for t in ctx.saved_tensors))
            assert len(grads) == len(names), f"backward returned {len(grads)} gradients for {names}"
            out = []
            for g, t, name in zip(grads, ctx.saved_tensors, names):
                assert g is not None, f"{name}: backward returned None"
                g = np.array(g, dtype=np.float64)
                assert g.shape == t.shape, f"{name}: shape {g.shape} != input {tuple(t.shape)}"
                out.append(torch.from_numpy(g))
            return tuple(out)

    ts = tuple(torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in inputs)
    try:
        torch.autograd.gradcheck(NumpyPair.apply, ts, eps=eps, atol=atol, rtol=rtol)
    except torch.autograd.gradcheck.GradcheckError as e:
        inputs_named = ", ".join(f"input {i} ({n})" for i, n in enumerate(names))
        raise AssertionError(f"gradcheck of {inputs_named}:\n{e}") from None
