"""The triton conv launchers pick one config per shape (no autotune storm): the picker over the
sm_90 / sm_80 tables, and the launch plan captured on 'meta' tensors (what bench.static_report
compiles). Autotuning is opt-in (CNNGPU_AUTOTUNE=1)."""
import types

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from cnngpu import functional as F  # noqa: E402
from cnngpu.backends.triton_backend import _common, conv  # noqa: E402
from cnngpu.kernels.triton import conv2d_bwd as CB  # noqa: E402
from cnngpu.kernels.triton import conv2d_fwd as CF  # noqa: E402


def _fake(jit_kernel, table, sm80, prune):
    """An autotuned kernel's picker-facing attributes with the GPU tables (the interpreter's kernels
    carry their one small config)."""
    return types.SimpleNamespace(configs=table, sm80_configs=sm80, early_config_prune=prune,
                                 arg_names=jit_kernel.arg_names)


def _fwd_args(N, C, H, K, R, stride, pad):
    P = (H + 2 * pad - R) // stride + 1
    return (None, None, None, None, N, C, H, H, K, R, R, P, P, stride, stride, pad, pad, 1, 1, 1)


def _tiles(cfg):
    return cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"]


def _grid(args, kg):
    M = args[4] * args[11] * args[12]
    return lambda meta: (-(-M // meta["BLOCK_M"]) * -(-kg // meta["BLOCK_N"]), 1)


@pytest.mark.parametrize("shape,arch,want", [
    ((32, 512, 28, 512, 3, 1, 1), 90, (128, 256, 64)),   # 392 tiles of 128x256 fill 2 waves: the first entry
    ((32, 64, 56, 256, 1, 1, 0), 90, (128, 256, 64)),    # ResNet-50 1x1 64->256 at 56: 784 big tiles
    ((32, 256, 56, 128, 1, 1, 0), 90, (256, 128, 64)),   # 128 columns: 128x256 pruned, 392 of 256x128
    ((24, 128, 40, 128, 3, 1, 1), 90, (128, 128, 64)),   # 150 of 256x128: 1 wave, not 2 -> 300 of 128x128
    ((32, 256, 14, 256, 3, 1, 1), 90, (128, 64, 64)),    # 98 of 128x128 < 132 SMs: 196 of 128x64
    ((1, 512, 7, 512, 3, 1, 1), 90, (64, 64, 64)),       # 49 rows: pruned to 64-row tiles, most programs
    ((32, 256, 14, 256, 3, 1, 1), 80, (128, 64, 32)),    # Ampere table
    ((1, 64, 56, 64, 3, 1, 1), 80, (64, 64, 32)),        # 3136 x 64: no entry fills 132 SMs -> most programs
])
def test_pick_forward(shape, arch, want):
    kern = _fake(CF.conv2d_fwd_implicit_gemm, CF.FWD_GEMM_CONFIGS, CF.FWD_GEMM_SM80_CONFIGS, CF._prune_gemm)
    args = _fwd_args(*shape)
    cfg = conv.pick_config(kern, args, {}, _grid(args, shape[3]), sms=132, arch=arch)
    assert _tiles(cfg) == want


def test_big_tiles_need_two_waves():
    """conv_policy.big_tile_fills: tiles above 128x128 outputs only where they fill 2 waves; without a
    grid the picker never takes one."""
    from cnngpu.backends import conv_policy as policy
    assert policy.big_tile_fills(128 * 128, 1, 132)
    assert not policy.big_tile_fills(128 * 256, 263, 132) and policy.big_tile_fills(128 * 256, 264, 132)
    kern = _fake(CF.conv2d_fwd_implicit_gemm, CF.FWD_GEMM_CONFIGS, CF.FWD_GEMM_SM80_CONFIGS, CF._prune_gemm)
    assert _tiles(conv.pick_config(kern, _fwd_args(32, 512, 28, 512, 3, 1, 1), {})) == (128, 128, 64)


def test_pick_without_grid_is_first_pruned():
    kern = _fake(CB.conv2d_bwd_dx_implicit_gemm, CB.DX_GEMM_CONFIGS, CB.DX_GEMM_SM80_CONFIGS, CB._prune_dx)
    names = CB.conv2d_bwd_dx_implicit_gemm.arg_names
    geo = dict(N=1, C=8, H=7, W=7, K=8, R=3, S=3, stride_h=2, stride_w=2, groups=1)
    args = tuple(geo.get(n) for n in names)
    assert _tiles(conv.pick_config(kern, args, {})) == (64, 64, 64)


def test_autotune_is_opt_in(monkeypatch):
    monkeypatch.delenv("CNNGPU_AUTOTUNE", raising=False)
    assert not conv.autotune_enabled()
    monkeypatch.setenv("CNNGPU_AUTOTUNE", "1")
    assert conv.autotune_enabled()


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_plan_is_one_launch_per_pass(layout):
    """On 'meta' tensors nothing runs: the launchers record one GEMM launch per pass, each with one
    config, on channels-last operands (NCHW x and dy are re-laid), with H200's SM count assumed."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.empty(2, 32, 9, 9, dtype=torch.float16, device="meta").contiguous(memory_format=fmt)
    w = torch.empty(32, 32, 3, 3, dtype=torch.float16, device="meta")
    g = F.conv2d_geometry(x.shape, w.shape, padding=1)
    dy = torch.empty(2, 32, g.P, g.Q, dtype=torch.float16, device="meta").contiguous(memory_format=fmt)
    with _common.assume_sms(132), conv.capture_launches() as cap:
        conv.conv2d_forward(x, w, None, g)
        conv.conv2d_backward(dy, x, w, g, need_db=False)
        assert _common.num_sms("meta") == 132
    gemms = [c for c in cap if c["name"].endswith("implicit_gemm")]
    assert [c["name"] for c in gemms] == ["conv2d_fwd_implicit_gemm", "conv2d_bwd_dx_implicit_gemm",
                                          "conv2d_bwd_dw_implicit_gemm"]
    for c in gemms:
        assert "num_warps" in c["kwargs"] and "BLOCK_M" in c["kwargs"]
        for a in c["args"][:2]:
            assert a.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------------
# linear: the same per-shape pick over its own sm_90 / sm_80 tables
# ------------------------------------------------------------------------------------------------
from cnngpu.backends.triton_backend import _tuning, basic  # noqa: E402
from cnngpu.kernels.triton import linear as LIN  # noqa: E402


def _linear_grid(M, N):
    return lambda meta: (-(-M // meta["BLOCK_M"]) * -(-N // meta["BLOCK_N"]),)


@pytest.mark.parametrize("mnk,arch,want", [
    ((4096, 4096, 4096), 90, (128, 128, 64)),   # 1024 tiles of 128x128: the table's first entry
    ((2048, 1024, 512), 90, (128, 64, 64)),     # 128 tiles of 128x128 < 132 SMs, 128x128x32 too: 256 of 128x64
    ((32, 1000, 2048), 90, (64, 16, 128)),      # classifier head: 64-row tiles only; most programs
    ((4096, 4096, 4096), 80, (128, 128, 32)),   # Ampere table
    ((32, 10, 84), 80, (64, 16, 64)),           # LeNet head on Ampere: pruned to the 16-column tile
])
def test_pick_linear(mnk, arch, want):
    M, N, K = mnk
    kern = _fake(LIN.linear_gemm, LIN.GEMM_CONFIGS, LIN.GEMM_SM80_CONFIGS, LIN._prune)
    args = tuple(dict(M=M, N=N, K=K).get(n) for n in LIN.linear_gemm.arg_names)
    assert _tiles(_tuning.pick_config(kern, args, {}, _linear_grid(M, N), sms=132, arch=arch)) == want


def test_linear_plan_is_one_config_per_gemm():
    """On 'meta' tensors the linear launchers record fwd, dX and dW+db GEMMs, each with one picked
    config (no autotuner)."""
    x = torch.empty(64, 512, dtype=torch.float16, device="meta")
    w = torch.empty(1000, 512, dtype=torch.float16, device="meta")
    b = torch.empty(1000, dtype=torch.float16, device="meta")
    dy = torch.empty(64, 1000, dtype=torch.float16, device="meta")
    with _common.assume_sms(132), _tuning.capture_launches() as cap:
        basic.linear_forward(x, w, b)
        basic.linear_backward(dy, x, w)
    assert [c["name"] for c in cap] == ["linear_gemm"] * 3
    assert [c["kwargs"]["ROW_SUM_A"] for c in cap] == [False, False, True]
    for c in cap:
        assert {"BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"} <= set(c["kwargs"])


def test_linear_runs_without_the_autotuner(monkeypatch):
    """By default the linear GEMM launches its jit function with the picked config: the autotuner's
    run is never entered (it raises here), and the result is still x @ w.T + b."""
    monkeypatch.delenv("CNNGPU_AUTOTUNE", raising=False)

    def no_autotune(*a, **k):
        raise AssertionError("autotuner entered without CNNGPU_AUTOTUNE=1")

    monkeypatch.setattr(LIN.linear_gemm, "run", no_autotune)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(5, 7, generator=g)
    w = torch.randn(3, 7, generator=g)
    b = torch.randn(3, generator=g)
    y = basic.linear_forward(x, w, b)
    torch.testing.assert_close(y, x.double().matmul(w.double().T).add(b.double()).float(), rtol=1e-5, atol=1e-5)
