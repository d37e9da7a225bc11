"""Bad input fails at the boundary with ValueError / TypeError naming the argument, before any compute."""

from __future__ import annotations

import pytest
import torch

import bertfast
from bertfast.config import BertConfig

from .models import TINY

CFG = BertConfig(**TINY)


@pytest.fixture(scope="module")
def model():
    return bertfast.BertModel(CFG).eval()


def ids(B=2, S=7):
    return torch.randint(1, CFG.vocab_size, (B, S))


# One bad input per row: (case, the call's keyword arguments, the error, the start of its message).
# fmt: skip on the closing bracket keeps the rows as written, one case per line, to be read down.
BAD = [
    ("ids above vocab", dict(input_ids=torch.tensor([[1, 2, CFG.vocab_size]])), ValueError, "input_ids must be in"),
    ("negative ids", dict(input_ids=torch.tensor([[1, -1, 3]])), ValueError, "input_ids must be in"),
    ("float ids", dict(input_ids=ids().float()), TypeError, "input_ids must be an integer"),
    ("bool ids", dict(input_ids=ids() > 5), TypeError, "input_ids must be an integer"),
    ("1-D ids", dict(input_ids=ids()[0]), ValueError, "input_ids must be 2-D"),
    ("empty batch", dict(input_ids=torch.zeros(0, 5, dtype=torch.long)), ValueError, "empty batch"),
    ("empty sequence", dict(input_ids=torch.zeros(2, 0, dtype=torch.long)), ValueError, "empty batch"),
    ("too long", dict(input_ids=ids(1, CFG.max_position_embeddings + 1)), ValueError, "max_position_embeddings"),
    ("mask shape", dict(input_ids=ids(), attention_mask=torch.ones(2, 6)), ValueError, "attention_mask must have"),
    ("mask values", dict(input_ids=ids(), attention_mask=torch.full((2, 7), 2)), ValueError, "attention_mask must"),
    ("empty row", dict(input_ids=ids(), attention_mask=torch.tensor([[1] * 7, [0] * 7])), ValueError, "row 1"),
    ("types shape", dict(input_ids=ids(), token_type_ids=torch.zeros(2, 8, dtype=torch.long)), ValueError,
     "token_type_ids must have shape"),
    ("types range", dict(input_ids=ids(), token_type_ids=torch.full((2, 7), 2)), ValueError,
     "token_type_ids must be in"),
    ("float types", dict(input_ids=ids(), token_type_ids=torch.zeros(2, 7)), TypeError, "token_type_ids must be an"),
    ("positions range", dict(input_ids=ids(), position_ids=torch.full((2, 7), CFG.max_position_embeddings)),
     ValueError, "position_ids must be in"),
    ("positions shape", dict(input_ids=ids(), position_ids=torch.zeros(3, 7, dtype=torch.long)), ValueError,
     "position_ids must have shape"),
    ("both ids and embeds", dict(input_ids=ids(), inputs_embeds=torch.randn(2, 7, CFG.hidden_size)), ValueError,
     "exactly one of input_ids and inputs_embeds"),
    ("neither", dict(), ValueError, "exactly one of input_ids and inputs_embeds"),
    ("embeds width", dict(inputs_embeds=torch.randn(2, 7, CFG.hidden_size + 1)), ValueError, "inputs_embeds must be"),
    ("embeds dtype", dict(inputs_embeds=torch.randn(2, 7, CFG.hidden_size, dtype=torch.float64)), TypeError,
     "inputs_embeds must have the model's dtype"),
    ("ids not a tensor", dict(input_ids=[[1, 2, 3]]), TypeError, "input_ids must be a torch.Tensor"),
    ("attentions", dict(input_ids=ids(), output_attentions=True), ValueError, "output_attentions"),
]  # fmt: skip


@pytest.mark.parametrize("kwargs,error,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_native_model_rejects(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        model(**kwargs)


@pytest.mark.parametrize("kwargs,error,message", [b[1:] for b in BAD[:16]], ids=[b[0] for b in BAD[:16]])
def test_patched_hf_model_rejects(kwargs, error, message):
    from .models import hf_model

    patched = bertfast.optimize(hf_model("BertModel", seed=0))
    with pytest.raises(error, match=message):
        patched(**kwargs)


def test_packed_forward_rejects():
    m = bertfast.BertModel(CFG).eval()
    toks = torch.randint(0, CFG.vocab_size, (10,))
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        m.forward_packed(toks, torch.tensor([0, 4, 9]))
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        m.forward_packed(toks, torch.tensor([0, 4, 4, 10]))
    with pytest.raises(TypeError, match="cu_seqlens must be an integer"):
        m.forward_packed(toks, torch.tensor([0.0, 10.0]))
    with pytest.raises(ValueError, match="max_seqlen is 3"):
        m.forward_packed(toks, torch.tensor([0, 4, 10]), max_seqlen=3)
    with pytest.raises(ValueError, match="input_ids must be in"):
        m.forward_packed(torch.tensor([1, CFG.vocab_size]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        n = CFG.max_position_embeddings + 1
        m.forward_packed(torch.ones(n, dtype=torch.long), torch.tensor([0, n]))


def test_explicit_positions_do_not_lift_the_length_limit_and_ids_are_int64_or_int32():
    m = bertfast.BertModel(CFG).eval()
    n = CFG.max_position_embeddings + 6
    long_ids = torch.randint(1, CFG.vocab_size, (1, n))
    positions = torch.arange(n)[None, :] % CFG.max_position_embeddings  # every position in range
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings"):
        m(long_ids, position_ids=positions)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        m.forward_packed(long_ids[0], torch.tensor([0, n]), position_ids=positions[0])
    # a long padded row whose real tokens fit is fine
    mask = torch.zeros(1, n, dtype=torch.long)
    mask[0, :5] = 1
    with torch.no_grad():
        out = m(long_ids, attention_mask=mask, position_ids=positions)
    assert out.last_hidden_state[0, :5].abs().sum() > 0
    for dtype in (torch.int16, torch.uint8, torch.int8):
        with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
            m(torch.ones(1, 4, dtype=dtype))


def test_heads_reject_bad_labels():
    cfg = BertConfig(**{**TINY, "num_labels": 3})
    x = ids(2, 5)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        bertfast.BertForSequenceClassification(cfg)(x, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels must have shape"):
        bertfast.BertForTokenClassification(cfg)(x, labels=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have shape"):
        bertfast.BertForMaskedLM(cfg)(x, labels=torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="next_sentence_label must be in"):
        bertfast.BertForPreTraining(cfg)(x, labels=torch.full((2, 5), -100), next_sentence_label=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="pass both start_positions and end_positions"):
        bertfast.BertForQuestionAnswering(BertConfig(**TINY))(x, start_positions=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        bertfast.BertForMultipleChoice(cfg)(
            input_ids=torch.ones(2, 3, 5, dtype=torch.long), attention_mask=torch.ones(2, 3, 4)
        )


def test_backend_argument_is_checked():
    with pytest.raises(ValueError, match="backend must be one of"):
        bertfast.BertModel(CFG).set_backend("cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        bertfast.optimize(bertfast.BertModel(CFG), backend="fast")


def test_optimize_rejects_non_bert():
    with pytest.raises(TypeError, match="found no BERT encoder"):
        bertfast.optimize(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="takes a torch.nn.Module"):
        bertfast.optimize("bert-base-uncased")
