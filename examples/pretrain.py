"""A tiny BERT pretraining run (masked LM + next-sentence prediction) with BertForPreTraining,
starting from the embedded MiniLM encoder (its MLM and NSP heads are fresh); prints the loss falling.

    python examples/pretrain.py             # ~2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import DATA, model_dir, setup, tokenizer

import bertfast
from bertfast.data import batch_pretraining, nsp_pairs


def documents(path):
    text = Path(path).read_text(encoding="utf-8")
    return [[s for s in block.splitlines() if s.strip()] for block in text.split("\n\n") if block.strip()]


def eval_loss(model, batch):
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    return out.loss.item()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--fixed-size", type=int, default=32, help="pairs in the fixed measuring batch")
    args = ap.parse_args(argv)
    setup(0)
    t0 = time.time()
    docs = documents(DATA / "pretrain.txt")
    path = model_dir()
    tok = tokenizer(path)
    model = bertfast.BertForPreTraining.from_pretrained(path)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    # a fixed batch (fixed pairs, fixed masks) to measure the loss on the same data before and after
    fixed = batch_pretraining(
        tok, nsp_pairs(docs, seed=999)[: args.fixed_size], max_length=48, generator=torch.Generator().manual_seed(999)
    )
    first = eval_loss(model, fixed)
    print(f"{sum(map(len, docs))} sentences in {len(docs)} documents; fixed-batch loss before: {first:.4f}")
    pool, epoch, running = [], 0, []
    for step in range(1, args.steps + 1):
        if len(pool) < args.batch_size:  # fresh NSP pairs (new NotNext partners) every pass over the text
            pool += nsp_pairs(docs, seed=epoch)
            epoch += 1
        pairs, pool = pool[: args.batch_size], pool[args.batch_size :]
        batch = batch_pretraining(tok, pairs, max_length=48, generator=gen)  # fresh masks every step
        model.train()
        out = model(**batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        running.append(out.loss.item())
        if step % 10 == 0:
            print(f"step {step:3d} train loss (mean of last 10) {sum(running[-10:]) / len(running[-10:]):.4f}")
    last = eval_loss(model, fixed)
    print(f"fixed-batch loss (MLM + NSP): {first:.4f} -> {last:.4f} after {args.steps} steps, {time.time() - t0:.1f} s")
    return first, last


if __name__ == "__main__":
    main()
