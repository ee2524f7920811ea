"""cnngpu.torch.SyncBatchNorm: two gloo processes on CPU give what one process gives with a plain
BatchNorm over the concatenated batch (forward, input and parameter gradients, running statistics),
with and without the fused ReLU, uneven and empty per-rank batches, affine=False, momentum=None;
the world-size-1 fallbacks; convert_sync_batchnorm."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import cnngpu.torch as ct
from harness import assert_close as _assert_close
from harness import tolerance

pytestmark = pytest.mark.timeout(120)

WORLD = 2
STEPS = 2


def assert_close(actual, expected, *args):
    """harness.assert_close on torch tensors; NaN where (and only where) expected has NaN."""
    actual, expected = actual.detach(), expected.detach()
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), nan), f"{args[-2] if len(args) > 2 else ''}: NaN positions differ"
    _assert_close(actual[~nan].numpy(), expected[~nan].numpy(), *args)


@dataclass(frozen=True)
class Case:
    name: str
    split: tuple            # per-rank batch sizes
    dtype: str = "float64"
    relu: bool = False
    affine: bool = True
    momentum: Optional[float] = 0.1
    shape: tuple = (3, 5, 4)   # (C, *spatial)
    offset: float = 0.0     # a common offset of the inputs (stability of the merged variance)
    channels_last: bool = False
    backend: Optional[str] = None   # None: numpy (CPU tensors); 'triton': Triton's interpreter here
    nan: bool = False       # one NaN in rank 0's data (channel 0)


CASES = [
    Case("f64_even", (4, 4)),
    Case("f64_relu_uneven", (5, 2), relu=True),
    Case("f32_relu_uneven", (3, 6), dtype="float32", relu=True),
    Case("f64_affine_false_uneven", (2, 5), affine=False),
    Case("f64_relu_empty_rank", (0, 5), relu=True),
    Case("f64_momentum_none_1d", (3, 4), momentum=None, shape=(4, 7)),      # (N, C, L) input
    Case("f64_2d", (6, 3), shape=(5,)),                                    # (N, C) input
    Case("f64_offset", (4, 3), offset=1e6, shape=(3, 6, 5)),
    Case("f32_channels_last_relu", (2, 3), dtype="float32", relu=True, channels_last=True),
    Case("f16_relu_uneven", (3, 4), dtype="float16", relu=True),
    Case("f64_nan_relu", (3, 4), relu=True, nan=True),
    Case("f64_2d_one_row_rank", (1, 4), shape=(5,)),        # one value per channel on a rank: allowed
    Case("f32_triton_relu_uneven", (2, 3), dtype="float32", relu=True, backend="triton", shape=(3, 4, 3)),
]


def _data(case: Case, step: int):
    """The full batch (sum(split), C, *) for ``step``, its upstream gradient, and the initial
    weight/bias: float64, the same on every rank."""
    g = torch.Generator().manual_seed(1000 * step + sum(map(ord, case.name)))
    n = sum(case.split)
    x = torch.randn((n,) + case.shape, generator=g, dtype=torch.float64) * 1.7 + 0.3 + case.offset
    dy = torch.randn((n,) + case.shape, generator=g, dtype=torch.float64)
    if case.nan:
        x[1, 0].view(-1)[0] = float("nan")
    wb = torch.randn(2, case.shape[0], generator=g, dtype=torch.float64)
    return x, dy, wb


def _cast(t: torch.Tensor, case: Case) -> torch.Tensor:
    t = t.to(getattr(torch, case.dtype))
    if case.channels_last and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def _run_case(case: Case, rank: Optional[int]):
    """STEPS training steps then one eval forward of a SyncBatchNorm on this rank's part of the
    batch (rank None: the whole batch, no process group); returns every result as float64."""
    dt = getattr(torch, case.dtype)
    bn = ct.SyncBatchNorm(case.shape[0], momentum=case.momentum, affine=case.affine, relu=case.relu, dtype=dt,
                          backend=case.backend)
    lo = 0 if rank is None else sum(case.split[:rank])
    hi = sum(case.split) if rank is None else lo + case.split[rank]
    out = {}
    for step in range(STEPS):
        x, dy, wb = _data(case, step)
        if case.affine and step == 0:
            with torch.no_grad():
                bn.weight.copy_(wb[0])
                bn.bias.copy_(wb[1])
        xr = _cast(x[lo:hi], case).requires_grad_(True)
        bn.zero_grad()
        y = bn(xr)
        assert y.shape == xr.shape and y.dtype == dt
        if case.channels_last:
            assert y.is_contiguous(memory_format=torch.channels_last)
        y.backward(_cast(dy[lo:hi], case))
        out[f"y{step}"], out[f"dx{step}"] = y.detach().double(), xr.grad.double()
        if case.affine:
            for key, p in (("dw", bn.weight), ("db", bn.bias)):   # None on an empty rank (as torch)
                out[f"{key}{step}"] = torch.zeros_like(p, dtype=torch.float64) if p.grad is None else p.grad.double()
        out[f"rm{step}"], out[f"rv{step}"] = bn.running_mean.double().clone(), bn.running_var.double().clone()
        out[f"nbt{step}"] = int(bn.num_batches_tracked)
    bn.eval()
    x, _, _ = _data(case, STEPS)
    out["y_eval"] = bn(_cast(x[lo:hi], case)).detach().double()
    return out


# the kernels each backend's SyncBatchNorm must launch (training forward, backward)
KERNELS = {"numpy": ("batch_norm_forward", "batch_norm_backward"),
           "triton": ("batch_norm_fwd_normalize", "batch_norm_bwd_dx")}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import cnngpu.backends as backends
    backends.set_poison(True)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for case in CASES:
            be = backends.get_backend(case.backend or "numpy")
            before = dict(be.LAUNCHES)
            out = _run_case(case, rank)
            out["launched"] = sorted(k for k, v in be.LAUNCHES.items() if v > before.get(k, 0))
            torch.save(out, os.path.join(out_dir, f"{case.name}_{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results():
    """Runs every case in two gloo processes (one spawn for all); {case name: [rank 0, rank 1]}."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "store"), tmp), nprocs=WORLD, join=True)
        yield {c.name: [torch.load(os.path.join(tmp, f"{c.name}_{r}.pt")) for r in range(WORLD)] for c in CASES}


