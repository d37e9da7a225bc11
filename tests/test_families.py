"""Every encoder family through optimize(): the registry, refusals, base models on the torch path and
the Triton kernels against transformers in fp32 (real positions only), positions, the graph buckets."""

from __future__ import annotations

import copy

import pytest
import torch

import bertfast
from bertfast import encoder, families, ops
from bertfast.config import ConfigError
from bertfast.encoder import PATCH_ATTR, RUNNER_ATTR
from bertfast.padding import pack_plan

from .helpers import (
    ATOL,
    MODEL_ATOL_FP32,
    MODEL_ATOL_FP32_TRITON,
    assert_close,
    compare_outputs,
    count_packed_calls,
)
from .models import FAMILY_CONFIGS, family_batch, family_model

transformers = pytest.importorskip("transformers")

TYPES = list(FAMILY_CONFIGS)
SUPPORTED_TEXT = "supported: bert, roberta, xlm-roberta, camembert, distilbert, electra, albert, mpnet"
# Two shapes through the same patched model: a ragged batch with a row of length 1, then another one.
SHAPES = (([13, 7, 1, 4], 13), ([33, 1, 20], 33))


def _types(types):
    return {} if types is None else {"token_type_ids": types}


def test_registry_knows_each_family_by_its_transformers_model_type():
    assert families.SUPPORTED == tuple(TYPES)
    for model_type, (prefix, sizes) in FAMILY_CONFIGS.items():
        config = getattr(transformers, f"{prefix}Config")(**sizes)
        family = families.family_for(config)
        assert family.model_type == model_type == config.model_type
        assert families.family_for(config.to_dict()) is family is families.family_for(model_type)
        assert f"{prefix}Model" in family.base_classes
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match=rf"model_type 'deberta-v2' .*{SUPPORTED_TEXT}"):
        families.family_for("deberta-v2")
    with pytest.raises(ConfigError, match=r"model_type None"):
        families.family_for({})


UNSUPPORTED = [
    ("DebertaV2", dict(hidden_size=36, num_hidden_layers=1, num_attention_heads=3, intermediate_size=40)),
    (
        "ModernBert",
        dict(hidden_size=36, num_hidden_layers=1, num_attention_heads=3, intermediate_size=40)
        | dict.fromkeys(["pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"], 0),
    ),
    ("NomicBert", dict(hidden_size=36, num_hidden_layers=1, num_attention_heads=3, intermediate_size=40)),
    ("GPT2", dict(n_embd=36, n_layer=1, n_head=3)),
]


