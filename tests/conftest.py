"""Test set-up: when no CUDA device is present, Triton runs in its interpreter on CPU tensors
(TRITON_INTERPRET=1) and the cupy backend on the CPU emulation of its CUDA kernels
(CNNGPU_CUDA_EMULATE=1, cnngpu.testing.cudaemu); every backend poisons the outputs it allocates
(NaN) so skipped elements cannot pass. At the end of a session that ran the cupy tests on the
emulation, every CUDA entry point must have executed (``pytest_sessionfinish``)."""
import os

try:
    import torch
    _cuda = torch.cuda.is_available()
except ImportError:  # torch missing: triton tests skip themselves
    _cuda = False
if not _cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("CNNGPU_CUDA_EMULATE", "1")

import pytest  # noqa: E402

import cnngpu.backends as _backends  # noqa: E402

_backends.set_poison(True)


def _param_values(item):
    callspec = getattr(item, "callspec", None)
    return tuple(callspec.params.values()) if callspec is not None else ()


def pytest_collection_modifyitems(config, items):
    # the reverse thread order exists on the CPU emulation only, and GPU-sized cases never run there
    never = {id(it) for it in items if "gpu" in it.keywords and "cupy-reverse" in _param_values(it)}
    if never:
        config.hook.pytest_deselected(items=[it for it in items if id(it) in never])
        items[:] = [it for it in items if id(it) not in never]
    if _cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none visible to torch here); run on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def emulated_cupy():
    """The cupy backend running on the CPU emulation: the registry's under CNNGPU_CUDA_EMULATE=1
    (every machine without a CUDA device), else imported afresh for the module with ``cupy`` bound
    to the emulation (restored afterwards), so the emulator's own tests run on GPU machines too."""
    import importlib
    import sys

    from cnngpu.testing import cudaemu
    from cnngpu.testing.cudaemu import cupy_api
    why = cudaemu.why_unavailable()
    if why is not None:
        pytest.skip(why)
    if _backends._cupy_emulated():
        yield _backends.get_backend("cupy")
        return
    mine = lambda k: k == "cupy" or k.startswith("cnngpu.backends.cupy_backend")  # noqa: E731
    saved = {k: v for k, v in sys.modules.items() if mine(k)}
    saved_attr = getattr(_backends, "cupy_backend", None)
    for k in saved:
        del sys.modules[k]
    sys.modules["cupy"] = cupy_api
    try:
        yield importlib.import_module("cnngpu.backends.cupy_backend")
    finally:
        for k in [k for k in sys.modules if mine(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
        if saved_attr is not None:
            _backends.cupy_backend = saved_attr


# ----------------------------------------------------------------------------------------------
# Coverage of the CUDA kernels on the emulation. Each process (every xdist worker) hands the entry
# points it executed to the controlling process; when a whole-suite run (no -k/-m, no file or
# node selection) on the emulation ends, every extern "C" __global__ of kernels/cuda must be among
# them, else the session fails. The terminal summary counts the cupy tests (cupy-marked, or in
# test_cupy_* / test_cudaemu_*) that executed and that were skipped.
# ----------------------------------------------------------------------------------------------
_CUPY_FILES = ("test_cupy_", "test_cudaemu_")
_cupy_outcomes = {}
_executed = set()


def _is_cupy_test(report) -> bool:
    return "cupy" in report.keywords or report.nodeid.split("/")[-1].startswith(_CUPY_FILES)


def pytest_runtest_logreport(report):
    if not _is_cupy_test(report):
        return
    if report.when == "call" or report.skipped:
        _cupy_outcomes[report.nodeid] = "skipped" if report.skipped else "executed"


def _whole_suite(config) -> bool:
    """True when the session runs all of tests/ (no -k, -m, --deselect, --ignore, --lf, narrower path
    or node id)."""
    from pathlib import Path
    opt = config.option
    # getattr: options of a disabled plugin (e.g. --lf under -p no:cacheprovider) are not defined
    narrowed = any(getattr(opt, name, None) for name in
                   ("keyword", "markexpr", "deselect", "ignore", "ignore_glob", "lf"))
    if narrowed or getattr(opt, "collectonly", False) or not config.args:
        return False
    here = Path(__file__).parent.resolve()
    return all((config.invocation_params.dir / a).resolve() == here for a in config.args)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):  # xdist controller: a worker's executed entry points
    _executed.update(getattr(node, "workeroutput", {}).get("cudaemu_executed", ()))


def pytest_sessionfinish(session, exitstatus):
    if not _backends._cupy_emulated():
        return
    from cnngpu.testing import cudaemu
    mine = {k for k, v in cudaemu.EXECUTED.items() if v}
    if hasattr(session.config, "workeroutput"):  # an xdist worker: report to the controller
        session.config.workeroutput["cudaemu_executed"] = sorted(mine)
        return
    _executed.update(mine)
    if _whole_suite(session.config) and session.exitstatus == 0:
        missing = sorted(cudaemu.entry_points() - _executed)
        session.config._cudaemu_missing = missing
        if missing:
            session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _cupy_outcomes:
        n = len(_cupy_outcomes)
        ran = sum(v == "executed" for v in _cupy_outcomes.values())
        where = "on the CPU emulation" if _backends._cupy_emulated() else "on cupy"
        terminalreporter.write_line(f"cupy tests: {ran} of {n} executed {where} ({100.0 * ran / n:.1f}%), "
                                    f"{n - ran} skipped")
    missing = getattr(config, "_cudaemu_missing", None)
    if missing is not None:
        if missing:
            terminalreporter.write_line(f"FAILED: CUDA entry points never executed in this session: {missing}",
                                        red=True)
        else:
            from cnngpu.testing import cudaemu
            terminalreporter.write_line(f"every CUDA entry point executed ({len(cudaemu.entry_points())})")