def _reference(case: Case):
    """torch.nn.BatchNorm (+ReLU) in float64 over the concatenated batch: the same results."""
    C = case.shape[0]
    bn = torch.nn.BatchNorm1d(C, momentum=case.momentum, affine=case.affine, dtype=torch.float64)
    out = {}
    for step in range(STEPS):
        x, dy, wb = _data(case, step)
        if case.affine and step == 0:
            with torch.no_grad():
                bn.weight.copy_(wb[0])
                bn.bias.copy_(wb[1])
        x = _cast(x, case).double().requires_grad_(True)   # the values the ranks saw
        bn.zero_grad()
        y = bn(x.reshape(x.shape[0], C, -1)).reshape(x.shape)
        if case.relu:
            y = torch.relu(y)
        y.backward(_cast(dy, case).double())
        out[f"y{step}"], out[f"dx{step}"] = y.detach(), x.grad
        if case.affine:
            out[f"dw{step}"], out[f"db{step}"] = bn.weight.grad.clone(), bn.bias.grad.clone()
        out[f"rm{step}"], out[f"rv{step}"] = bn.running_mean.clone(), bn.running_var.clone()
        out[f"nbt{step}"] = int(bn.num_batches_tracked)
    bn.eval()
    x, _, _ = _data(case, STEPS)
    x = _cast(x, case).double()
    y = bn(x.reshape(x.shape[0], C, -1)).reshape(x.shape)
    out["y_eval"] = torch.relu(y) if case.relu else y
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_two_ranks_equal_one_process_over_the_concatenated_batch(case, two_rank_results):
    """Outputs and input gradients (concatenated over ranks), parameter gradients (summed over ranks:
    each rank returns its local sums, as torch's SyncBatchNorm, and DDP averages them), running
    statistics and num_batches_tracked (equal on both ranks) equal torch.nn.BatchNorm over the whole
    batch computed in float64; float64 tight, float32 within its rounding."""
    ranks, ref = two_rank_results[case.name], _reference(case)
    count = sum(case.split) * int(np.prod(case.shape[1:]))
    fac = _factor(case)
    for step in range(STEPS):
        for key in ("y", "dx"):
            got = torch.cat([r[f"{key}{step}"] for r in ranks])
            assert_close(got, ref[f"{key}{step}"], case.dtype, count, f"{case.name} {key} step {step}", fac)
        if case.affine:
            for key in ("dw", "db"):
                got = sum(r[f"{key}{step}"] for r in ranks)
                assert_close(got, ref[f"{key}{step}"], case.dtype, count, f"{case.name} {key} step {step}", fac)
        for r in ranks:
            for key in ("rm", "rv"):
                assert_close(r[f"{key}{step}"], ref[f"{key}{step}"], case.dtype, count, f"{case.name} {key}", fac)
            assert r[f"nbt{step}"] == ref[f"nbt{step}"] == step + 1
    got = torch.cat([r["y_eval"] for r in ranks])
    assert_close(got, ref["y_eval"], case.dtype, 1, f"{case.name} eval", fac)
    for rank, r in enumerate(ranks):       # our kernels ran (on a rank that had data)
        if case.split[rank]:
            assert set(KERNELS[case.backend or "numpy"]) <= set(r["launched"]), r["launched"]


