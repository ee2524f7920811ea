"""Tier 3: every Triton kernel, with every launch config, compiles for sm_90 on this CPU machine.

Each module of ``cnngpu.kernels.triton`` (found with pkgutil, so new modules are picked up) must have
an entry in ``tests/triton_compile_cases.py``'s ``CASES`` yielding ``(name, jit_fn, signature,
constexprs, options, expect_wgmma)`` for every entry of its launch-config tables.
Every case is built with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` down
to a cubin (ptxas included); ``expect_wgmma`` is checked against the PTX both ways: tensor-core
GEMMs (fp16 / bf16 / tf32 implicit-GEMM conv, ...) must use Hopper's ``wgmma``, and a case that says
False (e.g. an fp32 'ieee' dot, which must stay exact) must not.

The builds run in a child process: conftest sets ``TRITON_INTERPRET=1`` on machines without CUDA,
under which ``@triton.jit`` yields interpreter functions that cannot be compiled. Each test item is
one shard of one module (``SHARDS``), so ``pytest -n 2`` spreads the work; identical cases within a
module are built once.
"""
import importlib
import json
import os
import pkgutil
import subprocess
import sys

import pytest

PKG = "cnngpu.kernels.triton"
ARCH = 90
# modules with many cases are split over several test items (the rest use one)
SHARDS = {"conv2d_fwd": 2, "conv2d_bwd": 4}
TIMEOUT_S = 600


def kernel_modules():
    """Names of the kernel modules in cnngpu.kernels.triton (private ``_*`` modules excepted)."""
    pkg = importlib.import_module(PKG)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def _freeze(d):
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def _jit_of(fn):
    """The JITFunction under an Autotuner / Heuristics wrapper (or the function itself)."""
    from triton.runtime.jit import JITFunction
    while not isinstance(fn, JITFunction) and hasattr(fn, "fn"):
        fn = fn.fn
    return fn


