"""Reading BERT checkpoints: safetensors or pytorch_model.bin, strictly and safely.

A `.bin` is read with `torch.load(weights_only=True)` only, so a checkpoint can never run code.
Legacy names are mapped to today's (`LayerNorm.gamma/beta` -> `weight/bias`); the old
`embeddings.position_ids` buffer is dropped. Which keys a model expects, and what to do with the
rest, is the model's to say (modeling.py); `load_strict` enforces it.
"""

from __future__ import annotations

import os
import re
import warnings

import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# Keys that old checkpoints carry which are not parameters of the model.
_DROPPED = re.compile(r"(^|\.)embeddings\.position_ids$")

# How many keys of each kind (missing, unexpected, mis-shaped) a loading error names before counting the rest.
LISTED_KEYS = 5


class CheckpointError(ValueError):
    """A weights file that is missing, malformed, or does not fit the model."""


def find_weights(model_dir: str | os.PathLike) -> str:
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
    for name in WEIGHT_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            return path
    sharded = [f for f in os.listdir(model_dir) if f.endswith(".index.json")]
    if sharded:
        raise CheckpointError(f"{model_dir}: sharded checkpoints ({sharded[0]}) are not supported")
    raise FileNotFoundError(f"no weights in {model_dir!r}: expected one of {', '.join(WEIGHT_FILES)}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of one weights file, on the CPU, with legacy names normalized."""
    path = os.fspath(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            raw = load_file(path, device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated, corrupt or code-carrying file: say which file, and why
        raise CheckpointError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in raw.items()):
        raise CheckpointError(f"weights file {path} does not hold a flat dict of named tensors")
    return normalize_keys(raw)


def normalize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _DROPPED.search(key):
            continue
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        out[key] = value
    return out


def _first_few(items: list[str], shown: int = LISTED_KEYS) -> str:
    """The first `shown` items and a count of the rest: a checkpoint of another model would otherwise
    print every one of its hundreds of keys on one line."""
    head = ", ".join(items[:shown])
    return head if len(items) <= shown else f"{head}, ... and {len(items) - shown} more"


def load_strict(model, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load `state` into a bertfast model strictly: every parameter must come from the checkpoint (or
    belong to a fresh task head, initialized as BERT does and listed in `model.newly_initialized_keys`),
    nothing unknown may be left over, and every shape must match. Errors name the first LISTED_KEYS
    offending keys of each kind and count the rest.

    The model says what it expects through `_expected_keys()`, `_tied_keys()`, `base_prefix` ("" or
    "bert.") and `head_prefixes`; another task's head in the checkpoint is skipped.
    """
    expected = model._expected_keys()
    tied = model._tied_keys()
    encoder_roots = ("embeddings.", "encoder.", "pooler.")
    own_heads = model.head_prefixes
    other_heads = tuple(p for p in ("cls.", "classifier.", "qa_outputs.") if p not in own_heads)

    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    unexpected: list[str] = []
    for key, value in state.items():
        base = key.removeprefix("bert.")
        if base.startswith(encoder_roots):
            name = model.base_prefix + base
            if name not in expected and base.startswith("pooler."):
                ignored.append(key)  # the checkpoint has a pooler this model does not use
                continue
        else:
            name = key
        if name == "cls.predictions.decoder.bias" and "cls.predictions.bias" in expected:
            mapped.setdefault("cls.predictions.bias", value)  # the same vector under its other name
            continue
        if name in tied:
            continue  # tied to another parameter; the checkpoint's copy is redundant
        if name in expected:
            mapped[name] = value
        elif name.startswith(other_heads) or (
            name.startswith(own_heads) and own_heads and not name.startswith(tuple(expected))
        ):
            ignored.append(key)  # another task's head: not part of this model
        else:
            unexpected.append(key)

    missing = [k for k in expected if k not in mapped and k not in tied]
    head_missing = [k for k in missing if own_heads and k.startswith(own_heads)]
    head_present = [k for k in expected if own_heads and k.startswith(own_heads) and k in mapped]
    fresh_head = bool(head_missing) and not head_present
    missing = [k for k in missing if not (fresh_head and k in head_missing)]
    errors = []
    if missing:
        hint = ""
        if any(k.endswith("pooler.dense.weight") for k in missing):
            hint = " (a checkpoint without a pooler loads with add_pooling_layer=False)"
        errors.append(f"missing keys{hint}: {_first_few(missing)}")
    if unexpected:
        errors.append(f"unexpected keys: {_first_few(unexpected)}")
    mismatched = [
        f"{name} (checkpoint {tuple(value.shape)}, model {tuple(expected[name].shape)})"
        for name, value in mapped.items()
        if tuple(value.shape) != tuple(expected[name].shape)
    ]
    if mismatched:
        errors.append(f"shape mismatch for {_first_few(mismatched)}")
    if errors:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(errors))

    model.init_weights()  # fresh heads get BERT's init; everything else is overwritten below
    with torch.no_grad():
        for name, value in mapped.items():
            expected[name].copy_(value.to(expected[name].dtype))
    model.tie_weights()
    model.newly_initialized_keys = head_missing if fresh_head else []
    if fresh_head:
        warnings.warn(
            f"{type(model).__name__}: {source} has no weights for the task head "
            f"({', '.join(head_missing)}); they are freshly initialized: train before use",
            stacklevel=4,  # the caller of from_pretrained / load_checkpoint
        )
