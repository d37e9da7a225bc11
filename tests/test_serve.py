"""`bertfast serve` with the embedded MiniLM over real HTTP: each route's vectors equal encode()'s (and
sentence-transformers'), concurrent clients get their own rows, every bad input is a 4xx naming its
field, the API key guards every route but /health, and memory stays flat under load."""

from __future__ import annotations

import base64
import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from .helpers import ATOL, EMBED_ATOL_FP32, assert_close
from .test_serve_process import ServerProcess, httpx

API_KEY = "test-key-0123456789"
WORDS = "the river bank of a quiet town holds old stones and bright 我喜欢吃苹果 café naïve λόγος".split()


def random_texts(n: int, rng: np.random.Generator, max_words: int = 40) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, max_words + 1)))) for _ in range(n)]


@pytest.fixture(scope="module")
def server():
    s = ServerProcess("--max-batch-tokens", "2048", api_key=API_KEY)
    try:
        yield s.wait_ready()
    finally:
        s.close()


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    from bertfast.sentence import SentenceEncoder

    return SentenceEncoder.from_pretrained(minilm_dir, backend="torch")


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


def vectors(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    body = response.json()
    if isinstance(body, dict):
        assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
        return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    return np.array(body, dtype=np.float32)


def close(actual: np.ndarray, expected: np.ndarray, atol: float, what: str) -> None:
    assert_close(torch.from_numpy(actual), torch.from_numpy(np.asarray(expected, dtype=np.float32)), atol, what)


# ------------------------------------------------------------------------------------------ the routes


def test_openai_embeddings_equal_sentence_transformers(client, minilm_dir, hf_tokenizer):
    st = pytest.importorskip("sentence_transformers")
    rng = np.random.default_rng()
    texts = random_texts(33, rng) + ["x"]
    r = client.post("/v1/embeddings", json={"input": texts, "model": "my-name"})
    ours = vectors(r)
    ref = st.SentenceTransformer(minilm_dir, device="cpu").encode(texts, convert_to_numpy=True)
    close(ours, ref, ATOL[torch.float32], "/v1/embeddings vs sentence-transformers")
    body = r.json()
    tokens = sum(len(ids) for ids in hf_tokenizer(texts)["input_ids"])
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert body["model"] == "my-name" and body["object"] == "list"
    assert client.post("/v1/embeddings", json={"input": "x"}).json()["model"] == "all-MiniLM-L6-v2"


def test_one_string_token_ids_and_lists_of_them_equal_encode(client, encoder, hf_tokenizer):
    rng = np.random.default_rng()
    texts = random_texts(5, rng)
    ref = encoder.encode(texts)
    ids = hf_tokenizer(texts)["input_ids"]
    close(vectors(client.post("/v1/embeddings", json={"input": texts[0]})), ref[:1], EMBED_ATOL_FP32, "one string")
    close(vectors(client.post("/v1/embeddings", json={"input": ids[1]})), ref[1:2], EMBED_ATOL_FP32, "token ids")
    mixed = [texts[0], ids[1], ids[2], texts[3], texts[4]]
    close(vectors(client.post("/v1/embeddings", json={"input": mixed})), ref, EMBED_ATOL_FP32, "ids and texts")
    close(vectors(client.post("/embed", json={"inputs": ids})), ref, EMBED_ATOL_FP32, "/embed token ids")


def test_base64_is_little_endian_float32_of_the_same_vectors(client):
    texts = random_texts(7, np.random.default_rng())
    floats = vectors(client.post("/v1/embeddings", json={"input": texts}))
    r = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]])
    assert decoded.shape == floats.shape == (7, 384)
    assert np.array_equal(decoded, floats)


@pytest.mark.parametrize("dimensions", [1, 33, 127, 384])
def test_dimensions_truncate_and_renormalize(client, encoder, dimensions):
    texts = random_texts(3, np.random.default_rng())
    ref = encoder.encode(texts)[:, :dimensions]
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    ours = vectors(client.post("/v1/embeddings", json={"input": texts, "dimensions": dimensions}))
    assert ours.shape == (3, dimensions)
    close(ours, ref, EMBED_ATOL_FP32, f"dimensions={dimensions}")


