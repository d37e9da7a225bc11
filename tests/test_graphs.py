"""CUDA-graph planning and the tuned-config cache: everything that needs no GPU."""

from __future__ import annotations

import json
import random

import pytest

from bertfast.graphs import (
    DUMMY_CHUNK,
    TunedConfigCache,
    bucket_cu_seqlens,
    power_of_two_buckets,
    select_bucket,
)

TOKENS = power_of_two_buckets(4096)
SEQS = power_of_two_buckets(256, smallest=4)


def test_power_of_two_buckets():
    assert power_of_two_buckets(100) == [16, 32, 64, 128]
    assert power_of_two_buckets(128) == [16, 32, 64, 128]
    assert power_of_two_buckets(3, smallest=4) == [4]
    with pytest.raises(ValueError, match="positive"):
        power_of_two_buckets(0)


@pytest.mark.parametrize("seed", range(5))
def test_random_batches_lay_out_without_touching_real_tokens(seed):
    rng = random.Random(seed)
    for _ in range(200):
        lengths = [rng.randint(1, 512) for _ in range(rng.randint(1, 40))]
        cu = [0]
        for n in lengths:
            cu.append(cu[-1] + n)
        key = select_bucket(cu[-1], len(lengths), TOKENS, SEQS)
        if cu[-1] > TOKENS[-1]:
            assert key is None
            continue
        t_b, b_b = key
        # the smallest token bucket that holds the batch
        assert t_b >= cu[-1] and (t_b == TOKENS[0] or t_b // 2 < cu[-1])
        laid = bucket_cu_seqlens(cu, t_b, b_b)
        assert len(laid) == b_b + 1
        assert laid[: len(cu)] == cu, "real sequences keep their offsets"
        assert laid[-1] == t_b and all(a <= b for a, b in zip(laid, laid[1:]))
        dummies = [b - a for a, b in zip(laid[len(cu) - 1 :], laid[len(cu) :]) if b > a]
        assert sum(dummies) == t_b - cu[-1], "every padding token is in a dummy sequence"
        assert all(0 < d <= DUMMY_CHUNK for d in dummies)


def test_exact_fit_needs_no_dummy_and_too_many_sequences_do_not_fit():
    assert select_bucket(64, 3, TOKENS, SEQS) == (64, 4)
    assert bucket_cu_seqlens([0, 30, 60, 64], 64, 4) == [0, 30, 60, 64, 64]
    assert select_bucket(17, 1, TOKENS, SEQS) == (32, 4)  # 1 real + 1 dummy chunk of 15
    assert bucket_cu_seqlens([0, 17], 32, 4) == [0, 17, 32, 32, 32]
    assert select_bucket(300, 300, TOKENS, SEQS) is None  # more sequences than any bucket
    assert select_bucket(5000, 2, TOKENS, SEQS) is None
    with pytest.raises(ValueError, match="does not fit"):
        bucket_cu_seqlens([0, 10], 8, 4)


def test_tuned_cache_round_trip_and_invalidation(tmp_path):
    cache = TunedConfigCache("NVIDIA H100 80GB HBM3", "3.6.0", "abc123", directory=tmp_path)
    assert not cache.load() and cache.invalid_reason == "no cache file"
    cfg = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 4}
    cache.put("linear", "4096x2304x768:bias:float16", cfg)
    path = cache.save()
    assert path.name == "tuned-nvidia-h100-80gb-hbm3.json"

    again = TunedConfigCache("NVIDIA H100 80GB HBM3", "3.6.0", "abc123", directory=tmp_path)
    assert again.load()
    assert again.get("linear", "4096x2304x768:bias:float16") == cfg
    assert again.get("linear", "other") is None

    for changed in (dict(triton_version="3.7.0"), dict(source_hash="def456")):
        args = dict(device_name="NVIDIA H100 80GB HBM3", triton_version="3.6.0", source_hash="abc123")
        args.update(changed)
        stale = TunedConfigCache(**args, directory=tmp_path)
        assert not stale.load() and stale.invalid_reason.startswith("stale cache file")
        assert stale.get("linear", "4096x2304x768:bias:float16") is None

    other_gpu = TunedConfigCache("NVIDIA H200", "3.6.0", "abc123", directory=tmp_path)
    assert not other_gpu.load() and other_gpu.path != path

    path.write_text("{ broken")
    assert not again.load() and "unreadable" in again.invalid_reason
    path.write_text(json.dumps({"header": again.header}))
    assert not again.load() and "malformed" in again.invalid_reason


def test_kernel_source_hash_is_stable():
    from bertfast.graphs import kernel_source_hash

    assert kernel_source_hash() == kernel_source_hash() and len(kernel_source_hash()) == 16


# --------------------------------------------------------------------------- replay on the CPU
# The graph path with replay="eager": the same static buffers, bucket layout and kernels (under the
# Triton interpreter) as a CUDA graph replay, with only the capture mechanism left out.
torch = pytest.importorskip("torch")


def _eager_runner_model():
    from bertfast import ops
    from bertfast.graphs import CudaGraphEncoder

    if not ops.interpreter_on():
        pytest.skip("needs TRITON_INTERPRET=1 (the kernels run on CPU tensors)")
    import bertfast

    from .models import TINY

    torch.manual_seed(3)
    model = bertfast.BertModel(bertfast.BertConfig(**TINY)).eval().set_backend("triton")
    runner = CudaGraphEncoder(model, model.spec, max_tokens=128, max_seqs=16, max_graphs=2, replay="eager")
    model.__dict__["_bertfast_graphs"] = runner
    return model, runner


