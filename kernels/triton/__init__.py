"""@triton.jit kernels, one op family per module, each with its launch-config tables (``*_CONFIGS``;
the convention is in ``_config.py``). Private modules (``_*``) hold shared device helpers and the
config helpers."""
