"""What tests/test_triton_compile.py builds for sm_90 / sm_80: per kernel module of
``cnngpu.kernels.triton``, every entry of its launch-config tables (``*_CONFIGS``, see
kernels/triton/_config.py) in the dtypes and specialisations the launchers use.

``CASES[module]()`` yields ``(name, jit_fn, signature, constexprs, options, expect_wgmma)``; a
kernel module without an entry here fails the compile test.
"""
from cnngpu.kernels.triton import batch_norm as BN
from cnngpu.kernels.triton import conv2d_bn_relu as FK
from cnngpu.kernels.triton import conv2d_bwd as CB
from cnngpu.kernels.triton import conv2d_fwd as CF
from cnngpu.kernels.triton import conv2d_fwd_tma as CT
from cnngpu.kernels.triton import cross_entropy as CE
from cnngpu.kernels.triton import elementwise as EW
from cnngpu.kernels.triton import group_norm as GN
from cnngpu.kernels.triton import layer_norm as LN
from cnngpu.kernels.triton import linear as LIN
from cnngpu.kernels.triton import pool2d as PL
from cnngpu.kernels.triton._config import for_dtype

I32, I64, F32, PF = "i32", "i64", "fp32", "*fp32"
FP32_DOTS = (("fp32", "tf32", True), ("fp32", "ieee", False))
ROT = ("fp32", "fp16", "bf16")


