"""Planning CUDA-graph buckets on the host: which bucket a batch takes, how it is laid out, how a big
batch is split. Pure Python over ints, tested without a GPU; graphs.py captures and replays the plans.
"""

from __future__ import annotations

import math

DUMMY_CHUNK = 16


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
        raise ValueError(
            f"a batch of {num_tokens} tokens in {num_seqs} sequences does not fit bucket ({token_bucket}, {seq_bucket})"
        )
    out = list(cu_seqlens)
    pos = num_tokens
    while pos < token_bucket:
        pos = min(pos + DUMMY_CHUNK, token_bucket)
        out.append(pos)
    out.extend([token_bucket] * (seq_bucket + 1 - len(out)))
    return out


def length_bucket(longest: int, max_len: int) -> int:
    """The attention grid's length for a batch whose longest sequence is `longest`: the next power of
    two (at least DUMMY_CHUNK, which the dummy sequences need), capped at the model's maximum."""
    return min(max(DUMMY_CHUNK, 1 << max(0, math.ceil(math.log2(max(longest, 1))))), max(max_len, DUMMY_CHUNK))


def split_batch(lengths: list[int], max_tokens: int, max_seqs: int) -> list[tuple[int, int]]:
    """Cut a batch into runs of whole sequences [start, end) of at most `max_tokens` tokens and
    `max_seqs` // 2 sequences (the other half of the slots holds the dummy chunks), greedily. With the
    default limits every run fits a bucket; the runner checks and halves any run that does not.
    Every sequence must be <= max_tokens."""
    parts, start, tokens = [], 0, 0
    cap = max(1, max_seqs // 2)
    for i, n in enumerate(lengths):
        if n > max_tokens:
            raise ValueError(f"a sequence of {n} tokens exceeds the largest graph bucket ({max_tokens} tokens)")
        if i > start and (tokens + n > max_tokens or i - start >= cap):
            parts.append((start, i))
            start, tokens = i, 0
        tokens += n
    parts.append((start, len(lengths)))
    return parts


# The largest bucket by default: 8192 tokens in 512 sequence slots (larger batches replay in parts).
DEFAULT_MAX_TOKENS = 8192
DEFAULT_MAX_SEQS = 512


def check_options(
    *,
    memory_budget_mb: float | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_seqs: int = DEFAULT_MAX_SEQS,
    longest: int | None = None,
) -> None:
    """The runner's limits, checked once wherever they come in (optimize, set_graph_options, the
    runner): ints of at least one bucket, a positive budget or None, and room for the longest sequence."""
    if memory_budget_mb is not None and (isinstance(memory_budget_mb, bool) or not memory_budget_mb > 0):
        raise ValueError(f"memory_budget_mb must be a positive number or None, got {memory_budget_mb!r}")
    for name, value, least in (("max_tokens", max_tokens, 16), ("max_seqs", max_seqs, 4)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    if longest is not None and max_tokens < longest:
        raise ValueError(f"max_tokens ({max_tokens}) must hold the model's longest sequence ({longest} tokens)")
