"""pytest-benchmark set-up for the bench/ suites (``python -m pytest bench --benchmark-only``).

Every suite file (bench/test_bench_<family>.py) declares ``BENCH_OPS`` and one test taking the
``bench_param`` argument; ``pytest_generate_tests`` below expands it into one benchmark per
(op, shape, provider, dtype), in that order; pytest-benchmark prints one table per (op, dtype),
and at the end this file prints one summary (geometric-mean time / baseline per op, dtype and
provider) and, with ``--bench-plot PNG``, the plot (bench/summary.py renders both).

Which shapes run (``--bench-shapes`` or env ``CNNGPU_BENCH_SHAPES``):
    auto   (default) every shape for the GPU providers; for the CPU providers (numpy, torch_cpu)
           only the CPU-sized subset (ResNet-50 layers at batch 1, LeNet/CIFAR at batch 8, ...)
    all    every shape for every provider, the ResNet-50 batch-32 layers on the CPU included
           (slow: minutes per case in the numpy backend)
    quick  the shapes tagged ``quick`` (GPU) / the CPU subset (CPU)
    tiny   one small shape per op family (the smoke test uses this)
GPU providers (torch, torch_cl, triton, cupy) skip with the reason when no CUDA device is visible.
Providers: ``--bench-providers numpy,torch_cpu,...``; GPU dtypes: ``--bench-dtypes float16,float32``
(tf32 and bfloat16 also accepted); CPU providers always run float32.

Before it is timed, every case's output is compared with its baseline's (torch_cpu for CPU
providers, torch for GPU ones) on the same inputs; a relative error above ``cases.CHECK_TOL`` fails
the benchmark. Output poisoning (a verification aid that costs a fill per output) stays off here.
"""
from __future__ import annotations

import os

import pytest

from bench import cases as C

SHAPE_SETS = ("auto", "all", "quick", "tiny")


def pytest_addoption(parser):
    g = parser.getgroup("cnngpu bench")
    g.addoption("--bench-shapes", default=os.environ.get("CNNGPU_BENCH_SHAPES", "auto"), choices=SHAPE_SETS,
                help="shape set: auto (GPU: all, CPU providers: the CPU subset), all, quick, tiny")
    g.addoption("--bench-providers", default=os.environ.get("CNNGPU_BENCH_PROVIDERS", ",".join(C.ALL_PROVIDERS)),
                help=f"comma-separated providers out of {','.join(C.ALL_PROVIDERS)}")
    g.addoption("--bench-dtypes", default=os.environ.get("CNNGPU_BENCH_DTYPES", "float16,float32"),
                help="comma-separated dtypes for the GPU providers (float16, bfloat16, float32, tf32)")
    g.addoption("--bench-plot", default=None, metavar="PNG",
                help="also write the plot of time / baseline per shape (one panel per op family) here")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """After pytest-benchmark's tables: one summary table (geometric-mean time / baseline per op,
    dtype and provider; bench/summary.py), and the plot when --bench-plot is given."""
    session = getattr(config, "_benchmarksession", None)   # pytest-benchmark's session object
    if session is None or not getattr(session, "benchmarks", None):
        return
    from bench import summary
    rep = summary.report([b.as_dict(include_data=False) for b in session.benchmarks], label="this run")
    if not rep["results"]:
        return
    terminalreporter.write_sep("=", "cnngpu benchmark summary")
    terminalreporter.write_line(summary.summary_table(rep))
    png = config.getoption("--bench-plot")
    if png and summary.R.render_plot(rep, png, is_baseline=summary._is_baseline):
        terminalreporter.write_line(f"plot: {png}")


def _split(value: str, allowed, what: str):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise pytest.UsageError(f"{what}: {bad or value!r} not in {allowed}")
    return items


