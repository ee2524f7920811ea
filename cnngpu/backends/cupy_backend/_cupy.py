"""The one place the cupy backend imports cupy: every other module does ``from ._cupy import cupy``,
so what backs the backend's arrays and kernels can be switched here alone."""
import cupy

__all__ = ["cupy"]
