"""The two floors of a BERT forward: FLOPs over the matrix rate, bytes over memory bandwidth.

    python benchmarks/floors.py                          # BERT-base, 32 x 128, fp16, H100 ceilings
    python benchmarks/floors.py --model bert-large --batch 8 --seq 512 --tflops 790 --tbps 4.3

Per kernel of one layer (T = batch x seq real tokens, H hidden, I intermediate, 2-byte dtype): FLOPs
of the GEMMs and of attention (QK^T and PV), and the fewest bytes each kernel must move (every input
read once, every output written once, weights included). The larger of the two times is the
kernel's floor; measured time over floor is the gap a report quotes. Ceilings default to what this
workplace measured on an H100 (798 TFLOP/s bf16 matmul, 3.0 TB/s device copy). The arithmetic lives
in bertfast.bench.floors, which `bertfast bench --profile` uses too.
"""

from __future__ import annotations

import argparse

from bertfast.bench.floors import MODELS, kernel_floor_ms, layer_kernels, part_floors_ms


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
    print(
        f"{args.model}, batch {args.batch} x seq {args.seq} (T = {T}), fp16/bf16, "
        f"ceilings {args.tflops:g} TFLOP/s and {args.tbps:g} TB/s"
    )
    print("| kernel (per layer) | part | GFLOP | MB | compute us | memory us | floor us |")
    print("|---|---|---|---|---|---|---|")
    total_floor = total_flops = total_bytes = 0.0
    for name, part, flops, nbytes in layer_kernels(T, lengths, H, I):
        c_us = flops / (args.tflops * 1e12) * 1e6
        m_us = nbytes / (args.tbps * 1e12) * 1e6
        floor_us = kernel_floor_ms(flops, nbytes, args.tflops, args.tbps) * 1e3
        total_floor += floor_us
        total_flops += flops
        total_bytes += nbytes
        print(
            f"| {name} | {part} | {flops / 1e9:.2f} | {nbytes / 1e6:.2f} | {c_us:.1f} | {m_us:.1f} | {floor_us:.1f} |"
        )
    emb_bytes = 2 * (T * H + T * H)  # gathered rows in, one row out per token (tables mostly in L2)
    print(
        f"\nwhole model, {L} layers: {L * total_flops / 1e12:.3f} TFLOP, {L * total_bytes / 1e9:.2f} GB "
        f"(+ embeddings {emb_bytes / 1e6:.1f} MB)"
    )
    print(
        f"floor, kernel by kernel: {L * total_floor / 1e3:.3f} ms; "
        f"compute alone {L * total_flops / (args.tflops * 1e12) * 1e3:.3f} ms; "
        f"memory alone {L * total_bytes / (args.tbps * 1e12) * 1e3:.3f} ms"
    )
    parts = part_floors_ms(lengths, H, I, L, args.tflops, args.tbps)
    print("per part (ms, embeddings' LayerNorm under norms): " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
