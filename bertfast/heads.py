"""The task heads of the BERT paper, with Hugging Face's module names, outputs and losses.

Each head owns a `bert` encoder (a bertfast BertModel) and adds its own layers:
- BertForSequenceClassification: single sentences and sentence pairs (pooled [CLS] -> classifier);
  regression, single- and multi-label losses as HF picks them.
- BertForTokenClassification: per-token labels (NER).
- BertForQuestionAnswering: extractive QA, start/end logits.
- BertForMaskedLM: the MLM decoder, tied to the word embeddings.
- BertForNextSentencePrediction, BertForPreTraining (MLM + NSP).
- BertForMultipleChoice: (B, C, S) inputs, one score per choice.

Labels are checked at the boundary (shape and range) with errors that name the argument.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import activations
from .config import BertConfig
from .modeling import BertModel, BertPreTrainedModel
from .outputs import (
    BaseModelOutputWithPooling,
    BertForPreTrainingOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    NextSentencePredictorOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

IGNORE_INDEX = -100


def _check_labels(name: str, labels: torch.Tensor, shape: tuple[int, ...], num_classes: int | None) -> None:
    """Integer class labels of the given shape, each in [0, num_classes) or IGNORE_INDEX."""
    if not torch.is_tensor(labels):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if tuple(labels.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(labels.shape)}")
    if num_classes is None:
        return
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    bad = ((labels < 0) & (labels != IGNORE_INDEX)) | (labels >= num_classes)
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(f"{name} must be in [0, {num_classes}) or {IGNORE_INDEX} (ignored); found {value}")


def _check_no_cross_attention(encoder_hidden_states: Any, encoder_attention_mask: Any) -> None:
    """HF's MLM head takes cross-attention inputs (for decoder configs); bertfast builds encoders only."""
    if encoder_hidden_states is not None or encoder_attention_mask is not None:
        name = "encoder_hidden_states" if encoder_hidden_states is not None else "encoder_attention_mask"
        raise ValueError(f"{name} must be None: bertfast models are encoders, without cross-attention")


class _EncoderHead(BertPreTrainedModel):
    """A `bert` encoder and a task head on its output.

    A head writes `__init__` (its layers, then `init_weights()`) and `_head(enc, *targets)`: its
    layers and loss on the encoder's output, returning HF's output class. The inherited `forward` has
    HF's signature for the heads whose only target is `labels`; a head with other targets (QA, the
    pretraining pair) or other inputs overrides `forward` with HF's signature for it and hands its
    inputs and targets, as two tuples, to `_run`.
    """

    base_prefix = "bert."

    def __init__(self, config: BertConfig, add_pooling_layer: bool):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=add_pooling_layer)

    def set_backend(self, backend: str):
        super().set_backend(backend)
        self.bert.set_backend(backend)
        return self

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        inputs = (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return self._run(inputs, (labels,), output_attentions, output_hidden_states, return_dict)

    def _run(self, inputs: tuple, targets: tuple, output_attentions, output_hidden_states, return_dict):
        """Encodes `inputs` (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, in
        this order) and applies the head with `targets`; a tuple instead of the output when return_dict
        is False."""
        enc = self.bert(*inputs, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        out = self._head(enc, *targets)
        return out if return_dict is None or return_dict else out.to_tuple()

    def _head(self, enc: BaseModelOutputWithPooling, *targets):
        """The head's layers and loss on the encoder's output; returns HF's output class."""
        raise NotImplementedError

    def _dropout_p(self) -> float:
        c = self.config
        return c.classifier_dropout if c.classifier_dropout is not None else c.hidden_dropout_prob


class BertForSequenceClassification(_EncoderHead):
    head_prefixes = ("classifier.",)

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=True)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(self._dropout_p())
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def _head(self, enc, labels):
        logits = self.classifier(self.dropout(enc.pooler_output))  # (B, num_labels)
        loss = self._loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=enc.hidden_states)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """HF's rule: regression for one label, cross-entropy for integer labels, BCE otherwise."""
        B, n = logits.shape
        if not torch.is_tensor(labels):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        problem = self.config.problem_type
        if problem is None:
            if n == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
            self.config.problem_type = problem
        if problem == "regression":
            if labels.numel() != B * n:
                raise ValueError(f"labels must have {B * n} values for regression, got shape {tuple(labels.shape)}")
            labels = labels.to(logits.dtype)
            return F.mse_loss(logits.squeeze(), labels.squeeze()) if n == 1 else F.mse_loss(logits, labels)
        if problem == "single_label_classification":
            _check_labels("labels", labels.view(-1) if labels.dim() > 1 else labels, (B,), n)
            return F.cross_entropy(logits.view(-1, n), labels.view(-1))
        if problem == "multi_label_classification":
            _check_labels("labels", labels, (B, n), None)
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        raise ValueError(
            f"config.problem_type {problem!r} is not one of regression, single_label_classification, "
            "multi_label_classification"
        )


