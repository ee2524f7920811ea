"""CPU tests of the cupy backend's launch side (no GPU needed, no kernel is run):

1. the pure launch-configuration functions of cupy_backend/_config.py: grids within CUDA limits
   for huge sizes, chunkings that cover every element exactly, workspace sizes;
2. every launch the pool/norm/basic launchers make, recorded with the device pieces swapped for
   host stand-ins (NumPy arrays, a recording ``run``): the argument list matches the kernel's C
   signature in kernels/cuda/*.cu (count, pointer element types, int/long long/float scalars),
   the entry point is listed in the module's CUDA_BUILDS, and grid/block respect CUDA's limits.
"""
import importlib
import math
import os
import re
import types

import numpy as np
import pytest

from cnngpu import backends

if not backends._cupy_emulated():   # the backend's modules import cupy (or, emulated, its stand-in)
    pytest.importorskip("cupy")

from cnngpu import functional as F  # noqa: E402
from cnngpu.kernels import CUDA_DIR  # noqa: E402


def _cupy_module(name):
    """cnngpu.backends.cupy_backend.<name>."""
    return importlib.import_module(f"cnngpu.backends.cupy_backend.{name}")


C = _cupy_module("_config")

from cnngpu.backends.limits import GRID_X_MAX, GRID_YZ_MAX  # noqa: E402


def _check_launch(grid, block):
    grid, block = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
    assert 1 <= grid[0] <= GRID_X_MAX and 1 <= grid[1] <= GRID_YZ_MAX and 1 <= grid[2] <= GRID_YZ_MAX, grid
    threads = block[0] * block[1] * block[2]
    assert threads % 32 == 0 and 32 <= threads <= 1024, block


# ----------------------------------------------------------------------------------------------
# 1. pure configuration functions
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total", [1, 255, 256, 257, 10 ** 6, 2 ** 31 + 5, 2 ** 40])
def test_elementwise_grid_limits(total):
    (g,) = C.elementwise_grid(total)
    _check_launch((g,), (C.BLOCK,))
    assert g * C.BLOCK >= min(total, g * C.BLOCK)                    # grid-stride loop covers the rest
    if total <= 65535 * 32 * C.BLOCK:
        assert g == math.ceil(total / C.BLOCK)                        # one element per thread
    with pytest.raises(ValueError):
        C.elementwise_grid(0)


