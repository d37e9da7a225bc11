"""The encoder families bertfast runs, in one registry keyed by `config.model_type`.

BERT, RoBERTa, XLM-R, CamemBERT, DistilBERT, ELECTRA, ALBERT and MPNet are one post-LN encoder with
small differences. Each `Family` says, by reading Hugging Face's own modules, how its base model maps
onto the packed forward (`bertfast.encoder.packed_forward`):

- `embeddings(bert)`: the word / position / token-type tables (no token types in DistilBERT and
  MPNet), the embedding LayerNorm, and the projection into the encoder's width that follows it where
  `embedding_size != hidden_size` (ELECTRA's `embeddings_project`, ALBERT's `embedding_hidden_mapping_in`);
- `layers(bert)`: every layer the forward runs, in order, as a `LayerView` of the Q/K/V projections,
  the attention output projection, the two LayerNorms and the two FFN GEMMs (ALBERT repeats its shared
  layer groups; DistilBERT names them `q_lin`, `sa_layer_norm`, `ffn.lin1`, ...);
- `attention_bias(bert)`: MPNet's relative-position bias table, one for every layer (else None);
- `positions`: how position ids are made when the caller gives none (BERT: 0..S-1; RoBERTa and MPNet:
  `padding_idx + 1` onward, counting only non-padding tokens, as transformers'
  `create_position_ids_from_input_ids`);
- `tokenizer`: the vocabulary's kind and special tokens, for the sentence-level front end.

Nothing outside this module asks which family it runs; adding one is an entry here and its tests.
This module imports no transformers: it reads modules by attribute name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from .config import ACTIVATIONS, ConfigError


# --------------------------------------------------------------------------- views
class EmbeddingsView(NamedTuple):
    word: nn.Embedding  # (V, E)
    position: nn.Embedding  # (P, E)
    token_type: nn.Embedding | None  # (Tt, E); None: the family has no token types
    norm: nn.LayerNorm  # over E
    project: nn.Linear | None  # E -> H after the LayerNorm; None when the embeddings are H wide already


class LayerView(NamedTuple):
    """One post-LN layer: h = norm1(h + out(attn(q, k, v))); h = norm2(h + ffn_out(act(ffn_in(h))))."""

    attention: nn.Module  # the module holding query/key/value: keeps the fused [3H, H] weight beside them
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    out: nn.Linear
    attn_norm: nn.LayerNorm
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    ffn_norm: nn.LayerNorm


@dataclass(frozen=True)
class Positions:
    """How a family numbers its tokens when the caller passes no position_ids.

    `from_padding=False`: 0, 1, ..., S - 1 in every row (BERT). `from_padding=True` (RoBERTa, MPNet):
    a token that is not `padding_idx` gets `padding_idx` + the count of non-padding tokens up to and
    including it; a padding token gets `padding_idx`. Inputs given as embeddings cannot tell padding
    apart, so their positions run `padding_idx + 1`, `padding_idx + 2`, ... along the row.
    """

    from_padding: bool

    def longest(self, table_rows: int, padding_idx: int | None) -> int:
        """The longest sequence whose positions fit a table of `table_rows` rows."""
        return table_rows - (padding_idx + 1) if self.from_padding else table_rows

    def padded(self, input_ids: torch.Tensor | None, batch: int, seqlen: int, padding_idx: int | None, device):
        """(B, S) position ids for padded input ((B, S) ids, or None when embeddings are given)."""
        if not self.from_padding:
            return torch.arange(seqlen, device=device)[None, :].expand(batch, seqlen)  # (B, S)
        if input_ids is None:
            start = padding_idx + 1
            return torch.arange(start, start + seqlen, device=device)[None, :].expand(batch, seqlen)  # (B, S)
        real = input_ids.ne(padding_idx).long()  # (B, S)
        return real.cumsum(dim=1) * real + padding_idx  # (B, S)

    def packed(self, input_ids: torch.Tensor, within: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
        """(T,) position ids for packed input: `within` (T,) is each token's index in its sequence."""
        if not self.from_padding:
            return within  # (T,)
        real = input_ids.ne(padding_idx).long()  # (T,)
        before = real.cumsum(0) - real  # (T,) non-padding tokens before each one, over the whole list
        start = torch.arange(within.numel(), device=within.device) - within  # (T,) its sequence's first token
        return (before - before.index_select(0, start) + 1) * real + padding_idx  # (T,)


