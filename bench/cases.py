"""Benchmark cases: for one (op, shape, provider, dtype), the inputs and a zero-argument callable
that runs the op once, used by the pytest-benchmark suites and by ``bench.gpu_report``.

Providers (the "backend" axis of every benchmark):
    numpy      cnngpu's NumPy reference backend (CPU)
    torch_cpu  torch.nn.functional on CPU (the CPU baseline)
    triton     cnngpu's Triton backend on torch CUDA tensors (NCHW)
    cupy       cnngpu's CuPy/CUDA C backend on cupy arrays (NCHW)
    torch      torch.nn.functional on CUDA, NCHW (cuDNN for conv): the GPU baseline
    torch_cl   the same with channels_last tensors
cnngpu providers go through ``cnngpu.functional`` (the public API, validation included), the conv
weight declared as one unchanging parameter version (``weight_cache.versioned``) as cnngpu.nn and
cnngpu.torch declare theirs, so both GPU backends time their cached weight re-layout, the path
models take (triton's torch tensors carry their own version); torch
backward ops run through autograd (``torch.autograd.grad`` with ``retain_graph``), i.e. what a
torch user gets, computing only the gradients the cnngpu op returns.

dtype names: float16, bfloat16, float32 (ieee fp32 math: cnngpu precision='ieee', torch TF32 off)
and tf32 (float32 storage, TF32 tensor-core math: precision='tf32', torch cuDNN TF32 on).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from . import shapes as S

CPU_PROVIDERS = ("numpy", "torch_cpu")
GPU_PROVIDERS = ("torch", "torch_cl", "triton", "cupy")
ALL_PROVIDERS = CPU_PROVIDERS + GPU_PROVIDERS
CNNGPU_PROVIDERS = ("numpy", "triton", "cupy")
TORCH_PROVIDERS = ("torch_cpu", "torch", "torch_cl")

# A provider's result is compared with its baseline's (torch_cpu for CPU providers, torch for GPU
# ones) by max over outputs of ||a - b|| / ||b||; above this it is flagged MISMATCH.
CHECK_TOL = {"float16": 2e-2, "bfloat16": 5e-2, "tf32": 1e-2, "float32": 1e-4, "float64": 1e-10}

EPS = 1e-5
MOMENTUM = 0.1


class Unavailable(Exception):
    """The provider cannot run this case here; the message says why (registry reason etc.)."""


def baseline(provider: str) -> str:
    return "torch_cpu" if provider in CPU_PROVIDERS else "torch"


def storage_dtype(dtype: str) -> str:
    return "float32" if dtype == "tf32" else dtype


def precision(dtype: str) -> str:
    return "tf32" if dtype == "tf32" else "ieee"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# the backend functions (cnngpu/backends/ops.py) each benchmark op needs
BACKEND_FUNCS = {
    "conv_fwd": ("conv2d_forward",), "conv_dx": ("conv2d_backward",), "conv_dw": ("conv2d_backward",),
    "maxpool_fwd": ("max_pool2d_forward",), "maxpool_bwd": ("max_pool2d_forward", "max_pool2d_backward"),
    "avgpool_fwd": ("avg_pool2d_forward",), "avgpool_bwd": ("avg_pool2d_backward",),
    "bn_relu_fwd": ("batch_norm_forward",), "bn_relu_bwd": ("batch_norm_forward", "batch_norm_backward"),
    "layernorm_fwd": ("layer_norm_forward",), "layernorm_bwd": ("layer_norm_forward", "layer_norm_backward"),
    "groupnorm_fwd": ("group_norm_forward",), "groupnorm_bwd": ("group_norm_forward", "group_norm_backward"),
}


def unavailable(provider: str, dtype: str, shape=None, op: Optional[str] = None) -> Optional[str]:
    """None when ``provider`` can run ``dtype`` (on ``shape``, for ``op``) here, else the reason
    (the registry's reason, an import error of a backend not finished yet, a missing op, ...)."""
    if provider not in CPU_PROVIDERS + GPU_PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; choose one of {CPU_PROVIDERS + GPU_PROVIDERS}")
    if provider in TORCH_PROVIDERS:
        try:
            import torch
        except ImportError as e:
            return f"torch is not installed ({e})"
        if provider != "torch_cpu" and not torch.cuda.is_available():
            return "torch sees no CUDA device"
        if provider == "torch_cpu" and dtype in ("tf32", "bfloat16"):
            return f"the CPU baseline runs {dtype} only on a GPU"
        if provider == "torch_cl" and shape is not None and len(_x_shape(shape)) != 4:
            return "channels_last needs a 4-D input"
        return None
    # cnngpu backends: the registry says why one cannot run
    if provider != "numpy" and not _cuda_available():
        from cnngpu import backends
        try:
            backends.get_backend(provider)
        except Exception as e:  # BackendUnavailableError carries the registry's reason
            return f"{type(e).__name__}: {e}"
        return (f"the {provider} backend is benchmarked on a CUDA device only (torch sees none; "
                f"Triton's interpreter is a verification tool, not timed)")
    try:
        from cnngpu import backends
        be = backends.get_backend(provider)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    if storage_dtype(dtype) not in be.DTYPES:
        return f"backend {provider!r} does not support {dtype} (supported: {', '.join(be.DTYPES)})"
    if provider == "numpy" and dtype == "tf32":
        return "the numpy backend has no tf32 mode"
    missing = [f for f in BACKEND_FUNCS.get(op, ()) if not callable(getattr(be, f, None))]
    if missing:
        return f"backend {provider!r} has no {', '.join(missing)} yet"
    return None


def bench_shapes(op: str, shape_set: str):
    """Shapes of ``op`` in a shape set: 'auto'/'all' every shape, 'quick' the ``quick`` and ``cpu``
    tagged ones, 'tiny' the ``tiny`` ones (see ``provider_runs`` for which provider gets which)."""
    if shape_set in ("auto", "all"):
        return S.shapes_for(op)
    if shape_set == "quick":
        return tuple(s for s in S.shapes_for(op) if s.tags & {"quick", "cpu"})
    if shape_set == "tiny":
        return S.select(op, "tiny")
    raise ValueError(f"unknown shape set {shape_set!r}; choose auto, all, quick or tiny")


def provider_runs(provider: str, shape, dtype: str, shape_set: str, gpu_dtypes) -> bool:
    """Whether (provider, shape, dtype) is a benchmark of ``shape_set``.

    CPU providers run float32 on the CPU-sized shapes (every shape with 'all'). GPU providers run
    ``gpu_dtypes``: with 'auto' on every shape when CUDA is visible, else on the CPU-sized ones
    (where they skip, saying why); with 'quick' on the ``quick`` shapes; with 'all'/'tiny' on all."""
    cpu_sized = "cpu" in shape.tags or "tiny" in shape.tags
    if provider in CPU_PROVIDERS:
        return dtype == "float32" and (shape_set == "all" or cpu_sized)
    if dtype not in gpu_dtypes:
        return False
    if shape_set == "quick":
        return "quick" in shape.tags
    if shape_set == "auto" and not _cuda_available():
        return cpu_sized
    return True


def _x_shape(shape):
    return tuple(shape.x_shape)


# ----------------------------------------------------------------------------------------------
# inputs: torch tensors, shared by every provider of one (op, shape, dtype)
# ----------------------------------------------------------------------------------------------
def make_inputs(op: str, shape, dtype: str, device: str = "cpu", seed: int = 0) -> Dict[str, object]:
    """Fresh random (never zero) inputs for ``op`` on ``shape`` as torch tensors on ``device``."""
    import torch
    tdt = getattr(torch, storage_dtype(dtype))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    def randn(shp, dt=tdt, scale=1.0):
        return (torch.randn(tuple(shp), generator=gen, device=device, dtype=torch.float32) * scale).to(dt)

    d: Dict[str, object] = {}
    if op in S.CONV_OPS:
        d["x"] = randn(shape.x_shape)
        d["w"] = randn(shape.w_shape)
        if op != "conv_fwd":
            d["dy"] = randn(shape.y_shape)
    elif op in S.POOL_OPS:
        d["x"] = randn(shape.x_shape)
        if op.endswith("_bwd"):
            d["dy"] = randn(shape.y_shape)
    elif op in S.BN_OPS:
        C = shape.C
        d["x"] = randn(shape.x_shape, scale=2.0) + 0.5
        d["weight"] = randn((C,), torch.float32, 0.5) + 1.0
        d["bias"] = randn((C,), torch.float32, 0.5)
        d["running_mean"] = randn((C,), torch.float32, 0.1)
        d["running_var"] = torch.rand((C,), generator=gen, device=device) + 0.5
        if op.endswith("_bwd"):
            d["dy"] = randn(shape.x_shape)
    elif op in S.LAYER_NORM_OPS + S.GROUP_NORM_OPS:
        d["x"] = randn(shape.x_shape, scale=2.0) + 0.5
        d["weight"] = randn(shape.param_shape, scale=0.5) + 1.0
        d["bias"] = randn(shape.param_shape, scale=0.5)
        if op.endswith("_bwd"):
            d["dy"] = randn(shape.x_shape)
    else:
        raise ValueError(f"unknown op {op!r}; choose one of {S.ALL_OPS}")
    return d


@dataclass
class Case:
    """One runnable benchmark case. ``run()`` launches the op once (asynchronously on a GPU);
    ``sync()`` waits for it; ``result()`` returns the op's outputs as torch tensors (device-side
    for GPU providers) for the check against the baseline."""
    op: str
    shape: object
    provider: str
    dtype: str
    run: Callable[[], object]
    result: Callable[[], List[object]]
    sync: Callable[[], None] = field(default=lambda: None)

    def run_sync(self):
        self.run()
        self.sync()

    @property
    def flops(self) -> int:
        return self.shape.flops(self.op)

    @property
    def bytes(self) -> int:
        return self.shape.bytes(self.op, self.dtype)


def make_case(op: str, shape, provider: str, dtype: str, inputs: Optional[Dict[str, object]] = None,
              seed: int = 0) -> Case:
    """Build the case; raises ``Unavailable`` (with the reason) when the provider cannot run it."""
    why = unavailable(provider, dtype, shape, op)
    if why is not None:
        raise Unavailable(why)
    if inputs is None:
        device = "cpu" if provider in CPU_PROVIDERS else "cuda"
        inputs = make_inputs(op, shape, dtype, device, seed)
    if provider in CNNGPU_PROVIDERS:
        return _cnngpu_case(op, shape, provider, dtype, inputs)
    return _torch_case(op, shape, provider, dtype, inputs)


# ----------------------------------------------------------------------------------------------
# cnngpu providers (numpy, triton, cupy) through cnngpu.functional
# ----------------------------------------------------------------------------------------------
def _native(provider: str, t):
    """torch tensor -> a private copy as the provider's array (contiguous, NCHW)."""
    if provider == "numpy":
        return t.detach().cpu().numpy().copy()
    if provider == "triton":
        import torch
        return t.detach().clone(memory_format=torch.contiguous_format)
    import cupy
    return cupy.from_dlpack(t.detach().contiguous()).copy()


def to_torch(a):
    """numpy / cupy / torch array -> torch tensor (zero-copy where possible)."""
    import numpy as np
    import torch
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))
    return torch.from_dlpack(a)