@pytest.mark.parametrize("items", [1, 7, 8, 9, 4096, 10 ** 7])
def test_item_grids(items):
    (gw,) = C.warp_per_item_grid(items)
    assert gw * (C.BLOCK // 32) >= items > (gw - 1) * (C.BLOCK // 32)
    (gt,) = C.thread_per_item_grid(items)
    assert gt * C.BLOCK >= items > (gt - 1) * C.BLOCK


@pytest.mark.parametrize("Cn,M,sms", [(1, 2, 132), (3, 50, 132), (64, 32 * 112 * 112, 132), (1, 2 ** 33, 132),
                                      (2048, 7 * 7 * 256, 108), (1, 10 ** 6, 1), (512, 2, 132)])
def test_bn_partition_covers_and_fits(Cn, M, sms):
    B, chunk = C.bn_partition(Cn, M, sms)
    assert 1 <= B <= GRID_YZ_MAX
    assert B * chunk >= M > (B - 1) * chunk                           # every value once, no empty block
    assert chunk <= C.MAX_BLOCK_COUNT                                 # float counts stay exact
    _check_launch((Cn, B), (C.BLOCK,))
    if Cn < sms and M >= 4 * C.BLOCK * 4 * sms:
        assert B > 1                                                  # small C: many blocks per channel
    assert C.bn_workspace(Cn, B, True) == 3 * Cn * B and C.bn_workspace(Cn, B, False) == 2 * Cn * B


def test_bn_partition_rejects_what_it_cannot_count():
    with pytest.raises(ValueError):
        C.bn_partition(1, (GRID_YZ_MAX + 1) * C.MAX_BLOCK_COUNT, 132)
    with pytest.raises(ValueError):
        C.bn_partition(0, 10, 132)


@pytest.mark.parametrize("M,D", [(1, 1), (5, 31), (1000, 1024), (3, 1025), (2, 4096), (7, 10 ** 6),
                                 (10 ** 9, 10)])
def test_row_launch(M, D):
    block, (g,) = C.row_launch(M, D)
    _check_launch((g,), block)
    if D <= 1024:
        assert block == (32, C.BLOCK // 32, 1)                       # a warp per row
    else:
        assert block[1] == 1 and block[0] & (block[0] - 1) == 0 and block[0] >= 64
        assert block[0] == 1024 or block[0] * 8 >= D                  # about 8 values per thread
    assert g <= 65535 and (g * block[1] >= M or g == 65535)         # block-stride loop covers the rest


@pytest.mark.parametrize("M,D,sms", [(1, 1, 132), (100, 10, 132), (10 ** 6, 3, 132), (50000, 4096, 108),
                                     (3, 10 ** 5, 132), (2 ** 31, 64, 132)])
def test_column_partition(M, D, sms):
    grid, rows = C.column_partition(M, D, sms)
    tiles, G, _ = grid
    _check_launch(grid, (32, 8, 1))
    assert tiles * 32 >= D > (tiles - 1) * 32
    assert 1 <= G <= 1024 and G * rows >= M > (G - 1) * rows          # chunks cover the rows, none empty


@pytest.mark.parametrize("L", [1, 32, 100, 129, 2048, 10 ** 7])
def test_group_norm_threads(L):
    t = C.group_norm_threads(L)
    _check_launch((1,), (t,))
    assert t <= 512 and (t == 512 or t * 4 >= L)


def test_scalar_define():
    assert C.scalar_define("float32") == {"SCALAR_T": "float", **C.KERNEL_DEFINES}
    assert C.scalar_define("float16") == {"SCALAR_T": "f16_t", **C.KERNEL_DEFINES}
    assert C.scalar_define("bfloat16") == {"SCALAR_T": "bf16_t", **C.KERNEL_DEFINES}
    with pytest.raises(TypeError, match="float64"):
        C.scalar_define("float64")


# ----------------------------------------------------------------------------------------------
# 2. launches vs kernel signatures (host stand-ins; nothing is computed)
# ----------------------------------------------------------------------------------------------
_SIG = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)


def _signatures():
    sigs = {}
    for fname in os.listdir(CUDA_DIR):
        if fname.endswith(".cu"):
            with open(os.path.join(CUDA_DIR, fname)) as f:
                for name, params in _SIG.findall(f.read()):
                    types_ = []
                    for p in params.split(","):
                        p = " ".join(p.replace("__restrict__", "").replace("const", "").split())
                        ptr = "*" in p
                        base = p.replace("*", " ").split()[:-1]
                        types_.append((" ".join(base), ptr))
                    sigs[(fname, name)] = types_
    return sigs


SIGS = _signatures()
_SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32}
_POINTEES = {"float": "float32", "long long": "int64"}


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, fname, func, dtype, grid, block, args, shared_mem=0):
        self.calls.append((fname, func, dtype, tuple(grid), tuple(block), tuple(args)))


@pytest.fixture
def host(monkeypatch):
    """Swap cupy for NumPy and the launch for a recorder in the launch modules."""
    rec = _Recorder()
    common = _cupy_module("_common")
    launch = _cupy_module("_launch")
    mods = [_cupy_module(m) for m in ("pool", "norm", "basic")]
    for m in [common, launch] + mods:
        monkeypatch.setattr(m, "cupy", np, raising=False)
    for m in [launch] + mods:
        monkeypatch.setattr(m, "run", rec, raising=False)
    for m in mods:
        monkeypatch.setattr(m, "sm_count", lambda: 132, raising=False)
    return types.SimpleNamespace(rec=rec, pool=mods[0], norm=mods[1], basic=mods[2])


def _check_calls(mod, rec):
    assert rec.calls, "no kernel launched"
    builds = {(f, e, d["SCALAR_T"]) for f, es, d in mod.CUDA_BUILDS for e in es}
    for fname, func, dtype, grid, block, args in rec.calls:
        assert (fname, func, C.SCALAR_T[dtype]) in builds, f"{fname}:{func} [{dtype}] not in CUDA_BUILDS"
        sig = SIGS[(fname, func)]
        assert len(args) == len(sig), f"{func}: {len(args)} arguments, the kernel takes {len(sig)}"
        for k, (a, (base, ptr)) in enumerate(zip(args, sig)):
            where = f"{func} argument {k} ({base}{'*' if ptr else ''})"
            if ptr:
                assert isinstance(a, np.ndarray), f"{where}: got {type(a).__name__}"
                assert a.flags.c_contiguous, f"{where}: not contiguous"
                want = dtype if base == "scalar_t" else _POINTEES[base]
                assert a.dtype.name == want, f"{where}: array of {a.dtype.name}, kernel reads {want}"
            else:
                assert type(a) is _SCALARS[base], f"{where}: got {type(a).__name__}"
        _check_launch(grid, block)


DTYPES = ["float32", "float16", "bfloat16"]


