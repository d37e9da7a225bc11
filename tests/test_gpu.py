"""GPU-only checks (skipped without CUDA): the real checkpoint in fp16 and bf16 through the kernels."""

from __future__ import annotations

import copy

import pytest
import torch

import bertfast

from .helpers import ATOL, GRAPH_FP16_ATOL
from .models import hf_model, ragged_batch

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_minilm_half_precision_within_twice_hf_error(minilm_gpu_dir, dtype):
    gold = transformers.BertModel.from_pretrained(minilm_gpu_dir, dtype=torch.float32).cuda().eval()
    hf_half = transformers.BertModel.from_pretrained(minilm_gpu_dir, dtype=dtype).cuda().eval()
    ours = bertfast.optimize(copy.deepcopy(hf_half))  # backend auto: the kernels on CUDA
    ids, mask, types = (t.cuda() for t in ragged_batch(16, 128, 30522, seed=3))
    ids[:, 0] = 101
    with torch.no_grad():
        ref = gold(ids, attention_mask=mask, token_type_ids=types)
        theirs = hf_half(ids, attention_mask=mask, token_type_ids=types)
        mine = ours(ids, attention_mask=mask, token_type_ids=types)
    m = mask.bool()
    hf_err = max_err(theirs.last_hidden_state[m], ref.last_hidden_state[m])
    our_err = max_err(mine.last_hidden_state[m], ref.last_hidden_state[m])
    assert our_err <= 2 * hf_err, f"{dtype}: bertfast error {our_err:.3e} > 2 x HF's own {hf_err:.3e}"
    pooled_hf = max_err(theirs.pooler_output, ref.pooler_output)
    pooled_ours = max_err(mine.pooler_output, ref.pooler_output)
    assert pooled_ours <= 2 * pooled_hf + ATOL[torch.float16]