class BertForTokenClassification(_EncoderHead):
    head_prefixes = ("classifier.",)

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=False)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(self._dropout_p())
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def _head(self, enc, labels):
        seq = enc.last_hidden_state  # (B, S, H)
        logits = self.classifier(self.dropout(seq))  # (B, S, num_labels)
        loss = None
        if labels is not None:
            _check_labels("labels", labels, tuple(seq.shape[:2]), self.num_labels)
            loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=enc.hidden_states)


class BertForQuestionAnswering(_EncoderHead):
    head_prefixes = ("qa_outputs.",)

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=False)
        self.num_labels = config.num_labels
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        if self.num_labels != 2:
            raise ValueError(
                f"BertForQuestionAnswering needs config.num_labels == 2 (start, end), got {self.num_labels}"
            )
        if (start_positions is None) != (end_positions is None):
            raise ValueError("pass both start_positions and end_positions, or neither")
        inputs = (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        targets = (start_positions, end_positions)
        return self._run(inputs, targets, output_attentions, output_hidden_states, return_dict)

    def _head(self, enc, start_positions, end_positions):
        logits = self.qa_outputs(enc.last_hidden_state)  # (B, S, 2)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))  # (B, S) each
        loss = None
        if start_positions is not None:
            B, S = start_logits.shape
            for name, t in (("start_positions", start_positions), ("end_positions", end_positions)):
                if not torch.is_tensor(t):
                    raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
                if t.numel() != B:
                    raise ValueError(f"{name} must hold one position per sequence ({B}), got {tuple(t.shape)}")
                if t.is_floating_point():
                    raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
            # As HF: positions outside the sequence are clamped to S and ignored by the loss.
            start = start_positions.reshape(B).clamp(0, S)
            end = end_positions.reshape(B).clamp(0, S)
            start_loss = F.cross_entropy(start_logits, start, ignore_index=S)
            end_loss = F.cross_entropy(end_logits, end, ignore_index=S)
            loss = (start_loss + end_loss) / 2
        return QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, hidden_states=enc.hidden_states
        )


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.activation = config.activation

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = activations.apply(self.dense(h), self.activation)
        return self.LayerNorm(h)


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # one vector under two names, as in HF

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(h), self.decoder.weight, self.bias)  # (..., V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertOnlyNSPHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class _TiedMLM:
    """Mixin: the MLM decoder shares the word embedding matrix (HF's tie_word_embeddings)."""

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def tie_weights(self) -> None:
        head = self.cls.predictions
        head.decoder.bias = head.bias
        if self.config.tie_word_embeddings:
            head.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def _tied_keys(self) -> set[str]:
        keys = {"cls.predictions.decoder.bias"}
        if self.config.tie_word_embeddings:
            keys.add("cls.predictions.decoder.weight")
        return keys

    def _mlm_loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_labels("labels", labels, tuple(scores.shape[:2]), self.config.vocab_size)
        return F.cross_entropy(scores.view(-1, self.config.vocab_size), labels.view(-1))


