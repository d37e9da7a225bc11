"""The encoder's math on packed tokens, shared by native bertfast models and patched HF models.

`packed_forward` runs every encoder family of `bertfast.families` (BERT, RoBERTa, DistilBERT, ALBERT,
MPNet, ...): the family's views name the modules (`embeddings.word_embeddings`, a layer's Q/K/V and
LayerNorms, ...), so one function runs a native `bertfast.BertModel` and any supported transformers
base model over its own parameters. The data path, T packed tokens throughout:

    embeddings + LayerNorm (+ projection E -> H) -> per layer: fused QKV GEMM -> attention over packed
    sequences (+ relative-position bias) -> out-proj + residual + LayerNorm -> FFN1 + activation ->
    FFN2 + residual + LayerNorm -> pooler

This module is the math only: how a call runs it (backend, eager or CUDA-graph replay, padded or
packed) is decided in `bertfast.forward`, which sits above it and above `bertfast.graphs`.

Shapes: B sequences, S padded length, T real tokens, H hidden, I intermediate, N heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .config import ACTIVATIONS
from .families import REGISTRY, Family, LayerView, family_for
from .padding import PackInfo

if TYPE_CHECKING:
    from .config import BertConfig

# Private attributes bertfast keeps in a module's __dict__ (never parameters, never saved).
PATCH_ATTR = "_bertfast"  # hf.py: the patch state of an optimized transformers base model
RUNNER_ATTR = "_bertfast_graphs"  # runtime: the CUDA-graph runner of an encoder
FUSED_QKV_ATTR = "_bertfast_qkv"  # the fused [3H, H] QKV weight derived from query/key/value


@dataclass(frozen=True)
class Spec:
    """What the forward and the input checks need to know about a model (from ours or a HF config)."""

    family: Family
    vocab_size: int
    type_vocab_size: int  # 0: the family has no token types
    max_position_embeddings: int  # rows of the position table
    max_seq_len: int  # the longest sequence whose positions fit the table
    embedding_size: int  # the embedding tables' width (inputs_embeds' last dim): E, H unless projected
    hidden_size: int
    num_heads: int
    activation: str
    hidden_dropout: float
    attention_dropout: float
    padding_idx: int | None  # the token id that positions count as padding (RoBERTa-style families)

    @classmethod
    def from_config(cls, config: BertConfig) -> Spec:
        """A native bertfast BertModel's."""
        family = REGISTRY["bert"]
        return cls(
            family=family,
            vocab_size=config.vocab_size,
            type_vocab_size=config.type_vocab_size,
            max_position_embeddings=config.max_position_embeddings,
            max_seq_len=family.positions.longest(config.max_position_embeddings, config.pad_token_id),
            embedding_size=config.hidden_size,
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            activation=config.activation,
            hidden_dropout=float(config.hidden_dropout_prob),
            attention_dropout=float(config.attention_probs_dropout_prob),
            padding_idx=config.pad_token_id,
        )

    @classmethod
    def from_module(cls, bert: nn.Module) -> Spec:
        """A transformers base model's: its family from `config.model_type`, the sizes from its
        embedding tables. ConfigError (a ValueError) for a family or a config bertfast cannot run."""
        config = bert.config
        family = family_for(config)
        family.check(config)
        emb = family.embeddings(bert)
        rows = emb.position.num_embeddings
        pad = getattr(bert.embeddings, "padding_idx", config.pad_token_id)  # MPNet fixes its own
        return cls(
            family=family,
            vocab_size=emb.word.num_embeddings,
            type_vocab_size=0 if emb.token_type is None else emb.token_type.num_embeddings,
            max_position_embeddings=rows,
            max_seq_len=family.positions.longest(rows, pad),
            embedding_size=emb.word.embedding_dim,
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            activation=ACTIVATIONS[getattr(config, family.keys.activation)],
            hidden_dropout=float(getattr(config, family.keys.hidden_dropout)),
            attention_dropout=float(getattr(config, family.keys.attention_dropout)),
            padding_idx=pad,
        )


