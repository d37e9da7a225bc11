"""BertConfig from config.json: the sizes are required and named when missing; the rest defaults as transformers'."""

from __future__ import annotations

import json

import pytest

from bertfast.config import PUBLISHED_CONFIGS, REQUIRED_FIELDS, BertConfig, ConfigError

from .models import TINY

OPTIONAL_AS_TRANSFORMERS = (
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "is_decoder",
    "add_cross_attention",
    "classifier_dropout",
    "num_labels",
    "tie_word_embeddings",
)


@pytest.mark.parametrize("name", REQUIRED_FIELDS)
def test_a_missing_size_is_an_error_naming_it(tmp_path, name):
    data = {k: v for k, v in TINY.items() if k != name}
    with pytest.raises(ConfigError, match=f"config field '{name}' missing"):
        BertConfig.from_dict(data)
    (tmp_path / "config.json").write_text(json.dumps({**data, "model_type": "bert"}), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"config.json: config field '{name}' missing"):
        BertConfig.from_pretrained(tmp_path)


def test_every_missing_size_is_named():
    with pytest.raises(ConfigError, match="'hidden_size', 'num_attention_heads' missing") as info:
        BertConfig.from_dict({k: v for k, v in TINY.items() if k not in ("hidden_size", "num_attention_heads")})
    assert "768" not in str(info.value)
    with pytest.raises(TypeError, match="hidden_size"):
        BertConfig(**{k: v for k, v in TINY.items() if k != "hidden_size"})


def test_optional_fields_default_as_transformers():
    transformers = pytest.importorskip("transformers")
    sizes = {k: TINY[k] for k in REQUIRED_FIELDS}
    ours, ref = BertConfig.from_dict(sizes), transformers.BertConfig(**sizes)
    for name in OPTIONAL_AS_TRANSFORMERS:
        assert getattr(ours, name) == getattr(ref, name), name


def test_real_and_published_configs_load(minilm_dir):
    cfg = BertConfig.from_pretrained(minilm_dir)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, cfg.type_vocab_size) == (384, 12, 1536, 2)
    for name, sizes in PUBLISHED_CONFIGS.items():
        assert BertConfig.from_dict(sizes).to_dict()["hidden_size"] == sizes["hidden_size"], name
    again = BertConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_another_family_is_pointed_to_optimize():
    with pytest.raises(ConfigError, match="'roberta'.*bertfast.optimize"):
        BertConfig.from_dict({**TINY, "model_type": "roberta"})
