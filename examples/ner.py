"""Fine-tune the embedded MiniLM for NER (BIO tags, persons and places; English and Chinese) with
BertForTokenClassification; print held-out entity-level (span) F1.

    python examples/ner.py                  # ~1 minute on 2 CPU cores
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import DATA, fine_tune, model_dir, setup, tokenizer, training_args

import bertfast
from bertfast.data import IGNORE_INDEX, batch_token_labels

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TAG_ID = {t: i for i, t in enumerate(TAGS)}


def load(path):
    sents, words, tags = [], [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.rstrip("\n")
        if not line:
            if words:
                sents.append((words, tags))
            words, tags = [], []
            continue
        w, t = line.split("\t")
        words.append(w)
        tags.append(t)
    if words:
        sents.append((words, tags))
    return sents


# ------------------------------------------------------------------ entity-level evaluation (conlleval)
def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """BIO tags -> {(type, start, end_exclusive)}; an I- without a matching B- starts an entity (conlleval)."""
    spans, cur = set(), None
    for i, tag in enumerate(list(tags) + ["O"]):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if cur is not None and (tag.startswith("B-") or kind != cur[0]):
            spans.add((cur[0], cur[1], i))
            cur = None
        if kind is not None and cur is None:
            cur = (kind, i)
    return spans


def span_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 over sentences of BIO tags (exact span and type match)."""
    if len(gold) != len(pred):
        raise ValueError(f"pred must hold one tag list per sentence ({len(gold)}), got {len(pred)}")
    tp = n_gold = n_pred = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"pred[{i}] must hold {len(g)} tags, got {len(p)}")
        gs, ps = entity_spans(g), entity_spans(p)
        tp += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def predict(model, tok, sents, bs=64):
    """Word-level tags: each word takes the prediction at its first piece (where its label sits)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(sents), bs):
            chunk = sents[i : i + bs]
            # dummy labels (all 0) only to find the first piece of every word
            b = batch_token_labels(tok, [w for w, _ in chunk], [[0] * len(w) for w, _ in chunk], max_length=96)
            first = b.pop("labels") != IGNORE_INDEX
            pred = model(**b).logits.argmax(-1)
            for r, (words, _) in enumerate(chunk):
                tags = [TAGS[int(p)] for p in pred[r][first[r]]]
                out.append(tags + ["O"] * (len(words) - len(tags)))  # words cut by max_length: O
    return out


def main(argv=None):
    args = training_args(argv, epochs=4)
    setup(0)
    t0 = time.time()
    sents = load(DATA / "ner.tsv")
    n_test = 40  # the last 40 sentences: names and places never seen in training (examples/make_data.py)
    train, test = sents[:-n_test], sents[-n_test:]
    path = model_dir()
    tok = tokenizer(path)
    model = bertfast.BertForTokenClassification.from_pretrained(path, num_labels=len(TAGS))
    print(f"train {len(train)}, held out {len(test)} sentences")

    def make_batch(idx):
        words = [train[i][0] for i in idx]
        labels = [[TAG_ID[t] for t in train[i][1]] for i in idx]
        return batch_token_labels(tok, words, labels, max_length=96)

    step = fine_tune(
        model,
        len(train),
        make_batch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_steps=args.max_steps,
        rng=random.Random(0),
    )
    m = span_f1([t for _, t in test], predict(model, tok, test))
    print(
        f"held-out entity F1: {m['f1']:.3f} (precision {m['precision']:.3f}, recall {m['recall']:.3f}) "
        f"after {step} steps, {time.time() - t0:.1f} s"
    )
    return m["f1"]


if __name__ == "__main__":
    main()
