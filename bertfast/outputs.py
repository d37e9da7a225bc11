"""Output containers with Hugging Face's class and field names, so native code reads like HF code.

They behave like HF's ModelOutput where users touch it: attribute access, `out["logits"]`, `out[0]`
(over the fields that are not None, in order), and `to_tuple()`. A patched HF model returns HF's own
classes instead; these exist so the core library needs no transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


class ModelOutput:
    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            value = getattr(self, key, None)
            if value is None:
                raise KeyError(key)
            return value
        return self.to_tuple()[key]

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())


Tensor = torch.Tensor
Hidden = tuple[torch.Tensor, ...]


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: Tensor | None = None
    pooler_output: Tensor | None = None
    hidden_states: Hidden | None = None
    attentions: Hidden | None = None


@dataclass
class PackedModelOutput(ModelOutput):
    """A packed forward: (T, H) token states, with the cu_seqlens that say where each sequence starts."""

    last_hidden_state: Tensor | None = None  # (T, H)
    pooler_output: Tensor | None = None  # (B, H)
    cu_seqlens: Tensor | None = None  # (B + 1,)
    hidden_states: Hidden | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: Hidden | None = None
    attentions: Hidden | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: Hidden | None = None
    attentions: Hidden | None = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: Tensor | None = None
    start_logits: Tensor | None = None
    end_logits: Tensor | None = None
    hidden_states: Hidden | None = None
    attentions: Hidden | None = None


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: Hidden | None = None
    attentions: Hidden | None = None


@dataclass
class NextSentencePredictorOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: Hidden | None = None
    attentions: Hidden | None = None


@dataclass
class BertForPreTrainingOutput(ModelOutput):
    loss: Tensor | None = None
    prediction_logits: Tensor | None = None
    seq_relationship_logits: Tensor | None = None
    hidden_states: Hidden | None = None
    attentions: Hidden | None = None


@dataclass
class MultipleChoiceModelOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: Hidden | None = None
    attentions: Hidden | None = None
