"""The GEMM family outside the interpreter: every config the heuristics can pick compiles for Hopper
(sm_90, triton's bundled ptxas, no GPU needed) and fits one block's shared memory (its clear error on
CPU tensors is checked with the other launchers in test_kernel_build). Properties are checked, not
the heuristics' formulas.

Each check runs in a fresh interpreter with TRITON_INTERPRET unset (test_kernel_build._run)."""

from __future__ import annotations

import textwrap

import pytest

from .test_kernel_build import HOPPER_SMEM_PER_BLOCK, _run

_BUILD = """
import triton
from triton.backends import backends
if "nvidia" not in backends:
    print("SKIP no nvidia backend in this triton"); raise SystemExit(0)
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from bertfast.kernels import _utils, epilogue, gemm, gemm_splitk, gemm_tma

TARGET = GPUTarget("cuda", 90, 32)
ALIGNED = {"x_ptr", "w_ptr", "ws_ptr", "bias_ptr", "res_ptr", "out_ptr", "y_ptr", "stride_xm", "stride_wn",
           "stride_rm", "stride_om", "stride_yt", "stride_rt", "stride_ot", "K", "N"}
ELEM = {"fp16": 2, "bf16": 2, "fp32": 4}
NAME = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
BERT = [(2304, 768), (768, 768), (3072, 768), (768, 3072), (3072, 1024), (1024, 1024), (4096, 1024), (1024, 4096)]


def build(fn, sig, consts, num_warps, num_stages=3):
    sig = dict(sig, **{k: "constexpr" for k in consts})
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in sig if n in ALIGNED}
    k = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=attrs), target=TARGET,
                       options={"num_warps": num_warps, "num_stages": num_stages})
    return k.metadata.shared, k.asm["ptx"]


def ptrs(dt, *names):
    return {n: "*" + dt for n in names}


def split(cfg):
    meta = {k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")}
    return meta, cfg["num_warps"], cfg["num_stages"]
"""


def _hopper(code: str) -> str:
    out = _run(_BUILD + f"LIMIT = {HOPPER_SMEM_PER_BLOCK}\n" + textwrap.dedent(code), timeout=900)
    if out.startswith("SKIP"):
        pytest.skip(out.strip())
    return out


def test_gemm_heuristic_configs_compile_and_fit_on_hopper():
    out = _hopper(
        """
        todo = {}
        for dt, prec in (("fp16", "tf32"), ("bf16", "tf32"), ("fp32", "ieee"), ("fp32", "tf32")):
            for m in (16, 32, 64, 128, 256, 1024, 4096, 16384):
                for n, k in BERT + [(1, 40), (100, 72)]:
                    cfg = gemm._gemm_heuristic((m, n, k, True, True, "gelu", prec, NAME[dt]))
                    todo[(dt, prec, tuple(sorted(cfg.items())))] = k % cfg["BLOCK_K"] == 0
        for (dt, prec, items), even_k in sorted(todo.items()):
            meta, warps, stages = split(dict(items))
            sig = dict(ptrs(dt, "x_ptr", "w_ptr", "bias_ptr", "res_ptr", "out_ptr"), M="i32", N="i32", K="i32",
                       stride_xm="i32", stride_xk="i32", stride_wn="i32", stride_wk="i32", stride_rm="i32",
                       stride_rn="i32", stride_om="i32", M_BUCKET="i32")
            smem, ptx = build(gemm._linear_fwd_kernel, sig, dict(HAS_BIAS=True, HAS_RESIDUAL=True, ACTIVATION="gelu",
                              INPUT_PRECISION=prec, EVEN_K=even_k, **meta), warps, stages)
            assert smem <= LIMIT, (dt, meta, smem)
            if ELEM[dt] == 2 and meta["BLOCK_M"] >= 64:
                assert "wgmma" in ptx, ("no wgmma", dt, meta)
            print("gemm", dt, prec, meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"], stages, smem)
        print("built", len(todo))
        """
    )
    assert "built" in out, out


