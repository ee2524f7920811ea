"""Peer suite: PyTorch's own test samples through ``cnngpu.torch``, forward values and gradients vs torch.

The samples are torch's: ``OpInfo.sample_inputs`` of ``common_methods_invocations.op_db`` for the
functional forms and ``ModuleInfo.module_inputs_func`` of ``common_modules.module_db`` for the modules
(float32, float64 and bfloat16, CPU, so the numpy backend; bfloat16 computed in float32 and rounded), plus a small fp32 sample of the same under the Triton
interpreter (``backend='triton'`` on CPU tensors). Each sample runs through torch and through cnngpu.torch on
clones of the same tensors; the outputs, the gradients of ``sum(out * g)`` (g random) with respect to every
tensor that requires grad (inputs, weights, module parameters) and every buffer or tensor argument the op
mutates (running statistics) must agree within tolerances by dtype scaled with the input size.

Every sample either passes or matches a row of ``EXCLUSIONS`` (a deliberate difference: cnngpu.torch must
then refuse it with the row's ValueError, which is checked). README, "Peer suite", lists the table. Large
sample lists (max_pool2d has 1440) are subsampled deterministically (evenly spaced).
"""
from __future__ import annotations

import copy
import functools
import math
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import pytest

torch = pytest.importorskip("torch")
import expecttest  # noqa: E402,F401  torch.testing._internal needs it (the test extra): fail, not skip, without it

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal.common_modules import module_db  # noqa: E402

import cnngpu.torch as ct  # noqa: E402
from harness import require, tolerance  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")   # torch's own, for its conv2d samples

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
# samples per op (or module), dtype and mode: larger lists (max_pool2d: 1440) are subsampled evenly
MAX_SAMPLES = {torch.float32: 120, torch.float64: 120, torch.bfloat16: 40}
TRITON_SAMPLES = 2        # per op/module, fp32, under the interpreter
# Tolerance factors (tol = factor * u * sqrt(n), tests/harness.py). float32 and bfloat16 samples also get torch's
# own error as slack, measured against torch in float64 (see _assert_close). float64 samples have no higher-precision
# oracle, and a norm backward over a tiny group amplifies rounding: GroupNorm dx on a (1, 3) sample is ~1e-14
# (~50 u) from the exact value (mpmath) in torch and in ours alike, hence the larger float64 factor.
FACTOR = {torch.float32: 16.0, torch.float64: 256.0, torch.bfloat16: 16.0}

