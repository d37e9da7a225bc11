"""The kernels outside the interpreter: import without a GPU, a clear error on CPU tensors, and a
compile for Hopper (sm_90, via triton's bundled ptxas) that needs no GPU, so a kernel that only the
real compiler rejects, or a tile that overflows shared memory, fails here and not first on an H100.

Each check runs in a fresh interpreter with TRITON_INTERPRET unset (it is decided at import)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, timeout: int = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_cpu_tensors_without_interpreter_raise_a_clear_error():
    out = _run(
        """
        import torch
        from bertfast.kernels import embed_layernorm, layernorm, triton_linear, varlen_attention
        from bertfast.kernels import gemm_dispatch
        from bertfast.kernels.epilogue import bias_activation
        from bertfast.kernels.gemm_splitk import linear_splitk
        from bertfast.kernels.gemm_tma import linear_tma
        x, w, b = torch.randn(4, 48), torch.randn(48), torch.randn(48)
        ids = torch.arange(4)
        w8, b8 = torch.randn(8, 48), torch.randn(8)
        calls = {
            "embed_layernorm": lambda: embed_layernorm(ids, ids, None, x, x, x, w, b, 1e-5),
            "layernorm": lambda: layernorm(x, w, b, 1e-5),
            "triton_linear": lambda: triton_linear(x, torch.randn(8, 48)),
            "varlen_attention": lambda: varlen_attention(
                torch.randn(4, 96), torch.tensor([0, 4], dtype=torch.int32), 4, 2),
            "bias_activation": lambda: bias_activation(x, None, "gelu"),
            "linear_splitk": lambda: linear_splitk(x, w8, b8),
            "linear_tma": lambda: linear_tma(x.half(), w8.half()),
            "dispatch.linear": lambda: gemm_dispatch.linear(x, w8, b8),
            "linear_residual_layernorm": lambda: gemm_dispatch.linear_residual_layernorm(
                x, w8, b8, torch.randn(4, 8), torch.ones(8), torch.zeros(8), 1e-5),
        }
        for name, call in calls.items():
            try:
                call()
            except RuntimeError as e:
                assert "TRITON_INTERPRET=1" in str(e), (name, str(e))
                print("ok", name)
            else:
                raise AssertionError(name + " ran CPU tensors without the interpreter")
        """
    )
    expected = [
        "embed_layernorm",
        "layernorm",
        "triton_linear",
        "varlen_attention",
        "bias_activation",
        "linear_splitk",
        "linear_tma",
        "dispatch.linear",
        "linear_residual_layernorm",
    ]
    assert out.split() == [word for name in expected for word in ("ok", name)]


def test_kernels_compile_for_hopper():
    pytest.importorskip("triton")
    out = _run(
        """
        import importlib
        import triton
        from triton.backends import backends
        if "nvidia" not in backends:
            print("SKIP no nvidia backend in this triton"); raise SystemExit(0)
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from bertfast.kernels import _utils
        gemm = importlib.import_module("bertfast.kernels.gemm")
        attn = importlib.import_module("bertfast.kernels.attention")
        ln = importlib.import_module("bertfast.kernels.layernorm")
        emb = importlib.import_module("bertfast.kernels.embed_layernorm")
        TARGET = GPUTarget("cuda", 90, 32)
        ALIGNED = {"x_ptr", "w_ptr", "bias_ptr", "res_ptr", "out_ptr", "qkv_ptr", "cu_seqlens_ptr", "word_ptr",
                   "pos_ptr", "type_ptr", "b_ptr", "stride_xm", "stride_wn", "stride_rm", "stride_om", "K", "N",
                   "stride_qkv_t", "stride_out_t", "hidden", "stride_xt", "stride_rt", "stride_ot"}

        def build(fn, sig, consts, num_warps, num_stages=3):
            sig = dict(sig, **{k: "constexpr" for k in consts})
            attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in sig if n in ALIGNED}
            k = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=attrs), target=TARGET,
                               options={"num_warps": num_warps, "num_stages": num_stages})
            return k.metadata.shared, "wgmma" in k.asm["ptx"]

        def gemm_sig(dt):
            p = "*" + dt
            return {"x_ptr": p, "w_ptr": p, "bias_ptr": p, "res_ptr": p, "out_ptr": p, "M": "i32", "N": "i32",
                    "K": "i32", "stride_xm": "i32", "stride_xk": "i32", "stride_wn": "i32", "stride_wk": "i32",
                    "stride_rm": "i32", "stride_rn": "i32", "stride_om": "i32", "M_BUCKET": "i32"}

        for dt, cfg, act, even_k in [("fp16", gemm.GEMM_GPU_CONFIGS[0], "gelu", True),
                                     ("bf16", gemm.GEMM_GPU_CONFIGS[-1], "tanh", False),
                                     ("fp32", gemm.GEMM_GPU_CONFIGS[-2], "", True)]:
            c = cfg.kwargs
            smem, wgmma = build(gemm._linear_fwd_kernel, gemm_sig(dt), dict(
                HAS_BIAS=True, HAS_RESIDUAL=True, ACTIVATION=act, INPUT_PRECISION="ieee" if dt == "fp32" else "tf32",
                EVEN_K=even_k, **c), cfg.num_warps, cfg.num_stages)
            assert smem <= 227 * 1024, ("gemm", dt, c, smem)  # what one block may use on sm_90
            assert wgmma == (dt != "fp32" and c["BLOCK_M"] >= 64), ("gemm wgmma", dt, c)
            print("gemm", dt, c["BLOCK_M"], c["BLOCK_N"], smem)

        NAMES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
        for dt, d, bias in [("fp16", 64, True), ("bf16", 80, False), ("fp32", 32, True)]:  # bias: MPNet's
            bd = triton.next_power_of_2(d)
            prec = "ieee" if dt == "fp32" else "tf32"
            cfg = attn.heuristic_config((512, d, prec, NAMES[dt], bias))
            sig = {"qkv_ptr": "*" + dt, "cu_seqlens_ptr": "*i32", "out_ptr": "*" + dt, "stride_qkv_t": "i32",
                   "stride_qkv_c": "i32", "stride_out_t": "i32", "hidden": "i32", "qk_scale": "fp32",
                   "bias_ptr": "*" + dt, "stride_bias_b": "i32", "stride_bias_h": "i32"}
            smem, _ = build(attn._varlen_attention_fwd_kernel, sig, dict(
                HEAD_DIM=d, BLOCK_D=bd, MASK_D=d != bd, INPUT_PRECISION=prec,
                **(attn._rel_bias_flags(32, 128) if bias else attn._NO_REL_BIAS),
                BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"]), cfg["num_warps"], cfg["num_stages"])
            assert smem <= 227 * 1024, ("attention", dt, d, cfg, smem)  # what one block may use on sm_90
            print("attention", dt, d, smem)

        for dt in ("fp16", "fp32"):
            p = "*" + dt
            bh, bt, nw = _utils.layernorm_launch_params(768, 2 if dt == "fp16" else 4)
            build(ln._layernorm_fwd_kernel, {
                "x_ptr": p, "bias_ptr": p, "res_ptr": p, "ln_w_ptr": p, "ln_b_ptr": p, "out_ptr": p, "T": "i32",
                "H": "i32", "stride_xt": "i32", "stride_xh": "i32", "stride_rt": "i32", "stride_rh": "i32",
                "stride_ot": "i32", "eps": "fp32"}, dict(HAS_BIAS=True, HAS_RESIDUAL=True, BLOCK_T=bt, BLOCK_H=bh), nw)
            build(emb._embed_layernorm_fwd_kernel, {
                "ids_ptr": "*i64", "pos_ids_ptr": "*i64", "type_ids_ptr": "*i32", "word_ptr": p, "pos_ptr": p,
                "type_ptr": p, "w_ptr": p, "b_ptr": p, "out_ptr": p, "T": "i32", "H": "i32", "stride_ids": "i32",
                "stride_pos_ids": "i32", "stride_type_ids": "i32", "stride_word": "i32", "stride_pos": "i32",
                "stride_type": "i32", "stride_ot": "i32", "eps": "fp32"},
                dict(HAS_TYPE_IDS=dt == "fp16", BLOCK_T=bt, BLOCK_H=bh), nw)
            print("layernorms", dt)
        """,
        timeout=600,
    )
    if out.startswith("SKIP"):
        pytest.skip(out.strip())
    assert "layernorms fp32" in out, out


# Shared memory one block may use on sm_90 (H100 / H200): 227 KiB, the opt-in maximum.
HOPPER_SMEM_PER_BLOCK = 227 * 1024

_HOPPER_BUILD = """
import triton
from triton.backends import backends
if "nvidia" not in backends:
    print("SKIP no nvidia backend in this triton"); raise SystemExit(0)
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)


def build(fn, sig, consts, num_warps, num_stages, aligned):
    \"\"\"Compile for sm_90 with 16-byte aligned pointers / strides; returns the shared memory it uses.\"\"\"
    sig = dict(sig, **{k: "constexpr" for k in consts})
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in sig if n in aligned}
    k = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=attrs), target=TARGET,
                       options={"num_warps": num_warps, "num_stages": num_stages})
    return k.metadata.shared
