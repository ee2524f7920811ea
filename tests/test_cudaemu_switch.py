"""The switch CNNGPU_CUDA_EMULATE=1: the cupy backend on the CPU emulation, as the registry, the
array-type dispatch and ``cnngpu info`` see it (conftest turns it on where no CUDA device is)."""
import numpy as np
import pytest

import cnngpu.functional as F
from cnngpu import backends
from cnngpu.__main__ import main
from cnngpu.testing import cudaemu
from cnngpu.testing.cudaemu import cupy_api

pytestmark = pytest.mark.skipif(cudaemu.why_unavailable() is not None, reason=str(cudaemu.why_unavailable()))


def test_registry_honours_the_switch(monkeypatch):
    monkeypatch.setenv("CNNGPU_CUDA_EMULATE", "1")
    assert backends._why_unavailable("cupy") is None and backends.is_available("cupy")
    assert backends.default_backend() != "cupy"       # a verification tool, never the default
    monkeypatch.setenv("CNNGPU_CUDA_EMULATE", "0")
    why = backends._why_unavailable("cupy")
    assert why is None or "CNNGPU_CUDA_EMULATE=1" in why


def test_backend_of_emulated_arrays():
    assert backends.backend_of(cupy_api.empty((3,), np.float32)) == "cupy"
    assert backends.backend_of(np.empty(3)) == "numpy"


def test_info_says_emulated(monkeypatch, capsys):
    monkeypatch.setenv("CNNGPU_CUDA_EMULATE", "1")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "cupy    available" in out and "emulated on the CPU" in out


def test_functional_runs_the_real_launcher_on_the_emulation():
    if not backends._cupy_emulated():
        pytest.skip("the cupy backend is not emulated in this session (a CUDA device is present)")
    be = backends.get_backend("cupy")
    assert be.array_type is cupy_api.ndarray
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    before = cudaemu.EXECUTED["relu_fwd"]
    y = F.relu(be.asarray(x), backend="cupy")
    assert cudaemu.EXECUTED["relu_fwd"] == before + 1 and be.LAUNCHES["relu_fwd"] >= 1
    np.testing.assert_array_equal(be.to_numpy(y), np.maximum(x, 0))
