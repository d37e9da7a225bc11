"""Arithmetic of a BERT forward: useful FLOPs, and the floors (FLOPs over the matrix rate, bytes over
memory bandwidth) per kernel and per part (GEMMs, attention, norms).

One copy for `bertfast bench` (throughput columns, the profile's floors) and `benchmarks/floors.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

# Encoder dimensions of the models the floors script knows by name.
MODELS = {
    "minilm": dict(hidden=384, layers=6, heads=12, intermediate=1536),
    "bert-base": dict(hidden=768, layers=12, heads=12, intermediate=3072),
    "bert-large": dict(hidden=1024, layers=24, heads=16, intermediate=4096),
}
PARTS = ("gemm", "attention", "norms", "other")


def encoder_flops(lengths: Sequence[int], hidden: int, intermediate: int, layers: int) -> int:
    """Useful encoder FLOPs over real tokens: per layer 2·T·(4H² + 2·H·I) + 4·Σ lenᵢ²·H."""
    T = sum(int(n) for n in lengths)
    gemm = 2 * T * (4 * hidden * hidden + 2 * hidden * intermediate)
    attn = 4 * sum(int(n) ** 2 for n in lengths) * hidden
    return layers * (gemm + attn)


def throughput(median_ms: float, batch: int, tokens: float, flops: float, peak_tflops: float | None) -> dict:
    """ms_per_sentence, tokens_per_s, tflops (useful), frac_of_peak from one median time."""
    s = median_ms / 1e3
    tflops = flops / s / 1e12
    return dict(
        ms_per_sentence=median_ms / batch,
        tokens_per_s=tokens / s,
        tflops=tflops,
        frac_of_peak=(tflops / peak_tflops) if peak_tflops else None,
    )


def layer_kernels(T: int, lengths: Sequence[int], H: int, I: int, elem: int = 2) -> list[tuple[str, str, float, float]]:
    """(kernel, part, FLOPs, fewest bytes) for one encoder layer on T packed tokens; `elem` bytes per
    element. Bytes count every input read once and every output written once, weights included."""
    sq = sum(int(n) ** 2 for n in lengths)
    # One row per kernel: (name, part, FLOPs, bytes), aligned as a table.
    # fmt: off
    return [
        ("qkv gemm + bias", "gemm", 2 * T * H * 3 * H, elem * (T * H + 3 * H * H + 3 * H + 3 * T * H)),
        ("attention", "attention", 4 * sq * H, elem * (3 * T * H + T * H)),
        ("out-proj + bias + residual", "gemm", 2 * T * H * H, elem * (T * H + H * H + H + T * H + T * H)),
        ("layernorm", "norms", 8 * T * H, elem * (T * H + 2 * H + T * H)),
        ("ffn1 + bias + gelu", "gemm", 2 * T * H * I, elem * (T * H + H * I + I + T * I)),
        ("ffn2 + bias + residual", "gemm", 2 * T * I * H, elem * (T * I + I * H + H + T * H + T * H)),
        ("layernorm", "norms", 8 * T * H, elem * (T * H + 2 * H + T * H)),
    ]
    # fmt: on


def kernel_floor_ms(flops: float, nbytes: float, tflops: float, tbps: float) -> float:
    """The larger of compute time and memory time, in ms."""
    return max(flops / (tflops * 1e12), nbytes / (tbps * 1e12)) * 1e3


def part_floors_ms(
    lengths: Sequence[int], hidden: int, intermediate: int, layers: int, tflops: float, tbps: float, elem: int = 2
) -> dict[str, float]:
    """The floor of each part of a whole forward (ms): each kernel's floor, summed over the layers.
    'norms' includes the embedding's gather + LayerNorm (bytes of T·H in and out); 'other' has none."""
    if tflops <= 0 or tbps <= 0:
        raise ValueError(f"ceilings must be positive, got tflops={tflops!r}, tbps={tbps!r}")
    T = sum(int(n) for n in lengths)
    out = dict.fromkeys(PARTS, 0.0)
    for _, part, flops, nbytes in layer_kernels(T, lengths, hidden, intermediate, elem):
        out[part] += layers * kernel_floor_ms(flops, nbytes, tflops, tbps)
    out["norms"] += kernel_floor_ms(8 * T * hidden, elem * 2 * T * hidden, tflops, tbps)  # embeddings + LN
    return out
