"""@triton.jit kernels, one op family per module, each with its launch-config table."""
