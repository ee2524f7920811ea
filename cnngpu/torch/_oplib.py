"""Shared pieces of the ``cnngpu::`` custom ops: absent outputs, unbatched inputs, vmap rules.

A custom op returns tensors only, so a gradient nobody asked for (``output_mask``) or a statistic
that does not exist comes back as an empty (0,) tensor; the autograd formulas turn those into None.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple

import torch


def absent(like: torch.Tensor, dtype: Any = None) -> torch.Tensor:
    """The (0,) tensor that stands for "no such output"."""
    return like.new_empty((0,), dtype=like.dtype if dtype is None else dtype)


def or_none(t: torch.Tensor, present: bool) -> Any:
    return t if present else None


def batched(x: torch.Tensor, image_ndim: int = 3) -> Tuple[torch.Tensor, bool]:
    """(x with a batch dim, whether it was added): an unbatched image (C, H, W) gets N = 1, as torch."""
    if x.dim() == image_ndim:
        return x.unsqueeze(0), True
    return x, False


def unbatched(t: torch.Tensor, unb: bool) -> torch.Tensor:
    """Undo ``batched``: drop the N = 1 dim again (not as an autograd view: an op output)."""
    return t.squeeze(0).detach() if unb else t


def batched_shape(shape: Sequence[int], image_ndim: int = 3) -> Tuple[Tuple[int, ...], bool]:
    shape = tuple(shape)
    return ((1,) + shape, True) if len(shape) == image_ndim else (shape, False)


def check_image(x: torch.Tensor, op: str, name: str = "input") -> None:
    if x.dim() not in (3, 4):
        raise ValueError(f"{op}: {name} must be 3-D (C, H, W) (unbatched) or 4-D (N, C, H, W), "
                         f"got shape {tuple(x.shape)}")


def _dims(in_dims: Tuple[Any, ...]) -> List[Any]:
    """vmap's in_dims with a non-tensor argument's entry (None, or a list of None for a list) as None."""
    return [d if isinstance(d, int) else None for d in in_dims]


def register_loop_vmap(op: Any) -> None:
    """A vmap rule that runs ``op`` once per batch entry and stacks the results along dim 0: correct
    for every op (each call sees exactly the unbatched arguments), and what ops without a cheaper
    rule use. ``op``'s tensor outputs come back batched at dim 0."""

    def rule(info: Any, in_dims: Tuple[Any, ...], *args: Any) -> Any:
        in_dims = tuple(_dims(in_dims))
        outs: List[Any] = []
        for i in range(info.batch_size):
            outs.append(op(*[a.select(d, i) if d is not None else a for a, d in zip(args, in_dims)]))
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(list(o)) for o in zip(*outs)), (0,) * len(outs[0])
        return torch.stack(outs), 0

    op.register_vmap(rule)


def unbatched_args_vmap(op: Any, fast: Callable[..., Any], batched_only: Sequence[int] = (0,)) -> None:
    """A vmap rule for ``op``: ``fast(batch_size, args)`` when only the arguments at positions
    ``batched_only`` carry the vmapped dim (moved to dim 0 first), else the per-entry loop."""

    def rule(info: Any, in_dims: Tuple[Any, ...], *args: Any) -> Any:
        in_dims = tuple(_dims(in_dims))
        if all(d is None for i, d in enumerate(in_dims) if i not in batched_only) and \
                any(in_dims[i] is not None for i in batched_only):
            args = tuple(a.movedim(d, 0) if d is not None else a for a, d in zip(args, in_dims))
            return fast(info.batch_size, args)
        outs = [op(*[a.select(d, i) if d is not None else a for a, d in zip(args, in_dims)])
                for i in range(info.batch_size)]
        return torch.stack(outs), 0

    op.register_vmap(rule)


def no_alias(outputs: Any, *inputs: Any) -> Any:
    """The op's outputs with any that shares memory with an input or an earlier output cloned
    (custom ops must return fresh tensors; a backend may hand back an input, e.g. running stats in
    eval mode, or one array twice, e.g. the statistics of an empty input)."""
    spans: List[Tuple[int, int]] = []

    def note(t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if st.nbytes():
            spans.append((st.data_ptr(), st.data_ptr() + st.nbytes()))

    for a in inputs:
        if isinstance(a, torch.Tensor):
            note(a)
    single = isinstance(outputs, torch.Tensor)
    res = []
    for t in ((outputs,) if single else outputs):
        st = t.untyped_storage()
        lo, hi = st.data_ptr(), st.data_ptr() + st.nbytes()
        if t.numel() == 0 or any(lo < b and a < hi for a, b in spans):
            t = t.clone(memory_format=torch.preserve_format)
        note(t)
        res.append(t)
    return res[0] if single else tuple(res)
