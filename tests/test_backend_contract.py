"""Every backend implements the op contract of cnngpu/backends/ops.py: every op, with the contract's
signature (names, order, kinds, defaults), and the array helpers. The backend modules are imported
directly (a GPU backend's module imports without a device), so drift fails here on any machine."""
import importlib

import pytest

from cnngpu.backends import ops

_PACKAGES = {"numpy": "cnngpu.backends.numpy_backend", "triton": "cnngpu.backends.triton_backend",
             "cupy": "cnngpu.backends.cupy_backend"}
_NEEDS = {"numpy": "numpy", "triton": "triton", "cupy": "cupy"}


@pytest.fixture(params=list(_PACKAGES), scope="module")
def module(request):
    pytest.importorskip(_NEEDS[request.param])
    return importlib.import_module(_PACKAGES[request.param])


@pytest.mark.parametrize("op", ops.OPS)
def test_op_matches_contract(module, op):
    assert callable(getattr(module, op, None)), f"{module.__name__} lacks {op}"
    assert ops.drift(getattr(module, op), op) is None, ops.drift(getattr(module, op), op)


def test_helpers_present(module):
    missing = [h for h in ops.HELPERS if not hasattr(module, h)]
    assert not missing, f"{module.__name__} lacks {missing}"
    assert module.name in _PACKAGES and _PACKAGES[module.name] == module.__name__


def test_drift_is_detected():
    """The check itself: an extra parameter, a renamed one or another default are drift."""
    def extra(x, w, b, precision="ieee", tile=64):
        pass

    def renamed(x, weight, b, precision="ieee"):
        pass

    def other_default(x, w, b, precision="tf32"):
        pass

    def same(x, w, b, precision: str = "ieee"):   # annotations do not matter
        pass

    for fn in (extra, renamed, other_default):
        assert ops.drift(fn, "linear_forward") is not None
    assert ops.drift(same, "linear_forward") is None
