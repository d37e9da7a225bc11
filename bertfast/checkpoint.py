"""Reading BERT checkpoints: safetensors or pytorch_model.bin, strictly and safely.

A `.bin` is read with `torch.load(weights_only=True)` only, so a checkpoint can never run code.
Legacy names are mapped to today's (`LayerNorm.gamma/beta` -> `weight/bias`); the old
`embeddings.position_ids` buffer is dropped. Which keys a model expects, and what to do with the
rest, is the model's business (modeling.py): this module only reads and renames.
"""

from __future__ import annotations

import os
import re

import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# Keys that old checkpoints carry which are not parameters of the model.
_DROPPED = re.compile(r"(^|\.)embeddings\.position_ids$")


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
