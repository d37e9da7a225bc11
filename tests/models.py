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


# One tiny config per encoder family (odd widths, 3 heads, no dropout), in transformers' own field names.
# RoBERTa-style families number positions from pad_token_id + 1, so their tables have 2 rows more.
_SIZES = dict(vocab_size=101, num_attention_heads=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
_BERTLIKE = dict(_SIZES, hidden_size=36, num_hidden_layers=2, intermediate_size=50, max_position_embeddings=70)
_ROBERTA = dict(_BERTLIKE, max_position_embeddings=72, type_vocab_size=1, pad_token_id=1)
_ALBERT = dict(_BERTLIKE, embedding_size=20, num_hidden_layers=3, num_hidden_groups=2, inner_group_num=2)
_ALBERT["classifier_dropout_prob"] = 0.0  # its classifier head has a dropout of its own
FAMILY_CONFIGS = {
    "bert": ("Bert", _BERTLIKE),
    "roberta": ("Roberta", _ROBERTA),
    "xlm-roberta": ("XLMRoberta", _ROBERTA),
    "camembert": ("Camembert", _ROBERTA),
    "distilbert": (
        "DistilBert",
        dict(vocab_size=101, dim=36, n_layers=2, n_heads=3, hidden_dim=50, max_position_embeddings=70)
        | dict(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0, qa_dropout=0.0),
    ),
    "electra": ("Electra", dict(_BERTLIKE, embedding_size=20)),
    # Three steps over two groups of two layers: steps 0, 1 run group 0, step 2 group 1 (six layers run).
    "albert": ("Albert", _ALBERT),
    "mpnet": ("MPNet", dict(_BERTLIKE, max_position_embeddings=72)),
}


def family_model(model_type: str, head: str = "Model", seed: int = 0, **overrides):
    """A tiny transformers model of `model_type`'s family (`head`: "Model", "ForSequenceClassification",
    ...), every parameter drawn fresh, in eval mode."""
    import transformers

    prefix, sizes = FAMILY_CONFIGS[model_type]
    config = getattr(transformers, f"{prefix}Config")(**{**sizes, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}{head}")(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def family_batch(model, lengths: list[int], seqlen: int, seed: int, left: bool = False):
    """input_ids (padding = the model's pad id), attention_mask (right padding, or left) and token_type_ids
    (a pair's second half gets type 1 where the model has two types, else None) for these lengths."""
    config = model.config
    g = torch.Generator().manual_seed(seed)
    pad = config.pad_token_id
    ids = torch.randint(pad + 1, config.vocab_size, (len(lengths), seqlen), generator=g)
    n = torch.tensor(lengths)[:, None]
    cols = torch.arange(seqlen)[None, :]
    mask = (cols >= seqlen - n) if left else (cols < n)  # (B, S)
    ids = ids.masked_fill(~mask, pad)
    types = None
    if getattr(config, "type_vocab_size", 1) > 1:
        start = seqlen - n if left else torch.zeros_like(n)
        types = ((cols >= start + torch.clamp(n // 2, min=1)) & mask).long()
    return ids, mask.long(), types
