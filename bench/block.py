"""ResNet BasicBlock benchmark (issue 16): torch eager vs cnngpu unfused vs cnngpu fused, inference
(eval forward) and a training step (train forward + backward), with each variant's analytic bytes
(``bench/shapes.py``: BLOCK_TRAFFIC, kernel by kernel) printed beside its time.

    python -m bench.block                         # CUDA: float16, the two batch-32 shapes, triton and cupy
    python -m bench.block --dtype bfloat16 --backend cupy --out block.md
    python -m bench.block --cpu                   # CPU smoke run: tiny shape, numpy backend, float32

Variants: ``torch`` (the block in torch.nn: cuDNN conv, separate BN / ReLU / add kernels; timed
once per shape and mode), and per cnngpu backend (``--backend``, comma-separated) ``cnngpu``
(``cnngpu.torch.convert``: our conv, BatchNorm and ReLU modules, unfused) and ``cnngpu_fused``
(``cnngpu.torch.fuse``: two Conv2dBNReLU blocks, residual and final ReLU in the second).
``--out`` (markdown) and ``--jsonl`` (one JSON record per case) are rewritten / appended after
every case, so a run stopped by a time limit keeps what it measured (bench.gpu_report --window
runs it that way). Activations and weights are channels-last for every variant (the triton GEMMs' layout;
NCHW would add relayout copies to the cnngpu variants and compare layouts, not kernels). Every
variant's output (and input gradient in train mode) is checked against torch's before timing.
Times come from ``bench/timing.py`` (CUDA events + L2 flush on a GPU). No GPU has run this yet:
the numbers it prints on a CPU say nothing about GPU speed.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from .shapes import BLOCK_MODES, BLOCK_SHAPES, BLOCK_VARIANTS, BlockShape
from .timing import time_cpu, time_cuda

CHECK_TOL = {"float16": 3e-2, "bfloat16": 8e-2, "float32": 1e-3}
BACKENDS = ("triton", "cupy", "numpy")


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (stride 1, no downsample; torchvision is not a dependency)."""

    expansion = 1

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


def make_block(variant: str, c: int, dtype: torch.dtype, device: str, backend: Optional[str], seed: int = 0):
    """The block of ``variant`` with the same initial parameters for every variant (seeded)."""
    import cnngpu.torch as ct
    torch.manual_seed(seed)
    block = BasicBlock(c)
    with torch.no_grad():                       # non-trivial BN state
        for bn in (block.bn1, block.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.2)
            bn.running_mean.normal_(0, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    block = block.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    if variant == "cnngpu":
        rep = ct.convert(block)
        for m in block.modules():
            if hasattr(m, "backend"):
                m.backend = backend
        return rep.model
    if variant == "cnngpu_fused":
        block = nn.Sequential(block)            # fuse() replaces children; the block is one
        report = ct.fuse(block, backend=backend)
        assert len(report.fused) == 1, str(report)
    return block


def _step(block: nn.Module, x: torch.Tensor, g: torch.Tensor, mode: str):
    """One call: eval forward under no_grad, or a training forward + backward (returns out, dx)."""
    if mode == "eval":
        with torch.no_grad():
            return block(x), None
    xr = x.detach().requires_grad_(True)
    out = block(xr)
    out.backward(g)
    return out, xr.grad


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / (b.norm() + 1e-30))


