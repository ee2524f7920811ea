"""The triton backend's opt-in TMA conv forward (``algo='tma'``): launcher of
``cnngpu.kernels.triton.conv2d_fwd_tma`` for 1x1, stride-1, unpadded convolutions on NCHW tensors.

Unmeasured and never chosen by ``algo='auto'``: it exists so a GPU run can time TMA loads of NCHW
activations (no channels-last copy) against the implicit GEMM. The backward of a convolution run
with ``algo='tma'`` takes the 'auto' algorithms (``conv_policy.choose_bwd_algos``).
"""
from __future__ import annotations

import torch
import triton

from cnngpu.kernels.triton.conv2d_fwd_tma import conv2d_fwd_1x1_tma

from ...geometry import ConvGeometry
from ..limits import GRID_YZ_MAX
from ._common import empty, launched
from ._tuning import launch

TMA_ALIGN = 16                  # bytes: descriptor base addresses and row strides


def tma_unsupported(g: ConvGeometry, x: torch.Tensor, w: torch.Tensor) -> str | None:
    """Why the TMA forward cannot run this convolution (None when it can)."""
    if g.R != 1 or g.S != 1 or g.stride != (1, 1) or g.pad != (0, 0) or g.groups != 1:
        return (f"it runs 1x1, stride-1, unpadded, groups-1 convolutions only (got kernel {g.R}x{g.S}, "
                f"stride {g.stride}, padding {g.pad}, groups {g.groups})")
    if x.dim() != 4 or not x.is_contiguous():
        return f"x must be NCHW-contiguous (got strides {tuple(x.stride())})"
    item = x.element_size()
    L = g.H * g.W
    if (L * item) % TMA_ALIGN or (g.C * item) % TMA_ALIGN:
        return (f"H*W*itemsize and C*itemsize must be multiples of {TMA_ALIGN} bytes (got H*W={L}, C={g.C}, "
                f"itemsize {item})")
    if x.data_ptr() % TMA_ALIGN or (w.is_contiguous() and w.data_ptr() % TMA_ALIGN):
        return f"x and weight must start on a {TMA_ALIGN}-byte boundary"
    if g.N > GRID_YZ_MAX:
        return f"the batch is grid axis 2 (at most {GRID_YZ_MAX} images, got {g.N})"
    return None


def _alloc(size: int, alignment: int, stream):
    """Global scratch for device-side tensor descriptors (triton's allocator protocol)."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _ensure_allocator() -> None:
    """On a GPU, device-side descriptors need triton's allocator: install a torch one unless the
    caller set one already (triton keeps it in a context variable)."""
    from triton.runtime import _allocation
    current = _allocation._allocator.get()
    if isinstance(current, _allocation.NullAllocator):
        triton.set_allocator(_alloc)


def conv2d_forward_tma(x: torch.Tensor, w: torch.Tensor, b, g: ConvGeometry, precision: str) -> torch.Tensor:
    """y = conv2d(x, w) + b for a 1x1 stride-1 unpadded convolution on NCHW x (N, C, H, W), w
    (K, C, 1, 1), b (K,) or None -> y (N, K, H, W) NCHW-contiguous of x's dtype. Raises ValueError
    naming the requirement when :func:`tma_unsupported` says it cannot run."""
    why = tma_unsupported(g, x, w)
    if why is not None:
        raise ValueError(f"conv2d algo='tma': {why}; use algo='auto'")
    L = g.H * g.W
    wc = w.reshape(g.K, g.C).contiguous()
    y = empty((g.N, g.K, g.H, g.W), x.dtype, x.device)
    if x.device.type == "cuda":
        _ensure_allocator()
    args = (x, wc, b if b is not None else y, y, g.N, g.C, L, g.K, b.stride(0) if b is not None else 0)
    grid = lambda meta: (triton.cdiv(L, meta["BLOCK_N"]), triton.cdiv(g.K, meta["BLOCK_M"]), g.N)  # noqa: E731
    launch(conv2d_fwd_1x1_tma, grid, args, HAS_BIAS=b is not None,
           PRECISION=precision if x.dtype == torch.float32 else "ieee")
    launched("conv2d_fwd_1x1_tma")
    return y
