"""CUDA graphs per bucket: capture once, replay for every batch that fits, safely from any thread.

At batch 1 a BERT forward is ~80 kernel launches whose Python and launch overhead dwarfs the work.
`CudaGraphEncoder` captures the whole packed forward once per bucket (T_b total tokens, B_b sequence
slots, S_b longest sequence) into static buffers sharing one memory pool, and replays it for any batch
that fits. A batch of T real tokens in B sequences is laid into a bucket like this:

    tokens    [ real 0 .. T-1 | dummy tokens T .. T_b-1 (id = pad, type 0, position 0) ]
    sequences [ the B real ones | the dummies, DUMMY_CHUNK tokens each | empty ones (length 0) ]

The padding tokens form sequences of their own, so attention never mixes them with real tokens;
splitting them into short chunks keeps their attention cost (quadratic in length) negligible.
Empty trailing sequences cost one early-exiting program each in the attention grid, and the grid's
length is the bucket's S_b (the longest real sequence rounded up), not max_position_embeddings.

The runtime contract:
- **Always a graph.** A batch larger than the largest bucket runs as several bucket-sized replays
  (whole sequences per part, hidden states concatenated in order).
- **Safe from several threads and on any stream.** One lock per runner covers weight check, capture,
  copy-in, replay and copy-out; on CUDA all of that runs on the runner's own stream, which waits for
  the caller's stream first, and the caller's stream waits for it after, so a call is ordered on the
  stream it was made on and no two calls ever share a static buffer in flight.
- **Bounded memory.** Buckets are kept in least-recently-used order; past `memory_budget_mb` the
  oldest are dropped (and captured again if needed).
- **Never stale.** Graphs read the parameters' memory directly: any change to a parameter (a new
  tensor, an in-place update, a move) drops every graph before the next replay.

Planning is CPU-testable; on the CPU `replay="eager"` re-runs the same forward on the same static
buffers (under the Triton interpreter), so tests check layout, splitting, eviction and locking with
every kernel, leaving out only the capture mechanism itself.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .encoder import RUNNER_ATTR, Spec, packed_forward
from .graph_plan import (
    DEFAULT_MAX_SEQS,
    DEFAULT_MAX_TOKENS,
    bucket_cu_seqlens,
    check_options,
    length_bucket,
    power_of_two_buckets,
    select_bucket,
    split_batch,
)
from .padding import PackInfo

# =============================================================================== capture and replay
# One capture at a time in the process (torch's rule), each on its device's own capture stream.
_CAPTURE_LOCK = threading.Lock()
_CAPTURE_STREAMS: dict[torch.device, Any] = {}


def _module_tree(bert: nn.Module) -> tuple[list[dict], list[int]]:
    """Every module's parameter and submodule dicts, and the ids of the objects they hold in order: a
    registration or a replacement anywhere below `bert` changes the ids, seen with no global hook."""
    dicts = [d for m in bert.modules() for d in (m._parameters, m._modules)]
    return dicts, [id(v) for d in dicts for v in d.values()]


def _tree_unchanged(tree: tuple[list[dict], list[int]]) -> bool:
    dicts, ids = tree
    return [id(v) for d in dicts for v in d.values()] == ids


def _version(p: torch.Tensor) -> int:
    """A parameter's version counter (inference tensors have none: they cannot be updated in place)."""
    return -1 if p.is_inference() else p._version