def run(shapes: List[BlockShape], dtype: str, device: str, backends: Sequence[Optional[str]], log=print,
        sink: Optional[Callable[[Dict], None]] = None) -> List[Dict]:
    """Check and time every (shape, mode, variant): torch once, then the cnngpu variants for each of
    ``backends`` (None: cnngpu's default); returns one record per case, each also passed to ``sink``."""
    tdt = getattr(torch, dtype)
    timer = time_cuda if device == "cuda" else time_cpu
    rows: List[Dict] = []
    cases = [("torch", None)] + [(v, be) for be in backends for v in BLOCK_VARIANTS if v != "torch"]
    for shape in shapes:
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(shape.x_shape, generator=gen).to(device=device, dtype=tdt,
                                                          memory_format=torch.channels_last)
        g = torch.randn(shape.x_shape, generator=gen).to(device=device, dtype=tdt, memory_format=torch.channels_last)
        for mode in BLOCK_MODES:
            ref_out = ref_dx = None
            base_ms = None
            for v, backend in cases:
                rec = dict(shape=shape.name, mode=mode, variant=v, dtype=dtype, bytes=shape.bytes(v, mode, dtype),
                           flops=shape.flops(mode), backend="torch" if v == "torch" else (backend or "auto"))
                try:
                    blk = make_block(v, shape.C, tdt, device, backend)
                    blk.train(mode == "train")
                    if v == "torch":
                        ref_out, ref_dx = _step(blk, x, g, mode)
                    else:
                        if ref_out is None:
                            raise RuntimeError("no torch baseline to check against (it failed)")
                        out, dx = _step(blk, x, g, mode)
                        err = _rel(out, ref_out) if dx is None else max(_rel(out, ref_out), _rel(dx, ref_dx))
                        rec["rel_err"] = err
                        if not err <= CHECK_TOL[dtype]:
                            raise AssertionError(f"output differs from torch: relative error {err:.2e}")
                    t = timer(lambda: _step(blk, x, g, mode))
                    rec["ms"] = t.ms
                    rec["GBps"] = rec["bytes"] / (t.ms * 1e-3) / 1e9
                    if v == "torch":
                        base_ms = t.ms
                    rec["vs_torch"] = t.ms / base_ms if base_ms else None
                except Exception as e:  # noqa: BLE001 -- recorded as the case's error, the run goes on
                    rec["error"] = f"{type(e).__name__}: {e}"
                rows.append(rec)
                log(_line(rec))
                if sink is not None:
                    sink(rec)
    return rows


HEADER = ("| shape | mode | variant | backend | analytic MB | ms | GB/s (analytic) | time / torch | check |\n"
          "|---|---|---|---|---:|---:|---:|---:|---|")


def _line(r: Dict) -> str:
    ms = f"{r['ms']:.3f}" if "ms" in r else "-"
    gbs = f"{r['GBps']:.0f}" if "GBps" in r else "-"
    ratio = f"{r['vs_torch']:.2f}" if r.get("vs_torch") else "-"
    check = r.get("error") or (f"rel {r['rel_err']:.1e}" if "rel_err" in r else "baseline")
    mb = r["bytes"] / 1e6
    return (f"| {r['shape']} | {r['mode']} | {r['variant']} | {r['backend']} | {mb:.3f} | {ms} | {gbs} | {ratio} "
            f"| {check} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.block", description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default=None, choices=sorted(CHECK_TOL),
                   help="activation dtype (default: float16 on CUDA, float32 with --cpu)")
    p.add_argument("--cpu", action="store_true", help="CPU smoke run: the tiny shape on the numpy backend")
    p.add_argument("--backend", default=None,
                   help="cnngpu backends, comma-separated, of triton, cupy, numpy (default: triton,cupy on "
                        "CUDA; numpy with --cpu)")
    p.add_argument("--shapes", default=None, help="comma-separated subset of the shape names")
    p.add_argument("--out", default=None, help="also write the markdown table here (after every case)")
    p.add_argument("--jsonl", default=None, help="append one JSON record per case to this file")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda and not args.cpu:
        print("bench.block: no CUDA device; use --cpu for the CPU smoke run", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    dtype = args.dtype or ("float16" if cuda else "float32")
    backends = [b.strip() for b in (args.backend or ("triton,cupy" if cuda else "numpy")).split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            p.error(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    shapes = [s for s in BLOCK_SHAPES if ("tiny" in s.tags) != cuda]
    if args.shapes:
        names = [n.strip() for n in args.shapes.split(",")]
        unknown = sorted(set(names) - {s.name for s in BLOCK_SHAPES})
        if unknown:
            p.error(f"unknown shapes {unknown}; choose from {', '.join(s.name for s in BLOCK_SHAPES)}")
        shapes = [s for s in BLOCK_SHAPES if s.name in names]
    print(f"ResNet BasicBlock, {dtype}, channels-last, device {torch.cuda.get_device_name() if cuda else 'CPU'}, "
          f"backends {', '.join(backends)}", flush=True)
    print(HEADER, flush=True)
    done: List[Dict] = []

    def sink(rec: Dict) -> None:
        done.append(rec)
        if args.out:
            with open(args.out, "w") as f:
                f.write(HEADER + "\n" + "\n".join(_line(r) for r in done) + "\n")
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(rec) + "\n")

    rows = run(shapes, dtype, device, backends, log=lambda line: print(line, flush=True), sink=sink)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