def _fused_qkv(view: LayerView, differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One [3H, H] weight and [3H] bias for the Q, K, V projections.

    The HF parameters keep their names; this is a cache derived from them, kept beside them on the
    attention module (one for an ALBERT layer however often it runs), rebuilt whenever one of them
    changes (a new tensor, an in-place update such as an optimizer step, a dtype or device move).
    Under autograd it is built fresh each call, so gradients flow to the three original parameters.
    """
    params = (view.query.weight, view.key.weight, view.value.weight, view.query.bias, view.key.bias, view.value.bias)
    if differentiable:
        return torch.cat(params[:3], 0), torch.cat(params[3:], 0)
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    owner = view.attention.__dict__
    cached = owner.get(FUSED_QKV_ATTR)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            w = torch.cat([p.detach() for p in params[:3]], 0).contiguous()  # (3H, H)
            b = torch.cat([p.detach() for p in params[3:]], 0).contiguous()  # (3H,)
        cached = (key, w, b)
        owner[FUSED_QKV_ATTR] = cached
    return cached[1], cached[2]


def _dropout(x: torch.Tensor, p: float, active: bool) -> torch.Tensor:
    return F.dropout(x, p, training=True) if active and p > 0 else x


def _dense_residual_layernorm(
    backend: str, x: torch.Tensor, dense: nn.Linear, norm: nn.LayerNorm, residual: torch.Tensor, dropout_p: float
) -> torch.Tensor:
    """norm(dropout(dense(x)) + residual): the attention output and FFN2 blocks of every family.

    Without dropout it is one fused op (GEMM, then bias + residual + LayerNorm in one row pass, or
    the residual in the GEMM's epilogue: see kernels.gemm_dispatch); with it, dropout comes between.
    """
    if dropout_p > 0:
        y = _dropout(ops.linear(backend, x, dense.weight, dense.bias), dropout_p, True)  # (T, H)
        return ops.layernorm(backend, y, norm.weight, norm.bias, norm.eps, residual)
    return ops.linear_residual_layernorm(
        backend, x, dense.weight, dense.bias, residual, norm.weight, norm.bias, norm.eps
    )  # (T, H)


def layer_forward(
    view: LayerView,
    h: torch.Tensor,  # (T, H)
    info: PackInfo,
    spec: Spec,
    backend: str,
    training: bool,
    rel_bias: torch.Tensor | None = None,  # (buckets, N): MPNet's relative-position bias table
) -> torch.Tensor:
    """One post-LN transformer layer on packed tokens: (T, H) -> (T, H)."""
    family = spec.family
    w_qkv, b_qkv = _fused_qkv(view, differentiable=backend == "torch" and torch.is_grad_enabled())
    p = spec.hidden_dropout if training else 0.0
    qkv = ops.linear(backend, h, w_qkv, b_qkv)  # (T, 3H)
    ctx = ops.attention(backend, qkv, info, spec.num_heads, spec.attention_dropout if training else 0.0, rel_bias)
    h = _dense_residual_layernorm(
        backend, ctx, view.out, view.attn_norm, h, p if family.attention_output_dropout else 0.0
    )  # (T, H)
    i = ops.linear(backend, h, view.ffn_in.weight, view.ffn_in.bias, spec.activation)  # (T, I)
    return _dense_residual_layernorm(
        backend, i, view.ffn_out, view.ffn_norm, h, p if family.ffn_output_dropout else 0.0
    )  # (T, H)


def packed_forward(
    bert: nn.Module,
    spec: Spec,
    info: PackInfo,
    input_ids: torch.Tensor | None,  # (T,)
    token_type_ids: torch.Tensor,  # (T,); ignored by families without token types
    position_ids: torch.Tensor,  # (T,)
    inputs_embeds: torch.Tensor | None,  # (T, E)
    backend: str,
    output_hidden_states: bool,
    first_token_index: torch.Tensor | None = None,  # (B,) rows the pooler reads; default info's
) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor] | None]:
    """The encoder on packed tokens. Returns (hidden (T, H), pooled (B, H) or None, all hidden states:
    the first layer's input, then each layer's output, as transformers lists them)."""
    family, training = spec.family, bert.training
    emb = family.embeddings(bert)
    types = None if emb.token_type is None else emb.token_type.weight
    h = ops.embed_layernorm(
        backend,
        input_ids,
        position_ids,
        None if types is None else token_type_ids,
        emb.word.weight,
        emb.position.weight,
        types,
        emb.norm.weight,
        emb.norm.bias,
        emb.norm.eps,
        inputs_embeds=inputs_embeds,
        padding_idx=emb.word.padding_idx,
    )  # (T, E)
    h = _dropout(h, spec.hidden_dropout, training)
    if emb.project is not None:
        h = ops.linear(backend, h, emb.project.weight, emb.project.bias)  # (T, H)
    states = [h] if output_hidden_states else None
    rel_bias = family.attention_bias(bert)  # (buckets, N) or None
    for view in family.layers(bert):
        h = layer_forward(view, h, info, spec, backend, training, rel_bias)  # (T, H)
        if states is not None:
            states.append(h)
    pooled = None
    pooler = family.pooler(bert)
    if pooler is not None:
        index = info.first_token_index if first_token_index is None else first_token_index
        first = h.index_select(0, index)  # (B, H): each sequence's first token
        pooled = ops.linear(backend, first, pooler.weight, pooler.bias, "tanh")  # (B, H)
    return h, pooled, states
