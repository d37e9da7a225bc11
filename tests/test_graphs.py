"""CUDA-graph planning and replay (eagerly, on the CPU): everything that needs no GPU."""

from __future__ import annotations

import random

import pytest

from bertfast.graph_plan import (
    DUMMY_CHUNK,
    bucket_cu_seqlens,
    length_bucket,
    power_of_two_buckets,
    select_bucket,
    split_batch,
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


# --------------------------------------------------------------------------- replay on the CPU
# The graph path with replay="eager": the same static buffers, bucket layout and kernels (under the
# Triton interpreter) as a CUDA graph replay, with only the capture mechanism left out.
torch = pytest.importorskip("torch")

from .helpers import ATOL, SUM_ORDER_ATOL_FP32, assert_close  # noqa: E402


def _eager_runner_model(config=None, **options):
    from bertfast import ops
    from bertfast.encoder import RUNNER_ATTR
    from bertfast.graphs import CudaGraphEncoder

    if not ops.interpreter_on():
        pytest.skip("needs TRITON_INTERPRET=1 (the kernels run on CPU tensors)")
    import bertfast

    from .models import TINY

    torch.manual_seed(3)
    model = bertfast.BertModel(bertfast.BertConfig(**{**TINY, **(config or {})})).eval().set_backend("triton")
    options = {"max_tokens": 128, "max_seqs": 16, **options}
    runner = CudaGraphEncoder(model, model.spec, replay="eager", **options)
    model.__dict__[RUNNER_ATTR] = runner
    return model, runner


def _packed(lengths, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return torch.randint(1, vocab, (int(cu[-1]),), generator=g), cu


def _eager(model, ids, cu):
    """The same batch with graphs off: the packed forward run directly."""
    from bertfast.encoder import RUNNER_ATTR

    runner = model.__dict__.pop(RUNNER_ATTR)
    try:
        with torch.no_grad():
            model.set_cuda_graphs(False)
            out = model.forward_packed(ids, cu)
    finally:
        model.cuda_graphs = True
        model.__dict__[RUNNER_ATTR] = runner
    return out


def test_length_bucket_and_split_batch():
    assert [length_bucket(n, 512) for n in (1, 16, 17, 100, 128, 129, 512)] == [16, 16, 32, 128, 128, 256, 512]
    assert length_bucket(300, 300) == 300  # capped at a non-power-of-two maximum
    rng = random.Random(0)
    for _ in range(300):
        lengths = [rng.randint(1, 128) for _ in range(rng.randint(1, 300))]
        parts = split_batch(lengths, 128, 16)
        assert parts[0][0] == 0 and parts[-1][1] == len(lengths)
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:])), "consecutive, no sequence lost or repeated"
        for s0, s1 in parts:
            assert s1 > s0 and select_bucket(sum(lengths[s0:s1]), s1 - s0, [16, 32, 64, 128], [4, 8, 16]) is not None
    with pytest.raises(ValueError, match="exceeds the largest graph bucket"):
        split_batch([10, 200], 128, 16)


def test_graph_replay_equals_eager_packed_path_for_batches_in_one_bucket():
    model, runner = _eager_runner_model()
    for seed, lengths in enumerate(([3, 40, 1], [20, 20, 9, 5], [10] * 6, [1, 1, 1, 1, 30])):
        ids, cu = _packed(lengths, model.config.vocab_size, seed)
        with torch.no_grad():
            graphed = model.forward_packed(ids, cu)
        eager = _eager(model, ids, cu)
        # The bucket's GEMMs have more rows than the batch's: cuBLAS / BLAS may round differently per M.
        assert_close(graphed.last_hidden_state, eager.last_hidden_state, ATOL[torch.float32], f"lengths {lengths}")
        assert_close(graphed.pooler_output, eager.pooler_output, ATOL[torch.float32], f"pooled, lengths {lengths}")
    # (64 tokens, 8 slots) and the longest sequence rounded up: 64, 32, 16, 32 (a hit)
    assert sorted(runner.captured) == [(64, 8, 16), (64, 8, 32), (64, 8, 64)]
    stats = runner.stats_dict()
    assert (stats["calls"], stats["replays"], stats["misses"], stats["hits"], stats["fallbacks"]) == (4, 4, 3, 1, 0)