def opts(cfg) -> dict:
    """triton.compile options of a launch config."""
    return {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


def signature_for(fn, ptr_dtype: str, constexprs: dict, int64_args=(), fp32_ptrs=(), int_ptrs=()):
    """Signature dict for triton.compile: pointers '*<ptr_dtype>' (``fp32_ptrs`` '*fp32',
    ``int_ptrs`` '*i32'), constexprs, other arguments i32 (``int64_args`` i64)."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in fp32_ptrs else ("*i32" if name in int_ptrs else "*" + ptr_dtype)
        else:
            sig[name] = "i64" if name in int64_args else "i32"
    return sig


def strides(*names):
    """i64 (n, c, l) stride arguments s<name>n, s<name>c, s<name>l of the norm kernels."""
    return {f"s{a}{b}": I64 for a in names for b in "ncl"}


def gemm_variants(configs, spec_variants):
    """(config index, config, dtype, precision, spec, expect_wgmma) to compile for a GEMM table.

    Every config is built in fp16 and bf16 (tensor cores: wgmma expected on sm_90); fp32 tf32 / ieee
    and the other specialisations (``spec_variants``: dicts of constexprs for the non-default
    reduction variants, built in fp16) on the first and the last config, the largest and smallest
    tiles, so the case count stays small.
    """
    default = {k: False for d in spec_variants for k in d}
    for i, cfg in enumerate(configs):
        for dt in ("fp16", "bf16"):
            yield i, cfg, dt, "ieee", default, True
        if i in (0, len(configs) - 1):
            for dt, prec, wgmma in FP32_DOTS:
                yield i, cfg, dt, prec, default, wgmma
            for spec in spec_variants:
                yield i, cfg, "fp16", "ieee", {**default, **spec}, True


def _variant(spec):
    on = [k for k, v in spec.items() if v]
    return ({"IS_1X1": "1x1", "FLAT_K": "flat", "FLAT_N": "flat"}[on[0]]) if on else "taps"


# the implicit-GEMM forward's epilogue flags (fused conv + BatchNorm blocks): off, eval, training
EPI_OFF = dict(HAS_RES=False, RELU=False, STATS=False)
EPI_FUSED = {"eval": dict(HAS_RES=True, RELU=True, STATS=False), "train": dict(HAS_RES=False, RELU=False, STATS=True)}


# ------------------------------------------------------------------------------------------------
def conv2d_fwd():
    """Implicit GEMM: :func:`gemm_variants` plus the INT64 variant. Direct: every config, dtypes
    rotated over configs, plus INT64."""
    gemm = CF.conv2d_fwd_implicit_gemm.fn
    for i, cfg, dt, prec, spec, wgmma in gemm_variants(CF.FWD_GEMM_CONFIGS, [{"IS_1X1": True}, {"FLAT_K": True}]):
        ce = dict(HAS_BIAS=True, INT64=False, PRECISION=prec, **spec, **cfg.kwargs, **EPI_OFF)
        yield (f"conv2d_fwd_implicit_gemm[{i}:{dt}:{prec}:{_variant(spec)}]", gemm, signature_for(gemm, dt, ce), ce,
               opts(cfg), wgmma)
    cfg = CF.FWD_GEMM_CONFIGS[0]
    ce = dict(HAS_BIAS=True, INT64=True, PRECISION="ieee", IS_1X1=False, FLAT_K=False, **cfg.kwargs, **EPI_OFF)
    yield "conv2d_fwd_implicit_gemm[0:fp16:int64]", gemm, signature_for(gemm, "fp16", ce), ce, opts(cfg), True
    for i, cfg in enumerate(CF.FWD_GEMM_SM80_CONFIGS):     # the picker's Ampere table (fp16, taps)
        ce = dict(HAS_BIAS=True, INT64=False, PRECISION="ieee", IS_1X1=False, FLAT_K=False, **cfg.kwargs, **EPI_OFF)
        yield f"conv2d_fwd_implicit_gemm[sm80:{i}:fp16]", gemm, signature_for(gemm, "fp16", ce), ce, opts(cfg), True
    # fused-block epilogues (triton_backend/fused.py): every config in fp16 and bf16 (tensor cores),
    # eval (residual + ReLU) and train (per-tile statistics partials into fp32 workspaces)
    for i, cfg in enumerate(CF.FWD_GEMM_CONFIGS):
        for dt in ("fp16", "bf16"):
            for kind, epi in EPI_FUSED.items():
                ce = dict(HAS_BIAS=True, INT64=False, PRECISION="ieee", IS_1X1=False, FLAT_K=False, **cfg.kwargs, **epi)
                sig = signature_for(gemm, dt, ce, fp32_ptrs=("pmean_ptr", "pm2_ptr"))
                yield f"conv2d_fwd_implicit_gemm[{i}:{dt}:taps:fused-{kind}]", gemm, sig, ce, opts(cfg), True
    direct = CF.conv2d_fwd_direct.fn
    for i, cfg in enumerate(CF.FWD_DIRECT_CONFIGS):
        dt, grouped = (("fp32", True), ("fp16", False), ("bf16", True))[i % 3]
        ce = dict(HAS_BIAS=True, GROUPED=grouped, INT64=False, **cfg.kwargs)
        yield (f"conv2d_fwd_direct[{i}:{dt}:grouped={grouped}]", direct, signature_for(direct, dt, ce), ce,
               opts(cfg), False)
    cfg = CF.FWD_DIRECT_CONFIGS[0]
    ce = dict(HAS_BIAS=True, GROUPED=True, INT64=True, **cfg.kwargs)
    yield "conv2d_fwd_direct[0:fp32:int64]", direct, signature_for(direct, "fp32", ce), ce, opts(cfg), False


def conv2d_bwd():
    """GEMM tables as the forward's (FLAT variants), plus INT64; the dW GEMM as the split-K variant
    (out = fp32 workspace; with SPLIT == 1 only the pointer type of out differs). Direct and
    reduction kernels: every config, dtypes rotated over configs, plus INT64 variants."""
    gemms = ((CB.conv2d_bwd_dx_implicit_gemm, CB.DX_GEMM_CONFIGS, "FLAT_K", dict(int_ptrs=("tab_ptr",))),
             (CB.conv2d_bwd_dw_implicit_gemm, CB.DW_GEMM_CONFIGS, "FLAT_N", dict(fp32_ptrs=("out_ptr",))))
    for kern, table, flat, ptrs in gemms:
        fn = kern.fn
        for i, cfg, dt, prec, spec, wgmma in gemm_variants(table, [{flat: True}]):
            ce = dict(INT64=False, PRECISION=prec, **spec, **cfg.kwargs)
            yield (f"{fn.__name__}[{i}:{dt}:{prec}:{_variant(spec)}]", fn, signature_for(fn, dt, ce, **ptrs), ce,
                   opts(cfg), wgmma)
        ce = {flat: False, "INT64": True, "PRECISION": "ieee", **table[0].kwargs}
        yield f"{fn.__name__}[0:fp16:int64]", fn, signature_for(fn, "fp16", ce, **ptrs), ce, opts(table[0]), True
    for kern, table, flat, ptrs in ((CB.conv2d_bwd_dx_implicit_gemm, CB.DX_GEMM_SM80_CONFIGS, "FLAT_K", gemms[0][3]),
                                    (CB.conv2d_bwd_dw_implicit_gemm, CB.DW_GEMM_SM80_CONFIGS, "FLAT_N", gemms[1][3])):
        fn = kern.fn                                      # the picker's Ampere tables (fp16, taps)
        for i, cfg in enumerate(table):
            ce = {flat: False, "INT64": False, "PRECISION": "ieee", **cfg.kwargs}
            yield f"{fn.__name__}[sm80:{i}:fp16]", fn, signature_for(fn, "fp16", ce, **ptrs), ce, opts(cfg), True
    dxd = CB.conv2d_bwd_dx_direct.fn
    for i, cfg in enumerate(CB.DX_DIRECT_CONFIGS):
        for dt, grouped, int64 in ((ROT[i % 3], True, False), (ROT[(i + 1) % 3], False, i == 0)):
            ce = dict(GROUPED=grouped, INT64=int64, **cfg.kwargs)
            yield (f"conv2d_bwd_dx_direct[{i}:{dt}:grouped={grouped}:int64={int64}]", dxd,
                   signature_for(dxd, dt, ce, int_ptrs=("tab_ptr",)), ce, opts(cfg), False)
    others = ((CB.conv2d_bwd_dw_direct, CB.DW_DIRECT_CONFIGS, ("out_ptr",)),
              (CB.conv2d_bwd_db, CB.DB_CONFIGS, ("out_ptr",)),
              (CB.conv2d_bwd_sum_splits, CB.SUM_SPLITS_CONFIGS, ("ws_ptr",)))
    for kern, table, fp32_ptrs in others:
        fn = kern.fn
        for i, cfg in enumerate(table):
            for dt, int64 in ((ROT[i % 3], False), (ROT[(i + 1) % 3], i == 0)):
                ce = dict(INT64=int64, **cfg.kwargs)
                yield (f"{fn.__name__}[{i}:{dt}:int64={int64}]", fn, signature_for(fn, dt, ce, fp32_ptrs=fp32_ptrs),
                       ce, opts(cfg), False)


def linear():
    """Each config for the forward (bias epilogue) in fp16, bf16 and fp32-tf32 (wgmma expected) and
    fp32-ieee (FMA), and for the dW+db variant (ROW_SUM_A) in fp16 and fp32; the picker's sm_80
    table in fp16; config 0 also INT64."""
    fn = LIN.linear_gemm.fn
    variants = [
        ("fp16", "ieee", dict(HAS_BIAS=True, ROW_SUM_A=False), True),
        ("bf16", "ieee", dict(HAS_BIAS=True, ROW_SUM_A=False), True),
        ("fp32", "tf32", dict(HAS_BIAS=True, ROW_SUM_A=False), True),
        ("fp32", "ieee", dict(HAS_BIAS=True, ROW_SUM_A=False), False),
        ("fp16", "ieee", dict(HAS_BIAS=False, ROW_SUM_A=True), True),
        ("fp32", "ieee", dict(HAS_BIAS=False, ROW_SUM_A=True), False),
    ]
    for i, cfg in enumerate(LIN.GEMM_CONFIGS):
        for dt, prec, spec, wgmma in variants:
            ce = dict(INT64=False, PRECISION=prec, **spec, **cfg.kwargs)
            tag = "dw_db" if spec["ROW_SUM_A"] else "fwd"
            yield f"linear_gemm[{i}:{dt}:{prec}:{tag}]", fn, signature_for(fn, dt, ce), ce, opts(cfg), wgmma
    for i, cfg in enumerate(LIN.GEMM_SM80_CONFIGS):          # the picker's Ampere table (fp16, fwd)
        ce = dict(INT64=False, PRECISION="ieee", HAS_BIAS=True, ROW_SUM_A=False, **cfg.kwargs)
        yield f"linear_gemm[sm80:{i}:fp16]", fn, signature_for(fn, "fp16", ce), ce, opts(cfg), True
    cfg = LIN.GEMM_CONFIGS[0]
    ce = dict(INT64=True, PRECISION="ieee", HAS_BIAS=True, ROW_SUM_A=False, **cfg.kwargs)
    ints = [n for n in fn.arg_names if not n.endswith("_ptr") and n not in ce]
    yield "linear_gemm[0:fp16:int64]", fn, signature_for(fn, "fp16", ce, int64_args=ints), ce, opts(cfg), True


def elementwise():
    """relu forward / backward, flat and strided, for every dtype's config (bf16 shares fp16's)."""
    for dt in ROT:
        cfg = for_dtype(EW.RELU_CONFIGS, "fp32" if dt == "fp32" else "fp16")[0]
        p = "*" + dt
        for flat in (True, False):
            ce = dict(FLAT=flat, **cfg.kwargs)
            tag = f"{dt}_{'flat' if flat else 'strided'}"
            sig = {"x_ptr": p, "y_ptr": p, "total": I32, "D1": I32, "D2": I32, "D3": I32,
                   **{f"s{t}{i}": I32 for t in "xy" for i in range(4)}, "FLAT": "constexpr", "BLOCK": "constexpr"}
            yield f"relu_fwd_elementwise_{tag}", EW.relu_fwd_elementwise, sig, ce, opts(cfg), False
            sig = {"dy_ptr": p, "y_ptr": p, "dx_ptr": p, "total": I32, "D1": I32, "D2": I32, "D3": I32,
                   **{f"s{t}{i}": I32 for t in "dyx" for i in range(4)}, "FLAT": "constexpr", "BLOCK": "constexpr"}
            yield f"relu_bwd_mask_{tag}", EW.relu_bwd_mask, sig, ce, opts(cfg), False


def pool2d():
    """Every pooling kernel in fp32 and fp16 (count_include_pad both ways for the averages), with
    the tiles the launchers pick for the ResNet-stem 3x3/2 pool: the *_rows kernels on the span
    path (SPAN > 0, VEC-aligned vector loads + tl.gather) and the direct-tap path (SPAN = 0), the
    *_channels kernels (forward and backward) with channel vectors. (The per-shape picks of every
    bench shape compile in ``python -m bench.static_memops``.)"""
    strides = ("sxn", "sxc", "sxh", "sxw", "sdn", "sdc", "sdp", "sdq", "sin", "sic", "sip", "siq")
    for dt, vec in (("fp32", 4), ("fp16", 8)):
        rows = [dict(BR=4, BQ=64, SPAN=256, VEC=vec, VEC_Y=vec), dict(BR=4, BQ=64, SPAN=0, VEC=1, VEC_Y=1)]
        bwd = [dict(BR=16, BW=64, SPAN=64, VEC=vec, VEC_Y=vec), dict(BR=4, BW=64, SPAN=0, VEC=1, VEC_Y=1)]
        chans = [dict(BP=16, BC=64, VEC=vec)]
        for fn, tiles in ((PL.max_pool2d_fwd_rows, rows), (PL.max_pool2d_fwd_channels, chans),
                          (PL.max_pool2d_bwd_rows, bwd), (PL.max_pool2d_bwd_channels, chans),
                          (PL.avg_pool2d_fwd_rows, rows), (PL.avg_pool2d_fwd_channels, chans),
                          (PL.avg_pool2d_bwd_rows, bwd), (PL.avg_pool2d_bwd_channels, chans)):
            for ce in tiles:
                for cip in ((False, True) if fn.fn.__name__.startswith("avg") else (None,)):
                    ce = dict(ce) if cip is None else dict(ce, COUNT_INCLUDE_PAD=cip)
                    sig = signature_for(fn, dt, ce, int64_args=strides)
                    if "idx_ptr" in sig:
                        sig["idx_ptr"] = "*i64"
                    tag = "span" if ce.get("SPAN") else ("channels" if "BC" in ce else "direct")
                    name = f"{fn.fn.__name__}_{dt}_{tag}" + ("" if cip is None else ("_inclpad" if cip else "_exclpad"))
                    yield name, fn, sig, ce, {"num_warps": PL.POOL_WARPS, "num_stages": 1}, False


def cross_entropy():
    """The forward rows for the class counts 10, 100, 1000 and 50000 (the configs those pick),
    int64 and int32 labels, every dtype; the backward tile and the mean."""
    fwd = {id(c): c for c in (CE.fwd_config(n) for n in (10, 100, 1000, 50000))}.values()
    for dt in ROT:
        p = "*" + dt
        for lab in ("i64", "i32"):
            for cfg in fwd:
                sig = {"logits_ptr": p, "labels_ptr": "*" + lab, "probs_ptr": p, "nll_ptr": PF,
                       "M": I32, "C": I32, "slm": I32, "slc": I32, "s_lab": I32,
                       "BLOCK_M": "constexpr", "BLOCK_C": "constexpr"}
                yield (f"cross_entropy_fwd_softmax_rows_{dt}_{lab}_c{cfg.kwargs['BLOCK_C']}",
                       CE.cross_entropy_fwd_softmax_rows, sig, dict(cfg.kwargs), opts(cfg), False)
            cfg = CE.BWD_CONFIGS[0]
            sig = {"probs_ptr": p, "labels_ptr": "*" + lab, "dlogits_ptr": p, "M": I32, "C": I32,
                   "spm": I32, "spc": I32, "s_lab": I32, "scale": F32, "BLOCK_M": "constexpr", "BLOCK_C": "constexpr"}
            yield (f"cross_entropy_bwd_softmax_minus_onehot_{dt}_{lab}", CE.cross_entropy_bwd_softmax_minus_onehot,
                   sig, dict(cfg.kwargs), opts(cfg), False)
    cfg = CE.MEAN_CONFIGS[0]
    yield ("cross_entropy_fwd_mean", CE.cross_entropy_fwd_mean,
           {"nll_ptr": PF, "loss_ptr": PF, "M": I32, "BLOCK": "constexpr"}, dict(cfg.kwargs), opts(cfg), False)


def _tiles(table, dt):
    """A norm tile table's configs for dtype ``dt``; bf16 shares fp16's and builds its first only
    (enough to prove the bf16 path compiles)."""
    configs = for_dtype(table, "fp32" if dt == "fp32" else "fp16")
    return configs[:1] if dt == "bf16" else configs


def batch_norm():
    """Every per-tile kernel x tile config x dtype; the combine / reduce kernels."""
    red = {"C": I32, "L": I32, "T": I32, "TILES_PER_SPLIT": I32, "NLB": I32}
    til = {"C": I32, "L": I32, "NLB": I32, "NCB": I32}
    for dt in ROT:
        p = "*" + dt
        for cfg in _tiles(BN.TILE_CONFIGS, dt):
            tc = dict(cfg.kwargs)
            tag = f"{dt}_c{tc['BLOCK_C']}_r{tc['BLOCK_R']}"
            sig = {"x_ptr": p, "pmean_ptr": PF, "pm2_ptr": PF, "pcount_ptr": PF, **red,
                   **strides("x"), "BLOCK_C": "constexpr", "BLOCK_R": "constexpr"}
            yield f"batch_norm_fwd_partial_stats_{tag}", BN.batch_norm_fwd_partial_stats, sig, tc, opts(cfg), False
            sig = {"x_ptr": p, "y_ptr": p, "mean_ptr": PF, "invstd_ptr": PF, "w_ptr": PF, "b_ptr": PF,
                   "rmean_ptr": PF, "rvar_ptr": PF, **til, "eps": F32, **strides("x", "y"),
                   "FROM_RUNNING": "constexpr", "HAS_W": "constexpr", "HAS_B": "constexpr", "RELU": "constexpr",
                   "BLOCK_C": "constexpr", "BLOCK_R": "constexpr"}
            for from_running in (False, True):
                cx = dict(tc, FROM_RUNNING=from_running, HAS_W=True, HAS_B=True, RELU=True)
                yield (f"batch_norm_fwd_normalize_{tag}_{'eval' if from_running else 'train'}",
                       BN.batch_norm_fwd_normalize, sig, cx, opts(cfg), False)
            sig = {"dy_ptr": p, "x_ptr": p, "y_ptr": p, "mean_ptr": PF, "invstd_ptr": PF,
                   "psum_g_ptr": PF, "psum_gx_ptr": PF, **red, **strides("d", "x", "y"),
                   "RELU": "constexpr", "BLOCK_C": "constexpr", "BLOCK_R": "constexpr"}
            yield (f"batch_norm_bwd_partial_sums_{tag}", BN.batch_norm_bwd_partial_sums, sig,
                   dict(tc, RELU=True), opts(cfg), False)
            sig = {"dy_ptr": p, "x_ptr": p, "y_ptr": p, "dx_ptr": p, "mean_ptr": PF, "invstd_ptr": PF,
                   "w_ptr": PF, "sum_g_ptr": PF, "sum_gx_ptr": PF, **til, "inv_count": F32,
                   **strides("d", "x", "y", "o"), "TRAINING": "constexpr", "RELU": "constexpr",
                   "HAS_W": "constexpr", "BLOCK_C": "constexpr", "BLOCK_R": "constexpr",
                   "g_ptr": p, **strides("g"), "STORE_G": "constexpr"}
            for store_g in (False, True):          # STORE_G: the fused conv blocks' residual gradient
                yield (f"batch_norm_bwd_dx_{tag}{'_store_g' if store_g else ''}", BN.batch_norm_bwd_dx, sig,
                       dict(tc, TRAINING=True, RELU=True, HAS_W=True, STORE_G=store_g), opts(cfg), False)
    cfg = BN.COMBINE_CONFIGS[0]
    for dt in ROT:
        sig = {"pmean_ptr": PF, "pm2_ptr": PF, "pcount_ptr": PF, "x_ptr": "*" + dt, "sxc": I64,
               "mean_ptr": PF, "invstd_ptr": PF, "rmean_ptr": PF, "rvar_ptr": PF, "C": I32, "S": I32, "eps": F32,
               "momentum": F32, "unbias": F32, "HAS_RUNNING": "constexpr", "BLOCK_C": "constexpr"}
        yield (f"batch_norm_fwd_combine_stats_{dt}", BN.batch_norm_fwd_combine_stats, sig,
               dict(cfg.kwargs, HAS_RUNNING=True), opts(cfg), False)
    sig = {"psum_g_ptr": PF, "psum_gx_ptr": PF, "sum_g_ptr": PF, "sum_gx_ptr": PF, "dw_ptr": PF, "db_ptr": PF,
           "C": I32, "S": I32, "HAS_W": "constexpr", "BLOCK_C": "constexpr"}
    yield ("batch_norm_bwd_reduce_partials", BN.batch_norm_bwd_reduce_partials, sig,
           dict(cfg.kwargs, HAS_W=True), opts(cfg), False)


def layer_norm():
    """Row kernels x row configs x dtype; the dW/db partial and the partial-row sum per dtype."""
    for dt in ROT:
        p = "*" + dt
        rows = for_dtype(LN.ROW_CONFIGS, "fp32" if dt == "fp32" else "fp16")
        for cfg in rows[:1] if dt == "bf16" else rows:
            bd = cfg.kwargs["BLOCK_D"]
            sig = {"x_ptr": p, "y_ptr": p, "w_ptr": PF, "b_ptr": PF, "mean_ptr": PF, "rstd_ptr": PF,
                   "D": I32, "sxm": I64, "sxd": I64, "eps": F32,
                   "HAS_W": "constexpr", "HAS_B": "constexpr", "BLOCK_D": "constexpr"}
            yield (f"layer_norm_fwd_fused_{dt}_d{bd}", LN.layer_norm_fwd_fused, sig,
                   dict(cfg.kwargs, HAS_W=True, HAS_B=True), opts(cfg), False)
            sig = {"dy_ptr": p, "x_ptr": p, "dx_ptr": p, "w_ptr": PF, "mean_ptr": PF, "rstd_ptr": PF,
                   "D": I32, "sdm": I64, "sdd": I64, "sxm": I64, "sxd": I64,
                   "HAS_W": "constexpr", "BLOCK_D": "constexpr"}
            yield (f"layer_norm_bwd_dx_fused_{dt}_d{bd}", LN.layer_norm_bwd_dx_fused, sig,
                   dict(cfg.kwargs, HAS_W=True), opts(cfg), False)
        cfg = for_dtype(LN.DWDB_CONFIGS, "fp32" if dt == "fp32" else "fp16")[0]
        sig = {"dy_ptr": p, "x_ptr": p, "mean_ptr": PF, "rstd_ptr": PF, "pdw_ptr": PF, "pdb_ptr": PF,
               "M": I32, "D": I32, "ROWS_PER_SPLIT": I32, "sdm": I64, "sdd": I64, "sxm": I64, "sxd": I64,
               "BLOCK_M": "constexpr", "BLOCK_D": "constexpr"}
        yield f"layer_norm_bwd_dwdb_partial_{dt}", LN.layer_norm_bwd_dwdb_partial, sig, dict(cfg.kwargs), opts(cfg), False
        cfg = LN.REDUCE_CONFIGS[0]
        sig = {"pa_ptr": PF, "pb_ptr": PF, "a_ptr": p, "b_ptr": p, "S": I32, "D": I32, "BLOCK": "constexpr"}
        yield f"sum_partial_rows_pair_{dt}", LN.sum_partial_rows_pair, sig, dict(cfg.kwargs), opts(cfg), False


def group_norm():
    """Every kernel of both paths x tile config x dtype; the combine per dtype."""
    geo = {"C": I32, "L": I32, "G": I32, "CPG": I32}
    split = {"G": I32, "CPG": I32, "NCBG": I32}
    for dt in ROT:
        p = "*" + dt
        for cfg in _tiles(GN.TILE_CONFIGS, dt):
            tc, o = dict(cfg.kwargs), opts(cfg)
            tag = f"{dt}_c{tc['BLOCK_C']}_l{tc['BLOCK_L']}"
            sig = {"x_ptr": p, "y_ptr": p, "w_ptr": PF, "b_ptr": PF, "mean_ptr": PF, "rstd_ptr": PF,
                   **geo, "eps": F32, **strides("x", "y"), "HAS_W": "constexpr", "HAS_B": "constexpr",
                   "BLOCK_C": "constexpr", "BLOCK_L": "constexpr"}
            yield f"group_norm_fwd_fused_{tag}", GN.group_norm_fwd_fused, sig, dict(tc, HAS_W=True, HAS_B=True), o, False
            sig = {"dy_ptr": p, "x_ptr": p, "dx_ptr": p, "w_ptr": PF, "mean_ptr": PF, "rstd_ptr": PF,
                   "pdw_ptr": PF, "pdb_ptr": PF, **geo, **strides("d", "x", "o"),
                   "HAS_W": "constexpr", "BLOCK_C": "constexpr", "BLOCK_L": "constexpr"}
            yield f"group_norm_bwd_dx_{tag}", GN.group_norm_bwd_dx, sig, dict(tc, HAS_W=True), o, False
            sig = {"x_ptr": p, "pcount_ptr": PF, "pmean_ptr": PF, "pm2_ptr": PF, "L": I32, **split,
                   "LPS": I32, "S": I32, **strides("x"), "BLOCK_C": "constexpr", "BLOCK_L": "constexpr"}
            yield f"group_norm_fwd_partial_stats_{tag}", GN.group_norm_fwd_partial_stats, sig, tc, o, False
            sig = {"x_ptr": p, "y_ptr": p, "w_ptr": PF, "b_ptr": PF, "mean_ptr": PF, "rstd_ptr": PF,
                   "L": I32, **split, "NLB": I32, **strides("x", "y"), "HAS_W": "constexpr", "HAS_B": "constexpr",
                   "BLOCK_C": "constexpr", "BLOCK_L": "constexpr"}
            yield (f"group_norm_fwd_normalize_{tag}", GN.group_norm_fwd_normalize, sig,
                   dict(tc, HAS_W=True, HAS_B=True), o, False)
            sig = {"dy_ptr": p, "x_ptr": p, "mean_ptr": PF, "rstd_ptr": PF, "psum_gx_ptr": PF, "psum_g_ptr": PF,
                   "C": I32, "NC": I32, "L": I32, **split, "LPS": I32, **strides("d", "x"),
                   "BLOCK_C": "constexpr", "BLOCK_L": "constexpr"}
            yield f"group_norm_bwd_partial_sums_{tag}", GN.group_norm_bwd_partial_sums, sig, tc, o, False
            sig = {"dy_ptr": p, "x_ptr": p, "dx_ptr": p, "w_ptr": PF, "mean_ptr": PF, "rstd_ptr": PF,
                   "sum_gx_ptr": PF, "sum_g_ptr": PF, "C": I32, "L": I32, **split, "NLB": I32,
                   **strides("d", "x", "o"), "HAS_W": "constexpr", "BLOCK_C": "constexpr", "BLOCK_L": "constexpr"}
            yield f"group_norm_bwd_dx_tiles_{tag}", GN.group_norm_bwd_dx_tiles, sig, dict(tc, HAS_W=True), o, False
    cfg = GN.COMBINE_CONFIGS[0]
    for dt in ROT:
        sig = {"pcount_ptr": PF, "pmean_ptr": PF, "pm2_ptr": PF, "x_ptr": "*" + dt, "sxn": I64, "sxc": I64,
               "mean_ptr": PF, "rstd_ptr": PF, "P": I32, "G": I32, "CPG": I32, "eps": F32, "BLOCK": "constexpr"}
        yield (f"group_norm_fwd_combine_stats_{dt}", GN.group_norm_fwd_combine_stats, sig, dict(cfg.kwargs),
               opts(cfg), False)


def conv2d_fwd_tma():
    """The opt-in TMA 1x1 forward: every config in fp16 and bf16 (wgmma expected), the first also in
    fp32 tf32 (wgmma) and ieee (FMA), the picker's sm_80 table in fp16; with bias; and K = 1 (a
    constexpr at launch)."""
    fn = CT.conv2d_fwd_1x1_tma.fn
    for i, cfg in enumerate(CT.TMA_1X1_CONFIGS):
        for dt, prec, wgmma in (("fp16", "ieee", True), ("bf16", "ieee", True)) + (FP32_DOTS if i == 0 else ()):
            ce = dict(HAS_BIAS=True, PRECISION=prec, **cfg.kwargs)
            yield f"conv2d_fwd_1x1_tma[{i}:{dt}:{prec}]", fn, signature_for(fn, dt, ce), ce, opts(cfg), wgmma
    for i, cfg in enumerate(CT.TMA_1X1_SM80_CONFIGS):
        ce = dict(HAS_BIAS=True, PRECISION="ieee", **cfg.kwargs)
        yield f"conv2d_fwd_1x1_tma[sm80:{i}:fp16]", fn, signature_for(fn, "fp16", ce), ce, opts(cfg), True
    cfg = CT.TMA_1X1_CONFIGS[0]       # one output channel: launch specialisation makes K the constant 1
    ce = dict(HAS_BIAS=False, PRECISION="ieee", K=1, **cfg.kwargs)
    yield "conv2d_fwd_1x1_tma[0:fp16:K=1]", fn, signature_for(fn, "fp16", ce), ce, opts(cfg), True


def conv2d_bn_relu():
    """The fused block's finalize (fp32 partials, fp32 / fp16 running stats) and apply kernels (every
    dtype, with and without residual / affine, plus INT64)."""
    cfg = FK.FINALIZE_CONFIGS[0]
    fn = FK.conv_bn_fwd_finalize_stats
    for rs in ("fp32", "fp16"):
        ce = dict(HAS_RUNNING=True, **cfg.kwargs)
        sig = signature_for(fn, rs, ce, fp32_ptrs=("pmean_ptr", "pm2_ptr", "mean_ptr", "invstd_ptr"))
        sig.update(eps=F32, momentum=F32, unbias=F32)
        yield f"conv_bn_fwd_finalize_stats[running={rs}]", fn, sig, ce, opts(cfg), False
    cfg = FK.APPLY_CONFIGS[0]
    fn = FK.conv_bn_fwd_apply
    units = dict(Y_UNIT=2, O_UNIT=1, R_UNIT=1, Y_ALIGN=8, O_ALIGN=4, R_ALIGN=4, PQ_ALIGN=4)  # NCHW out, res
    for dt in ROT:
        for res in (False, True):
            for int64 in (False, True):
                ce = dict(HAS_W=True, HAS_B=True, HAS_RES=res, RELU=True, INT64=int64, **units, **cfg.kwargs)
                sig = signature_for(fn, dt, ce, fp32_ptrs=("mean_ptr", "invstd_ptr", "w_ptr", "b_ptr"))
                yield f"conv_bn_fwd_apply[{dt}:res={res}:int64={int64}]", fn, sig, ce, opts(cfg), False
    ce = dict(HAS_W=False, HAS_B=False, HAS_RES=True, RELU=False, INT64=False, Y_UNIT=0, O_UNIT=2, R_UNIT=0,
              Y_ALIGN=1, O_ALIGN=8, R_ALIGN=1, PQ_ALIGN=1, **cfg.kwargs)    # no unit-stride y / residual
    sig = signature_for(fn, "fp16", ce, fp32_ptrs=("mean_ptr", "invstd_ptr", "w_ptr", "b_ptr"))
    yield "conv_bn_fwd_apply[fp16:strided]", fn, sig, ce, opts(cfg), False


CASES = {"conv2d_bn_relu": conv2d_bn_relu, "conv2d_fwd": conv2d_fwd, "conv2d_fwd_tma": conv2d_fwd_tma,
         "conv2d_bwd": conv2d_bwd, "linear": linear, "elementwise": elementwise,
         "pool2d": pool2d, "cross_entropy": cross_entropy, "batch_norm": batch_norm, "layer_norm": layer_norm,
         "group_norm": group_norm}
