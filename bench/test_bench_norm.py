"""Benchmarks: LayerNorm and GroupNorm/InstanceNorm, forward and backward.

One benchmark per (op, shape, provider, dtype); shapes, providers and dtypes are chosen in
bench/conftest.py. Run: `python -m pytest bench/test_bench_norm.py --benchmark-only`.
"""
from bench import shapes as S

BENCH_OPS = S.LAYER_NORM_OPS + S.GROUP_NORM_OPS


def test_norm(bench_param, run_bench):
    op, shape, provider, dtype = bench_param
    run_bench(op, shape, provider, dtype)
