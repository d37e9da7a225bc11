"""`optimize()`: patch Hugging Face encoders (and sentence-transformers models) in place.

Every transformers base model of a supported family (`bertfast.families`: BERT, RoBERTa, XLM-R,
CamemBERT, DistilBERT, ELECTRA, ALBERT, MPNet) inside the given model gets a new `forward` (an
instance attribute; the class is untouched) that runs bertfast's packed path over the module's own
parameters. Nothing else changes: parameter names, shapes, `state_dict()`, `save_pretrained()`, the
task heads on top (HF's own code, with HF's losses) and the output classes are all HF's. `restore()`
undoes it. A model holding an encoder bertfast does not support is refused before anything is patched.

What the fast path does not compute, it hands back to HF's own forward, unchanged and exact:
attention probabilities (`output_attentions=True`), hidden states selected by index, cross-attention
inputs, key/value caches and arguments it does not know.
"""

from __future__ import annotations

import functools
import inspect
import types
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import ops, runtime
from .config import ConfigError
from .encoder import FUSED_QKV_ATTR, PATCH_ATTR, RUNNER_ATTR, Spec
from .families import SUPPORTED, family_for
from .forward import hf_style_forward, packed_style_forward
from .modeling import BertPreTrainedModel
from .outputs import PackedModelOutput

# The arguments the packed path computes from (token_type_ids only where the family has token types).
_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")
# Arguments it reads as flags; use_cache is ignored by every encoder (decoders are refused).
_FLAGS = ("output_attentions", "output_hidden_states", "return_dict", "use_cache")


@dataclass
class _PatchState:
    spec: Spec
    backend: str
    cuda_graphs: bool
    positional: tuple[str, ...]  # the class forward's parameter names after self, in order


@functools.cache
def _positional_names(cls: type) -> tuple[str, ...]:
    """The names positional arguments bind to in `cls.forward` (HF's decorators keep the signature)."""
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in params if p.kind in kinds)