def bench_params(ops, shape_set: str, providers, gpu_dtypes):
    """The (op, shape, provider, dtype) parameters of one suite, as pytest.param objects."""
    out = []
    for op in ops:
        for sh in C.bench_shapes(op, shape_set):
            for dt in sorted(set(gpu_dtypes) | {"float32"}, key=lambda d: (d != "float32", d)):
                for prov in providers:
                    if not C.provider_runs(prov, sh, dt, shape_set, gpu_dtypes):
                        continue
                    out.append(pytest.param(op, sh, prov, dt, id=f"{op}-{sh.name}-{prov}-{dt}"))
    return out


def pytest_generate_tests(metafunc):
    if "bench_param" not in metafunc.fixturenames:
        return
    ops = getattr(metafunc.module, "BENCH_OPS", None)
    if not ops:
        raise pytest.UsageError(f"{metafunc.module.__name__} must define BENCH_OPS")
    cfg = metafunc.config
    providers = _split(cfg.getoption("--bench-providers"), C.ALL_PROVIDERS, "--bench-providers")
    dtypes = _split(cfg.getoption("--bench-dtypes"), ("float16", "bfloat16", "float32", "tf32"), "--bench-dtypes")
    params = bench_params(ops, cfg.getoption("--bench-shapes"), providers, dtypes)
    metafunc.parametrize("bench_param", [pytest.param(p.values, id=p.id) for p in params])


class _Baselines:
    """Inputs and baseline outputs of the most recent (op, shape, dtype, device): consecutive
    benchmarks share them (the parameter order keeps them together), and memory stays bounded."""

    def __init__(self):
        self.key = None
        self.inputs = None
        self.ref = None

    def get(self, op, shape, provider, dtype):
        device = "cpu" if provider in C.CPU_PROVIDERS else "cuda"
        key = (op, shape.name, dtype, device)
        if key != self.key:
            self.key, self.ref = key, None
            self.inputs = None   # free the previous inputs before allocating the next
            self.inputs = C.make_inputs(op, shape, dtype, device)
        return self.inputs

    def reference(self, op, shape, provider, dtype):
        base = C.baseline(provider)
        if self.ref is None or self.ref[0] != base:
            case = C.make_case(op, shape, base, dtype, inputs=self.inputs)
            self.ref = (base, case.result())
        return self.ref[1]


@pytest.fixture(scope="session")
def _baselines():
    from cnngpu import backends
    old = backends.poison_enabled()
    backends.set_poison(False)
    yield _Baselines()
    backends.set_poison(old)


@pytest.fixture
def run_bench(benchmark, _baselines):
    """``run_bench(op, shape, provider, dtype)``: check the case against its baseline, then time
    one synchronous call with pytest-benchmark. Skips (with the reason) when the provider cannot
    run here; records FLOPs / bytes and the achieved rate in ``benchmark.extra_info``."""

    def go(op, shape, provider, dtype):
        why = C.unavailable(provider, dtype, shape, op)
        if why is not None:
            pytest.skip(f"{provider} unavailable: {why}")
        inputs = _baselines.get(op, shape, provider, dtype)
        case = C.make_case(op, shape, provider, dtype, inputs=inputs)
        err = None
        if provider != C.baseline(provider) and C.unavailable(C.baseline(provider), dtype, shape, op) is None:
            err = C.rel_error(case.result(), _baselines.reference(op, shape, provider, dtype))
            tol = C.CHECK_TOL[dtype]
            assert err <= tol, (f"{provider} {op} {shape.name} {dtype}: relative error {err:.3e} vs "
                                f"{C.baseline(provider)} exceeds {tol:.0e}")
        benchmark.group = f"{op} {dtype}"      # one table per op and dtype: a row per shape x provider
        benchmark.extra_info.update(op=op, shape=shape.name, provider=provider, dtype=dtype,
                                    flops=shape.flops(op), bytes=shape.bytes(op, dtype), rel_err=err)
        benchmark(case.run_sync)
        stats = getattr(benchmark, "stats", None)
        if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.median > 0:
            sec = stats.stats.median
            if shape.flops(op):
                benchmark.extra_info["GFLOP/s"] = shape.flops(op) / sec / 1e9
            benchmark.extra_info["GB/s"] = shape.bytes(op, dtype) / sec / 1e9
        return case

    return go
