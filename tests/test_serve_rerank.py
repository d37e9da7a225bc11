"""`bertfast serve` with a cross-encoder: /rerank's scores equal sentence-transformers'
CrossEncoder.predict() on a tiny random BERT cross-encoder saved here, truncation follows the request,
and the embedding routes are refused."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from .helpers import MODEL_ATOL_FP32, assert_close
from .models import randomize_
from .test_serve_process import ServerProcess

st = pytest.importorskip("sentence_transformers")
transformers = pytest.importorskip("transformers")

WORDS = "where is the old bridge over a river near town stones water light café 我喜欢 λόγος".split()
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def cross_encoder_dir(minilm_dir, tmp_path_factory):
    """A BertForSequenceClassification (one label, random weights) with MiniLM's vocabulary, saved by
    sentence-transformers' CrossEncoder as a user's folder would be."""
    d = str(tmp_path_factory.mktemp("cross_encoder"))
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        max_position_embeddings=MAX_LENGTH,
        num_labels=1,
    )
    seed = int(np.random.default_rng().integers(1 << 30))
    model = randomize_(transformers.BertForSequenceClassification(config), seed=seed).eval()
    model.save_pretrained(d)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        shutil.copy(os.path.join(minilm_dir, name), os.path.join(d, name))
    st.CrossEncoder(d, max_length=MAX_LENGTH, device="cpu").save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def reference(cross_encoder_dir):
    return st.CrossEncoder(cross_encoder_dir, device="cpu")


@pytest.fixture(scope="module")
def client(cross_encoder_dir):
    server = ServerProcess("--model", cross_encoder_dir)
    try:
        with server.wait_ready().client() as c:
            yield c
    finally:
        server.close()


def random_text(rng, lo=1, hi=12) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi + 1))))


def scores_by_index(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    ranked = response.json()
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True), "ranked by score, best first"
    assert sorted(r["index"] for r in ranked) == list(range(len(ranked)))
    out = np.empty(len(ranked), dtype=np.float32)
    for r in ranked:
        out[r["index"]] = r["score"]
    return out


def close(actual, expected, what):
    expected = torch.as_tensor(np.asarray(expected, dtype=np.float32))
    assert_close(torch.from_numpy(actual), expected, MODEL_ATOL_FP32, what)


@pytest.mark.parametrize("n", [1, 33])
def test_rerank_scores_equal_cross_encoder_predict(client, reference, n):
    rng = np.random.default_rng()
    query, texts = random_text(rng), [random_text(rng) for _ in range(n)]
    r = client.post("/rerank", json={"query": query, "texts": texts, "return_text": True})
    ours = scores_by_index(r)
    expected = reference.predict([(query, t) for t in texts])
    close(ours, expected, "rerank scores (sigmoid)")
    assert all(entry["text"] == texts[entry["index"]] for entry in r.json())
    assert "text" not in client.post("/rerank", json={"query": query, "texts": texts}).json()[0]


def test_raw_scores_are_the_logits(client, reference):
    rng = np.random.default_rng()
    query, texts = random_text(rng), [random_text(rng) for _ in range(7)]
    ours = scores_by_index(client.post("/rerank", json={"query": query, "texts": texts, "raw_scores": True}))
    expected = reference.predict([(query, t) for t in texts], activation_fn=torch.nn.Identity())
    close(ours, expected, "raw scores")
    default = scores_by_index(client.post("/rerank", json={"query": query, "texts": texts}))
    close(default, 1 / (1 + np.exp(-ours.astype(np.float64))), "the default scores are the sigmoid of the logits")


def test_a_too_long_pair_is_truncated_only_when_asked(client, reference):
    rng = np.random.default_rng()
    query = random_text(rng)
    texts = [random_text(rng), random_text(rng, 80, 90)]  # the second pair is past 64 tokens
    r = client.post("/rerank", json={"query": query, "texts": texts})
    assert r.status_code == 422 and r.json()["error"].startswith("texts[1]:"), r.text
    assert "truncate" in r.json()["error"]
    ours = scores_by_index(client.post("/rerank", json={"query": query, "texts": texts, "truncate": True}))
    close(ours, reference.predict([(query, t) for t in texts]), "truncated pairs (longest first)")


@pytest.mark.parametrize(
    "body, words",
    [
        ({"query": "q", "texts": []}, "texts: List should have at least 1 item"),
        ({"query": "q", "texts": ["a", "b", 3]}, "texts[2]: Input should be a valid string"),
        ({"texts": ["a"]}, "query: Field required"),
        ({"query": "q", "texts": ["a"], "raw_scores": "no"}, "raw_scores: Input should be a valid boolean"),
        ({"query": ["q"], "texts": ["a"]}, "query: Input should be a valid string"),
        ({"query": "q", "texts": ["a", "\ud800"]}, "texts[1]: holds a lone surrogate"),
        ({"query": "q\udfff", "texts": ["a"]}, "query: holds a lone surrogate"),
    ],
)
def test_bad_rerank_input_is_a_422_naming_the_field(client, body, words):
    content = json.dumps(body).encode()  # ASCII escapes: a lone surrogate travels as JSON allows it
    r = client.post("/rerank", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error_type"] == "Validation", r.text
    assert r.json()["error"].startswith(words), r.text


def test_the_embedding_routes_are_refused_by_a_reranker(client):
    r = client.post("/embed", json={"inputs": "a"})
    assert r.status_code == 400 and "runs a reranker" in r.json()["error"] and "/rerank" in r.json()["error"], r.text
    r = client.post("/v1/embeddings", json={"input": "a"})
    assert r.status_code == 400 and "runs a reranker" in r.json()["error"]["message"], r.text
    info = client.get("/info").json()
    assert info["model_type"] == "reranker" and info["max_input_length"] == MAX_LENGTH and info["dimension"] is None
