"""Timers and ceiling measurements.

GPU: each repetition writes a 256 MB buffer first (evicting the 50-60 MB L2, so every rep reads
its inputs from device memory), then times the op alone between two CUDA events on the current
stream; the result is the median over reps, after warm-up calls that absorb compilation, autotune
and allocator growth. CPU: time.perf_counter around each call, median over reps.

Ceilings are measured in the same run: device copy bandwidth (a large D2D copy, bytes read +
bytes written) and matmul throughput (torch.matmul on 8192^3 random operands) per dtype.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

FLUSH_BYTES = 256 << 20
_flush_buf = {}


@dataclass
class Timing:
    """Median time of one call in milliseconds over ``reps`` repetitions (all in ``samples``)."""
    ms: float
    reps: int
    samples: List[float] = field(default_factory=list)

    @property
    def spread(self) -> float:
        """(max - min) / median of the samples: how noisy the measurement was."""
        return (max(self.samples) - min(self.samples)) / self.ms if self.samples and self.ms > 0 else 0.0


def _flush_buffer(nbytes: int):
    import torch
    key = (torch.cuda.current_device(), nbytes)
    buf = _flush_buf.get(key)
    if buf is None:
        buf = torch.empty(nbytes, dtype=torch.int8, device="cuda")
        _flush_buf[key] = buf
    return buf


def _reps_for(estimate_s: float, target_s: float, min_reps: int, max_reps: int) -> int:
    if estimate_s <= 0:
        return max_reps
    return int(max(min_reps, min(max_reps, target_s / estimate_s)))


def time_cuda(run: Callable[[], object], *, warmup: int = 2, target_s: float = 0.05, min_reps: int = 5,
              max_reps: int = 50, flush_bytes: int = FLUSH_BYTES) -> Timing:
    """Median CUDA-event time of ``run()`` with an L2 flush before every repetition."""
    import torch
    flush = _flush_buffer(flush_bytes) if flush_bytes else None
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    # one timed call (with flush) sizes the number of reps to about target_s of op time
    t0 = time.perf_counter()
    if flush is not None:
        flush.zero_()
    run()
    torch.cuda.synchronize()
    reps = _reps_for(time.perf_counter() - t0, target_s, min_reps, max_reps)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if flush is not None:
            flush.zero_()
        starts[i].record()
        run()
        ends[i].record()
    torch.cuda.synchronize()
    samples = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    return Timing(statistics.median(samples), reps, samples)


def time_cpu(run: Callable[[], object], *, warmup: int = 1, target_s: float = 0.2, min_reps: int = 3,
             max_reps: int = 50) -> Timing:
    """Median wall time of ``run()`` (a synchronous CPU call)."""
    for _ in range(warmup):
        run()
    t0 = time.perf_counter()
    run()
    reps = _reps_for(time.perf_counter() - t0, target_s, min_reps, max_reps)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(statistics.median(samples), reps, samples)


# ----------------------------------------------------------------------------------------------
# ceilings
# ----------------------------------------------------------------------------------------------
def copy_bandwidth_cuda(nbytes: int = 1 << 30, reps: int = 10) -> Dict[str, float]:
    """Device-to-device copy of ``nbytes`` (random data): GB/s counting bytes read + written."""
    import torch
    n = nbytes // 4
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    t = time_cuda(lambda: dst.copy_(src), warmup=2, min_reps=reps, max_reps=reps, flush_bytes=0)
    gbps = 2 * n * 4 / (t.ms * 1e-3) / 1e9
    del src, dst
    return {"GB/s": gbps, "ms": t.ms, "bytes": 2 * n * 4}


def matmul_tflops_cuda(dtype: str, n: int = 8192, reps: int = 10) -> Dict[str, float]:
    """torch.matmul of two random n x n matrices: TFLOP/s (2 n^3 FLOPs). dtype 'tf32' is float32
    with TF32 tensor cores allowed, 'float32' with them off."""
    import torch
    tdt = torch.float32 if dtype in ("tf32", "float32") else getattr(torch, dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        a = torch.randn(n, n, device="cuda").to(tdt)
        b = torch.randn(n, n, device="cuda").to(tdt)
        t = time_cuda(lambda: torch.matmul(a, b), warmup=3, min_reps=reps, max_reps=reps, flush_bytes=0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    del a, b
    return {"TFLOP/s": 2 * n ** 3 / (t.ms * 1e-3) / 1e12, "ms": t.ms, "n": n}


def copy_bandwidth_cpu(nbytes: int = 64 << 20, reps: int = 10) -> Dict[str, float]:
    """numpy copy of ``nbytes``: GB/s counting bytes read + written."""
    import numpy as np
    src = np.random.default_rng(0).standard_normal(nbytes // 8)
    dst = np.empty_like(src)
    t = time_cpu(lambda: np.copyto(dst, src), warmup=1, min_reps=reps, max_reps=reps)
    return {"GB/s": 2 * src.nbytes / (t.ms * 1e-3) / 1e9, "ms": t.ms, "bytes": 2 * src.nbytes}


def matmul_tflops_cpu(n: int = 1024, reps: int = 5) -> Dict[str, float]:
    """numpy float32 matmul of two random n x n matrices: TFLOP/s (2 n^3 FLOPs)."""
    import numpy as np
    g = np.random.default_rng(0)
    a = g.standard_normal((n, n), dtype=np.float32)
    b = g.standard_normal((n, n), dtype=np.float32)
    t = time_cpu(lambda: a @ b, warmup=1, min_reps=reps, max_reps=reps)
    return {"TFLOP/s": 2 * n ** 3 / (t.ms * 1e-3) / 1e12, "ms": t.ms, "n": n}
