"""The native model and every patched HF class against Hugging Face, fp32, on real positions only."""

from __future__ import annotations

import copy

import pytest
import torch

import bertfast
from bertfast.config import BertConfig

from .helpers import (
    GRAD_ATOL_FP32_RELATIVE,
    LOSS_ATOL_FP32,
    MODEL_ATOL_FP32,
    MODEL_ATOL_FP32_TRITON,
    assert_close,
    compare_outputs,
)
from .models import hf_model, ragged_batch

transformers = pytest.importorskip("transformers")

HEAD_CLASSES = [
    "BertModel",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
    "BertForMaskedLM",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertForMultipleChoice",
]
ACTS = ["gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "silu", "tanh"]


@pytest.mark.parametrize("cls_name", HEAD_CLASSES)
def test_patched_hf_classes_match_hf(cls_name):
    seed = HEAD_CLASSES.index(cls_name) + 11
    ref = hf_model(cls_name, seed=seed)
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    ids, mask, types = ragged_batch(4, 19, ref.config.vocab_size, seed)
    if cls_name == "BertForMultipleChoice":
        ids, mask, types = (t.view(2, 2, 19) for t in (ids, mask, types))
    with torch.no_grad():
        ours = model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        theirs = ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    assert type(ours) is type(theirs)
    compare_outputs(ours, theirs, mask, cls_name)
    # return_dict=False gives HF's tuple, element for element.
    with torch.no_grad():
        ours_t = model(ids, attention_mask=mask, token_type_ids=types, return_dict=False)
        theirs_t = ref(ids, attention_mask=mask, token_type_ids=types, return_dict=False)
    assert isinstance(ours_t, tuple) and len(ours_t) == len(theirs_t)
    m = mask.reshape(-1, 19).bool()
    for a, b in zip(ours_t, theirs_t):
        if a.dim() >= 2 and tuple(a.shape[:2]) == tuple(m.shape):
            a, b = a[m], b[m]
        assert_close(a, b, MODEL_ATOL_FP32, f"{cls_name} tuple output")


@pytest.mark.parametrize("act", ACTS)
def test_native_model_matches_hf_for_each_activation(act, tmp_path):
    ref = hf_model("BertModel", seed=3, hidden_act=act)
    ref.save_pretrained(tmp_path)
    ours = bertfast.BertModel.from_pretrained(tmp_path, backend="torch")
    assert ours.config.hidden_act == act
    ids, mask, types = ragged_batch(5, 23, ref.config.vocab_size, seed=ACTS.index(act))
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        b = ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    compare_outputs(a, b, mask, f"native[{act}]")


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int32, torch.float32])
def test_attention_mask_dtypes(mask_dtype):
    ref = hf_model("BertModel", seed=5)
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    ids, mask, types = ragged_batch(3, 17, ref.config.vocab_size, seed=5, mask_dtype=mask_dtype)
    with torch.no_grad():
        a = model(ids, attention_mask=mask, token_type_ids=types)
        b = ref(ids, attention_mask=mask.long(), token_type_ids=types)
    compare_outputs(a, b, mask.long(), f"mask {mask_dtype}")


def test_left_padding_and_holes_use_real_tokens_only():
    """Any 0/1 mask packs: each row's real tokens attend to each other only, wherever they sit."""
    ref = hf_model("BertModel", seed=6)
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    ids, _, _ = ragged_batch(3, 12, ref.config.vocab_size, seed=6, pairs=False)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 3:7] = 0  # a hole
    mask[2, :5] = 0  # left padding
    with torch.no_grad():
        a = model(ids, attention_mask=mask).last_hidden_state
        b = ref(ids, attention_mask=mask).last_hidden_state
    m = mask.bool()
    assert_close(a[m], b[m], MODEL_ATOL_FP32, "masked layout")
    assert torch.all(a[~m] == 0), "padding positions are zeros in bertfast's padded output"


def test_position_ids_and_inputs_embeds():
    ref = hf_model("BertModel", seed=7)
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    ids, mask, types = ragged_batch(2, 15, ref.config.vocab_size, seed=7)
    pos = torch.randint(0, ref.config.max_position_embeddings, (2, 15))
    embeds = ref.embeddings.word_embeddings(ids).detach() + 0.01 * torch.randn(2, 15, ref.config.hidden_size)
    with torch.no_grad():
        for kwargs in (
            dict(input_ids=ids, position_ids=pos),
            dict(inputs_embeds=embeds),
            dict(inputs_embeds=embeds, position_ids=pos[:1]),
        ):
            a = model(attention_mask=mask, token_type_ids=types, **kwargs)
            b = ref(attention_mask=mask, token_type_ids=types, **kwargs)
            compare_outputs(a, b, mask, f"kwargs {sorted(kwargs)}")


def test_output_attentions_falls_back_to_hf_exactly():
    ref = hf_model("BertModel", seed=8, attn_implementation="eager")
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    ids, mask, _ = ragged_batch(2, 9, ref.config.vocab_size, seed=8)
    with torch.no_grad():
        a = model(ids, attention_mask=mask, output_attentions=True)
        b = ref(ids, attention_mask=mask, output_attentions=True)
    assert len(a.attentions) == ref.config.num_hidden_layers
    for x, y in zip(a.attentions, b.attentions):
        assert torch.equal(x, y)


