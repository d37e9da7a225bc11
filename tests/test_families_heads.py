"""Task heads, sentence-transformers models and CrossEncoders of every encoder family through optimize():
logits, losses and scores equal transformers' / sentence-transformers' in fp32, computed by bertfast."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import bertfast
from bertfast import hf, ops

from .helpers import (
    GRAD_ATOL_FP32_RELATIVE,
    LOSS_ATOL_FP32,
    MODEL_ATOL_FP32,
    MODEL_ATOL_FP32_TRITON,
    assert_close,
    compare_outputs,
    count_packed_calls,
)
from .models import FAMILY_CONFIGS, family_batch, family_model

transformers = pytest.importorskip("transformers")

HEADS = [
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
    "ForMaskedLM",
    "ForMultipleChoice",
    "ForPreTraining",
]
# BERT's heads are checked in test_model_hf.py; here every other family's that transformers has.
CASES = [
    (model_type, head)
    for model_type, (prefix, _) in FAMILY_CONFIGS.items()
    if model_type != "bert"
    for head in HEADS
    if hasattr(transformers, prefix + head)
]
CHOICES = 2


def _labels(model, head: str, ids: torch.Tensor, mask: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Fresh labels for the head's loss; -100 (ignored) at padding where the loss is per token."""
    g = torch.Generator().manual_seed(seed)
    B, S = ids.shape[0], ids.shape[-1]
    per_token = torch.randint(0, model.config.num_labels, ids.shape, generator=g).masked_fill(mask == 0, -100)
    if head == "ForSequenceClassification":
        return {"labels": torch.randint(0, model.config.num_labels, (B,), generator=g)}
    if head == "ForTokenClassification":
        return {"labels": per_token}
    if head == "ForQuestionAnswering":
        return {"start_positions": torch.randint(0, S, (B,), generator=g), "end_positions": torch.randint(0, S, (B,))}
    if head == "ForMultipleChoice":
        return {"labels": torch.randint(0, CHOICES, (B,), generator=g)}
    masked = (torch.rand(ids.shape, generator=g) < 0.3) & (mask == 1)
    mlm = ids.masked_fill(~masked, -100)
    if head == "ForMaskedLM":
        return {"labels": mlm}
    if isinstance(model, transformers.ElectraForPreTraining):  # replaced-token detection: 0/1 per token
        return {"labels": torch.randint(0, 2, ids.shape, generator=g)}
    return {"labels": mlm, "sentence_order_label": torch.randint(0, 2, (B,), generator=g)}


def _batch(ref, head: str, lengths: list[int], seqlen: int, seed: int):
    ids, mask, types = family_batch(ref, lengths, seqlen, seed)
    if head == "ForMultipleChoice":  # (B, C, S): pairs of rows
        ids, mask, types = (None if t is None else t.view(-1, CHOICES, seqlen) for t in (ids, mask, types))
    return ids, mask, types


@pytest.mark.parametrize("model_type,head", CASES, ids=[f"{m}-{h}" for m, h in CASES])
def test_head_logits_and_loss_match_hf(model_type, head, monkeypatch):
    packed_calls = count_packed_calls(monkeypatch)
    seed = CASES.index((model_type, head))
    ref = family_model(model_type, head, seed=seed, num_labels=3 if "Classification" in head else 2)
    model = bertfast.optimize(copy.deepcopy(ref), backend="torch")
    # QA's loss is a softmax over every position, padding included (HF computes padding tokens, bertfast
    # does not): its loss is compared on a batch without padding, its logits on a ragged one.
    shapes = [([11, 1, 6, 8], 11, False), ([17, 17], 17, True)] if head == "ForQuestionAnswering" else None
    for lengths, seqlen, with_loss in shapes or [([11, 1, 6, 8], 11, True), ([23, 5], 23, True)]:
        ids, mask, types = _batch(ref, head, lengths, seqlen, seed)
        labels = _labels(ref, head, ids, mask, seed) if with_loss else {}
        kwargs = dict(attention_mask=mask, **({} if types is None else {"token_type_ids": types}), **labels)
        with torch.no_grad():
            ours, theirs = model(ids, **kwargs), ref(ids, **kwargs)
        assert type(ours) is type(theirs)
        compare_outputs(ours, theirs, mask, f"{model_type}{head} {lengths}")
        if with_loss:
            assert_close(ours.loss, theirs.loss, LOSS_ATOL_FP32, f"{model_type}{head} loss")
    assert len(packed_calls) == 2


@pytest.mark.parametrize("model_type", [m for m in FAMILY_CONFIGS if m != "bert"])
def test_sequence_classifier_on_the_triton_kernels(model_type, monkeypatch):
    packed_calls = count_packed_calls(monkeypatch)
    if not (torch.cuda.is_available() or ops.interpreter_on()):
        pytest.skip("the Triton path needs a GPU or TRITON_INTERPRET=1")
    seed = 60 + list(FAMILY_CONFIGS).index(model_type)
    ref = family_model(model_type, "ForSequenceClassification", seed=seed, num_labels=3)
    model = bertfast.optimize(copy.deepcopy(ref), backend="triton", cuda_graphs=False)
    ids, mask, types = family_batch(ref, [9, 1, 4], 9, seed)
    kwargs = dict(attention_mask=mask, labels=torch.tensor([2, 0, 1]))
    kwargs.update({} if types is None else {"token_type_ids": types})
    with torch.no_grad():
        ours, theirs = model(ids, **kwargs), ref(ids, **kwargs)
    assert_close(ours.logits, theirs.logits, MODEL_ATOL_FP32_TRITON, f"{model_type} logits (triton)")
    assert_close(ours.loss, theirs.loss, MODEL_ATOL_FP32_TRITON, f"{model_type} loss (triton)")
    assert len(packed_calls) == 1


