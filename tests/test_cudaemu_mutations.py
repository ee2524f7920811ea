"""Mutation check of the emulation tier: plant typical kernel bugs, one at a time, in a copy of
kernels/cuda, run the real launchers on the emulation and show that the checks fail on each.

A mutation "survives" when the probe passes on the mutated source; every mutation here must be
killed (a wrong result against the NumPy reference, or a fault the emulator reports).
"""
import shutil

import numpy as np
import pytest

pytest.importorskip("ml_dtypes")

import cnngpu.functional as F  # noqa: E402
from cnngpu.backends import numpy_backend as ref  # noqa: E402
from cnngpu.kernels import CUDA_DIR  # noqa: E402
from cnngpu.testing import cudaemu  # noqa: E402
from cnngpu.testing.cudaemu import cupy_api  # noqa: E402
from test_cudaemu_kernels import _conv_case, check, data, dev  # noqa: E402

# (id, file, original text, mutated text, probe)
MUTATIONS = [
    ("ldmatrix_transpose", "conv2d_igemm.cuh", "ldsm_x4<!AKF>(f.a[mi], As + LA::idx(row, k));",
     "ldsm_x4<AKF>(f.a[mi], As + LA::idx(row, k));", "fwd_f16"),
    ("swapped_B_fragments", "conv2d_igemm.cuh", "f.b[2 * np][1] = r[1];\n        f.b[2 * np + 1][0] = r[2];",
     "f.b[2 * np][1] = r[2];\n        f.b[2 * np + 1][0] = r[1];", "fwd_bf16"),
    ("wrong_A_k_half", "conv2d_igemm.cuh", "k = ks + (lane >> 4) * 8;", "k = ks + ((lane >> 3) & 1) * 8;", "fwd_f16"),
    ("wrong_acc_coordinates", "conv2d_igemm.cuh", "+ (lane >> 2) + 8 * (e >> 1);", "+ (lane >> 2) + 8 * (e & 1);",
     "fwd_bf16"),
    ("missing_syncthreads", "conv2d_igemm.cuh",
     "lb.store(other + OPE);\n                }\n                __syncthreads();",
     "lb.store(other + OPE);\n                }", "fwd_f32_big"),
    # the cp.async pipeline (16-bit, 16-byte loads): a missing or too short wait, a missing barrier
    # after it, padding read instead of zero-filled
    ("missing_cp_async_wait", "conv2d_igemm.cuh", "cp_async_wait<IG_STAGES - 2>();", "", "fwd_f16"),
    ("cp_async_wait_too_short", "conv2d_igemm.cuh", "cp_async_wait<IG_STAGES - 2>();",
     "cp_async_wait<IG_STAGES - 1>();", "fwd_bf16"),
    ("missing_pipeline_syncthreads", "conv2d_igemm.cuh",
     "cp_async_wait<IG_STAGES - 2>();  // this thread's copies of slice i landed ...\n            __syncthreads();",
     "cp_async_wait<IG_STAGES - 2>();", "fwd_f16"),
    ("cp_async_zero_fill_dropped", "conv2d_igemm.cuh", '"r"(ok ? 16 : 0)', '"r"(16)', "fwd_f16"),
    # the mixed ring (NCHW x register-staged, w by cp.async): the register store into the wrong
    # stage (the one just multiplied) or dropped
    ("mixed_ring_store_stage", "conv2d_igemm.cuh", "la.finish(st);", "la.finish(smem + (i % IG_STAGES) * 2 * OPE);",
     "fwd_nchw_mixed_f16"),
    ("mixed_ring_store_dropped", "conv2d_igemm.cuh", "la.finish(st);", "", "fwd_nchw_mixed_f16"),
    # the in-place NCHW operands (no re-layout): channel stride, padding bound, image stride, dX's
    # taps, dW's row taps, the shared row table's barrier
    ("nchw_channel_stride", "conv2d_fwd_operands.cuh",
     "return KS{(long long)c * H * W, r * dh, (rs - r * S) * dw, ok};",
     "return KS{(long long)c * (H - 1) * W, r * dh, (rs - r * S) * dw, ok};", "fwd_1x1_f16"),
    ("nchw_pad_bound", "conv2d_fwd_operands.cuh",
     "r.base < 0 || (unsigned)h >= (unsigned)H || (unsigned)w >= (unsigned)W)",
     "r.base < 0 || (unsigned)h >= (unsigned)H || (unsigned)w > (unsigned)W)", "fwd_nchw_f16"),
    ("nchw_knext_tap_row", "conv2d_fwd_operands.cuh", "            k.rr += dh;\n", "            k.rr += dh + 1;\n",
     "fwd_nchw_f16"),
    ("nchw_knext_dy_channel", "conv2d_bwd_operands.cuh", "k.koff += (long long)P * Q;",
     "k.koff += (long long)P * Q + 1;", "dx_f16"),
    ("nchw_image_stride", "conv2d_bwd_operands.cuh", "return KS{(long long)n * K * PQ + (kk - n * PQ), ok};",
     "return KS{(long long)n * (K - 1) * PQ + (kk - n * PQ), ok};", "dw_1x1_f16"),
    ("nchw_dx_taps_swapped", "conv2d_bwd_operands.cuh", "q = r.j + k.dq;\n        if (!k.ok || r.base < 0",
     "q = r.j + k.dq + k.dp - k.dq;\n        if (!k.ok || r.base < 0", "dx_f16"),
    ("nchw_dw_column_pad", "conv2d_bwd_operands.cuh",
     "return RS{(long long)(g * Cg + c) * H * W, r * dh - ph, s * dw - pw};",
     "return RS{(long long)(g * Cg + c) * H * W, r * dh - ph, s * dw};", "dw_nchw_f16"),
    ("fill_rows_barrier", "common.cuh", "table[row] = op.rstate(row);\n    __syncthreads();",
     "table[row] = op.rstate(row);", "dw_nchw_f16"),
    # the sm_90a wgmma kernels' register-staged NCHW operands: swizzle of the MN-major / K-major
    # stores, the next slice's prefetch
    ("w90_mn_major_swizzle", "conv2d_igemm_sm90.cuh", "((((row >> 3) & 7) ^ (k & 7)) * 16) +",
     "((((row >> 3) & 7) ^ (k & 3)) * 16) +", "dx_nchw_sm90"),
    ("w90_k_major_swizzle", "conv2d_igemm_sm90.cuh", "(((k >> 3) ^ (row & 7)) * 16) + (k & 7) * 2);",
     "(((k >> 3) ^ (row & 3)) * 16) + (k & 7) * 2);", "dw_nchw_sm90"),
    ("w90_prefetch_slice", "conv2d_igemm_sm90.cuh", "lb.fetch(opB, (kt_begin + kn + 1) * W90_BK);",
     "lb.fetch(opB, (kt_begin + kn) * W90_BK);", "dw_nchw_sm90"),
    ("off_by_one_bound", "conv2d_fwd_operands.cuh", "if (m >= M || k >= Kg) return;", "if (m > M || k >= Kg) return;", "fwd_f16"),
    ("wrong_residue_class", "conv2d_bwd.cu", "const int a = cls / sw, b = cls - a * sw;",
     "const int b = cls / sw, a = cls - b * sw;", "dx_f16"),
    ("wrong_split_k_range", "conv2d_bwd.cu", "kt_begin = split * kt_chunk, kt_end = min(kt_begin + kt_chunk, ktiles);",
     "kt_begin = split * kt_chunk, kt_end = min(kt_begin + kt_chunk - 1, ktiles);", "dw_split"),
    ("wrong_split_sum_index", "common.cuh", "v += ws[(long long)s * numel + i];", "v += ws[(long long)s + i];",
     "dw_split"),
    # the fused conv block's training epilogue (conv2d_fwd_operands.cuh FwdBnEpilogue): a tile's count,
    # the barrier between the staged stores and the column reduction. (Dropping the barrier before the
    # stage reuses the pipeline's shared memory survives this probe in both thread orders: the
    # emulator's schedule did not let a warp's epilogue stores overtake another warp's last reads.)
    ("fused_tile_count", "conv2d_fwd_operands.cuh", "part_n[i] = (float)rows;", "part_n[i] = (float)tile_m;",
     "fused_f16"),
    ("fused_missing_reduce_barrier", "conv2d_fwd_operands.cuh", "if (!stats) return;\n        __syncthreads();",
     "if (!stats) return;", "fused_f16"),
    ("pool_bound", "pool2d.cu", "if (h < 0 || h >= H) continue;", "if (h < 0 || h > H) continue;", "pool"),
    ("missing_block_reduce_sync", "common.cuh", "    if (lane == 0) scratch[warp] = v;\n    __syncthreads();",
     "    if (lane == 0) scratch[warp] = v;", "db"),
]


