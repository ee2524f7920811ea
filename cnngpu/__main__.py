"""Command line: ``python -m cnngpu demo [...]`` trains LeNet on digits (exit status 0 when the
held-out accuracy reaches 95%, 1 when it does not, 2 for a backend/dtype that cannot run here or a
bad option); ``python -m cnngpu info`` prints the versions, the device and the backends (and why
any cannot run here); ``--version``. Also installed as the ``cnngpu`` script.

This module is the user interface: what it prints is the program's output, so it uses print; the
library modules log through ``logging`` (``logging.getLogger("cnngpu")``), which ``main`` routes to
stderr.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import Callable, List, Optional

from . import __version__


# ----------------------------------------------------------------------------------------------
# option value checks (argparse prints "argument --x: <message>" and exits with status 2)
# ----------------------------------------------------------------------------------------------
def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _out_dir(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a folder name, got an empty string")
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return text


# ----------------------------------------------------------------------------------------------
# cnngpu info
# ----------------------------------------------------------------------------------------------
def environment() -> List[tuple]:
    """(name, value) rows: versions of cnngpu, python and the array/kernel packages, the CUDA
    runtime and driver when present, and the device. Nothing here needs a GPU."""
    import platform
    rows: List[tuple] = [("cnngpu", __version__),
                         ("python", f"{platform.python_version()} ({platform.python_implementation()}, "
                                    f"{platform.system()} {platform.machine()})")]
    import numpy
    rows.append(("numpy", numpy.__version__))
    device: Optional[str] = None
    try:
        import torch
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        rows.append(("torch", f"{torch.__version__} ({build})"))
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            device = (f"{p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
                      f"{p.multi_processor_count} SMs; {torch.cuda.device_count()} visible)")
            rows.append(("cuDNN", str(torch.backends.cudnn.version())))
    except ImportError:
        rows.append(("torch", "not installed (the triton backend needs it: pip install 'cnngpu[triton]')"))
    try:
        import triton
        rows.append(("triton", triton.__version__ + ("  [TRITON_INTERPRET=1: CPU interpreter]"
                                                     if os.environ.get("TRITON_INTERPRET") == "1" else "")))
    except ImportError:
        rows.append(("triton", "not installed"))
    try:
        import cupy
        rows.append(("cupy", cupy.__version__))
        try:
            rt = cupy.cuda.runtime.runtimeGetVersion()
            rows.append(("CUDA runtime", f"{rt // 1000}.{rt % 1000 // 10} (cupy)"))
        except Exception as e:  # no libcudart / no driver: cupy imports but cannot call it
            rows.append(("CUDA runtime", f"unavailable to cupy ({type(e).__name__})"))
        try:
            dv = cupy.cuda.runtime.driverGetVersion()
            rows.append(("CUDA driver API", f"{dv // 1000}.{dv % 1000 // 10}" if dv else "no driver"))
        except Exception as e:
            rows.append(("CUDA driver API", f"no driver ({type(e).__name__})"))
    except ImportError:
        rows.append(("cupy", "not installed"))
    driver = _nvidia_smi_driver()
    if driver:
        rows.append(("NVIDIA driver", driver))
    rows.append(("device", device or f"CPU only: {cpu_name()} ({os.cpu_count()} logical cores); "
                                     f"no CUDA device visible to torch"))
    return rows


def _nvidia_smi_driver() -> Optional[str]:
    import shutil
    import subprocess
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def cpu_name() -> str:
    """The host processor's model name (for reports; also used by bench.gpu_report)."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _info() -> int:
    from . import backends
    for name, value in environment():
        print(f"{name + ':':<17}{value}")
    print("backends:")
    for name in backends.NAMES:
        why = backends._why_unavailable(name)
        print(f"  {name:<7} {'available' if why is None else 'unavailable: ' + why}")
        if name == "cupy" and why is None and backends._cupy_emulated():
            from .testing import cudaemu
            print(f"          {cudaemu.describe()}")
    print(f"default backend: {backends.default_backend()}")
    return 0


