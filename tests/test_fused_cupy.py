"""The cupy backend's fused conv -> BatchNorm -> (+ residual) -> (ReLU) block where it is composed
(algo='direct': conv2d_forward, the batch_norm statistics kernels, conv_bn_apply_residual_relu)
against the NumPy reference, on the CPU emulation of the CUDA kernels (CNNGPU_CUDA_EMULATE=1) or a
GPU: forward, running statistics and every gradient, train and eval, with and without residual;
'cupy-reverse' runs threads and blocks in reverse order. The implicit-GEMM epilogue path is
tests/test_fused_cupy_epilogue.py."""
import pytest

from harness import backend_under_test, launches, seed_of
from test_fused_triton import GEOMS, check, make_case, run_block

pytestmark = pytest.mark.cupy


@pytest.fixture(scope="module", params=["cupy", "cupy-reverse"])
def be(request):
    yield from backend_under_test(request.param)


@pytest.mark.parametrize("geom", GEOMS[:2])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_block_matches_reference(be, geom, dtype, training, residual):
    c = make_case(geom, dtype, seed_of("cupy", geom, dtype, training, residual))
    with launches(be, "conv2d_bn_relu_fwd[composed]", "conv2d_fwd_direct", "conv_bn_apply_residual_relu",
                  "batch_norm_bwd_dx"):
        got, want = run_block(be, c, dtype, training, residual, algo="direct")
    check(got, want, dtype, c["w"][0].size, got["out"].size // got["out"].shape[1])


def test_no_relu(be):
    c = make_case(GEOMS[2], "float32", seed_of("cupy-norelu"))
    got, want = run_block(be, c, "float32", True, True, relu=False, algo="direct")
    check(got, want, "float32", c["w"][0].size, got["out"].size)
