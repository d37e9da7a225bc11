"""Fine-tune the embedded MiniLM on a small English + Chinese sentiment set; print held-out accuracy.

python examples/sentiment.py            # ~1 minute on 2 CPU cores
"""

from __future__ import annotations

import random
import time

import torch
from _common import DATA, fine_tune, model_dir, setup, tokenizer, training_args

import bertfast
from bertfast.data import batch_sentences


def load(path):
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t", 1) for line in f][1:]
    return [t for _, t in rows], [int(y) for y, _ in rows]


def accuracy(model, tok, texts, labels, bs=64):
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(texts), bs):
            b = batch_sentences(tok, texts[i : i + bs], max_length=64)
            right += int((model(**b).logits.argmax(-1) == torch.tensor(labels[i : i + bs])).sum())
    return right / len(texts)


def main(argv=None):
    args = training_args(argv, epochs=3)
    setup(0)
    t0 = time.time()
    texts, labels = load(DATA / "sentiment.tsv")
    n_test = len(texts) // 5  # the last 20% is held out
    train, test = (texts[:-n_test], labels[:-n_test]), (texts[-n_test:], labels[-n_test:])
    path = model_dir()
    tok = tokenizer(path)
    model = bertfast.BertForSequenceClassification.from_pretrained(path, num_labels=2)
    print(
        f"train {len(train[0])}, held out {len(test[0])}; held-out accuracy before: {accuracy(model, tok, *test):.3f}"
    )

    def make_batch(idx):
        return batch_sentences(tok, [train[0][i] for i in idx], [train[1][i] for i in idx], max_length=64)

    step = fine_tune(
        model,
        len(train[0]),
        make_batch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_steps=args.max_steps,
        rng=random.Random(0),
    )
    acc = accuracy(model, tok, *test)
    zh = [i for i, t in enumerate(test[0]) if not t.isascii()]
    acc_zh = accuracy(model, tok, [test[0][i] for i in zh], [test[1][i] for i in zh]) if zh else float("nan")
    print(
        f"held-out accuracy: {acc:.3f} (Chinese subset {acc_zh:.3f}, n={len(zh)}) "
        f"after {step} steps, {time.time() - t0:.1f} s"
    )
    return acc


if __name__ == "__main__":
    main()