# ----------------------------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnngpu", description="cnngpu: CNN kernels in Triton and CuPy with a NumPy reference backend",
        epilog="examples:\n  cnngpu demo                      train LeNet-5 on digits on the best backend here\n"
               "  cnngpu demo --dtype float16 -q   half precision, final line only\n"
               "  cnngpu info                      versions, device and backends",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnngpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,info}")
    d = sub.add_parser("demo", help="train a LeNet-5-style CNN on the bundled 8x8 digits data set",
                       description="Train a LeNet-5-style CNN on the digits data set shipped with cnngpu (1797 "
                                   "8x8 images upsampled to 16x16; 20% held out). Exit status 0 when the "
                                   "held-out accuracy reaches 95%, 1 below it, 2 when the options cannot run "
                                   "here.")
    d.add_argument("--backend", choices=["numpy", "cupy", "triton"], default=None,
                   help="backend to train on (default: the best available here -- triton on a CUDA machine, "
                        "else cupy, else numpy; see 'cnngpu info')")
    d.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"],
                   help="activation and weight dtype; it must be one the backend supports, e.g. numpy has no "
                        "bfloat16 (default: %(default)s)")
    d.add_argument("--epochs", type=_int_at_least(1), default=8, metavar="N",
                   help="passes over the 1438 training images (default: %(default)s)")
    d.add_argument("--batch-size", type=_int_at_least(2), default=32, metavar="N",
                   help="images per SGD step, at least 2 for BatchNorm (default: %(default)s)")
    d.add_argument("--lr", type=_positive_float, default=0.05, metavar="RATE",
                   help="SGD learning rate; momentum 0.9, weight decay 5e-4 (default: %(default)s)")
    d.add_argument("--seed", type=_int_at_least(0), default=0, metavar="N",
                   help="seed of the weight initialisation and the batch order; the held-out split is fixed "
                        "(default: %(default)s)")
    d.add_argument("--out", type=_out_dir, default="demo_out", metavar="DIR",
                   help="folder for first_layer_filters.png and loss_curve.png (default: ./%(default)s)")
    d.add_argument("--threads", type=_int_at_least(0), default=1, metavar="N",
                   help="NumPy BLAS threads for the numpy backend; 1 is fastest for these tiny matrices, "
                        "0 leaves the BLAS default (default: %(default)s)")
    d.add_argument("--fused", choices=["auto", "yes", "no"], default="auto",
                   help="each Conv > BatchNorm+ReLU as one fused Conv2dBNReLU layer; auto: on the GPU backends "
                        "(triton, cupy), not on numpy (default: %(default)s)")
    d.add_argument("--no-progress", action="store_true",
                   help="no per-batch progress bar (per-epoch lines are still printed)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar and only the final result line")
    sub.add_parser("info", help="versions, device, and which backends can run here (and why not)",
                   description="Print the versions of cnngpu, python, numpy, torch, triton and cupy, the CUDA "
                               "runtime and driver when present, the device, and the backends.")
    return parser


def _interpreter_refusal(backend: Optional[str], epochs: int, batch_size: int) -> Optional[str]:
    """The message refusing a triton demo under TRITON_INTERPRET=1, or None when it is not one."""
    if backend != "triton" or os.environ.get("TRITON_INTERPRET") != "1":
        return None
    from .demo import interpreter_estimate_s
    est = interpreter_estimate_s(epochs, batch_size)
    return (f"backend 'triton' would run in Triton's CPU interpreter here (TRITON_INTERPRET=1), a verification "
            f"tool that executes every kernel program in Python: this run ({epochs} epochs, batch {batch_size}) "
            f"would take about {_duration(est)}. Use --backend numpy (about 10 s), or run on a CUDA machine "
            f"without TRITON_INTERPRET; the interpreter checks of the triton kernels are the test suite "
            f"(python -m pytest tests/test_triton_*.py).")


def _duration(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} s"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if args.command == "info":
        return _info()
    refusal = _interpreter_refusal(args.backend, args.epochs, args.batch_size)
    if refusal is not None:
        print(f"cnngpu demo: {refusal}", file=sys.stderr)
        return 2
    from .backends import BackendUnavailableError
    from .demo import TARGET_ACCURACY, run_demo
    try:
        result = run_demo(backend=args.backend, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, out=args.out, dtype=args.dtype, threads=args.threads or None,
                          fused={"auto": None, "yes": True, "no": False}[args.fused],
                          progress=not (args.no_progress or args.quiet), verbose=not args.quiet)
    except BackendUnavailableError as e:
        print(f"cnngpu demo: backend {args.backend!r} cannot run here: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # e.g. a dtype the backend does not support
        print(f"cnngpu demo: {e}", file=sys.stderr)
        return 2
    if args.quiet:
        print(f"held-out accuracy {result.test_accuracy:.4f} on backend {result.backend!r} ({result.dtype}) "
              f"in {result.seconds:.1f} s")
    if result.test_accuracy < TARGET_ACCURACY:
        print(f"cnngpu demo: held-out accuracy {result.test_accuracy:.4f} is below the {TARGET_ACCURACY:.0%} "
              f"target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