def _arr(shape, dtype, gen=np.random.default_rng(0)):
    return gen.standard_normal(shape).astype(np.float32).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_launch_signatures(host, dtype):
    x = _arr((2, 3, 9, 7), dtype)
    g = F.pool2d_geometry(x.shape, 3, 2, 1, 2, True)
    y, idx = host.pool.max_pool2d_forward(x, g)
    assert y.shape == idx.shape == (2, 3, g.P, g.Q) and y.dtype == x.dtype and idx.dtype == np.int64
    host.pool.max_pool2d_backward(y, idx, g)
    ga = F.pool2d_geometry(x.shape, (3, 2), (2, 1), (1, 0), 1, False)
    ya = host.pool.avg_pool2d_forward(x[:, :, ::1, :], ga, False)
    assert ya.shape == (2, 3, ga.P, ga.Q)
    assert host.pool.avg_pool2d_backward(ya, ga, True).shape == x.shape
    _check_calls(host.pool, host.rec)


@pytest.mark.parametrize("pdtype", ["same", "float32"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_launch_signatures(host, dtype, pdtype):
    pd = dtype if pdtype == "same" else pdtype
    n = host.norm
    for shape in ((4, 3, 5, 6), (6, 5)):
        x = _arr(shape, dtype)
        Cn = shape[1]
        w, b = _arr((Cn,), pd), _arr((Cn,), pd)
        rm, rv = np.zeros(Cn, pd), np.ones(Cn, pd)
        y, mean, invstd = n.batch_norm_forward(x, w, b, rm, rv, True, 0.1, 1e-5, True)
        assert mean.dtype == invstd.dtype == np.float32 and y.shape == x.shape
        n.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5, False)
        n.batch_norm_forward(x, w, None, rm, rv, False, 0.1, 1e-5, True)
        dx, dw, db = n.batch_norm_backward(x, x, y, w, mean, invstd, True, True)
        assert dx.dtype == x.dtype and dw.dtype == db.dtype == w.dtype and dw.shape == (Cn,)
        assert n.batch_norm_backward(x, x, y, None, mean, invstd, False, False)[1] is None
    x = _arr((3, 4, 5, 6), dtype)
    w, b = _arr((5, 6), pd), _arr((5, 6), pd)
    y, mean, rstd = n.layer_norm_forward(x, 2, w, b, 1e-5)
    assert mean.shape == rstd.shape == (12,)
    dx, dw, db = n.layer_norm_backward(x, x, w, mean, rstd, 2)
    assert dw.shape == db.shape == (5, 6) and dw.dtype == w.dtype
    n.layer_norm_forward(_arr((2, 3000), dtype), 1, None, None, 1e-5)   # block-per-row launch
    wg, bg = _arr((4,), pd), _arr((4,), pd)
    y, mean, rstd = n.group_norm_forward(x, 2, wg, bg, 1e-5)
    assert mean.shape == rstd.shape == (3, 2)
    dx, dw, db = n.group_norm_backward(x, x, 2, wg, mean, rstd)
    assert dx.shape == x.shape and dw.shape == (4,) and dw.dtype == wg.dtype
    assert n.group_norm_backward(x, x, 4, None, *n.group_norm_forward(x, 4, None, None, 1e-5)[1:])[1] is None
    _check_calls(n, host.rec)


@pytest.mark.parametrize("dtype", DTYPES)
def test_basic_launch_signatures(host, dtype):
    bs = host.basic
    x = _arr((5, 7), dtype)
    assert bs.relu_forward(x).shape == x.shape
    assert bs.relu_backward(x, x).shape == x.shape
    w, b = _arr((3, 7), dtype), _arr((3,), dtype)
    y = bs.linear_forward(x, w, b)
    assert y.shape == (5, 3) and y.dtype == x.dtype
    bs.linear_forward(x, w, None)
    dx, dw, db = bs.linear_backward(y, x, w, True)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (3,) and dx.dtype == x.dtype
    assert bs.linear_backward(y, x, w, False)[2] is None
    labels = np.array([0, 2, 1, 1, 0])
    loss, probs = bs.cross_entropy_forward(_arr((5, 3), dtype), labels)
    assert loss.shape == () and loss.dtype == np.float32 and probs.shape == (5, 3)
    bs.cross_entropy_forward(_arr((2, 5000), dtype), np.array([4, 4999]))   # block-per-row launch
    assert bs.cross_entropy_backward(probs, labels, 1.0).shape == (5, 3)
    _check_calls(bs, host.rec)


def test_every_listed_entry_point_exists():
    for m in ("pool", "norm", "basic"):
        for fname, entries, defines in _cupy_module(m).CUDA_BUILDS:
            assert set(defines) == {"SCALAR_T", *C.KERNEL_DEFINES}
            for e in entries:
                assert (fname, e) in SIGS, f"{m}.CUDA_BUILDS names {fname}:{e}, which the source lacks"
