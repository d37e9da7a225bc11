"""The sentence-transformers workload on the CPU: plain MiniLM against bertfast-optimized MiniLM."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sentence_transformers")
pytest.importorskip("bertfast.bench")
from bertfast.bench import st  # noqa: E402

from .helpers import EMBED_ATOL_FP32, SUM_ORDER_ATOL_FP32


def test_compare_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[1.0, 0.5], [0.0, 2.0], [3.0, 4.0]])
    got = st.compare(a, b)
    assert got["max_abs_diff"] == pytest.approx(0.5)
    assert got["min_cosine"] == pytest.approx(1.0 / (1.25**0.5))
    with pytest.raises(ValueError, match="shape"):
        st.compare(a, b[:2])


def test_st_workload_on_cpu(minilm_dir, monkeypatch):
    monkeypatch.setenv("BERTFAST_MINILM_DIR", minilm_dir)
    got = st.st_workload(torch.device("cpu"), torch.float32, n_sentences=19, batch_sizes=[4, 16], repeats=1)
    assert "skipped" not in got, got
    assert got["dtype"] == "float32" and got["n_sentences"] == 19 and [r["batch_size"] for r in got["rows"]] == [4, 16]
    for r in got["rows"]:
        assert r["plain_sent_per_s"] > 0 and r["bertfast_sent_per_s"] > 0
        assert r["speedup"] == pytest.approx(r["bertfast_sent_per_s"] / r["plain_sent_per_s"])
        # Same model, fp32, torch path: the embeddings agree to fp32 rounding.
        assert r["max_abs_diff"] <= SUM_ORDER_ATOL_FP32 and r["min_cosine"] >= 1 - EMBED_ATOL_FP32
    with pytest.raises(ValueError, match="batch"):
        st.st_workload(torch.device("cpu"), torch.float32, n_sentences=10, batch_sizes=[0])


def test_st_workload_reports_a_missing_checkpoint(monkeypatch, tmp_path):
    from bertfast.bench import models

    (tmp_path / "config.json").write_text("{}")
    with models.use_minilm_dir(str(tmp_path)):
        got = st.st_workload(torch.device("cpu"), torch.float32, n_sentences=4, batch_sizes=[2], repeats=1)
    assert got["rows"] == [] and got["skipped"]
