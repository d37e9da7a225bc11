"""`bertfast serve` under pressure: a full queue answers 429 with Retry-After, a client that disconnects
disturbs no other request, and SIGTERM with requests in flight answers them all and exits 0."""

from __future__ import annotations

import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from .helpers import EMBED_ATOL_FP32, assert_close
from .test_serve_process import ServerProcess, httpx

WORDS = "a slow river under the old stone bridge carries light and water past the town".split()
MAX_QUEUE = 64


def long_texts(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(60, 120)))) for _ in range(n)]


@pytest.fixture(scope="module")
def server():
    s = ServerProcess("--max-queue", str(MAX_QUEUE), "--max-inputs", str(MAX_QUEUE), "--max-batch-tokens", "1024")
    try:
        yield s.wait_ready()
    finally:
        s.close()


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    from bertfast.sentence import SentenceEncoder

    return SentenceEncoder.from_pretrained(minilm_dir, backend="torch")


def metric(server, pattern: str) -> float:
    with server.client() as c:
        found = re.search(pattern, c.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def check_rows(response, texts, encoder):
    assert response.status_code == 200, response.text
    body = response.json()
    got = np.array([d["embedding"] for d in body["data"]] if isinstance(body, dict) else body, dtype=np.float32)
    assert_close(torch.from_numpy(got), torch.from_numpy(encoder.encode(texts)), EMBED_ATOL_FP32, "rows")


def test_a_full_queue_answers_429_with_retry_after(server, encoder):
    rng = np.random.default_rng()
    requests = [(["/embed", "/v1/embeddings"][i % 2], long_texts(MAX_QUEUE // 2, rng)) for i in range(12)]

    def post(job):
        route, texts = job
        with server.client() as c:
            return route, texts, c.post(route, json={"inputs" if route == "/embed" else "input": texts})

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(post, requests))
    refused = [(route, r) for route, _, r in results if r.status_code == 429]
    assert refused, "twelve clients of 32 long texts each overflow a 64-text queue"
    for route, r in refused:
        assert r.headers["retry-after"] == "1"
        if route == "/embed":
            assert r.json()["error_type"] == "Overloaded" and "overloaded" in r.json()["error"]
        else:
            assert r.json()["error"]["type"] == "rate_limit_error"
    answered = [(texts, r) for _, texts, r in results if r.status_code != 429]
    assert answered, "the queue drains and answers those it took"
    for texts, r in answered:
        check_rows(r, texts, encoder)


def test_a_client_that_disconnects_disturbs_no_other_request(server, encoder):
    rng = np.random.default_rng()
    gone_before = metric(server, r'^bertfast_requests_total\{route="/embed",status="499"\} (\S+)')
    stop = threading.Event()

    def leave_early():
        for _ in range(3):
            with httpx.Client(base_url=server.url, timeout=httpx.Timeout(30, read=0.05)) as c:
                with pytest.raises(httpx.ReadTimeout):
                    c.post("/embed", json={"inputs": long_texts(MAX_QUEUE // 2, rng)})

    def stay():
        answered = 0
        with server.client() as c:
            while not stop.is_set() or answered < 3:
                texts = long_texts(3, rng)
                check_rows(c.post("/embed", json={"inputs": texts}), texts, encoder)
                answered += 1
        return answered

    with ThreadPoolExecutor(3) as pool:
        stayers = [pool.submit(stay) for _ in range(2)]
        try:
            leave_early()
        finally:
            stop.set()
        assert all(f.result() >= 3 for f in stayers)
    deadline = time.monotonic() + 60
    while metric(server, r'^bertfast_requests_total\{route="/embed",status="499"\} (\S+)') < gone_before + 3:
        assert time.monotonic() < deadline, "the server noticed every client that left"
        time.sleep(0.2)
    while metric(server, r"^bertfast_queue_depth (\S+)") != 0:
        assert time.monotonic() < deadline, "the texts of the clients that left are dropped"
        time.sleep(0.2)
    texts = long_texts(2, rng)
    with server.client() as c:
        check_rows(c.post("/v1/embeddings", json={"input": texts}), texts, encoder)


def test_sigterm_answers_the_requests_in_flight_and_exits_0(server, encoder):
    rng = np.random.default_rng()
    jobs = [long_texts(MAX_QUEUE // 4, rng) for _ in range(4)]

    def post(texts):
        with server.client() as c:
            return c.post("/embed", json={"inputs": texts})

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(post, texts) for texts in jobs]
        deadline = time.monotonic() + 60
        while metric(server, r'^bertfast_requests_in_flight\{route="/embed"\} (\S+)') < len(jobs):  # all arrived
            assert time.monotonic() < deadline, "the server holds every request"
            time.sleep(0.01)
        in_flight = sum(not f.done() for f in futures)
        server.proc.send_signal(signal.SIGTERM)
        assert server.stop() == 0, server.log()
        for texts, f in zip(jobs, futures):
            check_rows(f.result(), texts, encoder)
    assert in_flight >= 1, "SIGTERM came while requests were in flight"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=5)