def build_module_cases(module: str, shard: int, nshards: int, arch: int = ARCH, sample: int = 0) -> dict:
    """Child-process side: compile this shard of the module's deduplicated cases for sm_<arch>
    (all of them, or with ``sample`` > 0 about that many spread over the list, first and last
    included). On sm_80 ``wgmma`` does not exist: tensor-core cases must use ``mma.sync`` instead.

    Returns {"problems": [module-level errors], "cases": [{name, ok, error, wgmma, expect}]}.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    out = {"problems": [], "cases": []}
    try:
        importlib.import_module(f"{PKG}.{module}")
        from triton_compile_cases import CASES
    except Exception as e:  # noqa: BLE001 -- reported as a test failure naming the module
        out["problems"].append(f"import failed: {type(e).__name__}: {e}")
        return out
    gen = CASES.get(module)
    if gen is None:
        out["problems"].append("has no entry in tests/triton_compile_cases.py CASES (every kernel module must)")
        return out
    try:
        cases = list(gen())
    except Exception as e:  # noqa: BLE001
        out["problems"].append(f"its compile cases raised {type(e).__name__}: {e}")
        return out
    if not cases:
        out["problems"].append("its compile cases are empty")
    unique, seen = [], set()
    for case in cases:
        if len(case) != 6:
            out["problems"].append(f"case {case[:1]!r} is not (name, jit_fn, signature, constexprs, options, "
                                   f"expect_wgmma)")
            continue
        name, fn, sig, ce, opts, expect = case
        key = (id(_jit_of(fn)), _freeze(sig), _freeze(ce), _freeze(opts or {}))
        if key not in seen:
            seen.add(key)
            unique.append(case)
    target = GPUTarget("cuda", arch, 32)
    todo = unique[shard::nshards]
    if sample and len(todo) > sample:
        step = (len(todo) - 1) / (sample - 1)
        todo = [todo[round(i * step)] for i in range(sample)]
    for name, fn, sig, ce, opts, expect in todo:
        rec = {"name": name, "expect": bool(expect), "ok": False, "error": "", "wgmma": None}
        try:
            compiled = triton.compile(ASTSource(_jit_of(fn), sig, ce), target=target, options=dict(opts or {}))
            ptx = compiled.asm["ptx"]
            rec["ok"] = bool(compiled.asm.get("cubin"))
            rec["wgmma"] = "wgmma" in ptx
            rec["mma"] = "mma.sync" in ptx
            if not rec["ok"]:
                rec["error"] = "no cubin produced"
        except Exception as e:  # noqa: BLE001
            rec["error"] = f"{type(e).__name__}: {str(e)[-1500:]}"
        out["cases"].append(rec)
    return out


def _items():
    return [pytest.param(m, s, SHARDS.get(m, 1), id=f"{m}[{s + 1}/{SHARDS.get(m, 1)}]")
            for m in kernel_modules() for s in range(SHARDS.get(m, 1))]


def test_every_module_is_collected():
    """Discovery sees the kernel families the design lists (a rename or a missing module shows here),
    and every kernel module has compile cases (none listed for a module that does not exist)."""
    from triton_compile_cases import CASES
    mods = kernel_modules()
    for required in ("conv2d_fwd", "conv2d_bwd", "pool2d"):
        assert required in mods, f"{required} missing from {PKG}: {mods}"
    assert set(CASES) == set(mods), f"CASES {sorted(CASES)} != kernel modules {mods}"


@pytest.mark.parametrize("module,shard,nshards", _items())
def test_compiles_for_sm90(module, shard, nshards):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")   # today's default, stated (silences a warning)
    proc = subprocess.run([sys.executable, __file__, module, str(shard), str(nshards)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"compile worker for {module} crashed:\n{proc.stderr[-4000:]}"
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not res["problems"], f"{PKG}.{module}: " + "; ".join(res["problems"])
    bad = [f"{c['name']}: {c['error']}" for c in res["cases"] if not c["ok"]]
    assert not bad, f"{len(bad)} of {len(res['cases'])} cases failed to compile for sm_{ARCH}:\n" + "\n".join(bad)
    wrong = [f"{c['name']}: wgmma {'missing' if c['expect'] else 'unexpected'} in PTX"
             for c in res["cases"] if c["wgmma"] != c["expect"]]
    assert not wrong, "\n".join(wrong)


SM80_SAMPLE = 4   # cases per module built for sm_80 (Ampere): a portability check, not the full sweep


@pytest.mark.parametrize("module", kernel_modules())
def test_compiles_for_sm80_sample(module):
    """A spread sample of each module's cases builds for sm_80 too; tensor-core cases (those that
    expect wgmma on sm_90) lower to mma.sync there, and nothing emits the Hopper-only wgmma."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, __file__, module, "0", "1", "80", str(SM80_SAMPLE)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"compile worker for {module} crashed:\n{proc.stderr[-4000:]}"
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not res["problems"], f"{PKG}.{module}: " + "; ".join(res["problems"])
    assert res["cases"], f"{module}: no case built for sm_80"
    bad = [f"{c['name']}: {c['error']}" for c in res["cases"] if not c["ok"]]
    assert not bad, f"{len(bad)} of {len(res['cases'])} cases failed to compile for sm_80:\n" + "\n".join(bad)
    assert not any(c["wgmma"] for c in res["cases"]), "wgmma in sm_80 PTX"
    wrong = [c["name"] for c in res["cases"] if c["expect"] and not c["mma"]]
    assert not wrong, f"tensor-core cases without mma.sync on sm_80: {wrong}"


def test_backward_config_pruning():
    """The GPU autotune tables drop tiles far larger than the dX / dW GEMM (at least one stays)."""
    kb = pytest.importorskip("cnngpu.kernels.triton.conv2d_bwd")
    geo = dict(N=1, C=8, H=7, W=7, K=8, R=3, S=3, stride_h=2, stride_w=2, groups=1)
    # dX: ~16 rows, 8 channels -> only the 64 x 64 tile; dW: 8 x 8 (taps) -> 64 x 64 only
    assert {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kb._prune_dx(kb.DX_GEMM_CONFIGS, geo)} == {(64, 64)}
    assert {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kb._prune_dw(kb.DW_GEMM_CONFIGS, geo)} == {(64, 64)}
    # dW FLAT_N: 8*9 = 72 columns admit BLOCK_N = 128
    flat = kb._prune_dw(kb.DW_GEMM_CONFIGS, geo, FLAT_N=True)
    assert {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in flat} == {(64, 128), (64, 64)}
    big = dict(geo, N=32, H=56, W=56, C=256, K=256)
    assert kb._prune_dx(kb.DX_GEMM_CONFIGS, big) == kb.DX_GEMM_CONFIGS
    assert kb._prune_dw(kb.DW_GEMM_CONFIGS, big) == kb.DW_GEMM_CONFIGS


if __name__ == "__main__":
    # worker: python tests/test_triton_compile.py MODULE SHARD NSHARDS [ARCH [SAMPLE]] -> one JSON line
    a = sys.argv[1:]
    print(json.dumps(build_module_cases(a[0], int(a[1]), int(a[2]), int(a[3]) if len(a) > 3 else ARCH,
                                        int(a[4]) if len(a) > 4 else 0)))
