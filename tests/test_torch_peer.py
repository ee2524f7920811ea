"""Peer suite: PyTorch's own test samples through ``cnngpu.torch``, forward values and gradients vs torch.

The samples are torch's: ``OpInfo.sample_inputs`` of ``common_methods_invocations.op_db`` for the
functional forms and ``ModuleInfo.module_inputs_func`` of ``common_modules.module_db`` for the modules
(float32 and float64, CPU, so the numpy backend), plus a small fp32 sample of the same under the Triton
interpreter (``backend='triton'`` on CPU tensors). Each sample runs through torch and through cnngpu.torch on
clones of the same tensors; the outputs, the gradients of ``sum(out * g)`` (g random) with respect to every
tensor that requires grad (inputs, weights, module parameters) and every buffer or tensor argument the op
mutates (running statistics) must agree within tolerances by dtype scaled with the input size.

Every sample either passes or matches a row of ``EXCLUSIONS`` (a deliberate difference: cnngpu.torch must
then refuse it with a clear ValueError/TypeError, which is checked) or of ``PENDING_I14A`` (features another
branch brings: skipped unless ``CNNGPU_PEER_PENDING=1``). README, "Peer suite", lists both tables.
Large sample lists (max_pool2d has 1440) are subsampled deterministically (every k-th sample).
"""
from __future__ import annotations

import copy
import functools
import math
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")   # torch.testing._internal needs it (the dev extra)

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal.common_modules import module_db  # noqa: E402

import cnngpu.torch as ct  # noqa: E402
from harness import tolerance  # noqa: E402

DTYPES = (torch.float32, torch.float64)
MAX_SAMPLES = 40          # per op (or module) and dtype: larger lists are subsampled evenly
TRITON_SAMPLES = 2        # per op/module, fp32, under the interpreter
RUN_PENDING = os.environ.get("CNNGPU_PEER_PENDING") == "1"

# torch.nn.functional name -> cnngpu.torch function
OPS: Dict[str, Callable[..., Any]] = {
    "nn.functional.conv2d": ct.conv2d, "nn.functional.max_pool2d": ct.max_pool2d,
    "nn.functional.avg_pool2d": ct.avg_pool2d, "nn.functional.batch_norm": ct.batch_norm,
    "nn.functional.layer_norm": ct.layer_norm, "nn.functional.group_norm": ct.group_norm,
    "nn.functional.instance_norm": ct.instance_norm, "nn.functional.linear": ct.linear,
    "nn.functional.relu": ct.relu, "nn.functional.cross_entropy": ct.cross_entropy,
}
# torch.nn module -> cnngpu.torch module (None: cnngpu.torch has none yet)
MODULES: Dict[Any, Optional[Any]] = {
    torch.nn.Conv2d: ct.Conv2d, torch.nn.MaxPool2d: ct.MaxPool2d, torch.nn.AvgPool2d: ct.AvgPool2d,
    torch.nn.BatchNorm1d: getattr(ct, "BatchNorm1d", None), torch.nn.BatchNorm2d: ct.BatchNorm2d,
    torch.nn.LayerNorm: ct.LayerNorm, torch.nn.GroupNorm: ct.GroupNorm, torch.nn.InstanceNorm2d: ct.InstanceNorm2d,
    torch.nn.Linear: ct.Linear, torch.nn.ReLU: ct.ReLU, torch.nn.CrossEntropyLoss: ct.CrossEntropyLoss,
}


class Case(NamedTuple):
    """One sample, described by what the exclusion predicates look at."""
    kind: str                  # 'op' or 'module'
    name: str                  # op name ('nn.functional.conv2d') or module class name ('Conv2d')
    input_shape: Tuple[int, ...]
    args: Tuple[Any, ...]      # op: positional args after the input; module: constructor args
    kwargs: Dict[str, Any]     # op: keyword args; module: constructor kwargs
    desc: str                  # module: torch's sample description