def test_patch_keeps_names_state_dict_and_save_pretrained(tmp_path):
    ref = hf_model("BertForSequenceClassification", seed=9)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    model = bertfast.optimize(ref)
    assert bertfast.is_optimized(model)
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    model.save_pretrained(tmp_path)
    reloaded = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask, types = ragged_batch(3, 11, ref.config.vocab_size, seed=9)
    with torch.no_grad():
        a = model(ids, attention_mask=mask, token_type_ids=types).logits
        b = reloaded(ids, attention_mask=mask, token_type_ids=types).logits
    assert_close(a, b, MODEL_ATOL_FP32, "reloaded logits")
    bertfast.restore(model)
    assert not bertfast.is_optimized(model)
    assert "forward" not in model.bert.__dict__


def test_gradients_of_patched_sequence_classifier_equal_hf():
    ref = hf_model("BertForSequenceClassification", seed=10, num_labels=3)
    model = bertfast.optimize(copy.deepcopy(ref), backend="auto")
    ids, mask, types = ragged_batch(4, 13, ref.config.vocab_size, seed=10)
    labels = torch.tensor([0, 2, 1, 2])
    for m in (ref, model):
        m.train()  # dropout probabilities are 0 in the tiny config: train mode must still match
        m.zero_grad()
        m(ids, attention_mask=mask, token_type_ids=types, labels=labels).loss.backward()
    loss_ref = ref(ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
    loss_ours = model(ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
    assert_close(loss_ours.detach(), loss_ref.detach(), LOSS_ATOL_FP32, "loss")
    grads_ref = dict(ref.named_parameters())
    checked = 0
    for name, p in model.named_parameters():
        g_ref = grads_ref[name].grad
        if g_ref is None:
            assert p.grad is None or torch.all(p.grad == 0), name
            continue
        assert p.grad is not None, f"no gradient reached {name}"
        scale = max(g_ref.abs().max().item(), 1e-3)
        assert_close(p.grad / scale, g_ref / scale, GRAD_ATOL_FP32_RELATIVE, f"grad {name} / its max {scale:.2e}")
        checked += 1
    assert checked >= 30


def test_minilm_checkpoint_native_and_patched_match_hf(minilm_dir):
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    native = bertfast.BertModel.from_pretrained(minilm_dir, backend="torch")
    patched = bertfast.optimize(transformers.BertModel.from_pretrained(minilm_dir).eval(), backend="torch")
    ids, mask, types = ragged_batch(4, 40, 30522, seed=12)
    ids[:, 0] = 101  # [CLS]
    with torch.no_grad():
        b = ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        for name, m in (("native", native), ("patched", patched)):
            a = m(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
            compare_outputs(a, b, mask, f"minilm {name}")


def test_config_round_trip_from_hf():
    ref = hf_model("BertModel", seed=1, hidden_act="gelu_fast")
    cfg = BertConfig.from_hf(ref.config)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.activation) == (48, 3, "gelu_fast")


def test_dropout_is_applied_in_training_and_off_in_eval():
    ref = hf_model("BertModel", seed=13, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    model = bertfast.optimize(copy.deepcopy(ref), backend="auto")
    ids, mask, _ = ragged_batch(3, 11, ref.config.vocab_size, seed=13)
    m = mask.bool()
    model.train()
    torch.manual_seed(0)
    a = model(ids, attention_mask=mask).last_hidden_state
    b = model(ids, attention_mask=mask).last_hidden_state
    assert (a - b)[m].abs().max().item() > 1e-3, "two training passes must draw different dropout masks"
    a.sum().backward()
    assert model.encoder.layer[0].output.dense.weight.grad is not None
    model.eval()
    with torch.no_grad():
        x = model(ids, attention_mask=mask).last_hidden_state
        y = ref.eval()(ids, attention_mask=mask).last_hidden_state
    assert_close(x[m], y[m], MODEL_ATOL_FP32, "eval mode after training-mode calls")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_non_contiguous_inputs(backend):
    from bertfast import ops

    if backend == "triton" and not (torch.cuda.is_available() or ops.interpreter_on()):
        pytest.skip("the Triton path needs a GPU or TRITON_INTERPRET=1")
    ref = hf_model("BertModel", seed=14)
    model = bertfast.optimize(copy.deepcopy(ref), backend=backend)
    ids, mask, types = ragged_batch(6, 15, ref.config.vocab_size, seed=14)
    # Every other row, transposed twice: views with strides no contiguous tensor has.
    views = [t[::2].t().contiguous().t() for t in (ids, mask, types)]
    assert not any(v.is_contiguous() for v in views)
    with torch.no_grad():
        a = model(views[0], attention_mask=views[1], token_type_ids=views[2])
        b = ref(ids[::2], attention_mask=mask[::2], token_type_ids=types[::2])
    m = mask[::2].bool()
    tol = MODEL_ATOL_FP32 if backend == "torch" else MODEL_ATOL_FP32_TRITON
    assert_close(a.last_hidden_state[m], b.last_hidden_state[m], tol, f"non-contiguous inputs ({backend})")
    assert_close(a.pooler_output, b.pooler_output, tol, f"non-contiguous pooled ({backend})")
