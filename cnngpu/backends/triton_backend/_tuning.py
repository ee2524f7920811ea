"""Launching the triton backend's autotuned kernels (conv GEMMs and direct kernels, linear): one
config picked per shape by default, triton's autotuner only under ``CNNGPU_AUTOTUNE=1``, and the
launch capture that ``bench.static_report`` compiles.

Picking: a kernel's candidates are its autotune table (built for sm_90) or, before Hopper, its
``sm80_configs`` attribute (the module's ``<ROLE>_SM80_CONFIGS``), pruned by the kernel's own
``prune_configs_by`` and then chosen by the grid they make (:func:`pick_config`), so the first call
of a shape compiles one kernel instead of timing 4-7. No autotuned kernel of this backend writes
its own inputs (the BatchNorm running statistics are updated by a plain jit kernel), so the
autotuner needs no ``restore_value``.
"""
from __future__ import annotations

import contextlib
import os

import torch
import triton

from cnngpu.kernels.triton._config import launch_kwargs

from .. import conv_policy as policy
from ._common import num_sms


def autotune_enabled() -> bool:
    """``CNNGPU_AUTOTUNE=1``: the autotuned kernels run through triton's autotuner (every pruned
    config of their table is compiled and timed on the first call of a shape); otherwise one config
    is picked."""
    return os.environ.get("CNNGPU_AUTOTUNE") == "1"


_CAPTURE: list | None = None


@contextlib.contextmanager
def capture_launches():
    """Within this block kernels launched through :func:`launch` are not launched: each launch is
    appended to the yielded list as a dict (name, fn: the JITFunction, args, kwargs: constexprs and
    the picked config's launch keywords, grid). ``bench.static_report`` compiles exactly these with
    triton's launch specialisation, so it checks the binaries the launchers run (works on 'meta'
    tensors)."""
    global _CAPTURE
    prev, _CAPTURE = _CAPTURE, []
    try:
        yield _CAPTURE
    finally:
        _CAPTURE = prev


def capturing() -> bool:
    """Whether a :func:`capture_launches` block is active."""
    return _CAPTURE is not None


def device_arch(device) -> int:
    """Compute capability major*10 + minor of ``device``; 90 (the static report's target, an H200)
    off a GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major * 10 + minor
    return 90


def config_table(kernel, arch: int):
    """The candidate configs of an autotuned kernel on ``arch``: the module's ``<ROLE>_SM80_CONFIGS``
    (the kernel's ``sm80_configs`` attribute) before Hopper, its own table (built for sm_90) from
    sm_90 on (under the interpreter, arch 90 off a GPU: its one small config)."""
    sm80 = getattr(kernel, "sm80_configs", None)
    if arch < 90 and sm80:
        return list(sm80)
    return list(kernel.configs)


def _tile_outputs(cfg) -> int:
    return int(cfg.kwargs.get("BLOCK_M", 0)) * int(cfg.kwargs.get("BLOCK_N", 0))


def pick_config(kernel, args, constexprs, grid=None, sms: int = 0, arch: int = 90) -> triton.Config:
    """The launch config of an autotuned kernel without autotuning (one compile per shape).

    Candidates: :func:`config_table` for ``arch``, pruned by the kernel's own ``prune_configs_by``
    (tiles far larger than the GEMM go), in the table's order of preference. With a ``grid`` and
    ``sms``: the first candidate whose grid fills at least one wave of ``sms`` programs -- two
    (``conv_policy.big_tile_fills``) for tiles above ``conv_policy.BIG_TILE`` outputs -- else (a
    small GEMM) the candidate with the most programs, earliest on ties; without: the first that is
    not such a big tile.
    """
    configs = config_table(kernel, arch)
    prune = getattr(kernel, "early_config_prune", None)
    if prune is not None:
        named = dict(zip(kernel.arg_names, args))
        configs = prune(configs, named, **constexprs) or configs
    if grid is None or sms <= 0 or len(configs) == 1:
        return next((c for c in configs if _tile_outputs(c) <= policy.BIG_TILE), configs[0])
    progs = [programs(grid(c.kwargs)) for c in configs]
    for c, n in zip(configs, progs):
        if n >= sms and policy.big_tile_fills(_tile_outputs(c), n, sms):
            return c
    return configs[progs.index(max(progs))]


def programs(grid) -> int:
    """The number of programs of a launch grid (a tuple of extents)."""
    n = 1
    for d in grid:
        n *= int(d)
    return n


def picked(kernel, grid, args, constexprs):
    """(config, SMs) of a launch without autotuning (:func:`pick_config` on the args' device)."""
    dev = next(a.device for a in args if isinstance(a, torch.Tensor))
    sms = num_sms(dev)
    return pick_config(kernel, args, constexprs, grid, sms, device_arch(dev)), sms


def launch(kernel, grid, args, cfg=None, **constexprs) -> None:
    """Launch autotuned ``kernel`` on ``grid`` (a function of the meta-parameters) with ``cfg`` or
    one picked config (:func:`pick_config`), through the autotuner when :func:`autotune_enabled`
    (and no cfg is forced), or capture it."""
    if cfg is None and autotune_enabled() and _CAPTURE is None:
        kernel[grid](*args, **constexprs)
        return
    if cfg is None:
        cfg, _ = picked(kernel, grid, args, constexprs)
    kw = dict(constexprs, **launch_kwargs(cfg))
    g = grid(cfg.kwargs)
    if _CAPTURE is not None:
        _CAPTURE.append(dict(name=kernel.fn.__name__, fn=kernel.fn, args=args, kwargs=kw, grid=g))
        return
    kernel.fn[g](*args, **kw)
