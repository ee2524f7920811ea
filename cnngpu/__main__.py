"""Command line: ``python -m cnngpu demo [...]`` trains LeNet on digits (exit status 0 when the
held-out accuracy reaches 95%, 1 when it does not, 2 for a backend/dtype that cannot run here);
``python -m cnngpu info`` lists the backends and why any cannot run here. Also installed as the
``cnngpu`` script."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _info() -> int:
    from . import __version__, backends
    print(f"cnngpu {__version__}")
    for name in backends.NAMES:
        why = backends._why_unavailable(name)
        print(f"  {name:<7} {'available' if why is None else 'unavailable: ' + why}")
        if name == "cupy" and why is None and backends._cupy_emulated():
            from .testing import cudaemu
            print(f"          {cudaemu.describe()}")
    print(f"default backend: {backends.default_backend()}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="cnngpu", description="cnngpu: CNN kernels in Triton and CuPy with a "
                                     "NumPy reference backend")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train a LeNet-5-style CNN on the bundled 8x8 digits data set")
    d.add_argument("--backend", choices=["numpy", "cupy", "triton"], default=None,
                   help="backend to train on (default: the best available, see 'cnngpu info')")
    d.add_argument("--epochs", type=int, default=8)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--lr", type=float, default=0.05)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"],
                   help="activation and weight dtype (must be supported by the backend; default float32)")
    d.add_argument("--threads", type=int, default=1,
                   help="NumPy BLAS threads for the numpy backend (default 1: fastest for these tiny matrices; "
                        "0 = leave the BLAS default)")
    d.add_argument("--out", default="demo_out", help="folder for the PNG figures (default ./demo_out)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("--quiet", action="store_true", help="no progress bar and only the final result line")
    sub.add_parser("info", help="list the backends and whether they can run here")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    if args.epochs < 1 or args.batch_size < 2 or args.lr <= 0 or args.threads < 0:
        parser.error("--epochs must be >= 1, --batch-size >= 2, --lr > 0 and --threads >= 0")
    from .backends import BackendUnavailableError
    from .demo import TARGET_ACCURACY, run_demo
    try:
        result = run_demo(backend=args.backend, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, out=args.out, dtype=args.dtype, threads=args.threads or None,
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