def _factor(case: Case) -> float:
    """The tolerance factor: data offset by ``offset`` (standard deviation 1.7) loses about
    log2(offset / 1.7) bits in x - mean, in any implementation (torch's reference included)."""
    return 8.0 * (1.0 + case.offset)


def test_offset_case_needs_a_stable_merge():
    """The f64_offset case is a real test of the statistics: the variance from float64 sums and
    sums of squares (all-reduced, the unstable way) misses the running_var tolerance of that test."""
    case = next(c for c in CASES if c.name == "f64_offset")
    x = _data(case, 0)[0]
    xs = x.transpose(0, 1).reshape(case.shape[0], -1)
    n = xs.shape[1]
    naive = (xs * xs).sum(1) / n - (xs.sum(1) / n) ** 2
    true = torch.from_numpy(np.var(xs.numpy().astype(np.longdouble), axis=1).astype(np.float64))
    err = float(((naive - true).abs() / true).max())
    assert err > 100 * tolerance(case.dtype, n, _factor(case)), err


def _local_fallback_pair(case: Case):
    ours = _run_case(case, None)
    ref = _reference(case)
    count = sum(case.split) * int(np.prod(case.shape[1:]))
    for k in ref:
        if k.startswith("nbt"):
            assert ours[k] == ref[k]
        else:
            assert_close(ours[k], ref[k], case.dtype, count, f"{case.name} {k}")


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]], ids=lambda c: c.name)
def test_without_process_group_it_is_plain_batch_norm(case):
    """torch.distributed not initialized: plain (fused ReLU) batch norm on our kernels, as torch."""
    assert not dist.is_initialized()
    _local_fallback_pair(case)