def test_tei_embed_normalizes_and_truncates_as_asked(client, encoder):
    rng = np.random.default_rng()
    texts = random_texts(4, rng) + [" ".join(rng.choice(WORDS, size=400))]  # past 256 tokens
    ref = encoder.encode(texts, normalize_embeddings=False)  # encode() truncates at the model's length
    raw = vectors(client.post("/embed", json={"inputs": texts, "normalize": False, "truncate": True}))
    close(raw, ref, EMBED_ATOL_FP32, "/embed normalize=false truncate=true")
    unit = vectors(client.post("/embed", json={"inputs": texts[:4]}))
    close(unit, ref[:4] / np.linalg.norm(ref[:4], axis=1, keepdims=True), EMBED_ATOL_FP32, "/embed normalize=true")
    single = vectors(client.post("/embed", json={"inputs": texts[2]}))
    close(single, unit[2:3], EMBED_ATOL_FP32, "/embed one string")


def test_too_long_is_refused_naming_its_index_where_nothing_truncates(client):
    long_text = " ".join(["word"] * 300)
    r = client.post("/embed", json={"inputs": ["short", long_text]})
    assert r.status_code == 422 and "inputs[1]" in r.json()["error"] and "truncate" in r.json()["error"], r.text
    r = client.post("/v1/embeddings", json={"input": ["a", "b", long_text]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[2]", r.text
    r = client.post("/v1/embeddings", json={"input": [[101] + [2000] * 300 + [102]]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[0]", r.text


# ------------------------------------------------------------------------------------------ bad input

TOO_MANY = json.dumps({"input": ["a"] * 2049})
BAD_OPENAI = [
    (b'{"input": ["a", ', "body", "not valid JSON"),
    (b'["a"]', "body", "JSON object"),
    (b"{}", "input", "required"),
    (b'{"input": 3}', "input", "got a number"),
    (b'{"input": ["a", null]}', "input[1]", "got null"),
    (b'{"input": []}', "input", "empty"),
    (b'{"input": [[]]}', "input[0]", "empty"),
    (b'{"input": [[101, 2.5]]}', "input[0][1]", "integer token id"),
    (b'{"input": [101, 30522]}', "input[1]", "outside the vocabulary"),
    (b'{"input": [[101], [-1]]}', "input[1][0]", "outside the vocabulary"),
    (b'{"input": "a", "encoding_format": "bin"}', "encoding_format", "'float' or 'base64'"),
    (b'{"input": "a", "dimensions": 0}', "dimensions", "greater than or equal to 1"),
    (b'{"input": "a", "dimensions": "3"}', "dimensions", "integer"),
    (b'{"input": "a", "dimensions": 385}', "dimensions", "width 384"),
    (b'{"input": "a", "model": 7}', "model", "string"),
    (b'{"input": ["a", "b\\ud800c"]}', "input[1]", "lone surrogate at character 1"),
    (TOO_MANY.encode(), "input", "2049 inputs, more than the 2048"),
]
BAD_TEI = [
    ("/embed", b'{"inputs": "a", "normalize": "yes"}', "normalize", "boolean"),
    ("/embed", b'{"inputs": "a", "truncate": 1}', "truncate", "boolean"),
    ("/embed", b'{"inputs": []}', "inputs", "empty"),
    ("/embed", b'{"inputs": {"text": "a"}}', "inputs", "got an object"),
    ("/embed", b'{"inputs": "a", "truncation_direction": "Left"}', "truncation_direction", "Right"),
    ("/embed", b'{"inputs": "a"', "body", "not valid JSON"),
    ("/rerank", b'{"query": "q", "texts": ["a"]}', None, "this server runs an embedding model"),
]


@pytest.mark.parametrize("body, param, words", BAD_OPENAI, ids=[b[:40].decode() for b, _, _ in BAD_OPENAI])
def test_bad_openai_input_is_a_400_in_openai_error_shape(client, body, param, words):
    r = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert words in error["message"] and error["message"].startswith(param), error
    assert "Traceback" not in r.text


@pytest.mark.parametrize("route, body, param, words", BAD_TEI, ids=[f"{r} {b[:40].decode()}" for r, b, _, _ in BAD_TEI])
def test_bad_tei_input_is_a_4xx_in_tei_error_shape(client, route, body, param, words):
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), r.text
    error = r.json()
    assert error["error_type"] == "Validation" and words in error["error"], error
    assert param is None or error["error"].startswith(param + ":"), error
    assert "Traceback" not in r.text


def test_a_body_over_2_mb_is_a_413_whether_its_length_is_declared_or_not(client):
    big = json.dumps({"input": ["word " * 1000] * 420}).encode()  # ~2.1 MB
    assert len(big) > 2 * 1024 * 1024
    r = client.post("/v1/embeddings", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["param"] == "body", r.text

    def chunks():  # no Content-Length: sent chunked
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "2097152 bytes" in r.json()["error"], r.text
    assert client.post("/embed", json={"inputs": "still fine"}).status_code == 200


def test_api_key_guards_every_route_but_health(server):
    with httpx.Client(base_url=server.url, timeout=60) as anonymous:
        assert anonymous.get("/health").status_code == 200
        for method, route in [("POST", "/v1/embeddings"), ("POST", "/embed"), ("POST", "/rerank")] + [
            ("GET", "/info"),
            ("GET", "/metrics"),
        ]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}):
                r = anonymous.request(method, route, json={"inputs": "a", "input": "a"}, headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (route, headers, r.text)
        r = anonymous.post("/v1/embeddings", json={"input": "a"}, headers={"Authorization": "Bearer another-key"})
        assert r.status_code == 200, "every key in the file is accepted"
        r = anonymous.post("/v1/embeddings", json={"input": "a"})
        assert r.json()["error"]["type"] == "invalid_request_error" and "Bearer" in r.json()["error"]["message"]


# ------------------------------------------------------------------------------------------ under load


def test_32_concurrent_clients_with_mixed_sizes_each_get_their_own_vectors(server, encoder):
    rng = np.random.default_rng()
    jobs = []
    for client_id in range(32):
        for k in range(2):
            n = int(rng.choice([1, 2, 7, 33]))
            route = ["/v1/embeddings", "/embed"][(client_id + k) % 2]
            jobs.append((client_id, route, random_texts(n, rng, max_words=16)))
    everything = sorted({t for _, _, texts in jobs for t in texts})
    ref = dict(zip(everything, encoder.encode(everything)))

    def run_client(client_id: int):
        with server.client() as c:
            out = []
            for cid, route, texts in jobs:
                if cid == client_id:
                    key = "input" if route.startswith("/v1") else "inputs"
                    out.append((texts, vectors(c.post(route, json={key: texts}))))
            return out

    with ThreadPoolExecutor(32) as pool:
        results = [r for rs in pool.map(run_client, range(32)) for r in rs]
    assert len(results) == len(jobs)
    for texts, got in results:
        assert got.shape == (len(texts), 384)
        close(got, np.stack([ref[t] for t in texts]), EMBED_ATOL_FP32, "a client's rows")

    with server.client() as c:
        assert c.post("/v1/embeddings", json={"input": []}).status_code == 400
        metrics = c.get("/metrics").text
    size_count = float(re.search(r"^bertfast_batch_size_count (\S+)", metrics, re.M).group(1))
    size_sum = float(re.search(r"^bertfast_batch_size_sum (\S+)", metrics, re.M).group(1))
    assert size_sum / size_count > 2, "texts from several requests share batches"
    tokens_le_2048 = float(re.search(r'^bertfast_batch_tokens_bucket\{le="2048.0"\} (\S+)', metrics, re.M).group(1))
    tokens_count = float(re.search(r"^bertfast_batch_tokens_count (\S+)", metrics, re.M).group(1))
    assert tokens_le_2048 == tokens_count, "no batch exceeds --max-batch-tokens 2048"
    assert re.search(r'^bertfast_requests_total\{route="/v1/embeddings",status="200"\} \d', metrics, re.M)
    assert re.search(r'^bertfast_requests_total\{route="/v1/embeddings",status="400"\} \d', metrics, re.M)
    assert re.search(r'^bertfast_request_duration_seconds_count\{route="/embed"\} \d', metrics, re.M)
    assert re.search(r"^bertfast_queue_seconds_count [1-9]", metrics, re.M)
    assert re.search(r"^bertfast_queue_depth 0\.0$", metrics, re.M), "nothing is left queued"
    assert re.search(r'^bertfast_requests_in_flight\{route="/embed"\} 0\.0$', metrics, re.M)
    assert re.search(r'^bertfast_requests_in_flight\{route="/metrics"\} 1\.0$', metrics, re.M), "this one"


# Growth of the server's resident memory over 10,000 requests that still counts as flat: allocator and
# metric-sample slack, far below what keeping each request's texts or vectors would add (~15 MB).
RSS_GROWTH_KIB = 12 * 1024


def test_memory_is_flat_over_10000_requests(server):
    rng = np.random.default_rng()
    texts = random_texts(64, rng, max_words=3)

    def send(n: int):
        with server.client() as c:
            for i in range(n):
                assert c.post("/embed", json={"inputs": texts[i % 64]}).status_code == 200

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(send, [63] * 16))  # warm: 1,008 requests
        before = server.rss_kib()
        list(pool.map(send, [625] * 16))  # 10,000 requests
    after = server.rss_kib()
    assert after - before < RSS_GROWTH_KIB, f"RSS grew from {before} to {after} KiB"