def test_splitk_heuristic_fills_the_gpu_and_compiles_on_hopper():
    """~2-4 programs per SM (or one split per K block when K is too short for more), every config
    compiles for sm_90, and so does the reduce kernel."""
    out = _hopper(
        """
        sms = 132
        todo = set()
        for dt, prec in (("fp16", "tf32"), ("bf16", "tf32"), ("fp32", "ieee")):
            for m in (16, 32, 64, 128, 256):
                for n, k in BERT:
                    cfg = gemm_splitk._splitk_heuristic((m, n, k, prec, NAME[dt], sms))
                    k_per_split, splits = gemm_splitk.splitk_plan(k, cfg["BLOCK_K"], cfg["SPLIT_K"])
                    tiles = triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"])
                    k_blocks = triton.cdiv(k, cfg["BLOCK_K"])
                    programs = tiles * splits
                    assert programs <= 4 * sms or splits == 1, (m, n, k, cfg, programs)
                    assert programs >= 2 * sms or k_per_split == cfg["BLOCK_K"], (m, n, k, cfg, programs)
                    items = tuple(sorted((a, b) for a, b in cfg.items() if a != "SPLIT_K"))
                    todo.add((dt, prec, items, k % cfg["BLOCK_K"] == 0))
        for dt, prec, items, even_k in sorted(todo):
            meta, warps, stages = split(dict(items))
            sig = dict(ptrs(dt, "x_ptr", "w_ptr"), ws_ptr="*fp32", M="i32", N="i32", K="i32", K_PER_SPLIT="i32",
                       stride_xm="i32", stride_xk="i32", stride_wn="i32", stride_wk="i32")
            smem, _ = build(gemm_splitk._linear_splitk_partial_kernel, sig,
                            dict(INPUT_PRECISION=prec, EVEN_K=even_k, **meta), warps, stages)
            assert smem <= LIMIT, (dt, meta, smem)
            print("splitk", dt, meta, smem)
        for dt in ("fp16", "fp32"):
            sig = dict(ptrs(dt, "bias_ptr", "res_ptr", "out_ptr"), ws_ptr="*fp32", M="i32", N="i32", split_k="i32",
                       stride_rm="i32", stride_rn="i32", stride_om="i32")
            build(gemm_splitk._splitk_reduce_kernel, sig, dict(HAS_BIAS=True, HAS_RESIDUAL=True, ACTIVATION="gelu",
                  BLOCK=gemm_splitk.REDUCE_BLOCK), 4)
        print("built", len(todo))
        """
    )
    assert "built" in out, out


def test_tma_heuristic_configs_compile_with_bulk_tensor_copies_on_hopper():
    out = _hopper(
        """
        todo = set()
        for dt in ("fp16", "bf16"):
            for m in (16, 64, 256, 1024, 4096, 16384):
                for n, k in BERT:
                    cfg = gemm_tma._tma_heuristic((m, n, k, NAME[dt], 132))
                    todo.add((dt, tuple(sorted(cfg.items()))))
        for dt, items in sorted(todo):
            meta, warps, stages = split(dict(items))
            sig = dict(ptrs(dt, "x_ptr", "w_ptr", "bias_ptr", "res_ptr", "out_ptr"), M="i32", N="i32", K="i32",
                       stride_xm="i32", stride_wn="i32", stride_rm="i32", stride_rn="i32", stride_om="i32",
                       NUM_PROGRAMS="i32")
            smem, ptx = build(gemm_tma._linear_tma_kernel, sig,
                              dict(HAS_BIAS=True, HAS_RESIDUAL=True, ACTIVATION="gelu", **meta), warps, stages)
            assert smem <= LIMIT, (dt, meta, smem)
            assert "cp.async.bulk.tensor" in ptx and "wgmma" in ptx, ("no TMA / wgmma", dt, meta)
            print("tma", dt, meta, smem)
        print("built", len(todo))
        """
    )
    assert "built" in out, out


def test_epilogue_kernel_compiles_on_hopper():
    out = _hopper(
        """
        for dt in ("fp16", "bf16", "fp32"):
            for n in (768, 3072, 30522):
                bt, bn, warps = epilogue._launch_params(n)
                sig = dict(ptrs(dt, "y_ptr", "bias_ptr", "res_ptr", "out_ptr"), T="i32", N="i32", stride_yt="i32",
                           stride_yn="i32", stride_rt="i32", stride_rn="i32", stride_ot="i32")
                smem, _ = build(epilogue._bias_activation_kernel, sig, dict(HAS_BIAS=True, HAS_RESIDUAL=True,
                                ACTIVATION="gelu", BLOCK_T=bt, BLOCK_N=bn), warps)
                assert smem <= LIMIT
        print("built epilogue")
        """
    )
    assert "built epilogue" in out, out
