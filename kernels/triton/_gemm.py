"""Launch-config and tile-ordering helpers shared by the tl.dot GEMM kernels (conv2d, linear)."""
import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def gemm_config(bm, bn, bk, stages, warps, group_m=8):
    """A triton.Config for a BLOCK_M x BLOCK_N output tile stepping BLOCK_K along the reduction."""
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m},
                         num_stages=stages, num_warps=warps)


def tuned(table, interp_table):
    """The autotuner's config list: ``table`` on a GPU, one small config under the interpreter."""
    return interp_table if INTERPRET else table


@triton.jit
def grouped_tile_ids(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """Grouped ordering of output tiles: GROUP_M row tiles share each column-tile sweep (L2 reuse)."""
    width = GROUP_M * num_n
    group = pid // width
    first_m = group * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    return pid_m, pid_n
