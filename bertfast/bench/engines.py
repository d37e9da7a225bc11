"""The engines a bench run compares: transformers' BertModel run several ways on one set of weights.

Each engine's `build(model_name, master_state, dtype, device)` returns a forward `(ids, mask) ->
last_hidden_state` carrying the module it runs as `.model`. Peers are every engine whose name does
not start with "bertfast".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .models import build_hf

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids, mask) -> last_hidden_state


@dataclass(frozen=True)
class Engine:
    name: str
    devices: tuple[str, ...]
    cuda_graphs: bool
    # build(model_name, master_state, dtype, device) -> forward
    build: Callable[[str, dict, torch.dtype, torch.device], Forward]
    dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)


def is_peer(engine_name: str) -> bool:
    """A peer is anything that is not bertfast."""
    return not engine_name.startswith("bertfast")


def _hf_forward_fn(model, before_call: Callable[[], None] | None = None) -> Forward:
    def fwd(ids, mask):
        if before_call is not None:
            before_call()
        return model(input_ids=ids, attention_mask=mask).last_hidden_state

    fwd.model = model  # type: ignore[attr-defined]
    return fwd


def _build_hf(impl: str):
    def build(model_name, state, dtype, device):
        return _hf_forward_fn(build_hf(model_name, impl, state).to(device=device, dtype=dtype))

    return build


def _build_bertfast(cuda_graphs: bool):
    def build(model_name, state, dtype, device):
        import bertfast

        m = build_hf(model_name, "sdpa", state).to(device=device, dtype=dtype)
        return _hf_forward_fn(bertfast.optimize(m, backend="auto", cuda_graphs=cuda_graphs))

    return build


def _raise_dynamo_limits(limit: int = 256) -> None:
    """Room for one graph per shape of a run, so that dynamo never silently falls back to eager."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))


def _build_compile(model_name, state, dtype, device):
    """torch.compile's default mode on HF SDPA: dynamic shapes after the first recompile."""
    _raise_dynamo_limits()
    m = build_hf(model_name, "sdpa", state).to(device=device, dtype=dtype)
    fwd = _hf_forward_fn(torch.compile(m))
    fwd.model = m  # type: ignore[attr-defined]
    return fwd


def _build_compile_cudagraphs(model_name, state, dtype, device):
    """torch.compile(mode="reduce-overhead") on HF SDPA, static shapes: what a user picks for latency.

    On CUDA, Inductor's kernels replay from CUDA graphs (one per shape); elsewhere the mode has no
    graphs and this is Inductor's code as a user would get it. Each call begins a new cudagraph
    step, so a replay may overwrite the previous call's output (callers read it before the next call).
    """
    _raise_dynamo_limits()
    m = build_hf(model_name, "sdpa", state).to(device=device, dtype=dtype)
    compiled = torch.compile(m, mode="reduce-overhead", dynamic=False)
    mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None) if device.type == "cuda" else None
    fwd = _hf_forward_fn(compiled, before_call=mark_step)
    fwd.model = m  # type: ignore[attr-defined]
    return fwd


ENGINES: list[Engine] = [
    Engine("bertfast", ("cuda", "cpu"), False, _build_bertfast(cuda_graphs=False)),
    Engine("bertfast-graphs", ("cuda",), True, _build_bertfast(cuda_graphs=True)),
    Engine("hf-eager", ("cuda", "cpu"), False, _build_hf("eager")),
    Engine("hf-sdpa", ("cuda", "cpu"), False, _build_hf("sdpa")),
    Engine("torch-compile", ("cuda", "cpu"), False, _build_compile),
    Engine("torch-compile-cudagraphs", ("cuda", "cpu"), True, _build_compile_cudagraphs),
]
# Each alternative in its strongest configuration, so that "speed-up vs best peer" is against what a user
# who cares about speed would run: on CUDA torch.compile with CUDA graphs (HF SDPA and eager as context);
# on the CPU torch.compile's default mode (dynamic shapes after the first recompile: a static compile per
# padded shape would cost a minute of Inductor per shape) beside HF SDPA.
DEFAULT_ENGINES = {
    "cuda": ["bertfast", "bertfast-graphs", "hf-eager", "hf-sdpa", "torch-compile-cudagraphs"],
    "cpu": ["bertfast", "hf-sdpa", "torch-compile"],
}


def engine(name: str) -> Engine:
    for e in ENGINES:
        if e.name == name:
            return e
    raise ValueError(f"engine: unknown engine {name!r}; one of {[e.name for e in ENGINES]}")