def _packed(lengths, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return torch.randint(1, vocab, (int(cu[-1]),), generator=g), cu


def test_graph_replay_equals_eager_packed_path_for_batches_in_one_bucket():
    from bertfast.modeling import packed_forward
    from bertfast.padding import pack_info_from_lengths

    model, runner = _eager_runner_model()
    for seed, lengths in enumerate(([3, 40, 1], [20, 20, 9, 5], [10] * 6, [1, 1, 1, 1, 30])):
        ids, cu = _packed(lengths, model.config.vocab_size, seed)
        with torch.no_grad():
            graphed = model.forward_packed(ids, cu)
            info = pack_info_from_lengths(cu, max(lengths))
            positions = torch.cat([torch.arange(n) for n in lengths])
            h, pooled, _ = packed_forward(model, model.spec, info, ids, torch.zeros_like(ids), positions, None,
                                          "triton", False)  # fmt: skip
        assert torch.equal(graphed.last_hidden_state, h), f"lengths {lengths}"
        assert torch.equal(graphed.pooler_output, pooled), f"lengths {lengths}"
    assert list(runner.stats.captured) == [(64, 8)] and runner.stats.replays == 4


def test_graph_fallbacks_and_weight_changes():
    model, runner = _eager_runner_model()
    ids, cu = _packed([60, 60, 60, 60], model.config.vocab_size, 0)  # 240 tokens: no bucket holds it
    with torch.no_grad():
        eager = model.forward_packed(ids, cu).last_hidden_state
    assert runner.stats.fallbacks == 1 and runner.stats.replays == 0
    for lengths in ([10], [60, 40]):  # two buckets fill max_graphs=2 ...
        ids, cu = _packed(lengths, model.config.vocab_size, 1)
        with torch.no_grad():
            model.forward_packed(ids, cu)
    ids, cu = _packed([40], model.config.vocab_size, 2)  # ... so a third bucket runs eagerly
    with torch.no_grad():
        model.forward_packed(ids, cu)
    assert len(runner.stats.captured) == 2 and runner.stats.fallbacks == 2
    assert eager.isfinite().all()

    ids, cu = _packed([10], model.config.vocab_size, 3)
    with torch.no_grad():
        before = model.forward_packed(ids, cu).last_hidden_state
        model.encoder.layer[0].attention.self.query.weight.mul_(1.5)  # an in-place update
        after = model.forward_packed(ids, cu).last_hidden_state
        model.set_cuda_graphs(False)
        reference = model.forward_packed(ids, cu).last_hidden_state
    assert runner.stats.captured == {(16, 4): runner.stats.captured[(16, 4)]}, "graphs dropped and recaptured"
    assert not torch.equal(before, after)
    assert torch.equal(after, reference)
    assert "_bertfast_graphs" not in model.__dict__


def test_padded_hf_style_call_uses_the_graphs():
    import bertfast

    model, runner = _eager_runner_model()
    ids = torch.randint(1, model.config.vocab_size, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        graphed = model(ids, attention_mask=mask)
        model.set_cuda_graphs(False)
        eager = model(ids, attention_mask=mask)
    assert runner.stats.replays == 1
    m = mask.bool()
    assert torch.equal(graphed.last_hidden_state[m], eager.last_hidden_state[m])
    assert torch.equal(graphed.pooler_output, eager.pooler_output)
    assert bertfast.graph_stats(model) == {}  # switched off: graphs dropped


def test_tuned_configs_harvest_and_seed_round_trip(tmp_path):
    import triton

    from bertfast.tuning import harvest, seed

    class FakeTuner:  # the one attribute of triton's Autotuner these functions use
        def __init__(self):
            self.cache = {}

    won = triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4)
    tuned = {"linear": FakeTuner(), "varlen_attention": FakeTuner()}
    tuned["linear"].cache[(4096, 2304, 768, True, False, "", "tf32", "torch.float16", "torch.float16")] = won
    cache = TunedConfigCache("GPU X", "3.6.0", "hash", directory=tmp_path)
    assert harvest(cache, tuned) == 1
    cache.save()

    fresh = {"linear": FakeTuner(), "varlen_attention": FakeTuner()}
    loaded = TunedConfigCache("GPU X", "3.6.0", "hash", directory=tmp_path)
    assert loaded.load() and seed(loaded, fresh) == 1
    (key, config), = fresh["linear"].cache.items()
    assert key == (4096, 2304, 768, True, False, "", "tf32", "torch.float16", "torch.float16")
    assert config.kwargs == won.kwargs and (config.num_warps, config.num_stages) == (4, 4)
    assert seed(loaded, fresh) == 0, "entries the autotuner already holds are kept"


def test_tune_command_needs_a_gpu():
    from bertfast.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["tune", "--model", "bert-base"]) == 2


def test_models_with_graphs_deepcopy_and_pickle_without_them():
    import copy
    import io

    model, runner = _eager_runner_model()
    ids, cu = _packed([10, 5], model.config.vocab_size, 4)
    with torch.no_grad():
        first = model.forward_packed(ids, cu).last_hidden_state
    clone = copy.deepcopy(model)
    assert clone.__dict__.get("_bertfast_graphs") is None
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded.__dict__.get("_bertfast_graphs") is None
    with torch.no_grad():
        for m in (clone, loaded):
            assert torch.equal(m.forward_packed(ids, cu).last_hidden_state, first)
