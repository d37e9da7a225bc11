"""Native task heads against Hugging Face's: same weights in, same logits, losses and gradients out."""

from __future__ import annotations

import inspect

import pytest
import torch

import bertfast

from .helpers import (
    GRAD_ATOL_FP32_RELATIVE,
    LOSS_ATOL_FP32,
    MODEL_ATOL_FP32,
    assert_close,
)
from .models import hf_model, ragged_batch
from .test_model_hf import compare_outputs

transformers = pytest.importorskip("transformers")

B, S = 4, 14


def labels_for(name: str, cfg, gen: torch.Generator, mask: torch.Tensor) -> dict:
    if name == "BertForSequenceClassification":
        return {"labels": torch.randint(0, cfg.num_labels, (B,), generator=gen)}
    if name == "BertForTokenClassification":
        lab = torch.randint(0, cfg.num_labels, (B, S), generator=gen)
        return {"labels": lab.masked_fill(mask == 0, -100)}
    if name == "BertForQuestionAnswering":
        return {
            "start_positions": torch.randint(0, S, (B,), generator=gen),
            "end_positions": torch.tensor([1, S + 3, 0, 5]),  # one out of range: ignored, as HF does
        }
    if name in ("BertForMaskedLM", "BertForPreTraining"):
        lab = torch.full((B, S), -100)
        pick = (torch.rand(B, S, generator=gen) < 0.3) & mask.bool()
        pick[0, 1] = True
        lab[pick] = torch.randint(0, cfg.vocab_size, (int(pick.sum()),), generator=gen)
        out = {"labels": lab}
        if name == "BertForPreTraining":
            out["next_sentence_label"] = torch.randint(0, 2, (B,), generator=gen)
        return out
    if name == "BertForNextSentencePrediction":
        return {"labels": torch.randint(0, 2, (B,), generator=gen)}
    if name == "BertForMultipleChoice":
        return {"labels": torch.randint(0, 2, (B // 2,), generator=gen)}
    raise AssertionError(name)


HEADS = list(bertfast.heads.HEADS)


@pytest.mark.parametrize("name", HEADS)
def test_native_head_matches_hf(name, tmp_path):
    seed = 100 + HEADS.index(name)
    ref = hf_model(name, seed=seed, num_labels=2 if name == "BertForQuestionAnswering" else 3)
    ref.save_pretrained(tmp_path)
    ours = getattr(bertfast, name).from_pretrained(tmp_path, backend="torch")
    assert ours.newly_initialized_keys == []
    assert sorted(ours.state_dict()) == sorted(ref.state_dict()), "parameter names differ from HF's"

    ids, mask, types = ragged_batch(B, S, ref.config.vocab_size, seed)
    if name == "BertForQuestionAnswering":
        # HF's QA loss takes its softmax over padding positions too, whose states bertfast never
        # computes (they are zeros in its padded output; see README, "Differences from HF").
        mask = torch.ones_like(mask)
    gen = torch.Generator().manual_seed(seed)
    labels = labels_for(name, ref.config, gen, mask)
    if name == "BertForMultipleChoice":
        ids, mask, types = (t.view(B // 2, 2, S) for t in (ids, mask, types))

    ours.train()
    ref.train()  # dropout is 0 in the tiny config; train mode exercises the training path
    a = ours(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True, **labels)
    b = ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True, **labels)
    assert a.loss is not None
    compare_outputs(a, b, mask, name)
    a.loss.backward()
    b.loss.backward()
    ref_params = dict(ref.named_parameters())
    for pname, p in ours.named_parameters():
        g, g_ref = p.grad, ref_params[pname].grad
        if g_ref is None or torch.all(g_ref == 0):
            assert g is None or torch.all(g == 0), pname
            continue
        scale = max(g_ref.abs().max().item(), 1e-3)
        assert_close(g / scale, g_ref / scale, GRAD_ATOL_FP32_RELATIVE, f"{name} grad {pname} / {scale:.1e}")


# HF (transformers 5) takes these through **kwargs; bertfast names them after HF's own parameters.
OUTPUT_SWITCHES = ["output_attentions", "output_hidden_states", "return_dict"]


@pytest.mark.parametrize("name", HEADS)
def test_forward_signature_is_hfs(name):
    """HF's parameters, names and order, so positional calls bind the same; then the output switches."""

    def named(fn):
        params = inspect.signature(fn).parameters.values()
        return [p for p in params if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]

    hf, ours = named(getattr(transformers, name).forward), named(getattr(bertfast, name).forward)
    assert [p.name for p in ours[: len(hf)]] == [p.name for p in hf]
    assert [p.name for p in ours[len(hf) :]] == [n for n in OUTPUT_SWITCHES if n not in {p.name for p in hf}]
    for p in ours:
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is None, p


def test_masked_lm_refuses_cross_attention_inputs():
    ours = bertfast.BertForMaskedLM(bertfast.BertConfig.from_hf(hf_model("BertForMaskedLM", seed=5).config))
    ids, mask, _ = ragged_batch(2, 5, ours.config.vocab_size, seed=5)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        ours(ids, mask, None, None, None, torch.randn(2, 5, ours.config.hidden_size))
    with pytest.raises(ValueError, match="encoder_attention_mask"):
        ours(ids, encoder_attention_mask=mask)


def test_sequence_classification_regression_and_multilabel():
    for num_labels, labels in ((1, torch.randn(3)), (4, (torch.rand(3, 4) > 0.5).float())):
        ref = hf_model("BertForSequenceClassification", seed=7, num_labels=num_labels)
        ours = bertfast.BertForSequenceClassification(bertfast.BertConfig.from_hf(ref.config))
        ours.load_checkpoint(ref.state_dict())
        ours.eval()
        ids, mask, types = ragged_batch(3, 9, ref.config.vocab_size, seed=7)
        with torch.no_grad():
            a = ours(ids, attention_mask=mask, token_type_ids=types, labels=labels)
            b = ref(ids, attention_mask=mask, token_type_ids=types, labels=labels)
        assert_close(a.logits, b.logits, MODEL_ATOL_FP32, "logits")
        assert_close(a.loss, b.loss, LOSS_ATOL_FP32, f"loss ({ours.config.problem_type})")


def test_mlm_decoder_is_tied_to_word_embeddings(tmp_path):
    ref = hf_model("BertForMaskedLM", seed=3)
    ref.save_pretrained(tmp_path)
    ours = bertfast.BertForMaskedLM.from_pretrained(tmp_path)
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    ours.save_pretrained(tmp_path / "again")
    back = transformers.BertForMaskedLM.from_pretrained(tmp_path / "again")
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_head_from_base_checkpoint_is_fresh_and_reported(tmp_path):
    hf_model("BertModel", seed=4).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="freshly initialized"):
        clf = bertfast.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    assert clf.newly_initialized_keys == ["classifier.weight", "classifier.bias"]
    assert clf.classifier.weight.shape == (5, 48)
    assert 0 < clf.classifier.weight.std().item() < 0.1  # BERT's init, not zeros
