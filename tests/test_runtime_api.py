"""The public runtime switches work on native and patched models alike, and refuse bad arguments."""

from __future__ import annotations

import pytest
import torch

import bertfast
from bertfast.encoder import PATCH_ATTR, RUNNER_ATTR
from bertfast.runtime import OPTIONS_ATTR

from .helpers import MODEL_ATOL_FP32, assert_close
from .models import TINY, hf_model, ragged_batch


def test_set_backend_and_cuda_graphs_on_a_patched_hf_model():
    ref = hf_model("BertForSequenceClassification", seed=70)
    model = bertfast.optimize(hf_model("BertForSequenceClassification", seed=70))
    state = model.bert.__dict__[PATCH_ATTR]
    assert (state.backend, state.cuda_graphs) == ("auto", True)
    assert bertfast.set_backend(model, "torch") is model and state.backend == "torch"
    model.bert.__dict__[RUNNER_ATTR] = object()  # stands in for captured graphs
    assert bertfast.set_cuda_graphs(model, False) is model and state.cuda_graphs is False
    assert RUNNER_ATTR not in model.bert.__dict__, "graphs off drops the captured ones"
    ids, mask, _ = ragged_batch(3, 11, ref.config.vocab_size, 70)
    with torch.no_grad():
        assert_close(model(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits, MODEL_ATOL_FP32)


def test_set_backend_and_cuda_graphs_on_a_native_model():
    model = bertfast.BertForTokenClassification(bertfast.BertConfig(**TINY))
    assert bertfast.set_backend(model, "torch") is model and model.bert.backend == "torch"
    assert bertfast.set_cuda_graphs(model, False) is model and model.bert.cuda_graphs is False


def test_switches_refuse_bad_arguments_and_unoptimized_models():
    plain = hf_model("BertModel", seed=71)
    with pytest.raises(TypeError, match="call optimize"):
        bertfast.set_backend(plain, "torch")
    with pytest.raises(TypeError, match="call optimize"):
        bertfast.set_cuda_graphs(plain, True)
    model = bertfast.optimize(plain)
    with pytest.raises(ValueError, match="backend must be one of"):
        bertfast.set_backend(model, "cuda")
    with pytest.raises(TypeError, match="enabled must be a bool"):
        bertfast.set_cuda_graphs(model, 1)
    fresh = hf_model("BertModel", seed=71)
    with pytest.raises(ValueError, match="memory_budget_mb"):
        bertfast.optimize(fresh, memory_budget_mb=-1)
    assert not bertfast.is_optimized(fresh), "a refused call patches nothing"
    with pytest.raises(ValueError, match="max_tokens"):
        bertfast.set_graph_options(model, max_tokens=0)
    with pytest.raises(ValueError, match="must hold the model's longest sequence"):
        bertfast.set_graph_options(model, max_tokens=model.config.max_position_embeddings // 2)
    with pytest.raises(ValueError, match="max_seqs"):
        bertfast.set_graph_options(model, max_seqs=2)
    with pytest.raises(ValueError, match="shapes"):
        bertfast.warmup(model, [(1, 0)])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        bertfast.warmup(model, [(1, model.config.max_position_embeddings + 1)])
    with pytest.raises(TypeError, match="no bertfast-optimized"):
        bertfast.warmup(torch.nn.Linear(2, 2), [(1, 8)])


def test_graph_options_reach_the_encoders_and_restore_forgets_them():
    model = bertfast.optimize(hf_model("BertModel", seed=72), memory_budget_mb=64.0)
    assert model.__dict__[OPTIONS_ATTR] == {"memory_budget_mb": 64.0, "max_tokens": 8192, "max_seqs": 512}
    bertfast.restore(model)
    assert OPTIONS_ATTR not in model.__dict__ and PATCH_ATTR not in model.__dict__


def test_warmup_runs_every_encoder_and_reports_stats():
    """On the CPU there are no graphs to capture: warmup runs the forwards and reports none."""
    model = bertfast.optimize(hf_model("BertForSequenceClassification", seed=73).eval())
    assert bertfast.warmup(model, [(2, 8), (1, 16)]) == {}
    assert bertfast.optimize(hf_model("BertModel", seed=74).eval(), warmup=[(1, 8)]) is not None