class _WeightOwner:
    """Stands for the parameter a benchmarked conv weight belongs to (weak-referenceable)."""


def _cnngpu_case(op, shape, provider, dtype, inputs) -> Case:
    import cnngpu.functional as F
    be = provider
    a = {k: _native(provider, v) for k, v in inputs.items()}
    sync = _device_sync if provider != "numpy" else (lambda: None)
    prec = precision(dtype)
    out = {}

    def keep(res):
        out["res"] = res
        return res

    if op in S.CONV_OPS:
        from cnngpu.backends import weight_cache
        ca = shape.conv_args()
        owner = _WeightOwner()          # the weight's parameter: one version for the whole benchmark
        if op == "conv_fwd":
            def run():
                with weight_cache.versioned(a["w"], owner, 0):
                    return keep(F.conv2d(a["x"], a["w"], None, precision=prec, backend=be, **ca))
            pick = lambda r: [r]  # noqa: E731
        else:
            need_dx = op == "conv_dx"

            def run():
                with weight_cache.versioned(a["w"], owner, 0):
                    return keep(F.conv2d_backward(a["dy"], a["x"], a["w"], need_dx=need_dx, need_dw=not need_dx,
                                                  need_db=False, precision=prec, backend=be, **ca))
            pick = (lambda r: [r[0]]) if need_dx else (lambda r: [r[1]])  # noqa: E731
    elif op in S.POOL_OPS:
        pa = shape.pool_args()
        x_shape = shape.x_shape
        if op == "maxpool_fwd":
            def run():
                return keep(F.max_pool2d(a["x"], backend=be, **pa, return_indices=True))
            pick = lambda r: [r[0]]  # noqa: E731
        elif op == "maxpool_bwd":
            _, argmax = F.max_pool2d(a["x"], backend=be, **pa, return_indices=True)

            def run():
                return keep(F.max_pool2d_backward(a["dy"], argmax, x_shape, backend=be, **pa))
            pick = lambda r: [r]  # noqa: E731
        elif op == "avgpool_fwd":
            def run():
                return keep(F.avg_pool2d(a["x"], backend=be, **pa))
            pick = lambda r: [r]  # noqa: E731
        else:
            def run():
                return keep(F.avg_pool2d_backward(a["dy"], x_shape, backend=be, **pa))
            pick = lambda r: [r]  # noqa: E731
    elif op in S.BN_OPS:
        w, b = a["weight"], a["bias"]
        rm, rv = a["running_mean"], a["running_var"]
        if op == "bn_relu_fwd":
            def run():
                return keep(F.batch_norm(a["x"], rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS,
                                         relu=True, backend=be, return_stats=True))
            pick = lambda r: [r[0]]  # noqa: E731
        else:
            y, mean, invstd = F.batch_norm(a["x"], rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS,
                                           relu=True, backend=be, return_stats=True)

            def run():
                return keep(F.batch_norm_backward(a["dy"], a["x"], y, w, mean, invstd, training=True,
                                                  relu=True, backend=be))
            pick = lambda r: list(r)  # noqa: E731
    elif op in S.LAYER_NORM_OPS:
        ns, nd = shape.param_shape, shape.normalized_ndim
        if op == "layernorm_fwd":
            def run():
                return keep(F.layer_norm(a["x"], ns, a["weight"], a["bias"], EPS, backend=be, return_stats=True))
            pick = lambda r: [r[0]]  # noqa: E731
        else:
            _, mean, rstd = F.layer_norm(a["x"], ns, a["weight"], a["bias"], EPS, backend=be, return_stats=True)

            def run():
                return keep(F.layer_norm_backward(a["dy"], a["x"], a["weight"], mean, rstd, nd, backend=be))
            pick = lambda r: list(r)  # noqa: E731
    elif op in S.GROUP_NORM_OPS:
        G = shape.groups
        if op == "groupnorm_fwd":
            def run():
                return keep(F.group_norm(a["x"], G, a["weight"], a["bias"], EPS, backend=be, return_stats=True))
            pick = lambda r: [r[0]]  # noqa: E731
        else:
            _, mean, rstd = F.group_norm(a["x"], G, a["weight"], a["bias"], EPS, backend=be, return_stats=True)

            def run():
                return keep(F.group_norm_backward(a["dy"], a["x"], G, a["weight"], mean, rstd, backend=be))
            pick = lambda r: list(r)  # noqa: E731
    else:
        raise ValueError(f"unknown op {op!r}")

    def result():
        if "res" not in out:
            run()
            sync()
        return [to_torch(r) for r in pick(out["res"])]

    return Case(op, shape, provider, dtype, run, result, sync)


