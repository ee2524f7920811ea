"""Benchmarks for cnngpu (not part of the test suite: ``testpaths = tests``).

- ``bench/shapes.py``: the shape lists (ResNet-50 layers, LeNet-5, CIFAR-10) with analytic FLOPs
  and minimum bytes per op.
- ``bench/cases.py``: one runnable case per (op, shape, provider, dtype).
- ``bench/timing.py``: timers (triton.testing.do_bench, torch.utils.benchmark.Timer) and the ceilings.
- ``bench/summary.py``: summary table and plot of a pytest-benchmark run.
- ``bench/test_bench_*.py``: pytest-benchmark suites (``python -m pytest bench``).
- ``python -m bench.gpu_report``: the one-call GPU report (see bench/results/README.md).
- ``python -m bench.static_report``: the offline static report (conv, TMA, memory-bound and CUDA
  kernels compiled and read back; ``bench/static_memops.py``, ``bench/static_cuda.py``).
"""
import os

# the checkout's root (results, logs and subprocess working directory); cnngpu itself, kernels/
# included as cnngpu.kernels, comes from the install (``pip install --no-deps --no-build-isolation -e .``)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
