"""The runtime: CUDA-graph runners for bertfast encoders, their options and stats, and `bertfast tune`.

This module sits above the models: the runners themselves are `bertfast.graphs.graph_runner`'s (one
`CudaGraphEncoder` per encoder module, created on its first CUDA inference call, kept in the module's
`__dict__`, replayed by `bertfast.forward.run_packed`); this module sets their options and reports on
them. Importing it installs nothing. Kernel configs are the launch
state's (`bertfast.kernels.state.launch_state(device)`, loaded on the first launch on a device).

Public helpers: `graph_stats(model)` (per encoder: buckets, calls, replays, hits, misses, evictions,
fallbacks, replay rate, memory), `warmup(model, shapes)` (capture the buckets a server needs before
it takes traffic), `set_graph_options(model, memory_budget_mb=..., max_tokens=...)`, and `tune()`
(what `bertfast tune` runs).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .encoder import FUSED_QKV_ATTR, PATCH_ATTR, RUNNER_ATTR
from .graph_plan import DEFAULT_MAX_SEQS, DEFAULT_MAX_TOKENS, check_options, power_of_two_buckets
from .graphs import OPTIONS_ATTR, graph_runner
from .modeling import BertModel
from .tuning import save_tuned


def _encoders(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every module that runs bertfast's encoder: native BertModels and patched transformers ones."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BertModel) or PATCH_ATTR in m.__dict__]


def set_graph_options(
    model: nn.Module,
    *,
    memory_budget_mb: float | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_seqs: int = DEFAULT_MAX_SEQS,
) -> nn.Module:
    """CUDA-graph limits for every encoder in `model`: the largest bucket (`max_tokens`, `max_seqs`;
    larger batches replay in parts) and the memory the graphs may keep (least recently used buckets
    are evicted past it). Drops graphs captured under other options."""
    encoders = _encoders(model)
    limits = {"memory_budget_mb": memory_budget_mb, "max_tokens": max_tokens, "max_seqs": max_seqs}
    check_options(**limits)
    for _, m in encoders:
        check_options(**limits, longest=m.embeddings.position_embeddings.num_embeddings)
    for _, m in encoders:
        m.__dict__[OPTIONS_ATTR] = dict(limits)
        m.__dict__.pop(RUNNER_ATTR, None)
    return model


def refresh(model: nn.Module) -> nn.Module:
    """Forget everything bertfast derived from the weights: the fused QKV copies and the CUDA graphs.

    Needed only after writing weights through `.data` (e.g. `p.data.mul_(2)` or `p.data += delta`),
    which bypasses PyTorch's version counters; ordinary in-place updates (optimizer steps under
    no_grad, `p.mul_(2)`), new tensors and moves are seen without it.
    """
    for m in model.modules():
        m.__dict__.pop(FUSED_QKV_ATTR, None)
        m.__dict__.pop(RUNNER_ATTR, None)
    return model


def graph_stats(model: nn.Module) -> dict[str, dict]:
    """For each encoder in `model` that holds a graph runner: live buckets (with capture seconds),
    calls, replays, hits, misses, evictions, eager fallbacks, replay rate, and memory (MB, >= 0)."""
    out = {}
    for name, m in model.named_modules():
        runner = m.__dict__.get(RUNNER_ATTR)
        if runner is not None:
            out[name or "."] = runner.stats_dict()
    return out


def warmup(model: nn.Module, shapes: Iterable[tuple[int, int]], *, device: str | torch.device | None = None) -> dict:
    """Run every encoder in `model` once per (batch, seq_len) in `shapes`, so that the CUDA graphs (and
    compiled kernels) those batch shapes need exist before traffic arrives. Returns graph_stats(model).

    Random token ids are used (the graphs do not depend on values). A no-op on the CPU apart from
    running the forwards.
    """
    shapes = [tuple(s) for s in shapes]
    for s in shapes:
        if len(s) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in s):
            raise ValueError(f"shapes must be (batch, seq_len) pairs of positive ints, got {s!r}")
    encoders = _encoders(model)
    if not encoders:
        raise TypeError(f"warmup() found no bertfast-optimized BERT encoder in {type(model).__name__}")
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for _, m in encoders:
            param = m.embeddings.word_embeddings.weight
            dev = torch.device(device) if device is not None else param.device
            vocab, max_len = (
                m.embeddings.word_embeddings.num_embeddings,
                m.embeddings.position_embeddings.num_embeddings,
            )
            for batch, seq in shapes:
                if seq > max_len:
                    raise ValueError(f"shapes: seq_len {seq} exceeds max_position_embeddings ({max_len})")
                ids = torch.randint(1, vocab, (batch, seq), generator=g).to(dev)
                m(input_ids=ids, attention_mask=torch.ones_like(ids))
    return graph_stats(model)


# --------------------------------------------------------------------------- bertfast tune
def _time_ms(fn, reps: int = 30) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def model_gemm_shapes(model, tokens: list[int]) -> list[tuple[int, int, int, str]]:
    """The (M, N, K, epilogue) of every GEMM a BERT forward runs, for each token count in `tokens`."""
    from .activations import kernel_name
    from .kernels import gemm_dispatch

    c = model.config
    H, I = c.hidden_size, c.intermediate_size
    ffn1 = gemm_dispatch.epilogue_name(True, kernel_name(c.activation), False)
    ln = gemm_dispatch.epilogue_name(True, "", True, layernorm=True)
    shapes = []
    for m in tokens:
        shapes += [(m, 3 * H, H, "bias"), (m, H, H, ln), (m, I, H, ffn1), (m, H, I, ln)]
    return shapes


def tune(
    model,
    *,
    max_tokens: int = 4096,
    seq_len: int = 128,
    device: str = "cuda",
    progress: bool = False,
    gemm_table: str | None = None,
) -> list[dict[str, Any]]:
    """Tune a native bertfast model on CUDA, ahead of time, for every token bucket up to `max_tokens`:

    1. with `gemm_table` (a path), time every GEMM implementation on the model's shapes
       (kernels.gemm_dispatch.measure_choices), write the choice table there and use it now (the
       project commits these as bertfast/kernels/tables/<gpu>.json);
    2. run each bucket under Triton's autotuner, which records its winners in the config tables, and
       write them to the user's tuned-config file (loaded by later processes);
    3. capture each bucket's CUDA graph and time its replay.
    Returns one row per bucket (tokens, sequences, replay ms) and a last row naming the files.
    """
    from .kernels import gemm_dispatch
    from .kernels.state import launch_state

    if not torch.cuda.is_available():
        raise RuntimeError("bertfast tune needs a CUDA device: it autotunes on the GPU")
    model = model.to(device).eval().set_backend("auto").set_cuda_graphs(True)
    dev = torch.device(device)
    state = launch_state(dev)
    sizes = power_of_two_buckets(max_tokens)
    bar = _progress(len(sizes) + (gemm_table is not None), "tune", progress)
    written: dict[str, Any] = {}
    if gemm_table is not None:
        dtype = model.embeddings.word_embeddings.weight.dtype
        rows = gemm_dispatch.measure_choices(model_gemm_shapes(model, sizes), dtype, dev)
        path = gemm_dispatch.write_table(rows, gemm_table)
        state.set_choice_table(gemm_dispatch.load_choice_table(path, torch.cuda.get_device_name(dev)))
        written["gemm_table"] = str(path)
        bar.update(1)
    rows = []
    g = torch.Generator().manual_seed(0)
    for tokens in sizes:
        n = min(seq_len, tokens, model.config.max_position_embeddings)
        lengths = [n] * max(1, tokens // n)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=dev)
        ids = torch.randint(1, model.config.vocab_size, (int(cu[-1]),), generator=g).to(dev)
        with torch.inference_mode():
            with state.autotuning():  # launchers run Triton's autotuner and record the winners
                model.set_cuda_graphs(False)
                model.forward_packed(ids, cu)
                model.set_cuda_graphs(True)
            model.forward_packed(ids, cu)  # captures this bucket with the tuned configs
            ms = _time_ms(lambda ids=ids, cu=cu: model.forward_packed(ids, cu))
        rows.append(
            {
                "tokens": tokens,
                "sequences": len(lengths),
                "ms": round(ms, 4),
                "us_per_token": round(1000 * ms / ids.numel(), 3),
            }
        )
        bar.update(1)
    bar.close()
    saved = save_tuned(dev)
    stats = graph_runner(model, model.spec, dev).stats_dict()
    rows.append({"cache": saved, **written, "graph_memory_mb": round(stats["memory_mb"], 1)})
    return rows


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="bucket")
