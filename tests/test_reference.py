"""The oracle itself: bertfast.reference, in fp64, agrees with Hugging Face in fp64."""

from __future__ import annotations

import pytest
import torch

from bertfast.config import BertConfig
from bertfast.reference import bert_ref

from .helpers import FP64_ATOL, assert_close
from .models import hf_model, ragged_batch

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "quick_gelu", "relu"])
def test_reference_matches_hf_in_fp64(act):
    ref = hf_model("BertModel", seed=21, hidden_act=act, attn_implementation="eager").double()
    cfg = BertConfig.from_hf(ref.config)
    ids, mask, types = ragged_batch(3, 16, cfg.vocab_size, seed=21)
    params = {k: v.detach() for k, v in ref.state_dict().items()}
    seq, pooled, hidden = bert_ref(params, cfg, ids, mask, types)
    with torch.no_grad():
        out = ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    m = mask.bool()
    assert_close(seq[m], out.last_hidden_state[m], FP64_ATOL, "sequence output")
    assert_close(pooled, out.pooler_output, FP64_ATOL, "pooled output")
    for i, (a, b) in enumerate(zip(hidden, out.hidden_states)):
        assert_close(a[m], b[m], FP64_ATOL, f"hidden state {i}")
