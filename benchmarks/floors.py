"""The two floors of a BERT forward: FLOPs over the matrix rate, bytes over memory bandwidth.

    python benchmarks/floors.py                          # BERT-base, 32 x 128, fp16, H100 ceilings
    python benchmarks/floors.py --model bert-large --batch 8 --seq 512 --tflops 790 --tbps 4.3

Per kernel of one layer (T = batch x seq real tokens, H hidden, I intermediate, N heads, 2-byte
dtype): FLOPs of the GEMMs and of attention (QK^T and PV), and the fewest bytes each kernel must
move (every input read once, every output written once, weights included). The larger of the two
times is the kernel's floor; measured time over floor is the gap a report quotes. Ceilings default
to what this workplace measured on an H100 (798 TFLOP/s bf16 matmul, 3.0 TB/s device copy).
"""

from __future__ import annotations

import argparse

MODELS = {
    "minilm": dict(hidden=384, layers=6, heads=12, intermediate=1536),
    "bert-base": dict(hidden=768, layers=12, heads=12, intermediate=3072),
    "bert-large": dict(hidden=1024, layers=24, heads=16, intermediate=4096),
}


def layer_kernels(T: int, lengths: list[int], H: int, I: int, elem: int = 2) -> list[tuple[str, float, float]]:
    """(kernel, FLOPs, bytes) for one encoder layer on T packed tokens."""
    sq = sum(n * n for n in lengths)
    return [
        ("qkv gemm + bias", 2 * T * H * 3 * H, elem * (T * H + 3 * H * H + 3 * H + 3 * T * H)),
        ("attention", 4 * sq * H, elem * (3 * T * H + T * H)),
        ("out-proj + bias + residual", 2 * T * H * H, elem * (T * H + H * H + H + T * H + T * H)),
        ("layernorm", 8 * T * H, elem * (T * H + 2 * H + T * H)),
        ("ffn1 + bias + gelu", 2 * T * H * I, elem * (T * H + H * I + I + T * I)),
        ("ffn2 + bias + residual", 2 * T * I * H, elem * (T * I + I * H + H + T * H + T * H)),
        ("layernorm", 8 * T * H, elem * (T * H + 2 * H + T * H)),
    ]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-base", choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--tflops", type=float, default=798.0, help="matrix ceiling, TFLOP/s")
    ap.add_argument("--tbps", type=float, default=3.0, help="memory ceiling, TB/s (read + write)")
    args = ap.parse_args(argv)
    m = MODELS[args.model]
    H, I, L = m["hidden"], m["intermediate"], m["layers"]
    lengths = [args.seq] * args.batch
    T = sum(lengths)
    rows = layer_kernels(T, lengths, H, I)
    print(f"{args.model}, batch {args.batch} x seq {args.seq} (T = {T}), fp16/bf16, "
          f"ceilings {args.tflops:g} TFLOP/s and {args.tbps:g} TB/s")  # fmt: skip
    print(f"| kernel (per layer) | GFLOP | MB | compute us | memory us | floor us |")
    print("|---|---|---|---|---|---|")
    total_floor = total_flops = total_bytes = 0.0
    for name, flops, nbytes in rows:
        c_us = flops / (args.tflops * 1e12) * 1e6
        m_us = nbytes / (args.tbps * 1e12) * 1e6
        total_floor += max(c_us, m_us)
        total_flops += flops
        total_bytes += nbytes
        print(f"| {name} | {flops / 1e9:.2f} | {nbytes / 1e6:.2f} | {c_us:.1f} | {m_us:.1f} | {max(c_us, m_us):.1f} |")
    emb_bytes = 2 * (T * H + T * H)  # gathered rows in, one row out per token (tables mostly in L2)
    print(f"\nwhole model, {L} layers: {L * total_flops / 1e12:.3f} TFLOP, {L * total_bytes / 1e9:.2f} GB "
          f"(+ embeddings {emb_bytes / 1e6:.1f} MB)")  # fmt: skip
    print(f"floor, kernel by kernel: {L * total_floor / 1e3:.3f} ms; "
          f"compute alone {L * total_flops / (args.tflops * 1e12) * 1e3:.3f} ms; "
          f"memory alone {L * total_bytes / (args.tbps * 1e12) * 1e3:.3f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