"""


def test_attention_configs_compile_and_fit_on_hopper():
    """Every tile the attention heuristic can pick (buckets 16-1024; fp16 at head dims 64 / 80 / 128,
    bf16 at 64, fp32 at 32 / 128; with MPNet's bias at 64) and every tuning candidate for head dim 128
    compiles for sm_90 and fits one block's shared memory (~40 compiles, ~30 s with a cold cache)."""
    out = _run(
        _HOPPER_BUILD
        + f"LIMIT = {HOPPER_SMEM_PER_BLOCK}\n"
        + textwrap.dedent(
            """
            from bertfast.kernels import attention as attn

            SIG = {"cu_seqlens_ptr": "*i32", "stride_qkv_t": "i32", "stride_qkv_c": "i32",
                   "stride_out_t": "i32", "hidden": "i32", "qk_scale": "fp32", "bias_ptr": "*fp32",
                   "stride_bias_b": "i32", "stride_bias_h": "i32"}
            ALIGNED = {"qkv_ptr", "out_ptr", "cu_seqlens_ptr", "stride_qkv_t", "stride_out_t", "hidden"}
            NAMES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
            REL = attn._rel_bias_flags(32, 128)  # MPNet's
            todo = {}
            HEAD_DIMS = {"fp16": (64, 80, 128), "bf16": (64,), "fp32": (32, 128)}  # 80: masked head columns
            for dt in ("fp16", "bf16", "fp32"):
                prec = "ieee" if dt == "fp32" else "tf32"
                for d in HEAD_DIMS[dt]:
                    for bias in (False, True) if d == 64 else (False,):
                        for bucket in (16, 32, 64, 128, 256, 512, 1024):
                            cfg = attn.heuristic_config((bucket, d, prec, NAMES[dt], bias))
                            todo[(dt, d, bias, tuple(sorted(cfg.items())))] = "heuristic"
                if dt != "bf16":
                    for cfg in attn.CANDIDATE_CONFIGS((512, 128, prec, NAMES[dt], False)):
                        todo.setdefault((dt, 128, False, tuple(sorted(cfg.items()))), "candidate")
            worst = 0
            for (dt, d, bias, items), source in sorted(todo.items()):
                cfg = dict(items)
                bd = attn._block_d(d)
                smem = build(attn._varlen_attention_fwd_kernel, dict(SIG, qkv_ptr="*" + dt, out_ptr="*" + dt), dict(
                    HEAD_DIM=d, BLOCK_D=bd, MASK_D=d != bd, INPUT_PRECISION="ieee" if dt == "fp32" else "tf32",
                    **(REL if bias else attn._NO_REL_BIAS), BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"]),
                    cfg["num_warps"], cfg["num_stages"], ALIGNED)
                assert smem <= LIMIT, (source, dt, d, bias, cfg, smem)
                worst = max(worst, smem)
            print("attention configs", len(todo), "max shared", worst)
            """
        ),
        timeout=900,
    )
    if out.startswith("SKIP"):
        pytest.skip(out.strip())
    assert "attention configs" in out, out


def test_attention_bias_costs_no_extra_exp2_on_hopper():
    """MPNet's bias (HAS_REL_BIAS) adds the table gathers to the sm_90 attention kernel, and no exp2: the
    softmax runs in the dot's layout once, not duplicated into the gather's (fp16, D = 64, 128 x 64 tiles)."""
    out = _run(
        _HOPPER_BUILD
        + textwrap.dedent(
            """
            import re
            from bertfast.kernels import attention as attn

            fn = attn._varlen_attention_fwd_kernel
            SIG = {"qkv_ptr": "*fp16", "cu_seqlens_ptr": "*i32", "out_ptr": "*fp16", "stride_qkv_t": "i32",
                   "stride_qkv_c": "i32", "stride_out_t": "i32", "hidden": "i32", "qk_scale": "fp32",
                   "bias_ptr": "*fp16", "stride_bias_b": "i32", "stride_bias_h": "i32"}
            counts = {}
            for bias in (False, True):
                consts = dict(HEAD_DIM=64, BLOCK_D=64, MASK_D=False, INPUT_PRECISION="tf32", BLOCK_M=128, BLOCK_N=64,
                              **(attn._rel_bias_flags(32, 128) if bias else attn._NO_REL_BIAS))
                sig = dict(SIG, **{k: "constexpr" for k in consts})
                ptx = triton.compile(ASTSource(fn, sig, constexprs=consts), target=TARGET,
                                     options={"num_warps": 8, "num_stages": 3}).asm["ptx"]
                counts[bias] = (len(re.findall(r"ex2\\.approx", ptx)), len(re.findall(r"lg2\\.approx", ptx)))
            print("ex2 / lg2 without and with bias", counts[False], counts[True])
            assert counts[True] == counts[False] and counts[True][0] > 0, counts
            """
        ),
    )
    if out.startswith("SKIP"):
        pytest.skip(out.strip())
    assert "ex2 / lg2 without and with bias" in out, out


def test_bias_residual_layernorm_compiles_for_hopper():
    """The fused bias + residual + LayerNorm row kernel at BERT-base / -large widths, every dtype."""
    out = _run(
        _HOPPER_BUILD
        + textwrap.dedent(
            """
            from bertfast.kernels import _utils
            import importlib
            ln = importlib.import_module("bertfast.kernels.layernorm")

            ALIGNED = {"x_ptr", "bias_ptr", "res_ptr", "ln_w_ptr", "ln_b_ptr", "out_ptr", "stride_xt", "stride_rt",
                       "stride_ot"}
            for dt, elem in (("fp16", 2), ("bf16", 2), ("fp32", 4)):
                for h in (768, 1024):
                    p = "*" + dt
                    bh, bt, nw = _utils.layernorm_launch_params(h, elem)
                    build(ln._layernorm_fwd_kernel, {
                        "x_ptr": p, "bias_ptr": p, "res_ptr": p, "ln_w_ptr": p, "ln_b_ptr": p, "out_ptr": p,
                        "T": "i32", "H": "i32", "stride_xt": "i32", "stride_xh": "i32", "stride_rt": "i32",
                        "stride_rh": "i32", "stride_ot": "i32", "eps": "fp32"},
                        dict(HAS_BIAS=True, HAS_RESIDUAL=True, BLOCK_T=bt, BLOCK_H=bh), nw, 1, ALIGNED)
                    print("bias_residual_layernorm", dt, h)
            """
        ),
    )
    if out.startswith("SKIP"):
        pytest.skip(out.strip())
    assert "bias_residual_layernorm fp32 1024" in out, out
