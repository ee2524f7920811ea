"""Device code only (installed as ``cnngpu.kernels``): ``triton/`` holds @triton.jit kernels and
their launch-config tables; ``cuda/`` holds CUDA C sources (one op family per file, extern "C"
entry points) that the cupy backend loads with cupy.RawModule. Nothing here knows of layers."""
import os

CUDA_DIR = os.path.join(os.path.dirname(__file__), "cuda")
