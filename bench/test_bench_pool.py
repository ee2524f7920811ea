"""Benchmarks: max pool (with argmax) and avg pool, forward and backward.

One benchmark per (op, shape, provider, dtype); shapes, providers and dtypes are chosen in
bench/conftest.py. Run: `python -m pytest bench/test_bench_pool.py --benchmark-only`.
"""
from bench import shapes as S

BENCH_OPS = S.POOL_OPS


def test_pool(bench_param, run_bench):
    op, shape, provider, dtype = bench_param
    run_bench(op, shape, provider, dtype)
