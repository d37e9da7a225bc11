"""CUDA graphs per token bucket, and the on-disk cache of tuned kernel configs.

At batch 1 a BERT forward is ~80 kernel launches whose Python and launch overhead dwarfs the work.
`CudaGraphEncoder` captures the whole packed forward once per bucket (T_b total tokens, B_b
sequences) into static buffers sharing one memory pool, and replays it for any batch that fits.

A batch of T real tokens in B sequences is laid into a (T_b, B_b) bucket like this:

    tokens    [ real 0 .. T-1 | dummy tokens T .. T_b-1 (id = pad, type 0, position 0) ]
    sequences [ the B real ones | the dummies, DUMMY_CHUNK tokens each | empty ones (length 0) ]

The padding tokens form sequences of their own, so attention never mixes them with real tokens;
splitting them into short chunks keeps their attention cost (quadratic in length) negligible.
Empty trailing sequences cost one early-exiting program each in the attention grid.

The CPU-testable planning (buckets, layout) is separate from the capture, which needs a GPU.
On the CPU, `replay="eager"` re-runs the same forward on the same static buffers (under the Triton
interpreter), so the tests check the bucket layout with every kernel; only the capture itself needs
a GPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

DUMMY_CHUNK = 16


# =============================================================================== planning (CPU)
def power_of_two_buckets(largest: int, smallest: int = 16) -> list[int]:
    """smallest, 2 * smallest, ... up to the first power of two >= largest."""
    if largest < 1 or smallest < 1:
        raise ValueError(f"bucket bounds must be positive, got largest={largest}, smallest={smallest}")
    out, b = [], 1 << max(0, math.ceil(math.log2(smallest)))
    while True:
        out.append(b)
        if b >= largest:
            return out
        b *= 2


def sequences_needed(num_tokens: int, num_seqs: int, token_bucket: int) -> int:
    """Sequence slots a batch needs in a bucket of `token_bucket` tokens: real ones plus dummy chunks."""
    return num_seqs + math.ceil((token_bucket - num_tokens) / DUMMY_CHUNK)


def select_bucket(
    num_tokens: int, num_seqs: int, token_buckets: list[int], seq_buckets: list[int]
) -> tuple[int, int] | None:
    """The smallest (T_b, B_b) that holds the batch, or None when it fits no bucket (run eagerly)."""
    if num_tokens < 1 or num_seqs < 1:
        raise ValueError(f"a batch needs at least one token and one sequence, got {num_tokens}, {num_seqs}")
    for t_b in sorted(token_buckets):
        if t_b < num_tokens:
            continue
        need = sequences_needed(num_tokens, num_seqs, t_b)
        for b_b in sorted(seq_buckets):
            if b_b >= need:
                return t_b, b_b
    return None


def bucket_cu_seqlens(cu_seqlens: list[int], token_bucket: int, seq_bucket: int) -> list[int]:
    """The (B_b + 1) offsets of a batch laid into a bucket: real sequences, dummy chunks, empty slots."""
    num_tokens, num_seqs = cu_seqlens[-1], len(cu_seqlens) - 1
    if sequences_needed(num_tokens, num_seqs, token_bucket) > seq_bucket or num_tokens > token_bucket:
        raise ValueError(f"a batch of {num_tokens} tokens in {num_seqs} sequences does not fit "
                         f"bucket ({token_bucket}, {seq_bucket})")  # fmt: skip
    out = list(cu_seqlens)
    pos = num_tokens
    while pos < token_bucket:
        pos = min(pos + DUMMY_CHUNK, token_bucket)
        out.append(pos)
    out.extend([token_bucket] * (seq_bucket + 1 - len(out)))
    return out


# =============================================================================== capture and replay
# Bumped whenever any module registers or replaces a parameter, so graph runners re-list theirs.
_PARAM_GENERATION = [0]


def _count_registration(module, name, param):
    _PARAM_GENERATION[0] += 1


torch.nn.modules.module.register_module_parameter_registration_hook(_count_registration)



class _CudaGraphReplay:
    """The forward captured into a CUDA graph: replay() re-runs it on the static buffers."""

    def __init__(self, fn, pool, device: torch.device):
        # Warm up on a side stream first: Triton compiles and autotunes here, never inside the capture.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = fn()
        self.pool = self.graph.pool()

    def replay(self) -> None:
        self.graph.replay()


class _EagerReplay:
    """Stands in for a CUDA graph where none can exist (CPU tests under the Triton interpreter):
    replay() runs the same function on the same static buffers, so the bucket layout is what is
    tested, with every kernel, only the capture mechanism left out."""

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


@dataclass
class GraphStats:
    captured: dict[tuple[int, int], float] = field(default_factory=dict)  # bucket -> capture seconds
    replays: int = 0
    fallbacks: int = 0
    pool_bytes: int = 0  # device memory reserved while capturing (the shared pool and its buffers)


def _no_runner() -> None:
    return None


class CudaGraphEncoder:
    """Replays a captured packed forward of `bert` for batches that fit a bucket; None otherwise.

    Inference only (the caller checks that no gradient is needed). All graphs share one memory pool;
    at most `max_graphs` buckets are captured, after which a batch whose bucket is not captured runs
    eagerly and is counted in `stats.fallbacks`. Graphs read the parameters' memory directly, so any
    change to a parameter (a new tensor, an in-place update, a move) drops every graph; they are
    captured again on demand.
    """

    def __init__(self, bert, spec, *, max_tokens: int = 8192, max_seqs: int = 512, max_graphs: int = 16,
                 replay: str = "cuda"):  # fmt: skip
        if replay not in ("cuda", "eager"):
            raise ValueError(f"replay must be 'cuda' or 'eager', got {replay!r}")
        self.bert = bert
        self.spec = spec
        self.token_buckets = power_of_two_buckets(max_tokens)
        self.seq_buckets = power_of_two_buckets(max_seqs, smallest=4)
        self.max_graphs = max_graphs
        self._replay_cls = _CudaGraphReplay if replay == "cuda" else _EagerReplay
        self.buckets: dict[tuple[int, int], _Bucket] = {}
        self.pool = None
        self.stats = GraphStats()
        self._weights = self._fingerprint()

    def __reduce__(self):
        # Graphs and pools cannot be copied or pickled: a deepcopy / torch.save of the model carries
        # no runner, and the copy captures its own graphs on first use.
        return (_no_runner, ())

    def _fingerprint(self) -> tuple:
        """What the graphs depend on: the parameter objects (re-listed only when a parameter was
        registered anywhere since, a cheap global counter) and each one's storage and version."""
        if getattr(self, "_generation", None) != _PARAM_GENERATION[0]:
            self._params = list(self.bert.parameters())  # walking the modules costs ~0.3 ms: not per call
            self._generation = _PARAM_GENERATION[0]
        return (tuple(map(id, self._params)), [(p.data_ptr(), p._version) for p in self._params])

    def reset(self) -> None:
        """Drop every graph and its memory pool."""
        self.buckets.clear()
        self.pool = None
        self.stats = GraphStats()

    @property
    def pad_id(self) -> int:
        return self.bert.embeddings.word_embeddings.padding_idx or 0

    def _capture(self, key: tuple[int, int], device: torch.device) -> _Bucket:
        import time

        from .modeling import packed_forward
        from .padding import PackInfo

        t_b, b_b = key
        t0 = time.perf_counter()
        cuda = device.type == "cuda"
        before = torch.cuda.memory_reserved(device) if cuda else 0
        bucket = _Bucket(
            replay=None,
            ids=torch.full((t_b,), self.pad_id, dtype=torch.long, device=device),
            types=torch.zeros(t_b, dtype=torch.long, device=device),
            positions=torch.zeros(t_b, dtype=torch.long, device=device),
            cu_seqlens=torch.tensor(bucket_cu_seqlens([0, t_b], t_b, b_b), dtype=torch.int32, device=device),
        )
        longest = self.spec.max_position_embeddings  # the attention grid covers any real length
        info = PackInfo(b_b, longest, None, bucket.cu_seqlens, longest, None)

        def forward():
            # Empty trailing sequences start at T_b: the pooler reads a dummy row for them instead.
            first = bucket.cu_seqlens[:-1].long().clamp(max=t_b - 1)
            h, pooled, _ = packed_forward(
                self.bert, self.spec, info, bucket.ids, bucket.types, bucket.positions, None, "triton", False,
                first_token_index=first,
            )
            return h, pooled

        bucket.replay = self._replay_cls(forward, self.pool, device)
        self.pool = bucket.replay.pool
        if cuda:
            torch.cuda.synchronize(device)
            self.stats.pool_bytes += torch.cuda.memory_reserved(device) - before
        self.stats.captured[key] = time.perf_counter() - t0
        return bucket

    def __call__(
        self,
        ids: torch.Tensor,  # (T,)
        types: torch.Tensor,  # (T,)
        positions: torch.Tensor,  # (T,)
        cu_seqlens: list[int],  # (B + 1,) on the host
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        T, B = ids.numel(), len(cu_seqlens) - 1
        weights = self._fingerprint()
        if weights != self._weights:
            self.reset()
            self._weights = weights
        key = select_bucket(T, B, self.token_buckets, self.seq_buckets)
        if key is None or (key not in self.buckets and len(self.buckets) >= self.max_graphs):
            self.stats.fallbacks += 1
            return None
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = self._capture(key, ids.device)
        bucket.ids[:T].copy_(ids)
        bucket.ids[T:].fill_(self.pad_id)
        bucket.types[:T].copy_(types)
        bucket.types[T:].zero_()
        bucket.positions[:T].copy_(positions)
        bucket.positions[T:].zero_()
        cu = torch.tensor(bucket_cu_seqlens(cu_seqlens, *key), dtype=torch.int32)
        bucket.cu_seqlens.copy_(cu, non_blocking=True)
        bucket.replay.replay()
        self.stats.replays += 1
        hidden, pooled = bucket.replay.outputs
        # Copies: the static outputs are overwritten by the next replay of this bucket.
        return hidden[:T].clone(), (pooled[:B].clone() if pooled is not None else None)


# =============================================================================== tuned-config cache
def cache_dir() -> Path:
    """BERTFAST_CACHE_DIR, else $XDG_CACHE_HOME/bertfast, else ~/.cache/bertfast."""
    env = os.environ.get("BERTFAST_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bertfast"


def kernel_source_hash() -> str:
    """Hash of every kernel source file: an edited kernel invalidates its tuned configs."""
    h = hashlib.sha256()
    kdir = Path(__file__).resolve().parent / "kernels"
    for path in sorted(kdir.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


class TunedConfigCache:
    """Kernel configs chosen per shape bucket, stored per (device name, triton version, kernel hash).

    The file holds one JSON object with a header of those three fields and `configs`:
    {kernel name: {shape key: config dict}}. A file whose header differs from the running process
    (another GPU, another triton, edited kernels) is ignored and overwritten on save, never used.
    """

    def __init__(self, device_name: str, triton_version: str, source_hash: str | None = None,
                 directory: str | os.PathLike | None = None):  # fmt: skip
        self.header = {
            "device": device_name,
            "triton": triton_version,
            "kernels": source_hash or kernel_source_hash(),
        }
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.configs: dict[str, dict[str, dict[str, Any]]] = {}
        self.invalid_reason: str | None = None

    @property
    def path(self) -> Path:
        slug = "".join(c if c.isalnum() else "-" for c in self.header["device"]).strip("-").lower()
        return self.directory / f"tuned-{slug}.json"

    def load(self) -> bool:
        """Read the file; True when it was valid for this process."""
        self.configs, self.invalid_reason = {}, None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.invalid_reason = "no cache file"
            return False
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            self.invalid_reason = f"unreadable cache file {self.path}: {e}"
            return False
        header = data.get("header") if isinstance(data, dict) else None
        if header != self.header:
            self.invalid_reason = f"stale cache file {self.path}: made for {header}, running {self.header}"
            return False
        configs = data.get("configs")
        if not isinstance(configs, dict):
            self.invalid_reason = f"malformed cache file {self.path}: no 'configs' object"
            return False
        self.configs = configs
        return True

    def get(self, kernel: str, key: str) -> dict[str, Any] | None:
        return self.configs.get(kernel, {}).get(key)

    def put(self, kernel: str, key: str, config: dict[str, Any]) -> None:
        self.configs.setdefault(kernel, {})[key] = dict(config)

    def save(self) -> Path:
        """Atomic write: a crash never leaves a half-written file behind."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tuned-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"header": self.header, "configs": self.configs}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
        return self.path
