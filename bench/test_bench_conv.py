"""Benchmarks: conv2d forward, backward dX and backward dW (dW and dX each alone: need_db=False).

One benchmark per (op, shape, provider, dtype); shapes, providers and dtypes are chosen in
bench/conftest.py. Run: `python -m pytest bench/test_bench_conv.py --benchmark-only`.
"""
from bench import shapes as S

BENCH_OPS = S.CONV_OPS


def test_conv(bench_param, run_bench):
    op, shape, provider, dtype = bench_param
    run_bench(op, shape, provider, dtype)
