"""The plain PyTorch math of BERT: the oracle every kernel and every fast path is checked against.

Written to be read, not to be fast: padded [B, S] inputs, an additive attention mask, fp32 (or
whatever dtype the caller upcasts to) everywhere, one function per block of the model. It takes a
state dict with Hugging Face's parameter names (`embeddings.word_embeddings.weight`,
`encoder.layer.0.attention.self.query.weight`, ...), so it runs any BERT checkpoint, ours or HF's.

Shapes: B batch, S sequence length, H hidden size, N heads, D = H / N head size, I intermediate size.
"""

from __future__ import annotations

import math

import torch

from .config import BertConfig

Params = dict[str, torch.Tensor]


def activation_ref(x: torch.Tensor, name: str) -> torch.Tensor:
    """The activations BERT configs name, in their textbook forms (canonical names, see config.ACTIVATIONS)."""
    if name == "gelu":  # exact: x * Phi(x)
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":  # gelu_new / gelu_pytorch_tanh
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == "gelu_fast":  # the same curve, HF's rounded constant
        return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "relu":
        return torch.clamp_min(x, 0.0)
    if name == "silu":
        return x * torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    raise ValueError(f"unknown activation {name!r}")


def layer_norm_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased variance, as BERT's LayerNorm
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = x @ weight.t()
    return y if bias is None else y + bias


def embeddings_ref(
    p: Params,
    cfg: BertConfig,
    input_ids: torch.Tensor,  # (B, S)
    token_type_ids: torch.Tensor,  # (B, S)
    position_ids: torch.Tensor,  # (B, S) or (1, S)
) -> torch.Tensor:
    words = p["embeddings.word_embeddings.weight"][input_ids]  # (B, S, H)
    positions = p["embeddings.position_embeddings.weight"][position_ids]  # (B|1, S, H)
    types = p["embeddings.token_type_embeddings.weight"][token_type_ids]  # (B, S, H)
    x = words + positions + types  # (B, S, H)
    return layer_norm_ref(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)


def self_attention_ref(
    p: Params,
    prefix: str,
    cfg: BertConfig,
    x: torch.Tensor,  # (B, S, H)
    attention_mask: torch.Tensor,  # (B, S), 1 = real token, 0 = padding
) -> torch.Tensor:
    B, S, H = x.shape
    N, D = cfg.num_attention_heads, cfg.head_dim

    def heads(name: str) -> torch.Tensor:
        y = linear_ref(x, p[f"{prefix}.{name}.weight"], p[f"{prefix}.{name}.bias"])  # (B, S, H)
        return y.view(B, S, N, D).transpose(1, 2)  # (B, N, S, D)

    q, k, v = heads("query"), heads("key"), heads("value")
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)  # (B, N, S, S)
    keep = attention_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, S)
    scores = scores.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # (B, N, S, S)
    ctx = probs @ v  # (B, N, S, D)
    return ctx.transpose(1, 2).reshape(B, S, H)  # (B, S, H)


def layer_ref(p: Params, i: int, cfg: BertConfig, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    pre = f"encoder.layer.{i}"
    eps = cfg.layer_norm_eps
    ctx = self_attention_ref(p, f"{pre}.attention.self", cfg, x, attention_mask)  # (B, S, H)
    attn = linear_ref(ctx, p[f"{pre}.attention.output.dense.weight"], p[f"{pre}.attention.output.dense.bias"])
    x = layer_norm_ref(
        attn + x, p[f"{pre}.attention.output.LayerNorm.weight"], p[f"{pre}.attention.output.LayerNorm.bias"], eps
    )  # (B, S, H)
    inter = activation_ref(
        linear_ref(x, p[f"{pre}.intermediate.dense.weight"], p[f"{pre}.intermediate.dense.bias"]), cfg.activation
    )  # (B, S, I)
    out = linear_ref(inter, p[f"{pre}.output.dense.weight"], p[f"{pre}.output.dense.bias"])  # (B, S, H)
    return layer_norm_ref(out + x, p[f"{pre}.output.LayerNorm.weight"], p[f"{pre}.output.LayerNorm.bias"], eps)


def pooler_ref(p: Params, sequence_output: torch.Tensor) -> torch.Tensor:
    first = sequence_output[:, 0]  # (B, H): the [CLS] token
    return torch.tanh(linear_ref(first, p["pooler.dense.weight"], p["pooler.dense.bias"]))  # (B, H)


def bert_ref(
    p: Params,
    cfg: BertConfig,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
    """The whole encoder. Returns (sequence_output (B, S, H), pooled (B, H) or None, hidden states).

    Keys may carry a `bert.` prefix (as in BertFor* checkpoints); it is stripped.
    """
    p = {k.removeprefix("bert."): v for k, v in p.items()}
    B, S = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones(B, S, dtype=torch.long, device=input_ids.device)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    if position_ids is None:
        position_ids = torch.arange(S, device=input_ids.device)[None, :]
    x = embeddings_ref(p, cfg, input_ids, token_type_ids, position_ids)  # (B, S, H)
    hidden = [x]
    for i in range(cfg.num_hidden_layers):
        x = layer_ref(p, i, cfg, x, attention_mask)  # (B, S, H)
        hidden.append(x)
    pooled = pooler_ref(p, x) if "pooler.dense.weight" in p else None
    return x, pooled, hidden
