"""How one call runs the encoder: which backend, eagerly or replayed from CUDA graphs, padded or packed.

`run_packed` is the one place that decision is made, visible where the call is made: the Triton
path at inference on token ids asks `graphs.graph_runner` for the module's CUDA-graph runner and
replays it; every other call runs `encoder.packed_forward` eagerly. `hf_style_forward` (padded in,
padded out) and `packed_style_forward` (packed in, packed out) are the two faces the native models
(`bertfast.modeling`) and the patched transformers models (`bertfast.hf`) call.

Imports point down: forward -> graphs -> encoder (the math). Nothing is installed at import.
"""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from .encoder import Spec, packed_forward
from .graphs import graph_runner
from .inputs import Packed, prepare_packed, prepare_padded
from .outputs import PackedModelOutput
from .padding import pad


def needs_autograd(module: nn.Module, *tensors: torch.Tensor | None) -> bool:
    if not torch.is_grad_enabled():
        return False
    if any(t is not None and t.requires_grad for t in tensors):
        return True
    return any(p.requires_grad for p in module.parameters())


def choose_backend(module: nn.Module, requested: str, param: torch.Tensor, *tensors: torch.Tensor | None) -> str:
    """The backend this call runs: the kernels are inference-only, so training or grads mean torch."""
    grads = needs_autograd(module, *tensors)
    dropping = module.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())
    return ops.resolve_backend(requested, param.device, param.dtype, grads or dropping)


def run_packed(
    bert: nn.Module,
    spec: Spec,
    packed: Packed,
    backend: str,
    output_hidden_states: bool,
    cuda_graphs: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor] | None]:
    """packed_forward, replayed from CUDA graphs when the call allows it (Triton path, inference, token
    ids, last layer only); eagerly otherwise."""
    info = packed.info
    if backend == "triton":
        device = packed.types.device
        if cuda_graphs and packed.embeds is None and not output_hidden_states and not bert.training:
            runner = graph_runner(bert, spec, device)
            if runner is not None:
                cu_host = info.cu_host if info.cu_host is not None else info.cu_seqlens.tolist()
                out = runner(packed.ids, packed.types, packed.positions, cu_host)
                if out is not None:
                    return out[0], out[1], None
    return packed_forward(
        bert, spec, info, packed.ids, packed.types, packed.positions, packed.embeds, backend, output_hidden_states
    )


def hf_style_forward(
    bert: nn.Module,
    spec: Spec,
    backend: str,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    output_hidden_states: bool = False,
    cuda_graphs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...] | None]:
    """Padded in, padded out: (last hidden (B, S, H) with zeros at padding, pooled (B, H), hidden states)."""
    param = spec.family.embeddings(bert).word.weight
    packed = prepare_padded(spec, param, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
    run = choose_backend(bert, backend, param, packed.embeds)
    h, pooled, states = run_packed(bert, spec, packed, run, output_hidden_states, cuda_graphs)
    hidden = tuple(pad(s, packed.info) for s in states) if states is not None else None  # each (B, S, H)
    return pad(h, packed.info), pooled, hidden


def packed_style_forward(
    bert: nn.Module,
    spec: Spec,
    backend: str,
    input_ids: torch.Tensor,  # (T,)
    cu_seqlens: torch.Tensor,  # (B + 1,)
    max_seqlen: int | None = None,
    token_type_ids: torch.Tensor | None = None,  # (T,)
    position_ids: torch.Tensor | None = None,  # (T,)
    output_hidden_states: bool = False,
    cuda_graphs: bool = False,
) -> PackedModelOutput:
    """Packed in, packed out: B sequences laid end to end in `input_ids`, no padding anywhere; positions
    as the family numbers them within each sequence unless given."""
    param = spec.family.embeddings(bert).word.weight
    packed = prepare_packed(spec, param, input_ids, cu_seqlens, max_seqlen, token_type_ids, position_ids)
    run = choose_backend(bert, backend, param)
    h, pooled, states = run_packed(bert, spec, packed, run, output_hidden_states, cuda_graphs)
    return PackedModelOutput(
        last_hidden_state=h,  # (T, H)
        pooler_output=pooled,  # (B, H) or None
        cu_seqlens=packed.info.cu_seqlens,
        hidden_states=tuple(states) if states is not None else None,
    )