@pytest.fixture(scope="module")
def be(emulated_cupy):
    """cnngpu.backends.cupy_backend on the emulation (conftest)."""
    return emulated_cupy


def _use_sources(be, monkeypatch, cuda_dir):
    """Point the launchers' module loader at ``cuda_dir`` (and forget compiled modules)."""
    m = be._module
    monkeypatch.setattr(m, "CUDA_DIR", str(cuda_dir))
    m.source.cache_clear()
    m._modules.clear()


def _channels_last(h):
    """h on the device stored channels-last: the NHWC kernels (cp.async with 16-byte loads)."""
    return cupy_api.ascontiguousarray(dev(h).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _probe(be, name, monkeypatch):
    if name in ("fwd_f16", "fwd_bf16", "fwd_f32_big", "fwd_nchw_f16", "fwd_nchw_mixed_f16"):
        dtype = {"fwd_f16": "float16", "fwd_bf16": "bfloat16", "fwd_f32_big": "float32"}.get(name, "float16")
        case = ("c", (2, 16, 8, 10), (16, 16, 3, 3), 1, 1, 1, 1)   # two M tiles, several k slices
        if name == "fwd_nchw_f16":                                   # NCHW read in place, stride 2, padding
            case = ("c", (2, 6, 9, 11), (16, 6, 3, 3), 2, 1, 1, 1)
        if name == "fwd_nchw_mixed_f16":                             # the same, C*R*S = 144: the mixed ring, 5 slices
            case = ("c", (2, 16, 9, 11), (16, 16, 3, 3), 2, 1, 1, 1)
        g, xh, x64, wh, w64, bh, b64 = _conv_case(case, dtype, 1)
        x = dev(xh) if name.startswith("fwd_nchw") else _channels_last(xh)
        y = be.conv2d_forward(x, dev(wh), dev(bh), g, algo="implicit_gemm")
        check(y, ref.conv2d_forward(x64, w64, b64, g), dtype, name, scale=18)
    elif name == "dw_nchw_f16":                                      # NCHW read in place, padded 3x3
        case = ("c", (2, 8, 7, 9), (8, 8, 3, 3), 1, 1, 1, 1)
        g, xh, x64, wh, w64, bh, b64 = _conv_case(case, "float16", 9)
        dyh, dy64 = data((g.N, g.K, g.P, g.Q), "float16", 10)
        _, dw, _ = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, need_dx=False, need_db=False,
                                      algo="implicit_gemm")
        check(dw, ref.conv2d_backward(dy64, x64, w64, g)[1], "float16", name, scale=16)
    elif name in ("fwd_1x1_f16", "dw_1x1_f16"):        # NCHW read in place (1x1, stride 1, no padding)
        case = ("c", (2, 16, 4, 4), (24, 16, 1, 1), 1, 0, 1, 1)
        g, xh, x64, wh, w64, bh, b64 = _conv_case(case, "float16", 7)
        if name == "fwd_1x1_f16":
            y = be.conv2d_forward(dev(xh), dev(wh), dev(bh), g, algo="implicit_gemm")
            check(y, ref.conv2d_forward(x64, w64, b64, g), "float16", name, scale=2)
        else:
            dyh, dy64 = data((g.N, g.K, g.P, g.Q), "float16", 8)
            _, dw, _ = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, need_dx=False, need_db=False,
                                          algo="implicit_gemm")
            check(dw, ref.conv2d_backward(dy64, x64, w64, g)[1], "float16", name, scale=4)
    elif name in ("dx_nchw_sm90", "dw_nchw_sm90"):   # wgmma (sm_90a forced), NCHW read in place
        dx_pass = name == "dx_nchw_sm90"
        case = (("c", (1, 8, 7, 6), (8, 8, 3, 3), (2, 1), 1, 1, 1) if dx_pass
                else ("c", (4, 8, 9, 10), (16, 8, 3, 3), 1, 1, 1, 1))     # dW: N*P*Q = 360, 6 slices
        g, xh, x64, wh, w64, bh, b64 = _conv_case(case, "float16", 11)
        dyh, dy64 = data((g.N, g.K, g.P, g.Q), "float16", 12)
        entry = f"conv2d_bwd_{'dx' if dx_pass else 'dw'}_implicit_gemm_sm90"
        before = be.LAUNCHES[entry]
        with monkeypatch.context() as m:
            m.setenv(be.conv.ARCH_ENV, "90")
            dx, dw, _ = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, need_dx=dx_pass, need_dw=not dx_pass,
                                           need_db=False, algo="implicit_gemm")
        assert be.LAUNCHES[entry] == before + 1, f"{name}: the wgmma kernel did not run"
        want = ref.conv2d_backward(dy64, x64, w64, g)
        check(dx if dx_pass else dw, want[0 if dx_pass else 1], "float16", name, scale=9 if dx_pass else 45)
    elif name == "dx_f16":
        case = ("c", (1, 8, 7, 6), (8, 8, 3, 3), (2, 1), 1, 1, 1)  # sh != sw: a swap of a and b is no permutation
        g, xh, x64, wh, w64, bh, b64 = _conv_case(case, "float16", 2)
        dyh, dy64 = data((g.N, g.K, g.P, g.Q), "float16", 3)
        dx, _, _ = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, need_dw=False, need_db=False,
                                      algo="implicit_gemm")
        check(dx, ref.conv2d_backward(dy64, x64, w64, g)[0], "float16", name, scale=9)
    elif name in ("dw_split", "db"):
        case = ("c", (4, 8, 33, 33), (8, 8, 1, 1), 1, 0, 1, 1)
        g, xh, x64, wh, w64, bh, b64 = _conv_case(case, "float32", 4)
        dyh, dy64 = data((g.N, g.K, g.P, g.Q), "float32", 5)
        _, dw, db = be.conv2d_backward(dev(dyh), dev(xh), dev(wh), g, need_dx=False, algo="implicit_gemm")
        _, dw_ref, db_ref = ref.conv2d_backward(dy64, x64, w64, g)
        check(dw, dw_ref, "float32", name, scale=500)
        check(db, db_ref, "float32", name, scale=500)
    elif name == "fused_f16":                 # the fused block's training forward, two M tiles (144 rows)
        case = ("c", (2, 16, 8, 9), (24, 16, 3, 3), 1, 1, 1, 1)
        g, xh, x64, wh, w64, bh, b64 = _conv_case(case, "float16", 9)
        ones, zeros = np.ones(g.K, np.float32), np.zeros(g.K, np.float32)
        out, _, mean, invstd = be.conv2d_bn_relu_forward(
            dev(xh), dev(wh), dev(bh), g, None, None, dev(zeros), dev(ones), None, True, 0.1, 1e-5, True,
            algo="implicit_gemm")
        r_out, _, r_mean, r_inv = ref.conv2d_bn_relu_forward(x64, w64, b64, g, None, None, zeros.astype(np.float64),
                                                             ones.astype(np.float64), None, True, 0.1, 1e-5, True)
        check(mean, r_mean, "float32", name, scale=144)
        check(invstd, r_inv, "float32", name, scale=144)
        check(out, r_out, "float16", name, scale=18)
    elif name == "pool":
        h, x64 = data((1, 2, 7, 7), "float32", 6)   # the last window row reaches h = H - 1
        g = F.pool2d_geometry(h.shape, 3, stride=2, padding=1)
        y, _ = be.max_pool2d_forward(dev(h), g)
        check(y, ref.max_pool2d_forward(x64, g)[0], "float32", name)
    else:
        raise ValueError(name)


def test_probes_pass_on_the_real_sources(be, monkeypatch):
    for probe in sorted({m[4] for m in MUTATIONS}):
        _probe(be, probe, monkeypatch)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutation_is_killed(be, mutation, tmp_path, monkeypatch):
    name, fname, old, new, probe = mutation
    src = tmp_path / "cuda"
    shutil.copytree(CUDA_DIR, src)
    text = (src / fname).read_text()
    assert text.count(old) == 1, f"mutation {name}: the original text is not in {fname} exactly once"
    (src / fname).write_text(text.replace(old, new))
    _use_sources(be, monkeypatch, src)
    try:
        with pytest.raises((AssertionError, cudaemu.CudaEmuError)):
            _probe(be, probe, monkeypatch)
    finally:
        be._module.source.cache_clear()
        be._module._modules.clear()