def _nsp_loss(name: str, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    _check_labels(name, labels.view(-1) if torch.is_tensor(labels) else labels, (scores.shape[0],), 2)
    return F.cross_entropy(scores.view(-1, 2), labels.view(-1))


class BertForMaskedLM(_TiedMLM, _EncoderHead):
    head_prefixes = ("cls.predictions.",)

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.init_weights()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        _check_no_cross_attention(encoder_hidden_states, encoder_attention_mask)
        inputs = (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        return self._run(inputs, (labels,), output_attentions, output_hidden_states, return_dict)

    def _head(self, enc, labels):
        scores = self.cls.predictions(enc.last_hidden_state)  # (B, S, V)
        loss = self._mlm_loss(scores, labels) if labels is not None else None
        return MaskedLMOutput(loss=loss, logits=scores, hidden_states=enc.hidden_states)


class BertForNextSentencePrediction(_EncoderHead):
    head_prefixes = ("cls.seq_relationship.",)

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=True)
        self.cls = BertOnlyNSPHead(config)
        self.init_weights()

    def _head(self, enc, labels):
        scores = self.cls.seq_relationship(enc.pooler_output)  # (B, 2): 0 = IsNext, 1 = NotNext
        loss = _nsp_loss("labels", scores, labels) if labels is not None else None
        return NextSentencePredictorOutput(loss=loss, logits=scores, hidden_states=enc.hidden_states)


class BertForPreTraining(_TiedMLM, _EncoderHead):
    head_prefixes = ("cls.predictions.", "cls.seq_relationship.")

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=True)
        self.cls = BertPreTrainingHeads(config)
        self.init_weights()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        next_sentence_label=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        inputs = (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        targets = (labels, next_sentence_label)
        return self._run(inputs, targets, output_attentions, output_hidden_states, return_dict)

    def _head(self, enc, labels, next_sentence_label):
        scores = self.cls.predictions(enc.last_hidden_state)  # (B, S, V)
        nsp = self.cls.seq_relationship(enc.pooler_output)  # (B, 2)
        loss = None
        if labels is not None and next_sentence_label is not None:  # HF: the total only when both are given
            loss = self._mlm_loss(scores, labels) + _nsp_loss("next_sentence_label", nsp, next_sentence_label)
        elif labels is not None or next_sentence_label is not None:
            # HF silently returns no loss here; checking the given one keeps a typo from passing unnoticed.
            if labels is not None:
                _check_labels("labels", labels, tuple(scores.shape[:2]), self.config.vocab_size)
            else:
                _check_labels("next_sentence_label", next_sentence_label.view(-1), (nsp.shape[0],), 2)
        return BertForPreTrainingOutput(
            loss=loss, prediction_logits=scores, seq_relationship_logits=nsp, hidden_states=enc.hidden_states
        )


class BertForMultipleChoice(_EncoderHead):
    head_prefixes = ("classifier.",)

    def __init__(self, config: BertConfig):
        super().__init__(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(self._dropout_p())
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.init_weights()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        """Inputs are (B, C, S): every choice is encoded as one sequence of a (B * C, S) batch."""
        lead = input_ids if input_ids is not None else inputs_embeds
        if lead is None:
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        want = 3 if input_ids is not None else 4
        if lead.dim() != want:
            name = "input_ids" if input_ids is not None else "inputs_embeds"
            raise ValueError(
                f"{name} must be {want}-D (batch, choices, sequence{', hidden' if want == 4 else ''}), "
                f"got shape {tuple(lead.shape)}"
            )
        B, C, S = lead.shape[:3]

        def flat(name: str, t: Any, extra_dims: int = 0) -> Any:
            """(B, C, S, ...) -> (B * C, S, ...)."""
            if t is None:
                return None
            if not torch.is_tensor(t):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 3 + extra_dims or tuple(t.shape[:3]) != (B, C, S):
                raise ValueError(
                    f"{name} must have shape {(B, C, S)}{' + (hidden,)' if extra_dims else ''}, got {tuple(t.shape)}"
                )
            return t.reshape(B * C, S, *t.shape[3:])

        inputs = (
            flat("input_ids", input_ids),
            flat("attention_mask", attention_mask),
            flat("token_type_ids", token_type_ids),
            flat("position_ids", position_ids),
            flat("inputs_embeds", inputs_embeds, extra_dims=1),
        )
        return self._run(inputs, (labels, C), output_attentions, output_hidden_states, return_dict)

    def _head(self, enc, labels, num_choices):
        logits = self.classifier(self.dropout(enc.pooler_output)).view(-1, num_choices)  # (B * C, 1) -> (B, C)
        B, C = logits.shape
        loss = None
        if labels is not None:
            _check_labels("labels", labels, (B,), C)
            loss = F.cross_entropy(logits, labels)
        return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=enc.hidden_states)


HEADS = {
    cls.__name__: cls
    for cls in (
        BertForSequenceClassification,
        BertForTokenClassification,
        BertForQuestionAnswering,
        BertForMaskedLM,
        BertForNextSentencePrediction,
        BertForPreTraining,
        BertForMultipleChoice,
    )
}
