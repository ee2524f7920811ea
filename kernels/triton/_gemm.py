"""Tile ordering shared by the tl.dot GEMM kernels (conv2d, linear)."""
import triton
import triton.language as tl


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
