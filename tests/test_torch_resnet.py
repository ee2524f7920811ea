"""End to end: a torchvision-style ResNet-18 written with torch.nn, converted with
``cnngpu.torch.convert``, trains like the torch.nn original: eager (float64 and float32), under
``torch.compile(fullgraph=True)``, and under DDP with SyncBatchNorm (two gloo processes)."""
from __future__ import annotations

import copy
import os
import tempfile
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import cnngpu.torch as ct

pytestmark = pytest.mark.timeout(300)

WIDTH = 16           # torchvision's ResNet-18 has 64; the topology is the same, CPU time is not
BATCH, SIZE, CLASSES, STEPS = 4, 48, 10, 3


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock: one ReLU(inplace=True) module used twice, ``out += identity``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision.models.resnet18's topology (7x7/2 stem, 3x3/2 max pool, [2, 2, 2, 2] BasicBlocks
    with 1x1 conv + BN downsampling, adaptive average pool, linear head) and initialisation, base
    width ``width`` (64 in torchvision)."""

    def __init__(self, width: int = WIDTH, num_classes: int = CLASSES):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(width, 2)
        self.layer2 = self._make_layer(2 * width, 2, 2)
        self.layer3 = self._make_layer(4 * width, 2, 2)
        self.layer4 = self._make_layer(8 * width, 2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _models(dtype: torch.dtype, seed: int = 0):
    """The torch.nn ResNet-18 and a converted deep copy (same initial state)."""
    torch.manual_seed(seed)
    ref = ResNet18().to(dtype)
    ours = copy.deepcopy(ref)
    report = ct.convert(ours)
    assert report.model is ours
    swapped = [t for _, t in report.swapped]
    assert swapped.count("Conv2d") == 20 and swapped.count("BatchNorm2d") == 20
    assert swapped.count("ReLU") == 9 and swapped.count("MaxPool2d") == 1 and swapped.count("Linear") == 1
    assert [(n, t) for n, t, _ in report.left] == [("avgpool", "AdaptiveAvgPool2d")]
    assert not any(type(m).__module__.startswith("torch.nn") and isinstance(m, (nn.Conv2d, nn.BatchNorm2d))
                   for m in ours.modules())
    return ref, ours


def _batches(dtype: torch.dtype, steps: int = STEPS, batch: int = BATCH):
    g = torch.Generator().manual_seed(123)
    return [(torch.randn(batch, 3, SIZE, SIZE, generator=g, dtype=torch.float64).to(dtype),
             torch.randint(0, CLASSES, (batch,), generator=g)) for _ in range(steps)]


def _train(model: nn.Module, batches, loss_fn=nn.functional.cross_entropy, step_model: nn.Module | None = None):
    """SGD (momentum, weight decay) on ``batches``; returns the losses. ``step_model`` (the
    parameters' owner) defaults to ``model`` (differs for a compiled wrapper)."""
    owner = step_model if step_model is not None else model
    opt = torch.optim.SGD(owner.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=2e-4, atol=2e-5)}


def _assert_same_state(ours: nn.Module, ref: nn.Module, dtype: torch.dtype) -> None:
    sd, sd_ref = ours.state_dict(), ref.state_dict()
    assert sd.keys() == sd_ref.keys()
    for k in sd:
        torch.testing.assert_close(sd[k], sd_ref[k], **TOL[dtype], msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_resnet18_converted_trains_like_torch_nn(dtype):
    """STEPS SGD steps (cross-entropy by cnngpu.torch.CrossEntropyLoss, converted from torch's):
    losses, parameters, running statistics and num_batches_tracked equal the torch.nn run."""
    ref, ours = _models(dtype)
    batches = _batches(dtype)
    loss_ours = ct.convert(nn.CrossEntropyLoss()).model
    assert isinstance(loss_ours, ct.CrossEntropyLoss)
    l_ref = _train(ref, batches)
    l_ours = _train(ours, batches, loss_ours)
    torch.testing.assert_close(torch.tensor(l_ours), torch.tensor(l_ref), **TOL[dtype])
    assert l_ours[-1] != l_ours[0]
    _assert_same_state(ours, ref, dtype)
    ref.eval(), ours.eval()
    x = _batches(dtype, 1)[0][0]
    with torch.no_grad():
        y, y_ref = ours(x), ref(x)
    scale = float(y_ref.abs().max())     # eval after a few steps: running stats lag, logits grow
    torch.testing.assert_close(y, y_ref, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)


def test_resnet18_converted_trains_under_compile_fullgraph():
    """torch.compile(fullgraph=True, backend='aot_eager') of the converted ResNet-18: STEPS SGD
    steps give the torch.nn (eager) run's losses, parameters and running statistics (float64)."""
    torch._dynamo.reset()
    try:
        ref, ours = _models(torch.float64)
        batches = _batches(torch.float64)
        compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
        l_ref = _train(ref, batches)
        l_ours = _train(compiled, batches, step_model=ours)
        torch.testing.assert_close(torch.tensor(l_ours), torch.tensor(l_ref), **TOL[torch.float64])
        _assert_same_state(ours, ref, torch.float64)
    finally:
        torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------
# DDP + SyncBatchNorm, two gloo processes
# ----------------------------------------------------------------------------------------------
WORLD = 2


def _ddp_worker(rank: int, init_file: str, out_dir: str, dtype: torch.dtype) -> None:
    """Rank ``rank``'s half of every batch through DDP(convert_sync_batchnorm(convert(ResNet-18)))."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        _, ours = _models(dtype)
        ours = ct.convert_sync_batchnorm(ours)
        assert sum(isinstance(m, ct.SyncBatchNorm) for m in ours.modules()) == 20
        # torch's DDP refuses any nn.SyncBatchNorm in a CPU module (torch's own sync kernels are GPU
        # only; the check is all that hook does). Ours runs on CPU: that check alone is skipped here.
        with mock.patch.object(DDP, "_passing_sync_batchnorm_handle", lambda self, module: None):
            ddp = DDP(ours)
        half = BATCH // WORLD
        batches = [(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]) for x, y in _batches(dtype)]
        losses = torch.tensor(_train(ddp, batches, step_model=ddp), dtype=torch.float64)
        dist.all_reduce(losses)                   # the full-batch mean loss: the mean of the halves
        torch.save({"losses": losses / WORLD, "state": ours.state_dict()}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_resnet18_ddp_syncbn_two_processes_equals_full_batch(dtype):
    """DDP over two gloo processes, each with half of every batch, the converted model's BatchNorms
    turned into cnngpu.torch.SyncBatchNorm: losses, parameters and running statistics (both ranks)
    equal one torch.nn process training on the full batches. (torch's own SyncBatchNorm refuses CPU
    tensors, so the full-batch torch.nn run is the reference.)"""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_ddp_worker, args=(os.path.join(tmp, "store"), tmp, dtype), nprocs=WORLD, join=True)
        res = [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(WORLD)]
    ref, _ = _models(dtype)
    l_ref = _train(ref, _batches(dtype))
    for r in res:
        torch.testing.assert_close(r["losses"], torch.tensor(l_ref, dtype=torch.float64), **TOL[dtype])
        sd_ref = ref.state_dict()
        assert r["state"].keys() == sd_ref.keys()
        for k, v in r["state"].items():
            torch.testing.assert_close(v, sd_ref[k], **TOL[dtype], msg=lambda m: f"{k}: {m}")