def test_batches_larger_than_every_bucket_replay_in_parts():
    model, runner = _eager_runner_model()
    lengths = [60, 60, 7, 60, 60, 1, 33] + [2] * 20  # 343 tokens, 27 sequences: above 128 tokens / 16 slots
    ids, cu = _packed(lengths, model.config.vocab_size, 5)
    with torch.no_grad():
        graphed = model.forward_packed(ids, cu)
    eager = _eager(model, ids, cu)
    # Rows fall at other offsets within the GEMM tiles than in one launch: equal to rounding, not bits.
    assert_close(graphed.last_hidden_state, eager.last_hidden_state, ATOL[torch.float32], "hidden")
    assert_close(graphed.pooler_output, eager.pooler_output, ATOL[torch.float32], "pooled")
    stats = runner.stats_dict()
    assert stats["calls"] == 1 and stats["replays"] >= 3 and stats["fallbacks"] == 0 and stats["replay_rate"] == 1.0


def test_least_recently_used_buckets_are_evicted_past_the_budget():
    shapes = ([10], [20], [10], [40, 20])  # buckets 16x4x16, 32x4x32, 16x4x16 again (a hit), 64x4x64
    model, runner = _eager_runner_model()
    for seed, lengths in enumerate(shapes):
        ids, cu = _packed(lengths, model.config.vocab_size, seed)
        with torch.no_grad():
            model.forward_packed(ids, cu)
    size = {key: bucket.nbytes for key, bucket in runner.buckets.items()}
    assert runner.stats.evictions == 0 and runner.memory_bytes == sum(size.values())
    # Room for the first two buckets, not for the third as well: capturing it evicts the least recently
    # used one (32x4x32: 16x4x16 was used after it).
    budget = size[(16, 4, 16)] + size[(32, 4, 32)] + 1
    model, runner = _eager_runner_model(memory_budget_mb=budget / 2**20)
    for seed, lengths in enumerate(shapes):
        ids, cu = _packed(lengths, model.config.vocab_size, seed)
        with torch.no_grad():
            graphed = model.forward_packed(ids, cu)
        assert_close(graphed.last_hidden_state, _eager(model, ids, cu).last_hidden_state, ATOL[torch.float32])
    stats = runner.stats
    assert (stats.misses, stats.hits) == (3, 1)
    assert stats.evictions >= 1 and (32, 4, 32) not in runner.buckets, "the least recently used went first"
    assert (64, 4, 64) in runner.buckets
    assert runner.memory_bytes <= budget or len(runner.buckets) == 1
    assert 0 < runner.memory_bytes == sum(b.nbytes for b in runner.buckets.values())
    assert list(runner.captured) == list(runner.buckets)


def test_graph_stats_report_counts_and_memory_never_negative():
    import bertfast

    model, runner = _eager_runner_model()
    for seed, lengths in enumerate(([5], [5, 9], [60, 60, 20])):
        ids, cu = _packed(lengths, model.config.vocab_size, seed)
        with torch.no_grad():
            model.forward_packed(ids, cu)
    ((name, stats),) = bertfast.graph_stats(model).items()
    assert name == "."
    assert stats["calls"] == 3 and stats["replays"] == 4 and stats["misses"] + stats["hits"] == 4  # 140 tokens: 2 parts
    assert stats["memory_mb"] > 0 and stats["replay_rate"] == 1.0 and stats["evictions"] == 0
    assert set(stats["buckets"]) == {f"{t}x{b}x{s}" for t, b, s in runner.buckets}


def test_weight_changes_drop_the_graphs():
    model, runner = _eager_runner_model()
    ids, cu = _packed([10], model.config.vocab_size, 3)
    with torch.no_grad():
        before = model.forward_packed(ids, cu).last_hidden_state
        model.encoder.layer[0].attention.self.query.weight.mul_(1.5)  # an in-place update
        after = model.forward_packed(ids, cu).last_hidden_state
    reference = _eager(model, ids, cu).last_hidden_state
    assert runner.stats.misses == 2, "graphs dropped and recaptured"
    assert not torch.equal(before, after)
    assert_close(after, reference, ATOL[torch.float32], "after the weight change")
    with torch.no_grad():
        model.set_cuda_graphs(False)
    assert "_bertfast_graphs" not in model.__dict__