# torch.nn.functional name -> cnngpu.torch function
OPS: Dict[str, Callable[..., Any]] = {
    "nn.functional.conv2d": ct.conv2d, "nn.functional.max_pool2d": ct.max_pool2d,
    "nn.functional.avg_pool2d": ct.avg_pool2d, "nn.functional.batch_norm": ct.batch_norm,
    "nn.functional.layer_norm": ct.layer_norm, "nn.functional.group_norm": ct.group_norm,
    "nn.functional.instance_norm": ct.instance_norm, "nn.functional.linear": ct.linear,
    "nn.functional.relu": ct.relu, "nn.functional.cross_entropy": ct.cross_entropy,
}
# torch.nn module -> cnngpu.torch module
MODULES: Dict[Any, Any] = {
    torch.nn.Conv2d: ct.Conv2d, torch.nn.MaxPool2d: ct.MaxPool2d, torch.nn.AvgPool2d: ct.AvgPool2d,
    torch.nn.BatchNorm1d: ct.BatchNorm1d, torch.nn.BatchNorm2d: ct.BatchNorm2d,
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
# Exclusions. Each row: (op or module name, predicate on a Case, reason, pattern). Deliberate differences only:
# torch accepts these samples, cnngpu.torch refuses them with a ValueError whose message matches the pattern
# (checked by the test, so a row cannot hide an unrelated failure).
def _kw(c: Case, key: str, default: Any = None) -> Any:
    return c.kwargs.get(key, default)


_NEG_EPS = "negative eps: torch computes rsqrt(var + eps) (NaN where var < -eps); cnngpu requires eps > 0"
EXCLUSIONS: List[Tuple[str, Callable[[Case], bool], str, str]] = [
    ("nn.functional.layer_norm", lambda c: _kw(c, "eps", 1e-5) < 0, _NEG_EPS, "eps must be a positive number"),
    ("nn.functional.group_norm", lambda c: _kw(c, "eps", 1e-5) < 0, _NEG_EPS, "eps must be a positive number"),
    ("nn.functional.batch_norm", lambda c: bool(_kw(c, "training")) and _kw(c, "momentum", 0.1) < 0,
     "negative momentum in training: torch extrapolates the running statistics; cnngpu requires momentum in "
     "[0, 1] where it is used (training; any number is accepted in eval, where torch ignores it)",
     r"momentum must be a number in \[0, 1\]"),
    ("nn.functional.instance_norm", lambda c: _kw(c, "running_mean") is not None and _kw(c, "momentum", 0.1) < 0,
     "negative momentum with running statistics: as batch_norm's", r"momentum must be a number in \[0, 1\]"),
    ("nn.functional.batch_norm", lambda c: len(c.input_shape) == 1,
     "1-D input: torch accepts only the empty (0,) (reading C as 0) and refuses every other 1-D input; "
     "cnngpu requires (N, C, ...)", r"input must be \(N, C\)"),
]

def _why_excluded(case: Case, table: List[Any]) -> Optional[str]:
    """The reason of the first row of ``table`` that matches ``case`` (None: no row does)."""
    for name, pred, reason, *_ in table:
        if name == case.name and pred(case):
            return reason
    return None


def _check_refused(case: Case, run_ours: Any) -> None:
    """An excluded sample: cnngpu.torch must raise the row's ValueError."""
    (pattern,) = [row[3] for row in EXCLUSIONS if row[0] == case.name and row[1](case)][:1]
    with pytest.raises(ValueError, match=pattern):
        run_ours(None)


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


def _op_params(dtypes: Tuple[torch.dtype, ...], limit: Dict[torch.dtype, int]) -> List[Any]:
    out = []
    for op_name in OPS:
        for dt in dtypes:
            samples = _op_samples(op_name, dt)
            for i in _subsample(len(samples), limit[dt]):
                c = _op_case(op_name, samples[i])
                ident = f"{op_name.split('.')[-1]}-{str(dt)[6:]}-{i}-{c.input_shape}-{c.args}-{c.kwargs}"
                out.append(pytest.param(op_name, dt, i, id=ident.replace(" ", "")))
    return out


def _module_params(dtypes: Tuple[torch.dtype, ...], limit: Dict[torch.dtype, int]) -> List[Any]:
    out = []
    for cls in MODULES:
        (info,) = [m for m in module_db if m.module_cls is cls]
        for dt in dtypes:
            for training in ((True, False) if info.train_and_eval_differ else (True,)):
                samples = _module_samples(cls, dt, training)
                for i in _subsample(len(samples), limit[dt]):
                    mi = samples[i]
                    ident = (f"{cls.__name__}-{str(dt)[6:]}-{'train' if training else 'eval'}-{i}-"
                             f"{mi.desc or 'default'}-{tuple(mi.constructor_input.args)}-"
                             f"{_short(dict(mi.constructor_input.kwargs))}")
                    out.append(pytest.param(cls, dt, training, i, id=_short_id(ident)))
    return out


def _runnable(case: Case) -> bool:
    return _why_excluded(case, EXCLUSIONS) is None


def _triton_params() -> List[Any]:
    """TRITON_SAMPLES float32 samples per op and module (evenly spread over the runnable non-empty ones), plus
    every runnable empty one (N = 0: nothing to launch, but the launchers must not fail on it)."""
    out = []
    for op_name in OPS:
        samples = _op_samples(op_name, torch.float32)
        cases = [(i, _op_case(op_name, s)) for i, s in enumerate(samples)]
        for i in _pick_triton([(i, c) for i, c in cases if _runnable(c)]):
            out.append(pytest.param("op", op_name, True, i, id=f"{op_name.split('.')[-1]}-{i}"))
    for cls in MODULES:
        samples = _module_samples(cls, torch.float32, True)
        cases = [(i, _module_case(cls, mi)) for i, mi in enumerate(samples)]
        for i in _pick_triton([(i, c) for i, c in cases if _runnable(c)]):
            out.append(pytest.param("module", cls, True, i, id=f"{cls.__name__}-{i}"))
    return out


def _pick_triton(cases: List[Tuple[int, Case]]) -> List[int]:
    full = [i for i, c in cases if 0 not in c.input_shape]
    empty = [i for i, c in cases if 0 in c.input_shape]
    return sorted([full[j] for j in _subsample(len(full), TRITON_SAMPLES)] + empty)


def _short_id(s: str) -> str:
    s = s.replace(" ", "")
    return s if len(s) < 160 else s[:160]


# ---------------------------------------------------------------------------------------------------------------
# Running one sample through both implementations
def _clone(v: Any, cast: Optional[torch.dtype] = None) -> Any:
    """A fresh copy of every tensor in v (floating ones cast to ``cast`` when given), requires_grad kept."""
    if isinstance(v, torch.Tensor):
        c = v.detach().clone()
        if not v.is_floating_point():
            return c
        return (c if cast is None else c.to(cast)).requires_grad_(v.requires_grad)
    if isinstance(v, (list, tuple)):
        return type(v)(_clone(a, cast) for a in v)
    if isinstance(v, dict):
        return {k: _clone(a, cast) for k, a in v.items()}
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


def _rms(t: torch.Tensor) -> float:
    finite = t.detach()[torch.isfinite(t.detach())].double()
    return float(finite.pow(2).mean().sqrt()) if finite.numel() else 0.0


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, oracle: Optional[torch.Tensor], dtype: torch.dtype,
                  n: int, what: str, scale: float = 0.0) -> None:
    """|actual - expected| <= tol * (|expected| + max(RMS(expected), scale)) + 2 |expected - oracle|, elementwise:
    tol = factor u sqrt(n) (tests/harness.py: tolerance; FACTOR by dtype); ``scale`` the magnitude of the terms that cancel in a
    gradient that is zero in exact arithmetic (LayerNorm's dx over two elements); ``oracle`` torch's result in
    float64 from the same values (float32 and bfloat16 samples), so that torch's own rounding error never counts against us
    (LayerNorm over one element: torch's float32 dweight is 1.6e-5, exactly 0 in ours and in float64). NaN and
    infinities where torch has them; integer tensors (indices) exactly."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != torch's {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != torch's {expected.dtype}"
    if not expected.is_floating_point():
        torch.testing.assert_close(actual, expected, msg=lambda m: f"{what}: {m}")
        return
    a, e = actual.detach().double(), expected.detach().double()
    fin = torch.isfinite(e)
    assert torch.equal(torch.isfinite(a), fin) and torch.equal(a[~fin].nan_to_num(), e[~fin].nan_to_num()), \
        f"{what}: non-finite values differ from torch's:\n{actual}\ntorch:\n{expected}"
    tol = tolerance(str(dtype)[6:], n, factor=FACTOR[dtype])
    allowed = tol * (e.abs() + max(_rms(e), scale))
    if oracle is not None:
        allowed = allowed + 2 * (e - oracle.detach().double()).abs().nan_to_num()
    excess = ((a - e).abs() - allowed)[fin]
    if excess.numel() and float(excess.max()) > 0:
        k = int(excess.argmax())
        raise AssertionError(f"{what}: {int((excess > 0).sum())} of {excess.numel()} values differ beyond "
                             f"tol {tol:.2e}; worst: ours {float(a[fin][k])!r}, torch {float(e[fin][k])!r}, "
                             f"allowed difference {float(allowed[fin][k]):.3e}")


Runner = Callable[[Optional[torch.dtype]], Tuple[Any, List[torch.Tensor], List[torch.Tensor]]]


def _compare_run(run_torch: Runner, run_ours: Runner, dtype: torch.dtype, n: int) -> None:
    """Each runner (given None, or float64 to cast the sample to) returns (output, leaves that require grad,
    mutated tensors). Compares the outputs, the gradients of sum(out * g) for every floating output that requires
    grad, and the mutated tensors afterwards (running statistics), with torch's float64 run as the oracle for
    float32 and bfloat16 samples."""
    runs = [run_torch(None), run_ours(None)] + ([run_torch(torch.float64)] if dtype != torch.float64 else [])
    outs = [_outputs(r[0]) for r in runs]
    assert len(outs[1]) == len(outs[0]), f"{len(outs[1])} outputs, torch has {len(outs[0])}"
    orc = (lambda lst, k: lst[k]) if len(runs) == 3 else (lambda lst, k: None)
    for k, (a, e) in enumerate(zip(outs[1], outs[0])):
        _assert_close(a, e, orc(outs[2], k) if len(runs) == 3 else None, dtype, n, f"output {k}")
    for k, (a, e) in enumerate(zip(runs[1][2], runs[0][2])):
        _assert_close(a, e, runs[2][2][k] if len(runs) == 3 else None, dtype, n, f"mutated tensor {k} (running stats)")
    idx = [k for k, e in enumerate(outs[0]) if e.requires_grad and e.is_floating_point()]
    if not idx or not runs[0][1]:
        return
    gen = torch.Generator().manual_seed(1)
    gs = [torch.randn(outs[0][k].shape, generator=gen, dtype=torch.float64).to(dtype) for k in idx]
    grads = [torch.autograd.grad([o[k] for k in idx], r[1], [g.to(o[k].dtype) for k, g in zip(idx, gs)], allow_unused=True)
             for o, r in zip(outs, runs)]
    # the sample's gradient magnitude: the largest RMS among its cotangents and torch's gradients
    scale = max([_rms(g) for g in gs] + [_rms(e) for e in grads[0] if e is not None])
    for k, (a, e) in enumerate(zip(grads[1], grads[0])):
        if e is None:
            assert a is None or not a.any(), f"gradient {k}: torch has none, ours is nonzero"
            continue
        assert a is not None, f"gradient {k} (shape {tuple(e.shape)}): torch has one, ours is None"
        _assert_close(a, e, grads[2][k] if len(runs) == 3 else None, dtype, n,
                      f"gradient {k} (shape {tuple(e.shape)})", scale)


def _op_runner(fn: Callable[..., Any], s: Any, extra: Dict[str, Any]) -> Runner:
    def run(cast: Optional[torch.dtype]) -> Tuple[Any, List[torch.Tensor], List[torch.Tensor]]:
        inp, args, kwargs = _clone(s.input, cast), _clone(s.args, cast), _clone(s.kwargs, cast)
        leaves = [t for t in [inp] + _tensors(args) + _tensors(kwargs) if t.requires_grad]
        mutated = [t for t in _tensors(args) + _tensors(kwargs) if not t.requires_grad and t.is_floating_point()]
        y = fn(inp, *args, **kwargs, **extra)
        return y, leaves, mutated
    return run


def _check_op(op_name: str, dtype: torch.dtype, i: int, backend: Optional[str]) -> None:
    s = _op_samples(op_name, dtype)[i]
    case = _op_case(op_name, s)
    info = [o for o in op_db if o.name == op_name and o.variant_test_name == ""][0]
    extra = {} if backend is None else {"backend": backend}
    ours = _op_runner(OPS[op_name], s, extra)
    if _why_excluded(case, EXCLUSIONS):
        _check_refused(case, ours)
        return
    _compare_run(_op_runner(info.op, s, {}), ours, dtype, max(s.input.numel(), 1))


def _module_runner(cls: Any, mi: Any, dtype: torch.dtype, training: bool, state: Optional[Dict[str, Any]],
                   extra: Dict[str, Any]) -> Runner:
    def run(cast: Optional[torch.dtype]) -> Tuple[Any, List[torch.Tensor], List[torch.Tensor]]:
        ci = mi.constructor_input
        m = cls(*_clone(ci.args, cast), **_clone(ci.kwargs, cast), **extra)
        m = m.to(cast or dtype)
        if state is not None:
            m.load_state_dict(copy.deepcopy(state))
        m.train(training)
        args, kwargs = _clone(mi.forward_input.args, cast), _clone(mi.forward_input.kwargs, cast)
        leaves = [t for t in _tensors(args) + _tensors(kwargs) if t.requires_grad] + list(m.parameters())
        y = m(*args, **kwargs)
        return y, leaves, list(m.buffers())   # running stats, num_batches_tracked
    return run


def _check_module(cls: Any, dtype: torch.dtype, training: bool, i: int, backend: Optional[str]) -> None:
    mi = _module_samples(cls, dtype, training)[i]
    case = _module_case(cls, mi)
    ours_cls = MODULES[cls]
    ci = mi.constructor_input
    torch.manual_seed(2)
    ref = cls(*_clone(ci.args), **_clone(ci.kwargs)).to(dtype)
    with torch.no_grad():   # non-trivial affine parameters (torch initialises them to 1 and 0)
        for p in ref.parameters():
            p.add_(0.5 * torch.randn_like(p))
    state = copy.deepcopy(ref.state_dict())
    extra = {} if backend is None else {"backend": backend}
    ours = _module_runner(ours_cls, mi, dtype, training, state, extra)
    if _why_excluded(case, EXCLUSIONS):
        _check_refused(case, ours)
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


@pytest.mark.parametrize("kind, what, training, i", _triton_params())
def test_sample_on_triton_interpreter(kind: str, what: Any, training: bool, i: int) -> None:
    """A few float32 samples per op and module with backend='triton' (Triton's interpreter on CPU tensors; on a
    CUDA machine the same kernels on the GPU would need CUDA tensors, so this runs only under the interpreter)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("backend='triton' on CPU tensors needs TRITON_INTERPRET=1 (set by conftest without a GPU)")
    be, ref = require("triton"), require("numpy")
    before = sum(be.LAUNCHES.values()), ref.LAUNCHES["cross_entropy_general_forward"]
    if kind == "op":
        _check_op(what, torch.float32, i, "triton")
    else:
        _check_module(what, torch.float32, training, i, "triton")
    # cross_entropy beyond the fused case (2-D, class indices, mean, no weight/smoothing/ignored entries) is
    # computed by the NumPy reference on every backend (cnngpu.functional.cross_entropy)
    case = (_op_case(what, _op_samples(what, torch.float32)[i]) if kind == "op"
            else _module_case(what, _module_samples(what, torch.float32, training)[i]))
    assert (sum(be.LAUNCHES.values()) > before[0] or ref.LAUNCHES["cross_entropy_general_forward"] > before[1]
            or 0 in case.input_shape), "no triton kernel ran"
