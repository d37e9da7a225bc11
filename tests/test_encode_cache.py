"""bertfast.encode(): one model per (folder, device, dtype, backend), reused, bounded, thread-safe."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import bertfast
from bertfast import encode_cache
from bertfast.sentence import SentenceEncoder

from .helpers import ATOL, assert_close

WORDS = ["the", "river", "bank", "我", "喜欢", "苹果", "naïve", "café", "kernel", "42", "e-mail", "a"]


def random_texts(n: int) -> list[str]:
    rng = np.random.default_rng()
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 30)))) for _ in range(n)]


@pytest.fixture()
def loads(monkeypatch):
    """A fresh cache, and the list of folders SentenceEncoder.from_pretrained loaded during the test."""
    encode_cache.clear()
    seen: list[str] = []
    load = SentenceEncoder.from_pretrained.__func__

    def counting(cls, model_dir=None, **kwargs):
        seen.append(model_dir)
        return load(cls, model_dir, **kwargs)

    monkeypatch.setattr(SentenceEncoder, "from_pretrained", classmethod(counting))
    yield seen
    encode_cache.clear()


def test_second_call_reuses_the_model_and_gives_the_same_vectors(loads, minilm_dir):
    st = pytest.importorskip("sentence_transformers")
    texts = random_texts(33)
    first = bertfast.encode(texts, minilm_dir, batch_size=8)
    encoder = encode_cache.cached_encoder(minilm_dir)
    second = bertfast.encode(texts, minilm_dir, batch_size=8)
    assert len(loads) == 1, loads
    assert encode_cache.cached_encoder(minilm_dir, device=torch.device("cpu"), dtype="fp32") is not encoder
    assert encode_cache.cached_encoder(minilm_dir, device="cpu") is encoder  # same key spelled as at first
    assert len(loads) == 2
    np.testing.assert_array_equal(first, second)
    reference = st.SentenceTransformer(minilm_dir, device="cpu").encode(texts)
    assert_close(torch.from_numpy(second), torch.from_numpy(reference), ATOL[torch.float32], "cached encode")


def test_cache_is_bounded_least_recently_used_first(loads, minilm_dir, monkeypatch):
    monkeypatch.setattr(encode_cache, "MAX_MODELS", 2)
    a = encode_cache.cached_encoder(minilm_dir, backend="auto")
    b = encode_cache.cached_encoder(minilm_dir, backend="torch")
    assert encode_cache.cached_encoder(minilm_dir, backend="auto") is a  # now the most recently used
    encode_cache.cached_encoder(minilm_dir, dtype="float32")  # a third key: evicts b
    assert encode_cache.cached_encoder(minilm_dir, backend="auto") is a
    assert encode_cache.cached_encoder(minilm_dir, backend="torch") is not b
    assert len(loads) == 4


def test_concurrent_first_calls_load_once(loads, minilm_dir):
    texts = random_texts(9)
    results: list = [None] * 6
    start = threading.Barrier(len(results))

    def call(i: int) -> None:
        start.wait()
        results[i] = bertfast.encode(texts, minilm_dir)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1, loads
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_a_failed_load_is_not_cached_and_bad_arguments_name_themselves(loads, minilm_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bertfast.encode(["hi"], tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        bertfast.encode(["hi"], tmp_path / "missing")
    assert len(loads) == 2, "a failed load must be retried, not remembered"
    with pytest.raises(ValueError, match="device"):
        bertfast.encode(["hi"], minilm_dir, device="tpu")
    with pytest.raises(ValueError, match="dtype"):
        bertfast.encode(["hi"], minilm_dir, dtype="fp8")
    assert len(loads) == 2