def test_threads_calling_one_model_get_their_own_results():
    """Four threads, one model, mixed shapes: every result equals the single-threaded one."""
    from concurrent.futures import ThreadPoolExecutor

    model, runner = _eager_runner_model()
    rng = random.Random(7)
    batches = []
    for i in range(12):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 4))]
        batches.append(_packed(lengths, model.config.vocab_size, 100 + i))
    with torch.no_grad():
        expected = [model.forward_packed(ids, cu).last_hidden_state for ids, cu in batches]

    def call(i):
        ids, cu = batches[i]
        with torch.no_grad():
            return model.forward_packed(ids, cu).last_hidden_state

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(call, list(range(12)) * 3))
    mismatches = [i for i, out in enumerate(got) if not torch.equal(out, expected[i % 12])]
    assert mismatches == []
    assert runner.stats.fallbacks == 0 and runner.stats.calls == 48


def test_buckets_made_under_inference_mode_serve_no_grad_calls_and_back():
    model, runner = _eager_runner_model()
    ids, cu = _packed([9, 4], model.config.vocab_size, 11)
    with torch.inference_mode():
        first = model.forward_packed(ids, cu).last_hidden_state
    with torch.no_grad():
        second = model.forward_packed(ids, cu).last_hidden_state
    with torch.inference_mode():
        third = model.forward_packed(ids, cu).last_hidden_state
    assert torch.equal(first, second) and torch.equal(second, third)
    assert runner.stats.misses == 1 and runner.stats.hits == 2


def test_module_structure_changes_drop_the_graphs():
    model, runner = _eager_runner_model()
    ids, cu = _packed([12, 3], model.config.vocab_size, 12)
    with torch.no_grad():
        model.forward_packed(ids, cu)
        del model.encoder.layer[1:]  # registers nothing: the structure check sees it
        one_layer = model.forward_packed(ids, cu).last_hidden_state
    assert runner.stats.misses == 2, "recaptured for the one-layer encoder"
    assert_close(one_layer, _eager(model, ids, cu).last_hidden_state, ATOL[torch.float32], "one layer")


def test_module_replacements_and_new_choice_tables_drop_the_graphs():
    """No process-wide registration hook: the runner's own structural check sees a submodule replaced
    deep in a layer, and the launch state's version sees a new GEMM choice table."""
    from bertfast.kernels.choice_table import ChoiceTable
    from bertfast.kernels.state import launch_state

    model, runner = _eager_runner_model()
    ids, cu = _packed([7, 5], model.config.vocab_size, 13)
    dense = model.encoder.layer[0].intermediate.dense
    with torch.no_grad():
        model.forward_packed(ids, cu)
        replaced = torch.nn.Linear(dense.in_features, dense.out_features)
        model.encoder.layer[0].intermediate.dense = replaced  # a module registration
        after = model.forward_packed(ids, cu).last_hidden_state
    assert runner.stats.misses == 2, "recaptured with the new submodule"
    assert_close(after, _eager(model, ids, cu).last_hidden_state, ATOL[torch.float32], "replaced FFN1")
    state = launch_state("cpu")
    before = state.choices
    try:
        state.set_choice_table(ChoiceTable(default="triton"))
        with torch.no_grad():
            triton_gemms = model.forward_packed(ids, cu).last_hidden_state
        assert runner.stats.misses == 3, "graphs captured under the old choices are dropped"
        assert_close(triton_gemms, after, SUM_ORDER_ATOL_FP32, "the same model through the Triton GEMM")
    finally:
        state.set_choice_table(before)


