"""Allocation and bookkeeping shared by the triton backend's op modules."""
import contextlib
from collections import Counter

import torch

from .. import poison_enabled
from .. import limits

LAUNCHES: Counter = Counter()


def empty(shape, dtype, device):
    """torch.empty, filled with NaN (float) or -1 (int) when output poisoning is on."""
    out = torch.empty(tuple(int(s) for s in shape), dtype=dtype, device=device)
    if poison_enabled():
        out.fill_(float("nan") if out.dtype.is_floating_point else -1)
    return out


def launched(kernel_name: str) -> None:
    """Record one launch of ``kernel_name`` (tests assert the kernel they meant really ran)."""
    LAUNCHES[kernel_name] += 1


def wrote_in_place(*tensors) -> None:
    """Bump torch's in-place version counter of tensors a kernel wrote through their pointers
    (torch cannot see such writes), e.g. running statistics: copies cached per version
    (``weight_cache``: the fused block's folded weight reads running_var) are then remade. None and
    inference tensors (no counter) are skipped."""
    for t in tensors:
        if t is not None and not t.is_inference():
            torch.autograd.graph.increment_version(t)


_ASSUMED_SMS = None


@contextlib.contextmanager
def assume_sms(count: int):
    """Launch plans made within this block assume ``count`` SMs whatever the device (the static
    report plans for an H200, 132 SMs, on 'meta' tensors)."""
    global _ASSUMED_SMS
    prev, _ASSUMED_SMS = _ASSUMED_SMS, int(count)
    try:
        yield
    finally:
        _ASSUMED_SMS = prev


def num_sms(device) -> int:
    """Streaming multiprocessors of ``device`` (a torch.device or its name); ``OFF_GPU_SMS`` for a
    CPU tensor (the interpreter); the count of an enclosing :func:`assume_sms` if any."""
    if _ASSUMED_SMS is not None:
        return _ASSUMED_SMS
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return limits.OFF_GPU_SMS


def needs_int64(tensors, extents=(), offset_headroom: int = 0) -> bool:
    """``limits.needs_int64`` for torch tensors (None entries skipped): pick a kernel's INT64 variant."""
    layouts = [(tuple(t.shape), tuple(t.stride())) for t in tensors if t is not None]
    return limits.needs_int64(layouts, extents, offset_headroom)


def dtype_tag(dtype) -> str:
    """The launch-config table key of a torch dtype: 'fp32', or 'fp16' for 16-bit floats."""
    return "fp32" if dtype == torch.float32 else "fp16"