@pytest.mark.parametrize("prefix,sizes", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_encoders_are_refused_before_anything_is_patched(prefix, sizes):
    config = getattr(transformers, f"{prefix}Config")(vocab_size=101, **sizes)
    both = torch.nn.ModuleList([family_model("bert"), getattr(transformers, f"{prefix}Model")(config)])
    with pytest.raises(ConfigError, match=rf"model_type '{config.model_type}' .*{SUPPORTED_TEXT}"):
        bertfast.optimize(both)
    assert not any(PATCH_ATTR in m.__dict__ or "forward" in m.__dict__ for m in both.modules())


REFUSED_CONFIGS = [
    ("roberta", "ForCausalLM", dict(is_decoder=True), "'is_decoder' is true"),
    ("electra", "Model", dict(hidden_act="mish"), "'hidden_act' is 'mish'"),
    ("distilbert", "Model", dict(activation="mish"), "'activation' is 'mish'"),
    ("mpnet", "Model", dict(relative_attention_num_buckets=16), "'relative_attention_num_buckets' is 16"),
]


@pytest.mark.parametrize("model_type,head,overrides,message", REFUSED_CONFIGS, ids=[r[3] for r in REFUSED_CONFIGS])
def test_a_config_the_forward_cannot_run_is_refused_before_patching(model_type, head, overrides, message):
    model = family_model(model_type, head, **overrides)
    with pytest.raises(ConfigError, match=f"config field {message}"):
        bertfast.optimize(model)
    assert not bertfast.is_optimized(model)


@pytest.mark.parametrize("model_type", TYPES)
def test_base_model_matches_hf_on_the_torch_path(model_type, monkeypatch):
    packed_calls = count_packed_calls(monkeypatch)
    ref = family_model(model_type, seed=TYPES.index(model_type))
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    for seed, (lengths, seqlen) in enumerate(SHAPES):
        ids, mask, types = family_batch(ref, lengths, seqlen, seed)
        with torch.no_grad():
            ours = model(ids, attention_mask=mask, output_hidden_states=True, **_types(types))
            theirs = ref(ids, attention_mask=mask, output_hidden_states=True, **_types(types))
            ours_t = model(ids, mask, return_dict=False)  # positional arguments bind by the family's signature
            theirs_t = ref(ids, mask, return_dict=False)
        assert type(ours) is type(theirs)
        compare_outputs(ours, theirs, mask, f"{model_type} {lengths}")
        assert isinstance(ours_t, tuple) and len(ours_t) == len(theirs_t)
        assert_close(ours_t[0][mask.bool()], theirs_t[0][mask.bool()], MODEL_ATOL_FP32, f"{model_type} tuple")
    assert len(packed_calls) == 2 * len(SHAPES)


@pytest.mark.parametrize("model_type", TYPES)
def test_base_model_matches_hf_on_the_triton_kernels(model_type, monkeypatch):
    packed_calls = count_packed_calls(monkeypatch)
    if not (torch.cuda.is_available() or ops.interpreter_on()):
        pytest.skip("the Triton path needs a GPU or TRITON_INTERPRET=1")
    ref = family_model(model_type, seed=20 + TYPES.index(model_type))
    model = bertfast.optimize(copy.deepcopy(ref), backend="triton", cuda_graphs=False)
    for seed, (lengths, seqlen) in enumerate(SHAPES):
        ids, mask, types = family_batch(ref, lengths, seqlen, seed)
        with torch.no_grad():
            ours = model(ids, attention_mask=mask, **_types(types))
            theirs = ref(ids, attention_mask=mask, **_types(types))
        compare_outputs(ours, theirs, mask, f"{model_type} {lengths} (triton)", MODEL_ATOL_FP32_TRITON)
    assert len(packed_calls) == len(SHAPES)


@pytest.mark.parametrize("model_type", TYPES)
def test_left_padding_inputs_embeds_and_position_ids_match_hf(model_type, monkeypatch):
    """RoBERTa-style positions count non-padding ids (left padding shifts them), embeddings count from
    padding_idx + 1; explicit position_ids are taken as given. (With left padding HF's pooler reads a
    padding position, bertfast's the first real token: only the token outputs are compared.)"""
    packed_calls = count_packed_calls(monkeypatch)
    ref = family_model(model_type, seed=40 + TYPES.index(model_type))
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    ids, mask, types = family_batch(ref, [11, 4, 1], 11, seed=3, left=True)
    ids[0, 5] = ref.config.pad_token_id  # a padding id among real tokens: RoBERTa gives it padding_idx's row
    embeds = ref.get_input_embeddings()(ids).detach() + 0.01 * torch.randn(
        *ids.shape, ref.get_input_embeddings().embedding_dim
    )
    positions = torch.randint(0, ref.config.max_position_embeddings, ids.shape)
    calls = (dict(input_ids=ids), dict(inputs_embeds=embeds), dict(input_ids=ids, position_ids=positions))
    for kwargs in calls:
        with torch.no_grad():
            ours = model(attention_mask=mask, **kwargs, **_types(types))
            theirs = ref(attention_mask=mask, **kwargs, **_types(types))
        keep = mask.bool()
        what = f"{model_type} {sorted(kwargs)}"
        assert_close(ours.last_hidden_state[keep], theirs.last_hidden_state[keep], MODEL_ATOL_FP32, what)
    assert len(packed_calls) == len(calls)


def test_roberta_positions_limit_the_sequence_length():
    ref = family_model("roberta")
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    longest = ref.config.max_position_embeddings - ref.config.pad_token_id - 1  # 70: positions 2..71
    ids, mask, _ = family_batch(ref, [longest, 3], longest, seed=1)
    with torch.no_grad():
        compare_outputs(model(ids, attention_mask=mask), ref(ids, attention_mask=mask), mask, "longest row")
    ids, mask, _ = family_batch(ref, [longest + 1], longest + 1, seed=1)
    with pytest.raises(ValueError, match=r"max_position_embeddings \(72\) less the 2 positions .*\(70\)"):
        model(ids, attention_mask=mask)


def test_mpnet_refuses_padding_holes_its_bias_would_count():
    ref = family_model("mpnet")
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    ids, mask, _ = family_batch(ref, [9, 9], 9, seed=2)
    mask[1, 3:5] = 0
    with pytest.raises(ValueError, match="attention_mask must mark each row's real tokens as one run"):
        model(ids, attention_mask=mask)


def test_families_without_token_types_refuse_them_at_the_boundary():
    spec = bertfast.optimize(family_model("distilbert"), backend="torch").__dict__[PATCH_ATTR].spec
    assert spec.type_vocab_size == 0 and not spec.family.token_types
    from bertfast.inputs import prepare_padded

    ids = torch.randint(1, 100, (2, 5))
    with pytest.raises(ValueError, match="token_type_ids must be None: distilbert"):
        prepare_padded(spec, torch.zeros(1), ids, None, torch.zeros_like(ids), None, None)


def test_albert_runs_its_shared_groups_in_transformers_order():
    ref = family_model("albert", seed=5)
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    views = families.family_for("albert").layers(model)
    groups = model.encoder.albert_layer_groups
    expected = [*groups[0].albert_layers, *groups[0].albert_layers, *groups[1].albert_layers]
    assert [v.attention for v in views] == [layer.attention for layer in expected]
    ids, mask, types = family_batch(ref, [10, 3], 10, seed=5)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        theirs = ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    assert len(ours.hidden_states) == 7  # the projected embeddings, then six layer runs
    compare_outputs(ours, theirs, mask, "albert groups")


@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "albert", "mpnet"])
def test_graph_buckets_dummy_padding_is_valid_for_each_family(model_type):
    """A bucket pads the batch with dummy sequences (pad id, type 0, position 0): legal rows of every
    table, so a replay equals the eager forward on the real tokens."""
    from bertfast.graphs import CudaGraphEncoder

    if not ops.interpreter_on():
        pytest.skip("needs TRITON_INTERPRET=1 (the kernels run on CPU tensors)")
    model = bertfast.optimize(family_model(model_type, seed=7), backend="triton")
    spec = model.__dict__[PATCH_ATTR].spec
    emb = spec.family.embeddings(model)
    assert emb.word.padding_idx < emb.word.num_embeddings and emb.position.num_embeddings > 0
    assert emb.token_type is None or emb.token_type.num_embeddings >= 1
    runner = CudaGraphEncoder(model, spec, replay="eager", max_tokens=128, max_seqs=4)
    model.__dict__[RUNNER_ATTR] = runner
    ids, mask, types = family_batch(model, [9, 1, 5], 9, seed=7)
    keep = mask.bool()
    cu = [0, 9, 10, 15]
    positions = spec.family.positions.padded(ids, 3, 9, spec.padding_idx, ids.device)[keep]
    flat_types = torch.zeros(15, dtype=torch.long) if types is None else types[keep]
    with torch.no_grad():
        hidden, pooled = runner(ids[keep], flat_types, positions, cu)
        info = pack_plan(keep, [9, 1, 5], 3, 9, ids.device)
        eager, eager_pooled, _ = encoder.packed_forward(
            model, spec, info, ids[keep], flat_types, positions, None, "triton", False
        )
    assert runner.stats_dict()["replays"] == 1
    assert_close(hidden, eager, ATOL[torch.float32], f"{model_type} replay")
    if eager_pooled is not None:
        assert_close(pooled, eager_pooled, ATOL[torch.float32], f"{model_type} pooled replay")