class _CudaGraphReplay:
    """The forward captured into a CUDA graph: replay() re-runs it on the static buffers."""

    def __init__(self, fn, pool, device: torch.device):
        # Warm up on a side stream first: Triton compiles here, never inside the capture.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA calls during this capture neither fail nor get captured.
        # One capture at a time in the process, on this device's own capture stream.
        with _CAPTURE_LOCK:
            stream = _CAPTURE_STREAMS.get(device)
            if stream is None:
                stream = _CAPTURE_STREAMS[device] = torch.cuda.Stream(device)
            with torch.cuda.graph(self.graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
                self.outputs = fn()
        self.pool = self.graph.pool()

    def replay(self) -> None:
        self.graph.replay()


class _EagerReplay:
    """Stands in for a CUDA graph where none can exist (CPU tests under the Triton interpreter):
    replay() runs the same function on the same static buffers."""

    def __init__(self, fn, pool, device: torch.device):
        self.fn = fn
        self.outputs = fn()
        self.pool = None

    def replay(self) -> None:
        self.outputs = self.fn()


@dataclass
class _Bucket:
    replay: Any
    ids: torch.Tensor  # (T_b,)
    types: torch.Tensor  # (T_b,)
    positions: torch.Tensor  # (T_b,)
    cu_seqlens: torch.Tensor  # (B_b + 1,) int32
    nbytes: int = 0  # device memory this bucket accounts for (static buffers, outputs, pool growth)
    capture_s: float = 0.0  # how long its capture took


@dataclass
class GraphStats:
    """Counters over the runner's life; what the live buckets hold is read off them (`stats_dict`)."""

    calls: int = 0  # calls served by this runner
    replays: int = 0  # graph replays (a call split into parts replays several)
    hits: int = 0  # replays of a bucket already captured
    misses: int = 0  # captures
    evictions: int = 0  # buckets dropped for the memory budget
    fallbacks: int = 0  # calls that ran eagerly instead


def _no_runner() -> None:
    return None


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class CudaGraphEncoder:
    """Replays a captured packed forward of `bert` per bucket; see the module docstring.

    Inference only (the caller checks that no gradient is needed). `max_tokens` / `max_seqs` bound the
    largest bucket (bigger batches run as several replays); `memory_budget_mb` (None: unbounded) bounds
    what the live buckets account for, evicting the least recently used first.
    """

    def __init__(
        self,
        bert: nn.Module,
        spec: Spec,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_seqs: int = DEFAULT_MAX_SEQS,
        memory_budget_mb: float | None = None,
        replay: str = "cuda",
    ):
        if replay not in ("cuda", "eager"):
            raise ValueError(f"replay must be 'cuda' or 'eager', got {replay!r}")
        check_options(
            memory_budget_mb=memory_budget_mb,
            max_tokens=max_tokens,
            max_seqs=max_seqs,
            longest=spec.max_position_embeddings,
        )
        self.bert = bert
        self.spec = spec
        self.token_buckets = power_of_two_buckets(max_tokens)
        self.seq_buckets = power_of_two_buckets(max_seqs, smallest=4)
        self.max_tokens, self.max_seqs = self.token_buckets[-1], self.seq_buckets[-1]
        self.budget_bytes = None if memory_budget_mb is None else int(memory_budget_mb * 2**20)
        self._replay_cls = _CudaGraphReplay if replay == "cuda" else _EagerReplay
        self.replays_on_cuda = replay == "cuda"
        self.buckets: OrderedDict[tuple[int, int, int], _Bucket] = OrderedDict()  # least recent first
        self.pool = None
        self.stats = GraphStats()
        self._lock = threading.Lock()
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self._tree: tuple[list[dict], list[int]] | None = None  # set with self._params by the first fingerprint
        self._tree_generation = 0
        self._weights = self._fingerprint(next(bert.parameters()).device)

    def __reduce__(self):
        # Graphs and pools cannot be copied or pickled: a deepcopy / torch.save of the model carries
        # no runner, and the copy captures its own graphs on first use.
        return (_no_runner, ())

    def _fingerprint(self, device: torch.device) -> tuple:
        """What the graphs depend on: the module tree below the encoder (a registration, a replacement,
        a layer list edited in place or a pooler set to None changes the ids it holds; each change bumps
        the tree generation and re-lists the parameters), each parameter's storage and version, and the
        version of the device's launch state (configs and GEMM choices the graphs were captured with).
        Writes through `.data` bypass version counters: see `bertfast.refresh`."""
        from .kernels.state import launch_state  # imports triton: not at `import bertfast`

        if self._tree is None or not _tree_unchanged(self._tree):
            self._tree = _module_tree(self.bert)
            self._params = list(self.bert.parameters())
            self._tree_generation += 1
        params = [(p.data_ptr(), _version(p)) for p in self._params]
        return self._tree_generation, params, launch_state(device).version

    @property
    def captured(self) -> dict[tuple[int, int, int], float]:
        """Capture seconds of each live bucket, least recently used first."""
        return {key: b.capture_s for key, b in self.buckets.items()}

    @property
    def memory_bytes(self) -> int:
        """What the live buckets account for (never negative)."""
        return sum(b.nbytes for b in self.buckets.values())

    def stats_dict(self) -> dict[str, Any]:
        """The counters, the live buckets and their memory, the replay rate: what graph_stats() reports."""
        st = self.stats
        return {
            "buckets": {f"{t}x{b}x{s}": round(sec, 3) for (t, b, s), sec in self.captured.items()},
            "calls": st.calls,
            "replays": st.replays,
            "hits": st.hits,
            "misses": st.misses,
            "evictions": st.evictions,
            "fallbacks": st.fallbacks,
            "replay_rate": (st.calls - st.fallbacks) / st.calls if st.calls else None,
            "memory_mb": self.memory_bytes / 2**20,
        }

    def reset(self) -> None:
        """Drop every graph and its memory pool (counters are kept)."""
        with self._lock:
            self._drop_all()

    def _drop_all(self) -> None:
        self.buckets.clear()
        self.pool = None

    @property
    def pad_id(self) -> int:
        return self.bert.embeddings.word_embeddings.padding_idx or 0

    # ------------------------------------------------------------------ buckets
    def bucket_for(self, lengths: list[int]) -> tuple[int, int, int] | None:
        """(T_b, B_b, S_b) for a batch of these sequence lengths, or None when it needs splitting."""
        key = select_bucket(sum(lengths), len(lengths), self.token_buckets, self.seq_buckets)
        if key is None:
            return None
        return (*key, length_bucket(max(lengths), self.spec.max_position_embeddings))

    def _capture(self, key: tuple[int, int, int], device: torch.device) -> _Bucket:
        t0 = time.perf_counter()
        # Normal tensors, not inference tensors: a bucket first used under inference_mode must still
        # take copies under no_grad later (and the other way round).
        with torch.inference_mode(False), torch.no_grad():
            return self._capture_buffers(key, device, t0)

    def _capture_buffers(self, key: tuple[int, int, int], device: torch.device, t0: float) -> _Bucket:
        t_b, b_b, s_b = key
        cuda = device.type == "cuda"
        before = torch.cuda.memory_reserved(device) if cuda else 0
        bucket = _Bucket(
            replay=None,
            ids=torch.full((t_b,), self.pad_id, dtype=torch.long, device=device),
            types=torch.zeros(t_b, dtype=torch.long, device=device),
            positions=torch.zeros(t_b, dtype=torch.long, device=device),
            # Capture-time layout: sequences of S_b tokens (any valid layout will do: replays copy theirs in).
            cu_seqlens=torch.tensor([min(i * s_b, t_b) for i in range(b_b + 1)], dtype=torch.int32, device=device),
        )
        info = PackInfo(b_b, s_b, None, bucket.cu_seqlens, s_b, None)

        def forward():
            # Empty trailing sequences start at T_b: the pooler reads a dummy row for them instead.
            first = bucket.cu_seqlens[:-1].long().clamp(max=t_b - 1)  # (B_b,)
            h, pooled, _ = packed_forward(
                self.bert,
                self.spec,
                info,
                bucket.ids,
                bucket.types,
                bucket.positions,
                None,
                "triton",
                False,
                first_token_index=first,
            )
            return h, pooled

        bucket.replay = self._replay_cls(forward, self.pool, device)
        self.pool = bucket.replay.pool
        hidden, pooled = bucket.replay.outputs
        static = _nbytes(bucket.ids, bucket.types, bucket.positions, bucket.cu_seqlens, hidden, pooled)
        grown = 0
        if cuda:
            torch.cuda.synchronize(device)
            grown = torch.cuda.memory_reserved(device) - before  # may be < 0 if others freed memory meanwhile
        bucket.nbytes = max(static, grown)
        bucket.capture_s = time.perf_counter() - t0
        self.stats.misses += 1
        return bucket

    def _evict_for_budget(self, keep: tuple[int, int, int]) -> None:
        if self.budget_bytes is None:
            return
        while self.memory_bytes > self.budget_bytes and len(self.buckets) > 1:
            key = next(k for k in self.buckets if k != keep)  # the least recently used other bucket
            del self.buckets[key]
            self.stats.evictions += 1
        if len(self.buckets) == 0:
            self.pool = None

    def _bucket(self, key: tuple[int, int, int], device: torch.device) -> _Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = self._capture(key, device)
            self._evict_for_budget(keep=key)
        else:
            self.buckets.move_to_end(key)
            self.stats.hits += 1
        return bucket

    # ------------------------------------------------------------------ replay
    def _replay(
        self, ids, types, positions, cu: list[int], key: tuple[int, int, int], device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One bucket: copy in, replay, copy out. cu: this part's (B + 1,) offsets from 0; key: its bucket."""
        T, B = cu[-1], len(cu) - 1
        bucket = self._bucket(key, device)
        bucket.ids[:T].copy_(ids)
        bucket.ids[T:].fill_(self.pad_id)
        bucket.types[:T].copy_(types)
        bucket.types[T:].zero_()
        bucket.positions[:T].copy_(positions)
        bucket.positions[T:].zero_()
        laid = torch.tensor(bucket_cu_seqlens(cu, key[0], key[1]), dtype=torch.int32)
        bucket.cu_seqlens.copy_(laid, non_blocking=device.type == "cuda")
        bucket.replay.replay()
        self.stats.replays += 1
        hidden, pooled = bucket.replay.outputs
        # Copies: the static outputs belong to the bucket and are overwritten by its next replay.
        return hidden[:T].clone(), (pooled[:B].clone() if pooled is not None else None)

    def _plan(self, lengths: list[int]) -> list[tuple[int, int, tuple[int, int, int]]] | None:
        """Runs of whole sequences [start, end) that each fit a bucket, in order, with that bucket; None
        when a single sequence fits no bucket (only with very small max_seqs): the call then runs eagerly."""
        key = self.bucket_for(lengths)
        if key:
            return [(0, len(lengths), key)]
        parts: list[tuple[int, int, tuple[int, int, int]]] = []
        todo = list(reversed(split_batch(lengths, self.max_tokens, self.max_seqs)))
        while todo:
            s0, s1 = todo.pop()
            key = self.bucket_for(lengths[s0:s1])
            if key:
                parts.append((s0, s1, key))
            elif s1 - s0 == 1:
                return None
            else:  # halve it: the left half first, so parts stay in order
                mid = (s0 + s1) // 2
                todo += [(mid, s1), (s0, mid)]
        return parts

    def _forward_parts(self, ids, types, positions, cu_host: list[int], device):
        """The batch as one or more bucket replays (None when it fits no plan)."""
        weights = self._fingerprint(device)
        if weights != self._weights:
            self._drop_all()
            self._weights = weights
        parts = self._plan([b - a for a, b in zip(cu_host[:-1], cu_host[1:])])
        if parts is None:
            return None
        outs = []
        for s0, s1, key in parts:
            t0, t1 = cu_host[s0], cu_host[s1]
            cu = [c - t0 for c in cu_host[s0 : s1 + 1]]
            outs.append(self._replay(ids[t0:t1], types[t0:t1], positions[t0:t1], cu, key, device))
        if len(outs) == 1:
            return outs[0]
        hidden = torch.cat([h for h, _ in outs])  # (T, H)
        pooled = None if outs[0][1] is None else torch.cat([p for _, p in outs])  # (B, H)
        return hidden, pooled

    def __call__(
        self,
        ids: torch.Tensor,  # (T,)
        types: torch.Tensor,  # (T,)
        positions: torch.Tensor,  # (T,)
        cu_host: list[int],  # (B + 1,) on the host
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(hidden (T, H), pooled (B, H) or None) for a packed batch, ordered on the caller's stream;
        None when the batch fits no bucket plan (the caller then runs it eagerly)."""
        device = ids.device
        with self._lock:
            self.stats.calls += 1
            if device.type != "cuda":
                out = self._forward_parts(ids, types, positions, cu_host, device)
            else:
                caller = torch.cuda.current_stream(device)
                stream = self._streams.get(device)
                if stream is None:
                    stream = self._streams[device] = torch.cuda.Stream(device)
                stream.wait_stream(caller)  # the inputs are ready
                with torch.cuda.stream(stream):
                    out = self._forward_parts(ids, types, positions, cu_host, device)
                caller.wait_stream(stream)  # the outputs are ready before the caller's next work
                for t in out or ():
                    if t is not None:
                        t.record_stream(caller)  # made on our stream, used on the caller's
            if out is None:
                self.stats.fallbacks += 1
            return out


# Options for the runners of one encoder module, kept beside it (runtime.set_graph_options / optimize).
OPTIONS_ATTR = "_bertfast_graph_options"
_CREATE_LOCK = threading.Lock()


def graph_runner(bert: nn.Module, spec: Spec, device: torch.device) -> CudaGraphEncoder | None:
    """The module's CUDA-graph runner, created on its first call on a CUDA device (None elsewhere) and
    kept in the module's __dict__; what `bertfast.forward.run_packed` replays."""
    runner = bert.__dict__.get(RUNNER_ATTR)
    if runner is not None and device.type != "cuda" and runner.replays_on_cuda:
        return None  # a model moved off the GPU keeps its CUDA runner for when it comes back
    if runner is None and device.type == "cuda":
        with _CREATE_LOCK:  # two threads' first calls must not make two runners
            runner = bert.__dict__.get(RUNNER_ATTR)
            if runner is None:
                runner = CudaGraphEncoder(bert, spec, **bert.__dict__.get(OPTIONS_ATTR, {}))
                bert.__dict__[RUNNER_ATTR] = runner
    return runner