def _device_sync():
    import torch
    torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------
# torch providers (torch_cpu, torch, torch_cl)
# ----------------------------------------------------------------------------------------------
def _torch_case(op, shape, provider, dtype, inputs) -> Case:
    import torch
    import torch.nn.functional as tF
    cl = provider == "torch_cl"

    def prep(t, grad=False):
        t = t.detach().clone()
        if cl and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t.requires_grad_(grad)

    tf32 = dtype == "tf32"
    on_gpu = provider != "torch_cpu"
    sync = _device_sync if on_gpu else (lambda: None)
    out = {}

    def set_tf32():
        if on_gpu:
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32

    def grad_of(y, wrt, dy):
        def run():
            out["res"] = torch.autograd.grad(y, wrt, dy, retain_graph=True)
            return out["res"]
        return run

    if op in S.CONV_OPS:
        ca = shape.conv_args()
        x = prep(inputs["x"], op == "conv_dx")
        w = prep(inputs["w"], op == "conv_dw")
        set_tf32()
        if op == "conv_fwd":
            def run():
                set_tf32()
                out["res"] = (tF.conv2d(x, w, None, **ca),)
                return out["res"]
        else:
            y = tF.conv2d(x, w, None, **ca)
            dy = prep(inputs["dy"])
            g = grad_of(y, x if op == "conv_dx" else w, dy)

            def run():
                set_tf32()
                return g()
    elif op in S.POOL_OPS:
        pa = shape.pool_args()
        k, s, p = pa["kernel_size"], pa["stride"], pa["padding"]
        x = prep(inputs["x"], op.endswith("_bwd"))
        if op == "maxpool_fwd":
            def run():
                out["res"] = tF.max_pool2d(x, k, s, p, return_indices=True)[:1]
                return out["res"]
        elif op == "avgpool_fwd":
            def run():
                out["res"] = (tF.avg_pool2d(x, k, s, p),)
                return out["res"]
        else:
            y = tF.max_pool2d(x, k, s, p) if op == "maxpool_bwd" else tF.avg_pool2d(x, k, s, p)
            run = grad_of(y, x, prep(inputs["dy"]))
    elif op in S.BN_OPS:
        bwd = op == "bn_relu_bwd"
        x = prep(inputs["x"], bwd)
        w, b = prep(inputs["weight"], bwd), prep(inputs["bias"], bwd)
        rm, rv = prep(inputs["running_mean"]), prep(inputs["running_var"])
        if not bwd:
            def run():
                y = tF.batch_norm(x, rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS)
                out["res"] = (tF.relu(y, inplace=True),)
                return out["res"]
        else:
            y = tF.relu(tF.batch_norm(x, rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS), inplace=True)
            run = grad_of(y, (x, w, b), prep(inputs["dy"]))
    elif op in S.LAYER_NORM_OPS + S.GROUP_NORM_OPS:
        bwd = op.endswith("_bwd")
        x = prep(inputs["x"], bwd)
        w, b = prep(inputs["weight"], bwd), prep(inputs["bias"], bwd)
        if op.startswith("layernorm"):
            ns = shape.param_shape
            f = lambda: tF.layer_norm(x, ns, w, b, EPS)  # noqa: E731
        else:
            G = shape.groups
            f = lambda: tF.group_norm(x, G, w, b, EPS)  # noqa: E731
        if not bwd:
            def run():
                out["res"] = (f(),)
                return out["res"]
        else:
            run = grad_of(f(), (x, w, b), prep(inputs["dy"]))
    else:
        raise ValueError(f"unknown op {op!r}")

    def result():
        if "res" not in out:
            run()
            sync()
        return [r.detach() for r in out["res"]]

    return Case(op, shape, provider, dtype, run, result, sync)


# ----------------------------------------------------------------------------------------------
# checking a provider against its baseline
# ----------------------------------------------------------------------------------------------
def rel_error(got: List[object], ref: List[object]) -> float:
    """max over outputs of ||got - ref|| / ||ref|| (float64 on the reference's device)."""
    import torch
    if len(got) != len(ref):
        raise ValueError(f"{len(got)} outputs, baseline has {len(ref)}")
    worst = 0.0
    for g, r in zip(got, ref):
        r64 = r.detach().to(torch.float64)
        g64 = g.detach().to(device=r64.device, dtype=torch.float64)
        if tuple(g64.shape) != tuple(r64.shape):
            raise ValueError(f"output shape {tuple(g64.shape)} != baseline {tuple(r64.shape)}")
        if not bool(torch.isfinite(g64).all()):
            return float("inf")
        den = float(torch.linalg.vector_norm(r64))
        num = float(torch.linalg.vector_norm(g64 - r64))
        worst = max(worst, num / den if den > 0 else num)
    return worst