@dataclass(frozen=True)
class TokenizerSpec:
    """What the sentence-level front end needs to tokenize for a family."""

    kind: str  # "wordpiece": bertfast's C++ WordPiece over vocab.txt; "tokenizer.json": the tokenizers library
    cls_token: str
    sep_token: str
    pad_token: str
    unk_token: str
    mask_token: str
    # Separators between a pair's texts: 1 for `[CLS] A [SEP] B [SEP]`, 2 for `<s> A </s></s> B </s>`.
    pair_separators: int
    token_types: bool  # whether the model takes token_type_ids (a pair's second text gets type 1)


_WORDPIECE_BERT = TokenizerSpec("wordpiece", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", 1, True)
_ROBERTA_TOKENS = TokenizerSpec("tokenizer.json", "<s>", "</s>", "<pad>", "<unk>", "<mask>", 2, False)


@dataclass(frozen=True)
class ConfigKeys:
    """The names of a family's config fields the forward reads (DistilBERT spells them its own way)."""

    activation: str = "hidden_act"
    hidden_dropout: str = "hidden_dropout_prob"
    attention_dropout: str = "attention_probs_dropout_prob"


def _no_bias(bert: nn.Module) -> None:
    return None  # a module-level function, not a lambda: models holding a Spec stay picklable


@dataclass(frozen=True)
class Family:
    model_type: str
    base_classes: tuple[str, ...]  # the transformers base-model classes optimize() patches
    embeddings: Callable[[nn.Module], EmbeddingsView]
    layer_list: Callable[[nn.Module], list[nn.Module]]  # the layer modules in the order they run
    layer_view: Callable[[nn.Module], LayerView]  # one of them, by role
    pooler: Callable[[nn.Module], nn.Linear | None]  # the dense layer before tanh; None: no pooler
    positions: Positions
    tokenizer: TokenizerSpec
    output_class: str  # the transformers.modeling_outputs class the base model returns
    has_pooler_output: bool  # whether that class has a `pooler_output` field (None when the model has no pooler)
    keys: ConfigKeys = ConfigKeys()
    attention_bias: Callable[[nn.Module], torch.Tensor | None] = _no_bias  # (buckets, N) or None
    bias_buckets: int = 0  # rows of the bias table the attention reads (0: no bias)
    attention_output_dropout: bool = True  # hidden dropout on the attention output projection
    ffn_output_dropout: bool = True  # hidden dropout on the second FFN GEMM

    @property
    def token_types(self) -> bool:
        return self.tokenizer.token_types

    def layers(self, bert: nn.Module) -> list[LayerView]:
        """Every layer the forward runs, in order (a shared ALBERT layer once per use)."""
        return [self.layer_view(layer) for layer in self.layer_list(bert)]

    def check(self, config: Any) -> None:
        """Refuse, naming the field, a config this family's forward would not run faithfully."""
        for name in ("is_decoder", "add_cross_attention"):
            if getattr(config, name, False):
                raise ConfigError(
                    f"config field {name!r} is true; bertfast runs bidirectional {self.model_type} encoders only"
                )
        kind = getattr(config, "position_embedding_type", None)
        if kind not in (None, "absolute"):
            raise ConfigError(
                f"config field 'position_embedding_type' is {kind!r}; bertfast supports only 'absolute' positions"
            )
        act = getattr(config, self.keys.activation, None)
        if act not in ACTIVATIONS:
            raise ConfigError(
                f"config field {self.keys.activation!r} is {act!r}; supported: {', '.join(sorted(ACTIVATIONS))}"
            )
        hidden, heads = config.hidden_size, config.num_attention_heads
        if hidden % heads:
            raise ConfigError(
                f"config field 'hidden_size' ({hidden}) must be a multiple of 'num_attention_heads' ({heads})"
            )
        if self.positions.from_padding and getattr(config, "pad_token_id", None) is None:
            raise ConfigError(
                f"config field 'pad_token_id' is None; {self.model_type} numbers positions from the padding id"
            )
        buckets = getattr(config, "relative_attention_num_buckets", 0)
        if buckets < self.bias_buckets:
            raise ConfigError(
                f"config field 'relative_attention_num_buckets' is {buckets}; {self.model_type}'s attention "
                f"reads {self.bias_buckets} buckets of its bias table"
            )


# --------------------------------------------------------------------------- readers
def _bert_embeddings(bert: nn.Module) -> EmbeddingsView:
    e = bert.embeddings
    return EmbeddingsView(e.word_embeddings, e.position_embeddings, e.token_type_embeddings, e.LayerNorm, None)


def _electra_embeddings(bert: nn.Module) -> EmbeddingsView:
    return _bert_embeddings(bert)._replace(project=getattr(bert, "embeddings_project", None))


def _albert_embeddings(bert: nn.Module) -> EmbeddingsView:
    return _bert_embeddings(bert)._replace(project=bert.encoder.embedding_hidden_mapping_in)


def _typeless_embeddings(bert: nn.Module) -> EmbeddingsView:
    e = bert.embeddings
    return EmbeddingsView(e.word_embeddings, e.position_embeddings, None, e.LayerNorm, None)


def _bert_layer(layer: nn.Module) -> LayerView:
    a = layer.attention
    s = a.self
    out = a.output
    return LayerView(
        s,
        s.query,
        s.key,
        s.value,
        out.dense,
        out.LayerNorm,
        layer.intermediate.dense,
        layer.output.dense,
        layer.output.LayerNorm,
    )


def _bert_layer_list(bert: nn.Module) -> list[nn.Module]:
    return list(bert.encoder.layer)


def _distilbert_layer(block: nn.Module) -> LayerView:
    a, ffn = block.attention, block.ffn
    return LayerView(
        a, a.q_lin, a.k_lin, a.v_lin, a.out_lin, block.sa_layer_norm, ffn.lin1, ffn.lin2, block.output_layer_norm
    )


def _distilbert_layer_list(bert: nn.Module) -> list[nn.Module]:
    return list(bert.transformer.layer)


def _albert_layer(layer: nn.Module) -> LayerView:
    a = layer.attention
    return LayerView(
        a, a.query, a.key, a.value, a.dense, a.LayerNorm, layer.ffn, layer.ffn_output, layer.full_layer_layer_norm
    )


def _albert_layer_list(bert: nn.Module) -> list[nn.Module]:
    """ALBERT runs `num_hidden_layers` times a layer group (each of `inner_group_num` layers), the
    groups shared in equal runs: step i uses group int(i / (num_hidden_layers / num_hidden_groups))."""
    config = bert.config
    groups = bert.encoder.albert_layer_groups
    n, g = config.num_hidden_layers, config.num_hidden_groups
    return [layer for i in range(n) for layer in groups[int(i / (n / g))].albert_layers]


def _mpnet_layer(layer: nn.Module) -> LayerView:
    a = layer.attention
    s = a.attn
    return LayerView(
        s, s.q, s.k, s.v, s.o, a.LayerNorm, layer.intermediate.dense, layer.output.dense, layer.output.LayerNorm
    )


def _bert_pooler(bert: nn.Module) -> nn.Linear | None:
    pooler = getattr(bert, "pooler", None)
    return None if pooler is None else pooler.dense


def _albert_pooler(bert: nn.Module) -> nn.Linear | None:
    return getattr(bert, "pooler", None)  # a Linear itself, followed by tanh


def _no_pooler(bert: nn.Module) -> None:
    return None


# MPNet's attention buckets relative distances into 32 buckets (transformers' compute_position_bias
# default), whatever size its table has: only those rows are ever read.
MPNET_BUCKETS = 32


def _mpnet_bias(bert: nn.Module) -> torch.Tensor:
    return bert.encoder.relative_attention_bias.weight[:MPNET_BUCKETS]  # (32, N)


# --------------------------------------------------------------------------- the registry
_BERT_ROWS = dict(embeddings=_bert_embeddings, layer_list=_bert_layer_list, layer_view=_bert_layer, pooler=_bert_pooler)
_WITH_POOLER = "BaseModelOutputWithPoolingAndCrossAttentions"
_ROBERTA_LIKE = dict(
    **_BERT_ROWS, positions=Positions(from_padding=True), output_class=_WITH_POOLER, has_pooler_output=True
)

_FAMILIES = (
    Family(
        "bert",
        ("BertModel",),
        **_BERT_ROWS,
        positions=Positions(from_padding=False),
        tokenizer=_WORDPIECE_BERT,
        output_class=_WITH_POOLER,
        has_pooler_output=True,
    ),
    Family("roberta", ("RobertaModel",), **_ROBERTA_LIKE, tokenizer=_ROBERTA_TOKENS),
    Family("xlm-roberta", ("XLMRobertaModel",), **_ROBERTA_LIKE, tokenizer=_ROBERTA_TOKENS),
    Family("camembert", ("CamembertModel",), **_ROBERTA_LIKE, tokenizer=_ROBERTA_TOKENS),
    Family(
        "distilbert",
        ("DistilBertModel",),
        embeddings=_typeless_embeddings,
        layer_list=_distilbert_layer_list,
        layer_view=_distilbert_layer,
        pooler=_no_pooler,
        positions=Positions(from_padding=False),
        tokenizer=TokenizerSpec("wordpiece", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", 1, False),
        output_class="BaseModelOutput",
        has_pooler_output=False,
        keys=ConfigKeys(activation="activation", hidden_dropout="dropout", attention_dropout="attention_dropout"),
        attention_output_dropout=False,
    ),
    Family(
        "electra",
        ("ElectraModel",),
        embeddings=_electra_embeddings,
        layer_list=_bert_layer_list,
        layer_view=_bert_layer,
        pooler=_no_pooler,
        positions=Positions(from_padding=False),
        tokenizer=_WORDPIECE_BERT,
        output_class="BaseModelOutputWithPastAndCrossAttentions",
        has_pooler_output=False,
    ),
    Family(
        "albert",
        ("AlbertModel",),
        embeddings=_albert_embeddings,
        layer_list=_albert_layer_list,
        layer_view=_albert_layer,
        pooler=_albert_pooler,
        positions=Positions(from_padding=False),
        tokenizer=TokenizerSpec("tokenizer.json", "[CLS]", "[SEP]", "<pad>", "<unk>", "[MASK]", 1, True),
        output_class="BaseModelOutputWithPooling",
        has_pooler_output=True,
        ffn_output_dropout=False,
    ),
    Family(
        "mpnet",
        ("MPNetModel",),
        embeddings=_typeless_embeddings,
        layer_list=_bert_layer_list,
        layer_view=_mpnet_layer,
        pooler=_bert_pooler,
        positions=Positions(from_padding=True),
        tokenizer=TokenizerSpec("wordpiece", "<s>", "</s>", "<pad>", "[UNK]", "<mask>", 2, False),
        output_class="BaseModelOutputWithPooling",
        has_pooler_output=True,
        attention_bias=_mpnet_bias,
        bias_buckets=MPNET_BUCKETS,
    ),
)
REGISTRY: dict[str, Family] = {f.model_type: f for f in _FAMILIES}
SUPPORTED: tuple[str, ...] = tuple(REGISTRY)


def family_for(config_or_model_type: Any) -> Family:
    """The family of a model_type string, a config object (its `.model_type`) or a config dict.

    Raises ConfigError (a ValueError) naming the model_type and listing the supported ones."""
    if isinstance(config_or_model_type, str):
        model_type = config_or_model_type
    elif isinstance(config_or_model_type, dict):
        model_type = config_or_model_type.get("model_type")
    else:
        model_type = getattr(config_or_model_type, "model_type", None)
    family = REGISTRY.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise ConfigError(
            f"model_type {model_type!r} is not an encoder bertfast supports; supported: {', '.join(SUPPORTED)}"
        )
    return family


def family_of_config_json(data: dict) -> Family:
    """The family of a folder's config.json contents: one without `model_type` is BERT, as BertConfig
    reads it (checkpoints written before transformers recorded the field)."""
    return family_for({"model_type": "bert", **data})
