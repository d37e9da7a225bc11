"""Strict, safe checkpoint loading: every key accounted for, legacy names accepted, no code execution."""

from __future__ import annotations

import json
import os
import pickle
import re

import pytest
import torch
from safetensors.torch import save_file

import bertfast
from bertfast.checkpoint import LISTED_KEYS, CheckpointError
from bertfast.config import BertConfig, ConfigError

from .helpers import assert_close
from .models import TINY, ragged_batch, randomize_


def write_model(tmp_path, state, config=None, fmt="safetensors"):
    os.makedirs(tmp_path, exist_ok=True)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config or {**TINY, "model_type": "bert"}, f)
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    else:
        torch.save(state, tmp_path / "pytorch_model.bin")
    return tmp_path


@pytest.fixture()
def source():
    torch.manual_seed(0)
    return randomize_(bertfast.BertModel(BertConfig(**TINY)), seed=1).eval()


def outputs_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    ids, mask, types = ragged_batch(2, 9, TINY["vocab_size"], seed=2)
    with torch.no_grad():
        x = a(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        y = b(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    assert_close(x, y, 0.0, "reloaded model output")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_round_trip_and_legacy_names(tmp_path, source, fmt):
    legacy = {}
    for k, v in source.state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy["bert." + k] = v
    legacy["bert.embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
    legacy["cls.seq_relationship.weight"] = torch.randn(2, TINY["hidden_size"])  # another task's head
    loaded = bertfast.BertModel.from_pretrained(write_model(tmp_path, legacy, fmt=fmt))
    outputs_equal(loaded, source)


def test_missing_unexpected_and_mismatched_keys_are_listed(tmp_path, source):
    state = dict(source.state_dict())
    del state["encoder.layer.1.output.dense.weight"]
    state["encoder.layer.0.attention.self.rotary.weight"] = torch.ones(3)
    state["embeddings.word_embeddings.weight"] = torch.randn(5, TINY["hidden_size"])
    with pytest.raises(CheckpointError) as err:
        bertfast.BertModel.from_pretrained(write_model(tmp_path, state))
    msg = str(err.value)
    assert "model.safetensors" in msg
    assert "missing keys: encoder.layer.1.output.dense.weight" in msg
    assert "unexpected keys: encoder.layer.0.attention.self.rotary.weight" in msg
    assert "shape mismatch for embeddings.word_embeddings.weight" in msg


def test_long_key_lists_name_the_first_few_and_count_the_rest(tmp_path, source):
    """Another model's checkpoint: hundreds of offending keys must not print as one endless line."""
    params = source.state_dict()
    names = sorted(params)
    gone, reshaped = names[: len(names) // 3], names[len(names) // 3 :]
    state = {k: torch.randn(*(n + 1 for n in params[k].shape)) for k in reshaped}
    extra = [f"encoder.layer.{i}.attention.self.rotary.weight" for i in range(LISTED_KEYS + 4)]
    state.update({k: torch.randn(3) for k in extra})
    with pytest.raises(CheckpointError) as err:
        bertfast.BertModel.from_pretrained(write_model(tmp_path, state))
    msg = str(err.value)
    sections = msg.split(" does not fit BertModel: ", 1)[1].split("; ")
    for kind, keys in (("missing keys: ", gone), ("unexpected keys: ", extra), ("shape mismatch for ", reshaped)):
        (part,) = [s.removeprefix(kind) for s in sections if s.startswith(kind)]
        assert part.endswith(f", ... and {len(keys) - LISTED_KEYS} more"), (kind, part)
        listed = re.findall(r"[\w.]+\.(?:weight|bias)", part)
        assert len(listed) == LISTED_KEYS and set(listed) <= set(keys), (kind, listed)
    for name, got, want in re.findall(r"([\w.]+) \(checkpoint \(([\d, ]+)\), model \(([\d, ]+)\)\)", msg):
        assert tuple(int(n) for n in re.findall(r"\d+", want)) == tuple(params[name].shape)
        assert tuple(int(n) for n in re.findall(r"\d+", got)) == tuple(n + 1 for n in params[name].shape)
    assert len(re.findall(r"\(checkpoint \(", msg)) == LISTED_KEYS
    assert len(msg) < 200 * 3 * LISTED_KEYS


def test_pooler_kept_when_present_and_required_when_asked(tmp_path, source):
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("pooler.")}
    path = write_model(tmp_path, state)
    assert bertfast.BertModel.from_pretrained(path).pooler is None
    with pytest.raises(CheckpointError, match="add_pooling_layer=False"):
        bertfast.BertModel.from_pretrained(path, add_pooling_layer=True)


def test_partial_head_is_an_error(tmp_path, source):
    state = {"bert." + k: v for k, v in source.state_dict().items()}
    state["classifier.weight"] = torch.randn(2, TINY["hidden_size"])  # no classifier.bias
    with pytest.raises(CheckpointError, match="missing keys: classifier.bias"):
        bertfast.BertForSequenceClassification.from_pretrained(write_model(tmp_path, state))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_bin_checkpoint_cannot_run_code(tmp_path):
    os.makedirs(tmp_path, exist_ok=True)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(TINY, f)
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"embeddings.word_embeddings.weight": _Exploit()}, f)
    # torch's weights-only unpickler warns about this pickle's protocol (4) before refusing the object.
    with pytest.warns(UserWarning, match="pickle protocol"), pytest.raises(CheckpointError, match="pytorch_model.bin"):
        bertfast.BertModel.from_pretrained(tmp_path)


def test_malformed_files_name_the_file(tmp_path, source):
    path = write_model(tmp_path, dict(source.state_dict()))
    (path / "model.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        bertfast.BertModel.from_pretrained(path)
    (path / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="config.json"):
        bertfast.BertModel.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bertfast.BertModel.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("is_decoder", True, "is_decoder"),
        ("add_cross_attention", True, "cross-attention"),
        ("position_embedding_type", "relative_key", "position_embedding_type"),
        ("hidden_act", "mish", "hidden_act"),
        ("num_attention_heads", 5, "multiple of"),
        ("hidden_size", 0, "hidden_size"),
        ("model_type", "roberta", "model_type"),
    ],
)
def test_unsupported_configs_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        BertConfig.from_dict({**TINY, field: value})


def test_optimize_refuses_unsupported_hf_config_before_patching():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(**{**TINY, "is_decoder": True})
    model = transformers.BertModel(cfg)
    with pytest.raises(ConfigError, match="is_decoder"):
        bertfast.optimize(model)
    assert not bertfast.is_optimized(model)


def test_minilm_real_checkpoint_loads_strictly(minilm_dir):
    model = bertfast.BertModel.from_pretrained(minilm_dir)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.vocab_size) == (384, 6, 12, 30522)
    assert model.pooler is not None and not model.training