def test_auto_backend_runs_the_kernels_on_cuda(monkeypatch):
    from bertfast import ops

    calls = []
    real = ops._kernels().launch_varlen_attention
    monkeypatch.setattr(ops._kernels(), "launch_varlen_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = bertfast.optimize(hf_model("BertModel", seed=2).cuda().half())
    ids, mask, types = (t.cuda() for t in ragged_batch(3, 33, model.config.vocab_size, seed=2))
    with torch.no_grad():
        model(ids, attention_mask=mask, token_type_ids=types)
    assert len(calls) == model.config.num_hidden_layers


@pytest.mark.parametrize("head_dim", [16, 32, 64, 80, 96, 128])
def test_bf16_model_every_head_dim(head_dim):
    heads = 2
    ref32 = hf_model(
        "BertModel",
        seed=head_dim,
        hidden_size=heads * head_dim,
        num_attention_heads=heads,
        intermediate_size=2 * heads * head_dim,
        max_position_embeddings=512,
    ).cuda()
    ref16 = copy.deepcopy(ref32).bfloat16()
    ours = bertfast.optimize(copy.deepcopy(ref32).bfloat16())
    ids, mask, types = (t.cuda() for t in ragged_batch(5, 300, ref32.config.vocab_size, seed=head_dim))
    with torch.no_grad():
        gold = ref32(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        theirs = ref16(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        mine = ours(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    m = mask.bool()
    assert max_err(mine[m], gold[m]) <= 2 * max_err(theirs[m], gold[m]) + ATOL[torch.bfloat16]


def test_cuda_graph_replay_is_bit_identical_to_eager_bucket_run():
    from bertfast.graphs import CudaGraphEncoder

    cfg = bertfast.BertConfig.from_hf(hf_model("BertModel", seed=60, max_position_embeddings=512).config)
    model = bertfast.BertModel(cfg).cuda().half().eval()
    graphs = CudaGraphEncoder(model, model.spec, max_tokens=512, max_seqs=32, replay="cuda")
    eager = CudaGraphEncoder(model, model.spec, max_tokens=512, max_seqs=32, replay="eager")
    g = torch.Generator().manual_seed(60)
    for lengths in ([130, 7, 1], [100, 100, 33], [5] * 20, [250], [300, 300, 50]):  # the last: two parts
        cu = [0]
        for n in lengths:
            cu.append(cu[-1] + n)
        ids = torch.randint(1, cfg.vocab_size, (cu[-1],), generator=g).cuda()
        types = torch.zeros_like(ids)
        positions = torch.cat([torch.arange(n) for n in lengths]).cuda()
        with torch.no_grad():
            h1, p1 = graphs(ids, types, positions, cu)
            h2, p2 = eager(ids, types, positions, cu)
            ref = model.set_cuda_graphs(False).forward_packed(ids, torch.tensor(cu, dtype=torch.int32).cuda())
        assert torch.equal(h1, h2) and torch.equal(p1, p2), f"lengths {lengths}"
        assert (h1.float() - ref.last_hidden_state.float()).abs().max().item() < GRAPH_FP16_ATOL
    stats = graphs.stats_dict()
    assert stats["calls"] == 5 and stats["fallbacks"] == 0 and stats["replays"] >= 6 and stats["memory_mb"] > 0


def test_optimized_hf_model_uses_graphs_by_default_on_cuda():
    model = bertfast.optimize(hf_model("BertModel", seed=61).cuda().half())
    ids, mask, types = (t.cuda() for t in ragged_batch(2, 20, model.config.vocab_size, seed=61))
    with torch.no_grad():
        a = model(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        b = model(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    stats = bertfast.graph_stats(model)
    assert stats and stats["."]["replays"] == 2
    assert torch.equal(a, b)


def test_threads_and_streams_calling_one_graphed_model_get_their_own_results():
    """A web server's pattern: 4 threads, each on its own CUDA stream, 160 calls of mixed shapes."""
    from concurrent.futures import ThreadPoolExecutor

    model = bertfast.optimize(hf_model("BertModel", seed=63).cuda().half())
    batches = [
        tuple(t.cuda() for t in ragged_batch(1 + i % 5, 8 + 7 * (i % 9), model.config.vocab_size, seed=i))
        for i in range(40)
    ]
    with torch.no_grad():
        bertfast.set_cuda_graphs(model, False)
        expected = [model(ids, attention_mask=m, token_type_ids=t).last_hidden_state for ids, m, t in batches]
        bertfast.set_cuda_graphs(model, True)
    streams = [torch.cuda.Stream() for _ in range(4)]

    def call(i):
        ids, m, t = batches[i % 40]
        with torch.no_grad(), torch.cuda.stream(streams[i % 4]):
            out = model(ids, attention_mask=m, token_type_ids=t).last_hidden_state
            torch.cuda.current_stream().synchronize()
        return out

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(call, range(160)))
    bad = [
        i for i, out in enumerate(got) if (out.float() - expected[i % 40].float()).abs().max().item() > GRAPH_FP16_ATOL
    ]
    assert bad == []
    assert bertfast.graph_stats(model)["."]["fallbacks"] == 0


def test_tune_writes_a_cache_that_a_fresh_launch_state_loads(tmp_path, monkeypatch):
    from bertfast.kernels.config_file import TunedConfigCache
    from bertfast.kernels.state import LaunchState, device_config_file
    from bertfast.runtime import tune

    monkeypatch.setenv("BERTFAST_CACHE_DIR", str(tmp_path))
    cfg = bertfast.BertConfig.from_hf(hf_model("BertModel", seed=62, max_position_embeddings=512).config)
    rows = tune(bertfast.BertModel(cfg).half(), max_tokens=256, seq_len=64)
    assert [r["tokens"] for r in rows[:-1]] == [16, 32, 64, 128, 256]
    assert all(r["ms"] > 0 for r in rows[:-1])
    cache = device_config_file(torch.device("cuda"))
    assert cache.load() and cache.configs["varlen_attention"]
    assert isinstance(cache, TunedConfigCache)
    fresh = LaunchState(torch.device("cuda"))
    assert fresh.load(cache) == sum(len(v) for v in cache.configs.values())


def test_bench_threads_probe_on_streams_finds_no_mismatch():
    # The runtime stage's threads figure: each thread on its own stream against single-threaded results.
    from bertfast.bench import runtime

    got = runtime.probe_threads("tiny", torch.float16, torch.device("cuda"), threads=4, calls=80)
    assert got["streams"] == 4 and got["calls"] == 80 and got["failures"] == []
    assert got["mismatches"] == 0, got