# ---------------------------------------------------------------------------------------------------------------
# Exclusions. Each row: (op or module name, predicate on a Case, reason). Deliberate differences only: cnngpu.torch
# refuses these with a ValueError/TypeError (checked by the test), torch accepts them.
def _kw(c: Case, key: str, default: Any = None) -> Any:
    return c.kwargs.get(key, default)


EXCLUSIONS: List[Tuple[str, Callable[[Case], bool], str]] = [
]

# Features another branch (i14a, the torch.library rewrite of cnngpu.torch) brings: skipped until it is
# merged (CNNGPU_PEER_PENDING=1 runs them), then this table is emptied.
PENDING_I14A: List[Tuple[str, Callable[[Case], bool], str]] = [
]


def _why_excluded(case: Case, table: List[Tuple[str, Callable[[Case], bool], str]]) -> Optional[str]:
    for name, pred, reason in table:
        if name == case.name and pred(case):
            return reason
    return None


# ---------------------------------------------------------------------------------------------------------------
# Samples (generated with a fixed seed, cached per process; the test ids name only shapes and options, so every
# xdist worker collects the same ids)
def _short(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return tuple(v.shape)
    if isinstance(v, (list, tuple)):
        return type(v)(_short(a) for a in v)
    if isinstance(v, dict):
        return {k: _short(a) for k, a in v.items()}
    return v


def _subsample(n: int, limit: int) -> List[int]:
    if n <= limit:
        return list(range(n))
    step = n / limit
    return sorted({int(i * step) for i in range(limit)})


@functools.lru_cache(maxsize=None)
def _op_samples(op_name: str, dtype: torch.dtype) -> List[Any]:
    (info,) = [o for o in op_db if o.name == op_name and o.variant_test_name == ""]
    torch.manual_seed(0)
    return list(info.sample_inputs("cpu", dtype, requires_grad=True))


@functools.lru_cache(maxsize=None)
def _module_samples(cls: Any, dtype: torch.dtype, training: bool) -> List[Any]:
    (info,) = [m for m in module_db if m.module_cls is cls]
    torch.manual_seed(0)
    return list(info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=training))


def _op_case(op_name: str, s: Any) -> Case:
    return Case("op", op_name, tuple(s.input.shape), tuple(_short(s.args)), _short(s.kwargs), s.name)


def _module_case(cls: Any, mi: Any) -> Case:
    fi = mi.forward_input
    x = fi.args[0] if fi.args else fi.kwargs["input"]
    return Case("module", cls.__name__, tuple(x.shape), tuple(mi.constructor_input.args),
                dict(mi.constructor_input.kwargs), mi.desc)


def _op_params(dtypes: Tuple[torch.dtype, ...], limit: int) -> List[Any]:
    out = []
    for op_name in OPS:
        for dt in dtypes:
            samples = _op_samples(op_name, dt)
            for i in _subsample(len(samples), limit):
                c = _op_case(op_name, samples[i])
                ident = f"{op_name.split('.')[-1]}-{str(dt)[6:]}-{i}-{c.input_shape}-{c.args}-{c.kwargs}"
                out.append(pytest.param(op_name, dt, i, id=ident.replace(" ", "")))
    return out


def _module_params(dtypes: Tuple[torch.dtype, ...], limit: int) -> List[Any]:
    out = []
    for cls in MODULES:
        (info,) = [m for m in module_db if m.module_cls is cls]
        for dt in dtypes:
            for training in ((True, False) if info.train_and_eval_differ else (True,)):
                samples = _module_samples(cls, dt, training)
                for i in _subsample(len(samples), limit):
                    mi = samples[i]
                    ident = (f"{cls.__name__}-{str(dt)[6:]}-{'train' if training else 'eval'}-{i}-"
                             f"{mi.desc or 'default'}-{tuple(mi.constructor_input.args)}-"
                             f"{_short(dict(mi.constructor_input.kwargs))}")
                    out.append(pytest.param(cls, dt, training, i, id=_short_id(ident)))
    return out


