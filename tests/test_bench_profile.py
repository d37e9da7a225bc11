"""bench --profile on the CPU: the kernel-name classifier, the per-part floors, and a profiled run."""

from __future__ import annotations

import pytest
import torch

bench = pytest.importorskip("bertfast.bench")
from bertfast.bench import floors  # noqa: E402

# (name as torch.profiler reports it, part): CUDA kernels seen on H100s, Triton kernels of bertfast and
# Inductor, and CPU operators.
NAMES = [
    ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off", "gemm"),
    ("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_NTN", "gemm"),
    ("ampere_fp16_s16816gemm_fp16_128x128_ldg8_f2f_stages_32x5_tn", "gemm"),
    ("cutlass_80_tensorop_f16_s16816gemm_relu_f16_64x64_64x4_nn_align8", "gemm"),
    ("_linear_fwd_kernel", "gemm"),
    ("triton_tem_fused_addmm_gelu_3", "gemm"),
    ("aten::addmm", "gemm"),
    ("aten::mm", "gemm"),
    ("aten::bmm", "gemm"),
    ("fmha_cutlassF_f16_aligned_64x64_rf_sm80", "attention"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false>, true>", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64_4x1x1_kernel0_0", "attention"),
    ("_varlen_attention_fwd_kernel", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::Half, float, c10::Half>", "norms"),
    ("_layernorm_fwd_kernel", "norms"),
    ("_embed_layernorm_fwd_kernel", "norms"),
    ("triton_per_fused_add_native_layer_norm_3", "norms"),
    ("aten::native_layer_norm", "norms"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "other"),
    ("Memcpy HtoD (Pageable -> Device)", "other"),
    ("aten::gelu", "other"),
    ("aten::add", "other"),
    ("aten::embedding", "other"),
]


@pytest.mark.parametrize("name,part", NAMES, ids=[n[:40] for n, _ in NAMES])
def test_classify(name, part):
    assert bench.classify(name) == part


def test_part_floors_by_hand():
    # H=4, I=8, one layer, lengths 3 and 1 (T=4), fp32 (4 bytes); ceilings 1e-9 TFLOP/s (1000 FLOP/s) and
    # 1e-9 TB/s (1000 B/s): every kernel's floor is max(FLOPs, bytes) / 1000 s.
    H, I, T, sq, e = 4, 8, 4, 10, 4
    qkv = max(2 * T * H * 3 * H, e * (T * H + 3 * H * H + 3 * H + 3 * T * H))
    out = max(2 * T * H * H, e * (T * H + H * H + H + 2 * T * H))
    ffn1 = max(2 * T * H * I, e * (T * H + H * I + I + T * I))
    ffn2 = max(2 * T * I * H, e * (T * I + I * H + H + 2 * T * H))
    attn = max(4 * sq * H, e * 4 * T * H)
    ln = max(8 * T * H, e * (2 * T * H + 2 * H))
    emb = max(8 * T * H, e * 2 * T * H)
    got = floors.part_floors_ms([3, 1], H, I, 1, tflops=1e-9, tbps=1e-9, elem=e)
    want = {"gemm": qkv + out + ffn1 + ffn2, "attention": attn, "norms": 2 * ln + emb, "other": 0}
    assert got == {k: pytest.approx(v / 1000 * 1e3) for k, v in want.items()}
    # Layers scale every part but the embeddings' LayerNorm.
    three = floors.part_floors_ms([3, 1], H, I, 3, tflops=1e-9, tbps=1e-9, elem=e)
    assert three["gemm"] == pytest.approx(3 * got["gemm"]) and three["norms"] == pytest.approx(3 * 2 * ln + emb)
    with pytest.raises(ValueError, match="ceilings"):
        floors.part_floors_ms([3], H, I, 1, tflops=0, tbps=1)


def test_floors_script_uses_the_package(capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "floors.py"
    spec = importlib.util.spec_from_file_location("floors_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--model", "bert-base", "--batch", "32", "--seq", "128"])
    text = capsys.readouterr().out
    parts = floors.part_floors_ms([128] * 32, 768, 3072, 12, 798.0, 3.0)
    assert f"gemm {parts['gemm']:.3f}" in text and "floor, kernel by kernel: 1.081 ms" in text


def test_profile_forward_parts_sum_to_total_on_cpu():
    m = bench.build_hf("tiny", "sdpa")
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(500, 1000, (3, 33), generator=g)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        p = bench.profile_forward(lambda: m(input_ids=ids, attention_mask=mask), torch.device("cpu"), calls=3)
    assert set(p["parts_ms"]) == {"gemm", "attention", "norms", "other"}
    assert p["total_ms"] == pytest.approx(sum(p["parts_ms"].values()))
    # A BERT forward has all four: addmm (GEMMs), SDPA, LayerNorm, GELU and adds.
    assert all(v > 0 for v in p["parts_ms"].values()), p["parts_ms"]
    assert p["source"].startswith("cpu") and p["top"] and all(t["part"] == bench.classify(t["name"]) for t in p["top"])
    with pytest.raises(ValueError, match="calls"):
        bench.profile_forward(lambda: None, torch.device("cpu"), calls=0)


def test_run_with_profile_reports_parts_and_floors():
    opts = bench.BenchOptions(
        models=["tiny"],
        device="cpu",
        engines=["bertfast", "hf-sdpa"],
        batches=[3],
        seqs=[9, 33],
        varlen=[],
        quick=True,
        n_sets=1,
        rounds=1,
        min_reps=1,
        max_reps=1,
        target_s=0.001,
        progress=False,
        threads=1,
        profile=True,
        profile_cases=[("fixed", 3, 33)],
    )
    rep = bench.run(opts)
    prof = rep["profile"]
    assert [(p["engine"], p["case"]) for p in prof] == [("bertfast", "fixed b3 s33"), ("hf-sdpa", "fixed b3 s33")]
    for p in prof:
        assert "skipped" not in p, p
        assert p["total_ms"] == pytest.approx(sum(p["parts_ms"].values())) and p["parts_ms"]["gemm"] > 0
        want = floors.part_floors_ms(
            [33] * 3, 32, 64, 2, rep["peak"]["matmul_tflops_by_dtype"]["float32"], rep["peak"]["copy_tbps"], elem=4
        )
        assert p["floors_ms"] == pytest.approx(want)
        assert (
            p["vs_floor"]["gemm"] == pytest.approx(p["parts_ms"]["gemm"] / want["gemm"])
            and p["vs_floor"]["other"] is None
        )
    assert "## Where the time goes" in bench.markdown(rep)
