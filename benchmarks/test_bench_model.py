"""Whole model: the encoder forward of every engine in bertfast.bench.ENGINES, on padded batches.

GPU: minilm (real weights) and BERT-base (seeded random), fp16 and bf16, batch 1 and 32 at seq 128,
fixed and variable lengths; all engines. CPU: minilm fp32, bertfast's torch path against HF SDPA.
Before timing, each engine is checked against the reference the tests use (HF eager fp32, real
positions only).
"""

from __future__ import annotations

import functools

import pytest
import torch

from bertfast import bench

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")

if CUDA:
    MODELS, DTYPES = ["minilm", "bert-base"], [torch.float16, torch.bfloat16]
    ENGINES = [e.name for e in bench.ENGINES if "cuda" in e.devices]
    CASES = [("fixed", 1, 128), ("fixed", 32, 128), ("varlen-uniform", 32, 128), ("varlen-sentences", 32, 128)]
    TOL = {torch.float16: 5e-2, torch.bfloat16: 3e-1}  # sanity bounds, not the tests' budgets
else:
    MODELS, DTYPES = ["minilm"], [torch.float32]
    ENGINES = ["bertfast", "hf-sdpa"]
    CASES = [("fixed", 8, 128), ("varlen-uniform", 8, 128)]
    TOL = {torch.float32: 1e-4}


@functools.cache
def _state(model):
    m = bench.build_hf(model, "eager")
    return m, m.state_dict()


@functools.lru_cache(maxsize=4)
def _engine(model, name, dtype):
    return bench.engine(name).build(model, _state(model)[1], dtype, DEVICE)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-b{c[1]}-s{c[2]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("model", MODELS)
def test_model_forward(benchmark, bench_run, model, dtype, case, engine):
    kind, batch, seq = case
    ref_model = _state(model)[0].to(DEVICE)
    c = bench.make_case(kind, batch, seq, ref_model.config.vocab_size, n_sets=3, seed=batch)
    try:
        fwd = _engine(model, engine, dtype)
    except Exception as e:  # torch.compile may fail on a toolchain: record, do not hide
        pytest.skip(f"{engine} could not be built: {type(e).__name__}: {e}")
    sets = [(x.ids.to(DEVICE), x.mask.to(DEVICE)) for x in c.sets]
    with torch.inference_mode():
        ids, mask = sets[0]
        ref = ref_model(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
        try:
            out = fwd(ids, mask)[mask.bool()].float()
        except Exception as e:
            if not engine.startswith("torch-compile"):
                raise
            pytest.skip(f"torch.compile failed at its first call: {type(e).__name__}: {e}")
    err = (out - ref).abs().max().item()
    assert err <= TOL[dtype], f"{engine} {model} {dtype}: max abs error {err:.3e} vs HF fp32 eager"
    tokens = sum(sum(x.lengths) for x in c.sets) / len(c.sets)
    dims = bench.model_dims(ref_model)
    flops = sum(bench.encoder_flops(x.lengths, dims["hidden"], dims["intermediate"], dims["layers"]) for x in c.sets)
    benchmark.extra_info.update(
        model=model,
        dtype=str(dtype),
        lengths=kind,
        batch=batch,
        seq=seq,
        engine=engine,
        tokens=tokens,
        useful_flops=flops / len(c.sets),
        max_abs_err=err,
    )
    bench_run(benchmark, fwd, sets, rounds=30 if CUDA else 3, warmup=3 if CUDA else 1)