def _short_id(s: str) -> str:
    s = s.replace(" ", "")
    return s if len(s) < 160 else s[:160]


# ---------------------------------------------------------------------------------------------------------------
# Running one sample through both implementations
def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        c = v.detach().clone()
        return c.requires_grad_(v.requires_grad) if v.is_floating_point() else c
    if isinstance(v, (list, tuple)):
        return type(v)(_clone(a) for a in v)
    if isinstance(v, dict):
        return {k: _clone(a) for k, a in v.items()}
    return v


def _tensors(v: Any) -> List[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, (list, tuple)):
        return [t for a in v for t in _tensors(a)]
    if isinstance(v, dict):
        return [t for a in v.values() for t in _tensors(a)]
    return []


def _outputs(y: Any) -> List[torch.Tensor]:
    return [t for t in _tensors(y)]


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, n: int, what: str) -> None:
    """Within factor * u * sqrt(n) relative to each value and to the RMS of the expected tensor (see
    tests/harness.py: tolerance); NaN where torch has NaN; integer tensors (indices) exactly."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != torch's {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != torch's {expected.dtype}"
    if not expected.is_floating_point():
        torch.testing.assert_close(actual, expected, msg=lambda m: f"{what}: {m}")
        return
    tol = tolerance(str(dtype)[6:], n, factor=16.0)
    finite = expected[torch.isfinite(expected)].double()
    scale = float(finite.pow(2).mean().sqrt()) if finite.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale + 1e-300, equal_nan=True,
                               msg=lambda m: f"{what}: tol {tol:.2e}\n{m}")


def _compare_run(run_torch: Callable[[], Tuple[Any, List[torch.Tensor], List[torch.Tensor]]],
                 run_ours: Callable[[], Tuple[Any, List[torch.Tensor], List[torch.Tensor]]],
                 dtype: torch.dtype, n: int) -> None:
    """Each runner returns (output, leaves that require grad, mutated tensors). Compares outputs, gradients of
    sum(out * g) for every floating output that requires grad, and the mutated tensors afterwards."""
    y_t, leaves_t, mut_t = run_torch()
    y_o, leaves_o, mut_o = run_ours()
    outs_t, outs_o = _outputs(y_t), _outputs(y_o)
    assert len(outs_t) == len(outs_o), f"{len(outs_o)} outputs, torch has {len(outs_t)}"
    for k, (a, e) in enumerate(zip(outs_o, outs_t)):
        _assert_close(a, e, dtype, n, f"output {k}")
    for k, (a, e) in enumerate(zip(mut_o, mut_t)):
        _assert_close(a, e, dtype, n, f"mutated tensor {k} (running stats)")
    diff = [(a, e) for a, e in zip(outs_o, outs_t) if e.requires_grad and e.is_floating_point()]
    if not diff or not leaves_t:
        return
    gen = torch.Generator().manual_seed(1)
    gs = [torch.randn(e.shape, generator=gen, dtype=torch.float64).to(e.dtype) for _, e in diff]
    grads_t = torch.autograd.grad([e for _, e in diff], leaves_t, gs, allow_unused=True)
    grads_o = torch.autograd.grad([a for a, _ in diff], leaves_o, gs, allow_unused=True)
    for k, (a, e) in enumerate(zip(grads_o, grads_t)):
        if e is None:
            assert a is None or not a.any(), f"gradient {k}: torch has none, ours is nonzero"
            continue
        assert a is not None, f"gradient {k} (shape {tuple(e.shape)}): torch has one, ours is None"
        _assert_close(a, e, dtype, n, f"gradient {k} (shape {tuple(e.shape)})")


def _op_runner(fn: Callable[..., Any], s: Any, extra: Dict[str, Any]) -> Callable[[], Any]:
    def run() -> Tuple[Any, List[torch.Tensor], List[torch.Tensor]]:
        inp, args, kwargs = _clone(s.input), _clone(s.args), _clone(s.kwargs)
        leaves = [t for t in [inp] + _tensors(args) + _tensors(kwargs) if t.requires_grad]
        mutated = [t for t in _tensors(args) + _tensors(kwargs) if not t.requires_grad and t.is_floating_point()]
        y = fn(inp, *args, **kwargs, **extra)
        return y, leaves, mutated
    return run


def _check_op(op_name: str, dtype: torch.dtype, i: int, backend: Optional[str]) -> None:
    s = _op_samples(op_name, dtype)[i]
    case = _op_case(op_name, s)
    reason = _why_excluded(case, PENDING_I14A)
    if reason and not RUN_PENDING:
        pytest.skip(f"pending i14a: {reason}")
    info = [o for o in op_db if o.name == op_name and o.variant_test_name == ""][0]
    extra = {} if backend is None else {"backend": backend}
    ours = _op_runner(OPS[op_name], s, extra)
    reason = _why_excluded(case, EXCLUSIONS)
    if reason:
        with pytest.raises((ValueError, TypeError)):
            ours()
        return
    _compare_run(_op_runner(info.op, s, {}), ours, dtype, max(s.input.numel(), 1))


def _module_runner(cls: Any, mi: Any, dtype: torch.dtype, training: bool, state: Optional[Dict[str, Any]],
                   extra: Dict[str, Any]) -> Callable[[], Any]:
    def run() -> Tuple[Any, List[torch.Tensor], List[torch.Tensor]]:
        ci = mi.constructor_input
        m = cls(*_clone(ci.args), **_clone(ci.kwargs), **extra)
        m = m.to(dtype)
        if state is not None:
            m.load_state_dict(copy.deepcopy(state))
        m.train(training)
        args, kwargs = _clone(mi.forward_input.args), _clone(mi.forward_input.kwargs)
        leaves = [t for t in _tensors(args) + _tensors(kwargs) if t.requires_grad] + list(m.parameters())
        y = m(*args, **kwargs)
        return y, leaves, [b for b in m.buffers() if b.is_floating_point()]
    return run


def _check_module(cls: Any, dtype: torch.dtype, training: bool, i: int, backend: Optional[str]) -> None:
    mi = _module_samples(cls, dtype, training)[i]
    case = _module_case(cls, mi)
    reason = _why_excluded(case, PENDING_I14A)
    if reason and not RUN_PENDING:
        pytest.skip(f"pending i14a: {reason}")
    ours_cls = MODULES[cls]
    assert ours_cls is not None, f"cnngpu.torch has no {cls.__name__}"
    ci = mi.constructor_input
    torch.manual_seed(2)
    ref = cls(*_clone(ci.args), **_clone(ci.kwargs)).to(dtype)
    with torch.no_grad():   # non-trivial affine parameters (torch initialises them to 1 and 0)
        for p in ref.parameters():
            p.add_(0.5 * torch.randn_like(p))
    state = copy.deepcopy(ref.state_dict())
    extra = {} if backend is None else {"backend": backend}
    ours = _module_runner(ours_cls, mi, dtype, training, state, extra)
    reason = _why_excluded(case, EXCLUSIONS)
    if reason:
        with pytest.raises((ValueError, TypeError)):
            ours()
        return
    n = max(case.input_shape and math.prod(case.input_shape) or 1, 1)
    _compare_run(_module_runner(cls, mi, dtype, training, state, {}), ours, dtype, n)


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op_name, dtype, i", _op_params(DTYPES, MAX_SAMPLES))
def test_op_sample(op_name: str, dtype: torch.dtype, i: int) -> None:
    """torch's OpInfo sample i of op_name through cnngpu.torch (numpy backend) vs torch."""
    _check_op(op_name, dtype, i, None)


@pytest.mark.parametrize("cls, dtype, training, i", _module_params(DTYPES, MAX_SAMPLES))
def test_module_sample(cls: Any, dtype: torch.dtype, training: bool, i: int) -> None:
    """torch's ModuleInfo sample i of cls through the cnngpu.torch module (numpy backend) vs torch."""
    _check_module(cls, dtype, training, i, None)
