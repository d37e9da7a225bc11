"""The bench's model list: every family's published base config, built by transformers with random weights."""

from __future__ import annotations

import pytest
import torch

from bertfast import families
from bertfast.bench.models import FAMILY_MODELS, PUBLIC_MODELS, build_hf, max_seq_len, model_dims, weights_note

transformers = pytest.importorskip("transformers")

# The model cards' sizes (hidden, layers, heads, intermediate, position rows, vocabulary) and parameter counts.
PUBLISHED = {
    "roberta-base": ((768, 12, 12, 3072, 514, 50265), 125e6),
    "xlm-roberta-base": ((768, 12, 12, 3072, 514, 250002), 278e6),
    "distilbert-base": ((768, 6, 12, 3072, 512, 30522), 66e6),
    "mpnet-base": ((768, 12, 12, 3072, 514, 30527), 110e6),
    "albert-base": ((768, 12, 12, 3072, 512, 30000), 11.7e6),
    "electra-base": ((768, 12, 12, 3072, 512, 30522), 110e6),
}


@pytest.mark.parametrize("name", sorted(FAMILY_MODELS))
def test_family_models_have_their_published_sizes(name):
    assert name in PUBLIC_MODELS
    with torch.device("meta"):  # the sizes without allocating a hundred million weights
        model = build_hf(name, "sdpa")
    family = families.family_for(model.config)
    assert type(model).__name__ in family.base_classes and not model.training
    dims = model_dims(model)
    sizes, params = PUBLISHED[name]
    assert tuple(dims[k] for k in ("hidden", "layers", "heads", "intermediate", "max_pos", "vocab")) == sizes
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.03)
    sdpa = bool(getattr(type(model), "_supports_sdpa", False))
    assert model.config._attn_implementation == ("sdpa" if sdpa else "eager")
    assert ("no SDPA" in weights_note(name)) == (not sdpa)


@pytest.mark.parametrize("name", sorted(FAMILY_MODELS))
def test_bench_length_limit_is_what_transformers_runs(name):
    """The cases the bench plans stop at the longest input transformers itself accepts: RoBERTa-style
    position tables (514 rows) hold 512 tokens after the padding id, the others their full table."""
    assert max_seq_len(name) == 512
    assert max_seq_len("minilm") == 512 and max_seq_len("bert-large") == 512


def test_an_unknown_model_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown model 'deberta-base'.*roberta-base"):
        build_hf("deberta-base", "sdpa")