def _fast_arguments(state: _PatchState, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The call's arguments by name when the packed path computes exactly what HF's forward would;
    None when HF's own forward must run (attentions, caches, cross-attention, selections, unknowns)."""
    if len(args) > len(state.positional):
        return None
    named = dict(zip(state.positional, args))
    if any(k in named for k in kwargs):
        return None  # HF raises its own error for an argument given twice
    named.update(kwargs)
    family = state.spec.family
    for key, value in named.items():
        if value is None or key in _FLAGS:
            continue
        if key not in _INPUTS or (key == "token_type_ids" and not family.token_types):
            return None
    if named.get("output_attentions"):
        return None
    hidden = named.get("output_hidden_states")
    if hidden is not None and not isinstance(hidden, bool):
        return None  # an index selection: HF's capture machinery builds it
    return named


def _hf_forward(self: nn.Module, *args: Any, **kwargs: Any):
    """transformers' base-model forward, same signature and outputs, computed by bertfast."""
    state: _PatchState = self.__dict__[PATCH_ATTR]
    cfg = self.config
    named = _fast_arguments(state, args, kwargs)
    if named is None or (named.get("output_attentions") is None and getattr(cfg, "output_attentions", False)):
        return type(self).forward(self, *args, **kwargs)
    output_hidden_states = named.get("output_hidden_states")
    if output_hidden_states is None:
        output_hidden_states = bool(getattr(cfg, "output_hidden_states", False))
    return_dict = named.get("return_dict")
    if return_dict is None:
        return_dict = getattr(cfg, "return_dict", True)
    last, pooled, hidden = hf_style_forward(
        self,
        state.spec,
        state.backend,
        named.get("input_ids"),
        named.get("attention_mask"),
        named.get("token_type_ids"),
        named.get("position_ids"),
        named.get("inputs_embeds"),
        output_hidden_states,
        state.cuda_graphs,
    )
    from transformers import modeling_outputs

    family = state.spec.family
    fields: dict[str, Any] = {"last_hidden_state": last, "hidden_states": hidden}
    if family.has_pooler_output:
        fields["pooler_output"] = pooled
    out = getattr(modeling_outputs, family.output_class)(**fields)
    return out if return_dict else out.to_tuple()


def forward_packed(
    encoder: nn.Module,
    input_ids: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int | None = None,
    token_type_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    output_hidden_states: bool = False,
) -> PackedModelOutput:
    """A patched transformers base model's packed form, as a native model's `forward_packed`:
    `input_ids` (T,) of B sequences laid end to end, `cu_seqlens` (B + 1,) their offsets, no padding
    anywhere; positions as the family numbers them (RoBERTa's and MPNet's after padding_idx)."""
    state = encoder.__dict__.get(PATCH_ATTR)
    if state is None:
        raise TypeError(
            f"forward_packed() takes a transformers base model patched by optimize(), got {type(encoder).__name__}"
        )
    return packed_style_forward(
        encoder,
        state.spec,
        state.backend,
        input_ids,
        cu_seqlens,
        max_seqlen,
        token_type_ids,
        position_ids,
        output_hidden_states,
        state.cuda_graphs,
    )


def _is_transformers_base_model(module: nn.Module) -> bool:
    """A transformers PreTrainedModel that is its own base model (a head model's base is an attribute)."""
    prefix = getattr(type(module), "base_model_prefix", None)
    config = getattr(module, "config", None)
    return isinstance(prefix, str) and hasattr(config, "model_type") and getattr(module, prefix, module) is module


def _encoders_to_patch(model: nn.Module) -> list[nn.Module]:
    """Every transformers base model in `model`, each checked against its family: ConfigError
    (a ValueError) naming the model_type for one bertfast does not support, before anything is patched."""
    targets = [m for m in model.modules() if _is_transformers_base_model(m)]
    if not targets:
        raise TypeError(
            f"optimize() found no BERT encoder (nor any supported family: {', '.join(SUPPORTED)}) in "
            f"{type(model).__name__}: it takes a transformers base or task model of those families, a "
            "sentence-transformers model or CrossEncoder built on one, or a bertfast model"
        )
    for m in targets:
        family = family_for(m.config)
        names = {c.__name__ for c in type(m).__mro__}
        if not names & set(family.base_classes):
            raise ConfigError(
                f"{type(m).__name__} (model_type {family.model_type!r}) is not a base encoder bertfast patches; "
                f"for {family.model_type} it patches {', '.join(family.base_classes)}"
            )
    return targets


@functools.cache
def _warn_graphs_need_cuda() -> None:
    """Once per process (cached): a warm-up asked for CUDA graphs where none can be captured."""
    warnings.warn(
        "optimize(cuda_graphs=True, warmup=...) captures no CUDA graphs: they need the model on a CUDA "
        "device and the Triton path (backend 'auto' or 'triton'); the warm-up only runs the forwards",
        RuntimeWarning,
        stacklevel=3,
    )


def optimize(
    model: nn.Module,
    *,
    backend: str = "auto",
    cuda_graphs: bool = True,
    memory_budget_mb: float | None = None,
    warmup: Iterable[tuple[int, int]] | None = None,
) -> nn.Module:
    """Make an encoder fast, in place, and return it (for chaining).

    Accepts a transformers base model or task model (sequence / token classification, QA, masked LM,
    multiple choice, ...) of a supported family (`bertfast.families.SUPPORTED`), a sentence-transformers
    model or CrossEncoder built on one, or a native bertfast model. `backend` is "auto" (Triton kernels
    on CUDA tensors, torch elsewhere), "torch" or "triton". `cuda_graphs` replays the forward from CUDA
    graphs per bucket where it can (CUDA, Triton path, inference; see bertfast.graphs), keeping at most
    `memory_budget_mb` of graphs (None: no limit). `warmup`, a list of (batch, seq_len), captures those
    buckets now (the model must already be on its device and in eval mode; off CUDA it warns once that
    no graphs are captured). An unsupported encoder family (DeBERTa, ModernBERT, NomicBERT, decoders,
    ...) or config (cross-attention, relative position embeddings) raises ConfigError (a ValueError)
    naming it, before anything is patched.
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
        targets = _encoders_to_patch(model)
        specs = [Spec.from_module(m) for m in targets]  # every config checked before anything is patched
        for module, spec in zip(targets, specs):
            module.__dict__[PATCH_ATTR] = _PatchState(spec, backend, cuda_graphs, _positional_names(type(module)))
            module.__dict__.pop(RUNNER_ATTR, None)  # a re-optimize starts with no graphs
            module.forward = types.MethodType(_hf_forward, module)
    runtime.set_graph_options(model, memory_budget_mb=memory_budget_mb)
    if warmup is not None:
        if cuda_graphs and (backend == "torch" or not any(p.is_cuda for p in model.parameters())):
            _warn_graphs_need_cuda()
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
