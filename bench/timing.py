"""Timers and ceiling measurements, on the maintained tools.

GPU: ``triton.testing.do_bench`` -- warm-up, then repetitions each preceded by a write of a 256 MB
buffer that evicts L2 (``runtime.driver.active.clear_cache``), each timed alone between two CUDA
events; we keep every repetition (``return_mode="all"``) and report the median.
CPU: ``torch.utils.benchmark.Timer.blocked_autorange`` -- it picks how many calls make one timed
block, warms up, and reports per-call times per block; we report the median. It runs with torch's
current thread count (its default of one thread would make torch_cpu look slower than it is
next to numpy, whose BLAS threads it does not control).

Ceilings are measured in the same run: device copy bandwidth (a large D2D copy, bytes read +
bytes written) and matmul throughput (torch.matmul on 8192^3 random operands) per dtype.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List


@dataclass
class Timing:
    """Median time of one call in milliseconds; ``samples`` holds the per-repetition times (ms)
    and ``reps`` the number of calls timed."""
    ms: float
    reps: int
    samples: List[float] = field(default_factory=list)

    @property
    def spread(self) -> float:
        """(max - min) / median of the samples: how noisy the measurement was."""
        return (max(self.samples) - min(self.samples)) / self.ms if self.samples and self.ms > 0 else 0.0


def time_cuda(run: Callable[[], object], *, warmup_ms: float = 25.0, rep_ms: float = 100.0) -> Timing:
    """Median CUDA-event time of ``run()`` with an L2 flush before every repetition
    (``triton.testing.do_bench``: about ``warmup_ms`` of warm-up, then ``rep_ms`` of repetitions)."""
    from triton.testing import do_bench
    samples = [float(t) for t in do_bench(run, warmup=warmup_ms, rep=rep_ms, return_mode="all")]
    return Timing(statistics.median(samples), len(samples), samples)


def time_cpu(run: Callable[[], object], *, min_run_time_s: float = 0.2) -> Timing:
    """Median wall time of one ``run()`` (a synchronous CPU call) by
    ``torch.utils.benchmark.Timer.blocked_autorange`` over at least ``min_run_time_s``."""
    import torch
    from torch.utils import benchmark
    timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time_s)
    samples = [t * 1e3 for t in m.times]
    return Timing(m.median * 1e3, m.number_per_run * len(m.times), samples)


# ----------------------------------------------------------------------------------------------
# ceilings
# ----------------------------------------------------------------------------------------------
def copy_bandwidth_cuda(nbytes: int = 1 << 30) -> Dict[str, float]:
    """Device-to-device copy of ``nbytes`` (random data): GB/s counting bytes read + written."""
    import torch
    n = nbytes // 4
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    t = time_cuda(lambda: dst.copy_(src), rep_ms=200)
    gbps = 2 * n * 4 / (t.ms * 1e-3) / 1e9
    del src, dst
    return {"GB/s": gbps, "ms": t.ms, "bytes": 2 * n * 4}


def matmul_tflops_cuda(dtype: str, n: int = 8192) -> Dict[str, float]:
    """torch.matmul of two random n x n matrices: TFLOP/s (2 n^3 FLOPs). dtype 'tf32' is float32
    with TF32 tensor cores allowed, 'float32' with them off."""
    import torch
    tdt = torch.float32 if dtype in ("tf32", "float32") else getattr(torch, dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        a = torch.randn(n, n, device="cuda").to(tdt)
        b = torch.randn(n, n, device="cuda").to(tdt)
        t = time_cuda(lambda: torch.matmul(a, b), rep_ms=200)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    del a, b
    return {"TFLOP/s": 2 * n ** 3 / (t.ms * 1e-3) / 1e12, "ms": t.ms, "n": n}


def copy_bandwidth_cpu(nbytes: int = 64 << 20, min_run_time_s: float = 0.2) -> Dict[str, float]:
    """numpy copy of ``nbytes``: GB/s counting bytes read + written."""
    import numpy as np
    src = np.random.default_rng(0).standard_normal(nbytes // 8)
    dst = np.empty_like(src)
    t = time_cpu(lambda: np.copyto(dst, src), min_run_time_s=min_run_time_s)
    return {"GB/s": 2 * src.nbytes / (t.ms * 1e-3) / 1e9, "ms": t.ms, "bytes": 2 * src.nbytes}


def matmul_tflops_cpu(n: int = 1024, min_run_time_s: float = 0.2) -> Dict[str, float]:
    """numpy float32 matmul of two random n x n matrices: TFLOP/s (2 n^3 FLOPs)."""
    import numpy as np
    g = np.random.default_rng(0)
    a = g.standard_normal((n, n), dtype=np.float32)
    b = g.standard_normal((n, n), dtype=np.float32)
    t = time_cpu(lambda: a @ b, min_run_time_s=min_run_time_s)
    return {"TFLOP/s": 2 * n ** 3 / (t.ms * 1e-3) / 1e12, "ms": t.ms, "n": n}
