"""dtype names shared by the API layer and the backends (numpy, cupy and torch arrays alike)."""

FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


def dtype_name(x) -> str:
    """'float32', 'float16', 'bfloat16', 'float64', 'int64', ... for numpy, cupy and torch arrays."""
    dt = x.dtype
    name = getattr(dt, "name", None)
    if name is None or not isinstance(name, str):
        name = str(dt).replace("torch.", "")
    return name