def test_refresh_sees_writes_through_data():
    import bertfast

    model, runner = _eager_runner_model()
    ids, cu = _packed([12, 3], model.config.vocab_size, 13)
    with torch.no_grad():
        model.forward_packed(ids, cu)
        model.encoder.layer[0].attention.self.query.weight.data.mul_(3.0)  # bypasses version counters
        bertfast.refresh(model)
        model.__dict__["_bertfast_graphs"] = runner  # keep the eager-replay runner for this test
        runner.reset()
        after = model.forward_packed(ids, cu).last_hidden_state
    torch_path = model.set_backend("torch")
    with torch.no_grad():
        expected = torch_path.forward_packed(ids, cu).last_hidden_state
    assert_close(after, expected, SUM_ORDER_ATOL_FP32, "after refresh")


def test_parts_that_fit_no_bucket_are_halved_and_a_lone_misfit_runs_eagerly():
    # 4 slots: two 33-token sequences need 2 + ceil(62 / 16) = 6 slots in 128 tokens, so that greedy part
    # is halved; a lone 70-token sequence needs 1 + ceil(58 / 16) = 5: no bucket, so it runs eagerly.
    model, runner = _eager_runner_model(config={"max_position_embeddings": 128}, max_tokens=128, max_seqs=4)
    assert [(s0, s1) for s0, s1, _ in runner._plan([33, 33, 33])] == [(0, 1), (1, 2), (2, 3)]
    assert runner._plan([70]) is None
    for seed, lengths in enumerate(([33, 33, 33], [70], [40, 3, 9])):
        ids, cu = _packed(lengths, model.config.vocab_size, 20 + seed)
        with torch.no_grad():
            graphed = model.forward_packed(ids, cu).last_hidden_state
        assert_close(graphed, _eager(model, ids, cu).last_hidden_state, ATOL[torch.float32], f"lengths {lengths}")
    assert (runner.stats.calls, runner.stats.fallbacks) == (3, 1)


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
    assert_close(graphed.last_hidden_state[m], eager.last_hidden_state[m], ATOL[torch.float32], "hidden")
    assert_close(graphed.pooler_output, eager.pooler_output, ATOL[torch.float32], "pooled")
    assert bertfast.graph_stats(model) == {}  # switched off: graphs dropped


def test_tuned_configs_harvest_and_load_round_trip_through_the_real_autotuner(tmp_path):
    """`bertfast tune`'s path on the CPU: Triton's own autotuner (one interpreter config) picks a
    winner inside the state's autotuning(), the state records it, harvest() writes it to a file, and a
    fresh state loads it back."""
    from bertfast import kernels, ops
    from bertfast.kernels import gemm
    from bertfast.kernels.config_file import TunedConfigCache
    from bertfast.kernels.state import LaunchState, launch_state
    from bertfast.tuning import harvest

    if not ops.interpreter_on():
        pytest.skip("needs TRITON_INTERPRET=1 (the kernels run on CPU tensors)")
    state = launch_state("cpu")
    saved = state.known_configs(gemm.KERNEL)
    state.clear_configs(gemm.KERNEL)
    try:
        x, w = torch.randn(33, 48), torch.randn(40, 48)
        with state.autotuning():
            out = kernels.triton_linear(x, w)
        assert_close(out, x @ w.T, SUM_ORDER_ATOL_FP32, "autotuned linear")
        known = state.known_configs(gemm.KERNEL)
        assert len(known) == 1, "the autotuner's winner is recorded"
        cache = TunedConfigCache("GPU X", "3.6.0", directory=tmp_path)
        assert harvest(cache, state) == sum(len(v) for v in state.known_configs().values())
        cache.save()
    finally:
        state.clear_configs(gemm.KERNEL)
        for key, config in saved.items():
            state.put_config(gemm.KERNEL, key, config)

    loaded = TunedConfigCache("GPU X", "3.6.0", directory=tmp_path)
    fresh = LaunchState(torch.device("cpu"))
    assert loaded.load() and fresh.load(loaded) >= 1
    assert fresh.known_configs(gemm.KERNEL) == known
    (key,) = known
    assert fresh.config_source(gemm.KERNEL, key) == "table"
    assert fresh.config(gemm.KERNEL, key, gemm._gemm_heuristic) == known[key]


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
