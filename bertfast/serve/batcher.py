"""Token-budget batching: every request's texts go into one queue; batches are formed by real token
counts (after tokenization), similar lengths together, and each runs as one packed forward on a
device's worker thread; each request gets its own rows back.

All state lives on the event loop's thread (the queue, the jobs, the idle workers); only the forward
runs elsewhere, on the worker's own single thread, so nothing here needs a lock.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .engine import Encoded
from .metrics import Metrics


class QueueFull(Exception):
    """More texts than the queue has room for: the route answers 429 with Retry-After."""


@dataclass(eq=False)
class Job:
    """One request's texts: its rows fill in as their batches finish."""

    n: int
    future: asyncio.Future
    rows: list = field(default_factory=list)
    remaining: int = 0  # rows not computed yet
    queued: int = 0  # texts still in the queue, and their tokens
    queued_tokens: int = 0
    forgotten: bool = False  # gone (its client left, or a batch of it failed): its queued texts are dropped

    def __post_init__(self):
        self.rows = [None] * self.n
        self.remaining = self.n


@dataclass(eq=False)
class _Item:
    job: Job
    index: int  # the text's place in its request
    encoded: Encoded
    enqueued: float  # time.perf_counter() when queued

    @property
    def tokens(self) -> int:
        return len(self.encoded.ids)


