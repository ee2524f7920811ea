"""Benchmarks: training-mode BatchNorm2d fused with ReLU, forward (incl. running-stat update) and backward.

One benchmark per (op, shape, provider, dtype); shapes, providers and dtypes are chosen in
bench/conftest.py. Run: `python -m pytest bench/test_bench_bn.py --benchmark-only`.
"""
from bench import shapes as S

BENCH_OPS = S.BN_OPS


def test_bn(bench_param, run_bench):
    op, shape, provider, dtype = bench_param
    run_bench(op, shape, provider, dtype)
