"""Tiny random BERTs for tests: HF's and ours, with identical, non-trivial weights."""

from __future__ import annotations

import torch

TINY = dict(
    vocab_size=211,
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=72,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def hf_config(**overrides):
    import transformers

    return transformers.BertConfig(**{**TINY, **overrides})


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn fresh (LayerNorm gains around 1), so no test runs on init constants."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def hf_model(cls_name: str = "BertModel", seed: int = 0, **overrides):
    import transformers

    torch.manual_seed(seed)
    cls = getattr(transformers, cls_name)
    return randomize_(cls(hf_config(**overrides)), seed).eval()


def ragged_batch(batch: int, seqlen: int, vocab: int, seed: int, pairs: bool = True, mask_dtype=torch.long):
    """input_ids, attention_mask (right padding, lengths from 1 to seqlen), token_type_ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, seqlen), generator=g)
    lengths = torch.randint(1, seqlen + 1, (batch,), generator=g)
    lengths[0] = seqlen
    lengths[-1] = 1 if batch > 1 else seqlen
    mask = (torch.arange(seqlen)[None, :] < lengths[:, None]).to(mask_dtype)
    types = torch.zeros(batch, seqlen, dtype=torch.long)
    if pairs:
        split = torch.clamp(lengths // 2, min=1)
        types = ((torch.arange(seqlen)[None, :] >= split[:, None]) & mask.bool()).long()
    ids = ids * mask.long()  # padding id 0 at padded positions, as tokenizers do
    return ids, mask, types
