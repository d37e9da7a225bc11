"""BertConfig: the fields of a BERT `config.json` that the math depends on, read without transformers.

Unsupported architectures (decoders, cross-attention, relative position embeddings) are refused here,
at load time, with a message naming the field, rather than producing wrong numbers later.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

# hidden_act values we implement, mapped to the canonical activation the kernels know.
# HF's spellings: gelu (erf), gelu_python (erf, Python), gelu_new / gelu_pytorch_tanh / gelu_fast (tanh forms).
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_fast",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
}


# The published BERT sizes (Devlin et al., 2019), for timing with seeded random weights.
PUBLISHED_CONFIGS: dict[str, dict[str, int]] = {
    "bert-base": dict(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        type_vocab_size=2,
    ),
    "bert-large": dict(
        vocab_size=30522,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=512,
        type_vocab_size=2,
    ),
}


class ConfigError(ValueError):
    """A config.json that bertfast cannot run faithfully."""


# The fields every real BERT config.json has and bertfast cannot guess: the sizes. A default would
# silently change the math (num_attention_heads shapes no tensor, so no checkpoint check would catch it).
REQUIRED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)


@dataclass
class BertConfig:
    # Required (REQUIRED_FIELDS): no defaults.
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    # Optional: transformers' BertConfig defaults, which a config.json without them means.
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    classifier_dropout: float | None = None
    position_embedding_type: str = "absolute"
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
    # Head settings (HF's names), used by heads.py.
    num_labels: int = 2
    problem_type: str | None = None
    id2label: dict[int, str] | None = None
    # Everything else in the file, kept so that to_dict() round-trips.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {v!r}")

        for name in (*REQUIRED_FIELDS, "num_labels"):
            positive_int(name)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"config field 'hidden_size' ({self.hidden_size}) must be a multiple of "
                f"'num_attention_heads' ({self.num_attention_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"config field 'hidden_act' is {self.hidden_act!r}; supported: {', '.join(sorted(ACTIVATIONS))}"
            )
        if self.position_embedding_type not in (None, "absolute"):
            raise ConfigError(
                f"config field 'position_embedding_type' is {self.position_embedding_type!r}; "
                "bertfast supports only 'absolute' position embeddings"
            )
        if self.is_decoder:
            raise ConfigError("config field 'is_decoder' is true; bertfast runs bidirectional encoders only")
        if self.add_cross_attention:
            raise ConfigError("config field 'add_cross_attention' is true; bertfast does not support cross-attention")
        if not (isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0):
            raise ConfigError(f"config field 'layer_norm_eps' must be a positive number, got {self.layer_norm_eps!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
                raise ConfigError(f"config field {name!r} must be in [0, 1), got {p!r}")
        if self.pad_token_id is not None and not (0 <= self.pad_token_id < self.vocab_size):
            raise ConfigError(
                f"config field 'pad_token_id' ({self.pad_token_id}) must be in [0, vocab_size={self.vocab_size})"
            )

    # --------------------------------------------------------------- derived
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def activation(self) -> str:
        """The canonical activation name the kernels and reference use."""
        return ACTIVATIONS[self.hidden_act]

    # ------------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a BERT config must be a JSON object, got {type(data).__name__}")
        model_type = data.get("model_type", "bert")
        if model_type != "bert":
            raise ConfigError(
                f"config field 'model_type' is {model_type!r}; bertfast's native loader reads 'bert' checkpoints "
                "(other families load with transformers, then bertfast.optimize(), or SentenceEncoder.from_pretrained)"
            )
        missing = [name for name in REQUIRED_FIELDS if name not in data]
        if missing:
            fields = ", ".join(map(repr, missing))
            raise ConfigError(
                f"config field{'s' if len(missing) > 1 else ''} {fields} missing: every BERT config.json gives "
                f"{', '.join(REQUIRED_FIELDS)}, and bertfast does not guess a model's sizes"
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "id2label"}
        kwargs = {k: data[k] for k in known if k in data}
        if kwargs.get("position_embedding_type") is None:
            kwargs.pop("position_embedding_type", None)
        id2label = data.get("id2label")
        if id2label is not None:
            kwargs["id2label"] = {int(k): str(v) for k, v in id2label.items()}
            if "num_labels" not in data:
                kwargs["num_labels"] = len(id2label)
        extra = {k: v for k, v in data.items() if k not in known and k != "id2label"}
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> BertConfig:
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"no config file at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike) -> BertConfig:
        model_dir = os.fspath(model_dir)
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
        return cls.from_json_file(os.path.join(model_dir, "config.json"))

    @classmethod
    def from_hf(cls, hf_config: Any) -> BertConfig:
        """From a transformers BertConfig object (duck-typed: anything with to_dict())."""
        data = hf_config.to_dict()
        data.setdefault("model_type", "bert")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        if self.id2label is not None:
            out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["model_type"] = "bert"
        return out

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
