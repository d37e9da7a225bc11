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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import ops, runtime
from .config import BertConfig
from .encoder import FUSED_QKV_ATTR, PATCH_ATTR, RUNNER_ATTR, Spec, hf_style_forward
from .modeling import BertPreTrainedModel


@dataclass
class _PatchState:
    spec: Spec
    backend: str
    cuda_graphs: bool


def _is_hf_bert_model(module: nn.Module) -> bool:
    return any(
        c.__name__ == "BertModel" and c.__module__.startswith("transformers.models.bert") for c in type(module).__mro__
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
    state: _PatchState = self.__dict__[PATCH_ATTR]
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


def optimize(
    model: nn.Module,
    *,
    backend: str = "auto",
    cuda_graphs: bool = True,
    memory_budget_mb: float | None = None,
    warmup: Iterable[tuple[int, int]] | None = None,
) -> nn.Module:
    """Make a BERT model fast, in place, and return it (for chaining).

    Accepts a transformers BertModel or any BertFor* model, a sentence-transformers model with a
    BERT encoder, or a native bertfast model. `backend` is "auto" (Triton kernels on CUDA tensors,
    torch elsewhere), "torch" or "triton". `cuda_graphs` replays the forward from CUDA graphs per
    bucket where it can (CUDA, Triton path, inference; see bertfast.graphs), keeping at most
    `memory_budget_mb` of graphs (None: no limit). `warmup`, a list of (batch, seq_len), captures
    those buckets now (the model must already be on its device and in eval mode). Unsupported
    configs (decoders, cross-attention, relative position embeddings) raise ConfigError (a
    ValueError) here, before anything is patched.
    """
    ops.check_backend(backend)
    if not isinstance(cuda_graphs, bool):
        raise TypeError(f"cuda_graphs must be a bool, got {type(cuda_graphs).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize() takes a torch.nn.Module, got {type(model).__name__}")
    runtime.check_options(memory_budget_mb=memory_budget_mb)  # before anything is patched
    if isinstance(model, BertPreTrainedModel):
        model.set_backend(backend).set_cuda_graphs(cuda_graphs)
    else:
        targets = [m for m in model.modules() if _is_hf_bert_model(m)]
        if not targets:
            raise TypeError(
                f"optimize() found no BERT encoder in {type(model).__name__}: it takes a transformers BertModel, "
                "a BertFor* model, a sentence-transformers model with a BERT encoder, or a bertfast model"
            )
        specs = [Spec.from_config(BertConfig.from_hf(m.config)) for m in targets]  # validate all before patching
        for module, spec in zip(targets, specs):
            module.__dict__[PATCH_ATTR] = _PatchState(spec, backend, cuda_graphs)
            module.__dict__.pop(RUNNER_ATTR, None)  # a re-optimize starts with no graphs
            module.forward = types.MethodType(_hf_forward, module)
    runtime.set_graph_options(model, memory_budget_mb=memory_budget_mb)
    if warmup is not None:
        runtime.warmup(model, warmup)
    return model


def _patched(model: nn.Module, caller: str) -> list[nn.Module]:
    """The patched encoders in `model`; TypeError naming `caller` when there are none."""
    patched = [m for m in model.modules() if PATCH_ATTR in m.__dict__]
    if not patched:
        raise TypeError(f"{caller}() found no bertfast encoder in {type(model).__name__}: call optimize() first")
    return patched


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """The backend ("auto", "torch", "triton") of every bertfast encoder in `model`, native or patched."""
    ops.check_backend(backend)
    if isinstance(model, BertPreTrainedModel):
        return model.set_backend(backend)
    for m in _patched(model, "set_backend"):
        m.__dict__[PATCH_ATTR].backend = backend
    return model


def set_cuda_graphs(model: nn.Module, enabled: bool) -> nn.Module:
    """CUDA graphs on or off for every bertfast encoder in `model`, native or patched; off drops them."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    if isinstance(model, BertPreTrainedModel):
        return model.set_cuda_graphs(enabled)
    for m in _patched(model, "set_cuda_graphs"):
        m.__dict__[PATCH_ATTR].cuda_graphs = enabled
        if not enabled:
            m.__dict__.pop(RUNNER_ATTR, None)
    return model


def is_optimized(model: nn.Module) -> bool:
    return any(PATCH_ATTR in m.__dict__ for m in model.modules())


def restore(model: nn.Module) -> nn.Module:
    """Undo optimize(): every patched encoder runs transformers' own forward again."""
    for m in model.modules():
        if PATCH_ATTR in m.__dict__:
            del m.__dict__[PATCH_ATTR]
            m.__dict__.pop("forward", None)
            m.__dict__.pop(RUNNER_ATTR, None)
            m.__dict__.pop(runtime.OPTIONS_ATTR, None)
            for sub in m.modules():
                sub.__dict__.pop(FUSED_QKV_ATTR, None)
    return model