@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "albert", "mpnet"])
def test_forward_packed_of_a_patched_encoder_matches_hf_padded(model_type, monkeypatch):
    """Packed in, packed out: each sequence's positions restart as the family numbers them, a padding
    id inside a sequence included (RoBERTa, MPNet)."""
    packed_calls = count_packed_calls(monkeypatch)
    ref = family_model(model_type, seed=90)
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    lengths = [9, 1, 6]
    ids, mask, types = family_batch(ref, lengths, 9, seed=90)
    ids[2, 3] = ref.config.pad_token_id
    keep = mask.bool()
    cu = torch.tensor([0, 9, 10, 16], dtype=torch.int32)
    with torch.no_grad():
        out = bertfast.hf.forward_packed(model, ids[keep], cu, token_type_ids=None if types is None else types[keep])
        theirs = ref(ids, attention_mask=mask, **_types(types))
    assert torch.equal(out.cu_seqlens, cu) and len(packed_calls) == 1
    assert_close(out.last_hidden_state, theirs.last_hidden_state[keep], MODEL_ATOL_FP32, f"{model_type} packed")
    if getattr(theirs, "pooler_output", None) is not None:
        assert_close(out.pooler_output, theirs.pooler_output, MODEL_ATOL_FP32, f"{model_type} packed pooled")
    with pytest.raises(TypeError, match="patched by optimize"):
        bertfast.hf.forward_packed(ref, ids[keep], cu)


def test_output_attentions_and_selected_hidden_states_run_hf_exactly(monkeypatch):
    packed_calls = count_packed_calls(monkeypatch)
    ref = family_model("distilbert", seed=91, attn_implementation="eager")
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    ids, mask, _ = family_batch(ref, [7, 3], 7, seed=91)
    with torch.no_grad():
        a, b = (m(ids, attention_mask=mask, output_attentions=True) for m in (model, ref))
        c, d = (m(ids, attention_mask=mask, output_hidden_states=[0, -1]) for m in (model, ref))
    assert packed_calls == []
    for x, y in zip(a.attentions + (a.last_hidden_state,), b.attentions + (b.last_hidden_state,)):
        assert torch.equal(x, y)
    assert len(c.hidden_states) == len(d.hidden_states) and torch.equal(c.hidden_states[-1], d.hidden_states[-1])


@pytest.mark.parametrize("model_type", ["roberta", "albert", "mpnet"])
def test_non_contiguous_inputs(model_type):
    ref = family_model(model_type, seed=95)
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    ids, mask, types = family_batch(ref, [15, 4, 1, 9, 15, 2], 15, seed=95)
    # Every other row, transposed twice: views with strides no contiguous tensor has.
    views = [None if t is None else t[::2].t().contiguous().t() for t in (ids, mask, types)]
    assert not any(v.is_contiguous() for v in views if v is not None)
    with torch.no_grad():
        a = model(views[0], attention_mask=views[1], **_types(views[2]))
        b = ref(ids[::2], attention_mask=mask[::2], **_types(None if types is None else types[::2]))
    compare_outputs(a, b, mask[::2], f"{model_type} non-contiguous inputs")