def test_world_size_one_group_is_plain_batch_norm(tmp_path):
    """An initialized group of one process: no collective, plain batch norm (as torch)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        _local_fallback_pair(CASES[1])
    finally:
        dist.destroy_process_group()


def test_merge_stats_is_chans_formula():
    """Chan's merge of (count, mean, M2) rows equals the two-pass statistics of the union; empty
    rows are skipped."""
    g = torch.Generator().manual_seed(7)
    parts = [torch.randn(n, 3, generator=g, dtype=torch.float64) * 3 + 5 for n in (4, 0, 7, 1)]
    rows = []
    for p in parts:
        n = p.shape[0]
        mean = p.mean(0) if n else torch.zeros(3, dtype=torch.float64)
        m2 = ((p - mean) ** 2).sum(0) if n else torch.zeros(3, dtype=torch.float64)
        rows.append(torch.cat([torch.tensor([float(n)], dtype=torch.float64), mean, m2]))
    from cnngpu.torch.sync_batchnorm import merge_stats
    n, mean, m2 = merge_stats(torch.stack(rows))
    allx = torch.cat(parts)
    assert n == 12
    torch.testing.assert_close(mean, allx.mean(0), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(m2, ((allx - allx.mean(0)) ** 2).sum(0), rtol=1e-13, atol=1e-13)


def test_input_checks_as_torch():
    bn = ct.SyncBatchNorm(3)
    with pytest.raises(ValueError, match="2D"):
        bn(torch.randn(3))
    with pytest.raises(ValueError, match="channels"):
        ct.SyncBatchNorm(0)(torch.randn(2, 0, 3))


# ----------------------------------------------------------------------------------------------
# convert_sync_batchnorm
# ----------------------------------------------------------------------------------------------
def test_convert_sync_batchnorm_keeps_state_relu_and_backend():
    """Our BatchNorm2d (relu, backend) and torch's BatchNorm1d/2d become our SyncBatchNorm sharing the
    same parameter and buffer tensors (an optimizer built before still applies), training mode kept;
    other modules untouched; the result is an nn.SyncBatchNorm for torch code that checks."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(ct.Conv2d(3, 4, 3), ct.BatchNorm2d(4, relu=True, backend="numpy", momentum=None),
                              torch.nn.BatchNorm2d(4, affine=False), torch.nn.Flatten(), torch.nn.LazyLinear(5),
                              torch.nn.BatchNorm1d(5, eps=1e-3, bias=False))
    net(torch.randn(4, 3, 6, 6))
    net[5].eval()
    params = {n: p for n, p in net.named_parameters()}
    buffers = {n: b for n, b in net.named_buffers()}
    state = {k: v.clone() for k, v in net.state_dict().items()}
    out = ct.convert_sync_batchnorm(net)
    assert out is net
    for i in (1, 2, 5):
        assert type(net[i]) is ct.SyncBatchNorm and isinstance(net[i], torch.nn.SyncBatchNorm)
    assert net[1].relu is True and net[1].backend == "numpy" and net[1].momentum is None
    assert net[2].relu is False and net[2].affine is False and net[5].bias is None and net[5].eps == 1e-3
    assert net[5].training is False and net[1].training is True
    assert type(net[0]) is ct.Conv2d
    for n, p in net.named_parameters():
        assert p is params[n]
    for n, b in net.named_buffers():
        assert b is buffers[n]
    assert net.state_dict().keys() == state.keys()
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k])
    assert isinstance(ct.convert_sync_batchnorm(ct.BatchNorm2d(2, relu=True)), ct.SyncBatchNorm)
    assert ct.SyncBatchNorm.convert_sync_batchnorm(ct.BatchNorm2d(2, relu=True)).relu is True


def test_converted_model_without_group_equals_the_original():
    """Converted, a model (no process group) computes what it did: the fused ReLU was kept."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(ct.Conv2d(3, 4, 3), ct.BatchNorm2d(4, relu=True)).double()
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    ref = [t.clone() for t in (net(x), net[1].running_mean, net[1].running_var)]
    for b in (net[1].running_mean, net[1].running_var):
        b.copy_(torch.zeros_like(b) if b is net[1].running_mean else torch.ones_like(b))
    net[1].num_batches_tracked.zero_()
    ct.convert_sync_batchnorm(net)
    got = (net(x), net[1].running_mean, net[1].running_var)
    assert bool((got[0] >= 0).all())
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
