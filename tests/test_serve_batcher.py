"""The batcher and the device plan, in process with a recording forward: batches stay within the token
budget, similar lengths go together, every request gets its own rows in order, one thread per device,
a full queue is refused, abandoned texts are never computed, a failed forward fails only its requests."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

pytest.importorskip("prometheus_client")

from bertfast.serve.batcher import Batcher, QueueFull  # noqa: E402
from bertfast.serve.devices import plan_devices  # noqa: E402
from bertfast.serve.engine import Encoded  # noqa: E402
from bertfast.serve.metrics import Metrics  # noqa: E402


@pytest.mark.parametrize(
    "device, count, plan",
    [
        ("cpu", 0, ["cpu"]),
        ("cpu", 4, ["cpu"]),
        ("cuda", 1, ["cuda:0"]),
        ("cuda", 3, ["cuda:0", "cuda:1", "cuda:2"]),
        ("cuda:1", 2, ["cuda:1"]),
        ("cuda:2, cuda:0", 3, ["cuda:2", "cuda:0"]),
    ],
)
def test_device_plan_is_one_model_per_gpu(device, count, plan):
    assert plan_devices(device, count) == plan


@pytest.mark.parametrize(
    "device, count, message",
    [
        ("cuda", 0, "no CUDA device is visible"),
        ("cuda:2", 2, "'cuda:2' is not visible"),
        ("cuda:0,cuda:0", 2, "named twice"),
        ("tpu", 1, "'tpu' is not 'cpu', 'cuda' or 'cuda:N'"),
        ("cuda:x", 1, "'cuda:x' is not"),
        ("", 1, "device must be"),
    ],
)
def test_bad_device_plans_are_refused(device, count, message):
    with pytest.raises(ValueError, match=message):
        plan_devices(device, count)


def encoded(rng: np.random.Generator, length: int) -> Encoded:
    return Encoded(rng.integers(0, 1000, size=length), np.zeros(length, dtype=np.int64))


class Recorder:
    """A forward that records its batches (lengths, worker, thread) and answers each row with
    (sum of its ids, length): rows a test can check against its own inputs."""

    def __init__(self, hold: threading.Event | None = None, fail_on_length: int | None = None):
        self.batches: list[tuple[int, list[int], str]] = []
        self.hold, self.fail_on_length = hold, fail_on_length

    def __call__(self, worker: int, items):
        if self.hold is not None:
            self.hold.wait(30)
        lengths = [len(e.ids) for e in items]
        self.batches.append((worker, lengths, threading.current_thread().name))
        if self.fail_on_length in lengths:
            raise RuntimeError("the device failed")
        return np.array([[e.ids.sum(), len(e.ids)] for e in items], dtype=np.float64)


def expected_rows(items) -> np.ndarray:
    return np.array([[e.ids.sum(), len(e.ids)] for e in items], dtype=np.float64)


def make(forward, workers=1, budget=256, max_queue=10_000, wait=0.0) -> Batcher:
    return Batcher(forward, workers, max_batch_tokens=budget, max_queue=max_queue, max_wait_s=wait, metrics=Metrics())


def submit(b: Batcher, items):
    b.reserve(len(items))
    return b.submit(items)


def test_batches_respect_the_budget_group_similar_lengths_and_return_each_requests_rows():
    rng = np.random.default_rng()
    hold = threading.Event()
    forward = Recorder(hold)

    async def main():
        b = make(forward, budget=256)
        b.start()
        blocker = submit(b, [encoded(rng, 5)])
        await asyncio.sleep(0.05)  # the worker holds the blocker: what follows queues up
        # single texts, at most 32 * 16 = 512 tokens: one window (2 budgets), so the batches are cut from one
        # sorted list; then requests of several texts, each of which stays in one batch
        requests = [[encoded(rng, int(rng.integers(1, 17)))] for _ in range(32)]
        jobs = [submit(b, items) for items in requests]
        hold.set()
        await asyncio.gather(*(j.future for j in jobs))
        # at most 6 * 4 * 20 = 480 tokens: one window again
        many = [[encoded(rng, int(n)) for n in rng.integers(1, 21, size=rng.integers(2, 5))] for _ in range(6)]
        hold.clear()
        blocker2 = submit(b, [encoded(rng, 5)])
        await asyncio.sleep(0.05)
        jobs += [submit(b, items) for items in many]
        requests.extend(many)
        hold.set()
        await blocker2.future
        results = await asyncio.gather(blocker.future, *(j.future for j in jobs))
        await b.stop()
        return requests, results[1:]

    requests, results = asyncio.run(main())
    for items, rows in zip(requests, results):
        assert np.array_equal(rows, expected_rows(items)), "each request gets its own rows, in order"
    singles = [lengths for _, lengths, _ in forward.batches[1 : len(forward.batches)]]
    blocker2_at = next(i for i, (_, lengths, _) in enumerate(forward.batches) if i > 0 and lengths == [5])
    singles, several = singles[: blocker2_at - 1], [lengths for _, lengths, _ in forward.batches[blocker2_at + 1 :]]
    assert sum(len(b) for b in singles + several) == sum(len(items) for items in requests), "every text exactly once"
    assert all(sum(b) <= 256 for b in singles + several)
    assert max(len(b) for b in singles) > 4, "texts of several requests share a batch"
    for i, a in enumerate(singles):  # cut from one sorted window: no two batches' length ranges interleave
        for c in singles[i + 1 :]:
            assert max(a) <= min(c) or max(c) <= min(a), (a, c)
    for items in requests[32:]:  # each request of several texts went whole into one batch
        lengths = sorted(len(e.ids) for e in items)
        assert any(_contains(batch, lengths) for batch in several), (lengths, several)


def _contains(batch: list[int], lengths: list[int]) -> bool:
    rest = list(batch)
    for n in lengths:
        if n not in rest:
            return False
        rest.remove(n)
    return True


def test_one_thread_per_device_and_every_device_used():
    rng = np.random.default_rng()
    forward = Recorder()

    async def main():
        b = make(forward, workers=3, budget=64)
        b.start()
        jobs = [submit(b, [encoded(rng, 60)]) for _ in range(30)]
        await asyncio.gather(*(j.future for j in jobs))
        await b.stop()

    asyncio.run(main())
    threads = {}
    for worker, _, thread in forward.batches:
        threads.setdefault(worker, set()).add(thread)
    assert sorted(threads) == [0, 1, 2]
    assert all(len(names) == 1 and f"worker{w}" in next(iter(names)) for w, names in threads.items())


def test_a_full_queue_is_refused_and_a_release_frees_it():
    async def main():
        b = make(Recorder(), max_queue=10)
        b.reserve(6)
        with pytest.raises(QueueFull, match="at most 10"):
            b.reserve(5)
        b.release(6)
        b.reserve(10)

    asyncio.run(main())


def test_texts_of_an_abandoned_request_are_never_computed():
    rng = np.random.default_rng()
    hold = threading.Event()
    forward = Recorder(hold)

    async def main():
        b = make(forward)
        b.start()
        first = submit(b, [encoded(rng, 3)])
        await asyncio.sleep(0.05)
        gone = submit(b, [encoded(rng, 77), encoded(rng, 77)])
        kept = submit(b, [encoded(rng, 9)])
        gone.future.cancel()  # what a route does when its client disconnects
        b.forget(gone)
        b.reserve(b.max_queue - 1)  # its room is free again at once
        hold.set()
        await asyncio.gather(first.future, kept.future)
        await b.stop()

    asyncio.run(main())
    assert all(77 not in lengths for _, lengths, _ in forward.batches)


def test_a_failed_forward_fails_its_requests_and_the_batcher_goes_on():
    rng = np.random.default_rng()

    async def main():
        b = make(Recorder(fail_on_length=13))
        b.start()
        bad = submit(b, [encoded(rng, 13)])
        with pytest.raises(RuntimeError, match="the device failed"):
            await bad.future
        items = [encoded(rng, 4), encoded(rng, 6)]
        rows = await submit(b, items).future
        await b.stop()
        return items, rows

    items, rows = asyncio.run(main())
    assert np.array_equal(rows, expected_rows(items))