class Batcher:
    """forward(worker, items) -> one row per item, run on worker `worker`'s thread.

    max_batch_tokens: a batch's real tokens, at most (a single item longer than that is a batch alone;
    the server refuses budgets below the model's length limit, so that never happens there).
    max_queue: texts waiting, at most; `submit` raises QueueFull beyond.
    max_wait_s: how long an idle worker waits for texts still being tokenized to join its batch.
    """

    # The pending window sorted per batch: the oldest texts up to this many budgets' worth of tokens. A
    # request's texts spread over the window's batches, so a wider window finishes requests later.
    WINDOW_BUDGETS = 2

    def __init__(
        self,
        forward: Callable[[int, Sequence[Encoded]], Sequence],
        workers: int,
        *,
        max_batch_tokens: int,
        max_queue: int,
        max_wait_s: float,
        metrics: Metrics,
    ):
        self._forward = forward
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"bertfast-worker{w}") for w in range(workers)]
        self.max_batch_tokens, self.max_queue, self.max_wait_s = max_batch_tokens, max_queue, max_wait_s
        self._metrics = metrics
        self._pending: collections.deque[_Item] = collections.deque()
        # Texts and tokens queued for live jobs (a forgotten job's texts stay in the deque until a window
        # reaches them, but no longer count).
        self._queued = 0
        self._pending_tokens = 0
        self._incoming = 0  # texts being tokenized now, soon to be submitted
        self._wakeup = asyncio.Event()
        self._idle: asyncio.Queue[int] = asyncio.Queue()
        for w in range(workers):
            self._idle.put_nowait(w)
        self._running: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None

    # ---------------------------------------------------------------- the routes' side

    def reserve(self, n: int) -> None:
        """Claim room for n texts before tokenizing them (QueueFull when there is none)."""
        if self._queued + self._incoming + n > self.max_queue:
            raise QueueFull(f"the queue holds {self._queued + self._incoming} texts (at most {self.max_queue})")
        self._incoming += n

    def release(self, n: int) -> None:
        """Give back a reservation whose texts will not be submitted (refused, or the client left)."""
        self._incoming -= n
        self._wakeup.set()

    def submit(self, encoded: Sequence[Encoded]) -> Job:
        """Queue one request's reserved texts; await `job.future` for its rows (in input order)."""
        job = Job(len(encoded), asyncio.get_running_loop().create_future())
        now = time.perf_counter()
        self._incoming -= len(encoded)
        self._pending.extend(_Item(job, i, e, now) for i, e in enumerate(encoded))
        job.queued, job.queued_tokens = len(encoded), sum(len(e.ids) for e in encoded)
        self._count(job.queued, job.queued_tokens)
        self._wakeup.set()
        return job

    def forget(self, job: Job) -> None:
        """Drop a job's queued texts (its client left, or one of its batches failed): they free their
        room in the queue now and are never computed."""
        if not job.forgotten:
            job.forgotten = True
            self._count(-job.queued, -job.queued_tokens)

    def _count(self, texts: int, tokens: int) -> None:
        self._queued += texts
        self._pending_tokens += tokens
        self._metrics.queue_depth.set(self._queued)

    # ---------------------------------------------------------------- the batching loop

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """After the routes have drained: end the loop, wait for batches running, close the workers."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        for ex in self._executors:
            ex.shutdown(wait=True)

    async def warm_up(self, batches: Sequence[Sequence[Encoded]]) -> None:
        """Run each batch once on every worker, on the worker's own thread, before traffic arrives."""
        loop = asyncio.get_running_loop()

        def run_all(worker: int) -> None:
            for batch in batches:
                self._forward(worker, batch)

        await asyncio.gather(*(loop.run_in_executor(ex, run_all, w) for w, ex in enumerate(self._executors)))

    async def _run(self) -> None:
        while True:
            worker = await self._idle.get()
            batch = await self._next_batch()
            task = asyncio.get_running_loop().create_task(self._execute(worker, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Item]:
        """The next batch for an idle worker: waits for texts, and briefly for texts still being
        tokenized while the batch is under budget, then takes the oldest text's batch."""
        while True:
            await self._ready()
            batch = self._take_batch()
            if batch:  # else every text queued belonged to requests that are gone: wait again
                return batch

    async def _ready(self) -> None:
        """Returns when texts are queued and no more are coming (none being tokenized, or a full budget
        queued, or max_wait_s spent waiting for them)."""
        deadline = None
        while True:
            if self._pending:
                if self._incoming <= 0 or self._pending_tokens >= self.max_batch_tokens:
                    return
                deadline = deadline or time.perf_counter() + self.max_wait_s
                if time.perf_counter() >= deadline:
                    return
            self._wakeup.clear()
            timeout = None if deadline is None else max(deadline - time.perf_counter(), 0.0)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _take_batch(self) -> list[_Item]:
        """Sort the window (the oldest texts, a few budgets' worth) by length, cut it into batches of at
        most max_batch_tokens, and take the batch holding the oldest text; the rest stay queued. The sort
        keeps each request's texts together (ordered by the request's mean length: single texts, the
        common case, sort by their own), so a request finishes in one batch, not at the window's end.
        Texts whose request is gone (the client disconnected) are dropped, never computed."""
        window: list[_Item] = []
        tokens, limit = 0, self.WINDOW_BUDGETS * self.max_batch_tokens
        while self._pending and (not window or tokens + self._pending[0].tokens <= limit):
            item = self._pending.popleft()
            if not item.job.forgotten:
                self._take(item, -1)
                window.append(item)
                tokens += item.tokens
        if not window:
            return window
        oldest = window[0]
        by_job: dict[int, list[_Item]] = {}
        for item in window:
            by_job.setdefault(id(item.job), []).append(item)
        groups = sorted(by_job.values(), key=lambda g: sum(item.tokens for item in g) / len(g))
        batches: list[list[_Item]] = [[]]
        used, budget = 0, self.max_batch_tokens
        for g in groups:
            size = sum(item.tokens for item in g)
            if batches[-1] and used + size > budget >= size:  # a request that fits a batch is not split
                batches.append([])
                used = 0
            for item in g:
                if batches[-1] and used + item.tokens > budget:
                    batches.append([])
                    used = 0
                batches[-1].append(item)
                used += item.tokens
        chosen = next(b for b in batches if any(item is oldest for item in b))
        rest = [item for b in batches if b is not chosen for item in b]
        self._pending.extendleft(reversed(rest))
        for item in rest:
            self._take(item, +1)
        return chosen

    def _take(self, item: _Item, sign: int) -> None:
        """Count an item out of the queue (sign -1) or back into it (+1)."""
        item.job.queued += sign
        item.job.queued_tokens += sign * item.tokens
        self._count(sign, sign * item.tokens)

    async def _execute(self, worker: int, batch: list[_Item]) -> None:
        start = time.perf_counter()
        for item in batch:
            self._metrics.queue_time.observe(start - item.enqueued)
        self._metrics.batch_tokens.observe(sum(item.tokens for item in batch))
        self._metrics.batch_size.observe(len(batch))
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(
                self._executors[worker], self._forward, worker, [i.encoded for i in batch]
            )
        except Exception as e:  # a failed forward fails its requests (a 500 naming the error), not the loop
            for item in batch:
                if not item.job.future.done():
                    item.job.future.set_exception(e)
                self.forget(item.job)
        else:
            for item, row in zip(batch, rows):
                job = item.job
                if job.future.done():  # the client left while its batch ran
                    continue
                job.rows[item.index] = row
                job.remaining -= 1
                if job.remaining == 0:
                    job.future.set_result(np.stack(job.rows))
        finally:
            self._idle.put_nowait(worker)
            self._wakeup.set()