def _wordpiece_vocab(path, specials: list[str]) -> list[str]:
    """A vocab.txt: the family's special tokens first, then lower-case words and their pieces."""
    words = "the a cat dog sat on mat fast slow red blue model encoder runs kernels token text".split()
    vocab = specials + words + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    return vocab


SENTENCES = ["the cat sat on the mat", "a", "red kernels runs fast and the blue dog is slow", "model encoder text"]
PAIRS = [("the cat", "sat on the mat"), ("a dog", "a"), ("fast kernels", "the encoder runs the text model fast")]


def test_sentence_transformer_on_mpnet_equals_its_own_encode(tmp_path, monkeypatch):
    packed_calls = count_packed_calls(monkeypatch)
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer import modules as st_models

    vocab = _wordpiece_vocab(tmp_path / "vocab.txt", ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"])
    tokenizer = transformers.MPNetTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    model = family_model("mpnet", seed=70, vocab_size=len(vocab))
    model.save_pretrained(tmp_path / "mpnet")
    tokenizer.save_pretrained(tmp_path / "mpnet")
    body = st_models.Transformer(str(tmp_path / "mpnet"))
    sbert = st.SentenceTransformer(modules=[body, st_models.Pooling(36, "mean"), st_models.Normalize()], device="cpu")
    expected = sbert.encode(SENTENCES, convert_to_tensor=True, batch_size=3)
    bertfast.optimize(sbert, backend="torch")
    got = sbert.encode(SENTENCES, convert_to_tensor=True, batch_size=3)
    assert len(packed_calls) == 2  # two batches, both through bertfast
    assert_close(got, expected, MODEL_ATOL_FP32, "MPNet sentence embeddings")


def test_cross_encoder_on_electra_predicts_its_own_scores(tmp_path, monkeypatch):
    packed_calls = count_packed_calls(monkeypatch)
    st = pytest.importorskip("sentence_transformers")
    vocab = _wordpiece_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = transformers.ElectraTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    model = family_model("electra", "ForSequenceClassification", seed=71, vocab_size=len(vocab), num_labels=1)
    model.save_pretrained(tmp_path / "ce")
    tokenizer.save_pretrained(tmp_path / "ce")
    cross = st.CrossEncoder(str(tmp_path / "ce"), device="cpu")
    expected = torch.as_tensor(cross.predict(PAIRS, batch_size=2))
    bertfast.optimize(cross, backend="torch")
    got = torch.as_tensor(cross.predict(PAIRS, batch_size=2))
    assert len(packed_calls) == 2
    assert_close(got, expected, MODEL_ATOL_FP32, "CrossEncoder scores")


def test_warmup_off_cuda_warns_once_that_no_graphs_are_captured():
    hf._warn_graphs_need_cuda.cache_clear()
    with pytest.warns(RuntimeWarning, match="captures no CUDA graphs"):
        bertfast.optimize(family_model("distilbert"), backend="torch", warmup=[(1, 8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second model in the same process: no second warning
        bertfast.optimize(family_model("mpnet"), backend="torch", warmup=[(2, 5)])
        bertfast.optimize(family_model("bert"), backend="torch", cuda_graphs=False, warmup=[(1, 4)])


@pytest.mark.parametrize("model_type", ["albert", "distilbert", "mpnet"])
def test_gradients_equal_hf_and_restore_undoes_the_patch(model_type, monkeypatch):
    """Training runs the torch path: every parameter's gradient equals HF's (ALBERT's shared layers sum
    theirs over every use); restore() hands the model back to transformers' own forward."""
    packed_calls = count_packed_calls(monkeypatch)
    ref = family_model(model_type, "ForSequenceClassification", seed=80, num_labels=3).train()
    model = bertfast.optimize(copy.deepcopy(ref), backend="auto").train()
    ids, mask, types = family_batch(ref, [12, 5, 1], 12, seed=80)
    kwargs = dict(attention_mask=mask, labels=torch.tensor([1, 0, 2]))
    kwargs.update({} if types is None else {"token_type_ids": types})
    for m in (ref, model):
        m(ids, **kwargs).loss.backward()
    assert len(packed_calls) == 1
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        g = grads[name].grad
        assert p.grad is not None and g is not None, name
        scale = max(g.abs().max().item(), 1e-3)
        assert_close(p.grad / scale, g / scale, GRAD_ATOL_FP32_RELATIVE, f"{model_type} grad {name} / {scale:.2e}")
    bertfast.restore(model)
    assert not bertfast.is_optimized(model)
    assert not any("forward" in m.__dict__ or "_bertfast_qkv" in m.__dict__ for m in model.modules())
