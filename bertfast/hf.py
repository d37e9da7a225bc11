"""`optimize()`: patch Hugging Face BERT models (and sentence-transformers models) in place.

Every transformers `BertModel` inside the given model gets a new `forward` (an instance attribute;
the class is untouched) that runs bertfast's packed path over the module's own parameters. Nothing
else changes: parameter names, shapes, `state_dict()`, `save_pretrained()`, the task heads on top
(HF's own code, with HF's losses) and the output classes are all HF's. `restore()` undoes it.

What the fast path does not compute, it hands back to HF's own forward, unchanged and exact:
attention probabilities (`output_attentions=True`), cross-attention inputs and key/value caches.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import ops
from .config import BertConfig
from .modeling import BertPreTrainedModel, Spec, hf_style_forward


@dataclass
class _PatchState:
    spec: Spec
    backend: str
    cuda_graphs: bool


def _is_hf_bert_model(module: nn.Module) -> bool:
    return any(
        c.__name__ == "BertModel" and c.__module__.startswith("transformers.models.bert")
        for c in type(module).__mro__
    )


def _hf_forward(
    self: nn.Module,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    past_key_values: Any = None,
    use_cache: bool | None = None,
    output_attentions: bool | None = None,
    output_hidden_states: bool | None = None,
    return_dict: bool | None = None,
    **kwargs: Any,
):
    """transformers' BertModel.forward, same signature and outputs, computed by bertfast."""
    state: _PatchState = self.__dict__["_bertfast"]
    cfg = self.config
    if output_attentions is None:
        output_attentions = getattr(cfg, "output_attentions", False)
    extra = {k: v for k, v in kwargs.items() if v is not None}
    if output_attentions or encoder_hidden_states is not None or past_key_values is not None or use_cache or extra:
        return type(self).forward(
            self,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
            **kwargs,
        )
    if output_hidden_states is None:
        output_hidden_states = getattr(cfg, "output_hidden_states", False)
    if return_dict is None:
        return_dict = cfg.return_dict if hasattr(cfg, "return_dict") else True
    last, pooled, hidden = hf_style_forward(
        self,
        state.spec,
        state.backend,
        input_ids,
        attention_mask,
        token_type_ids,
        position_ids,
        inputs_embeds,
        bool(output_hidden_states),
        state.cuda_graphs,
    )
    from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

    out = BaseModelOutputWithPoolingAndCrossAttentions(
        last_hidden_state=last, pooler_output=pooled, hidden_states=hidden
    )
    return out if return_dict else out.to_tuple()


def optimize(model: nn.Module, *, backend: str = "auto", cuda_graphs: bool = True) -> nn.Module:
    """Make a BERT model fast, in place, and return it (for chaining).

    Accepts a transformers BertModel or any BertFor* model, a sentence-transformers model with a
    BERT encoder, or a native bertfast model. `backend` is "auto" (Triton kernels on CUDA tensors,
    torch elsewhere), "torch" or "triton". `cuda_graphs` replays the forward from CUDA graphs per
    token bucket where it can (CUDA, Triton path, inference; see bertfast.graphs). Unsupported
    configs (decoders, cross-attention, relative position embeddings) raise ConfigError (a
    ValueError) here, before anything is patched.
    """
    ops.check_backend(backend)
    if not isinstance(cuda_graphs, bool):
        raise TypeError(f"cuda_graphs must be a bool, got {type(cuda_graphs).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize() takes a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, BertPreTrainedModel):
        return model.set_backend(backend).set_cuda_graphs(cuda_graphs)
    targets = [m for m in model.modules() if _is_hf_bert_model(m)]
    if not targets:
        raise TypeError(
            f"optimize() found no BERT encoder in {type(model).__name__}: it takes a transformers BertModel, "
            "a BertFor* model, a sentence-transformers model with a BERT encoder, or a bertfast model"
        )
    specs = [Spec.from_config(BertConfig.from_hf(m.config)) for m in targets]  # validate all before patching
    for module, spec in zip(targets, specs):
        module.__dict__["_bertfast"] = _PatchState(spec, backend, cuda_graphs)
        module.__dict__.pop("_bertfast_graphs", None)  # a re-optimize starts with no graphs
        module.forward = types.MethodType(_hf_forward, module)
    return model


def is_optimized(model: nn.Module) -> bool:
    return any("_bertfast" in m.__dict__ for m in model.modules())


def restore(model: nn.Module) -> nn.Module:
    """Undo optimize(): every patched encoder runs transformers' own forward again."""
    for m in model.modules():
        if "_bertfast" in m.__dict__:
            del m.__dict__["_bertfast"]
            m.__dict__.pop("forward", None)
            m.__dict__.pop("_bertfast_graphs", None)
            for sub in m.modules():
                sub.__dict__.pop("_bertfast_qkv", None)
    return model


def graph_stats(model: nn.Module) -> dict[str, dict]:
    """For each encoder in `model` that holds CUDA graphs: captured buckets (with capture seconds),
    replays, eager fallbacks, and the device memory the graphs reserved."""
    out = {}
    for name, m in model.named_modules():
        runner = m.__dict__.get("_bertfast_graphs")
        if runner is not None:
            st = runner.stats
            out[name or "."] = {
                "buckets": {f"{t}x{b}": round(sec, 3) for (t, b), sec in st.captured.items()},
                "replays": st.replays,
                "fallbacks": st.fallbacks,
                "memory_mb": st.pool_bytes / 2**20,
            }
    return out
