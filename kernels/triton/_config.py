"""The launch-config convention of every kernel module in this package.

A module's launch configurations are module-level tables named ``<ROLE>_CONFIGS``, each a list of
``triton.Config`` (tile sizes and other meta-parameters in ``kwargs``, plus ``num_warps`` and
``num_stages``):

* for an ``@triton.autotune`` kernel, the autotuner's list on a GPU; :func:`tuned` swaps in one
  small config under ``TRITON_INTERPRET=1`` (autotuning there would run every config in the slow
  interpreter);
* otherwise the candidates the launcher picks from (by lane waste, row length, ...), or a
  one-entry list when the config is fixed.

Where the right entries depend on the element width, a table is a dict ``{'fp32': [...],
'fp16': [...]}`` (bfloat16 uses 'fp16'), and only then: identical per-dtype rows are one list.
Launchers read a table with :func:`for_dtype` and launch with :func:`launch_kwargs`, so what the
compile test (tests/test_triton_compile.py) builds from these tables is what runs.
"""
import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def config(num_warps: int = 4, num_stages: int = 1, **meta) -> triton.Config:
    """A launch config of a non-autotuned kernel: meta-parameters ``meta``, 4 warps, 1 stage."""
    return triton.Config(meta, num_warps=num_warps, num_stages=num_stages)


def gemm_config(bm, bn, bk, stages, warps, group_m=8) -> triton.Config:
    """A triton.Config for a BLOCK_M x BLOCK_N output tile stepping BLOCK_K along the reduction."""
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m},
                         num_stages=stages, num_warps=warps)


# the one small config every tl.dot GEMM runs under the interpreter
INTERP_GEMM_CONFIGS = [gemm_config(16, 16, 16, 1, 1, group_m=2)]


def tuned(table, interp_table):
    """The autotuner's config list: ``table`` on a GPU, ``interp_table`` under the interpreter."""
    return interp_table if INTERPRET else table


def for_dtype(table, tag: str):
    """The config list of ``table`` for dtype tag 'fp32' / 'fp16' (a per-dtype dict) or the list itself."""
    return table[tag] if isinstance(table, dict) else table


def launch_kwargs(cfg: triton.Config) -> dict:
    """The keyword arguments that launch a kernel with ``cfg``: its meta-parameters, warps, stages."""
    return dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
