"""The encoder: BERT's modules with Hugging Face's names, and one packed forward shared by all of them.

The modules below are containers whose parameter names match transformers' BertModel exactly
(`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...), so a HF
checkpoint loads as is and `state_dict()` saves one HF loads. The math lives in `bert_forward`,
which reads parameters by those names. It therefore runs a native BertModel and a Hugging Face
BertModel alike: that is how `optimize()` patches HF models without touching their parameters.

The data path: validate inputs at the boundary -> remove padding once -> embeddings + LayerNorm on
T packed tokens -> per layer QKV GEMM, attention over packed sequences, out-proj + residual,
LayerNorm, FFN1 + GELU, FFN2 + residual, LayerNorm -> pad once at the end.

Shapes: B batch, S padded length, T real tokens in the batch, H hidden, I intermediate, N heads.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .checkpoint import CheckpointError, find_weights, read_state_dict
from .config import BertConfig
from .outputs import BaseModelOutputWithPooling, PackedModelOutput
from .padding import PackInfo, pack_info_from_lengths, pack_plan, pad, unpad


# =============================================================================== modules
class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, H, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, H)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


# =============================================================================== the forward
@dataclass(frozen=True)
class Spec:
    """What the forward needs to know about a config (from ours or from a HF config)."""

    vocab_size: int
    type_vocab_size: int
    max_position_embeddings: int
    hidden_size: int
    num_heads: int
    activation: str
    eps: float
    hidden_dropout: float
    attention_dropout: float

    @classmethod
    def from_config(cls, config: BertConfig) -> Spec:
        return cls(
            vocab_size=config.vocab_size,
            type_vocab_size=config.type_vocab_size,
            max_position_embeddings=config.max_position_embeddings,
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            activation=config.activation,
            eps=float(config.layer_norm_eps),
            hidden_dropout=float(config.hidden_dropout_prob),
            attention_dropout=float(config.attention_probs_dropout_prob),
        )


def _fused_qkv(attn_self: nn.Module, differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One [3H, H] weight and [3H] bias for the Q, K, V projections.

    The HF parameters keep their names; this is a cache derived from them, rebuilt whenever one of
    them changes (a new tensor, an in-place update such as an optimizer step, a dtype or device move).
    Under autograd it is built fresh each call, so gradients flow to the three original parameters.
    """
    params = (
        attn_self.query.weight,
        attn_self.key.weight,
        attn_self.value.weight,
        attn_self.query.bias,
        attn_self.key.bias,
        attn_self.value.bias,
    )
    if differentiable:
        return torch.cat(params[:3], 0), torch.cat(params[3:], 0)
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    cached = attn_self.__dict__.get("_bertfast_qkv")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            w = torch.cat([p.detach() for p in params[:3]], 0).contiguous()  # (3H, H)
            b = torch.cat([p.detach() for p in params[3:]], 0).contiguous()  # (3H,)
        cached = (key, w, b)
        attn_self.__dict__["_bertfast_qkv"] = cached
    return cached[1], cached[2]


def _dropout(x: torch.Tensor, p: float, active: bool) -> torch.Tensor:
    return F.dropout(x, p, training=True) if active and p > 0 else x


def _dense_residual_layernorm(
    backend: str, x: torch.Tensor, block: nn.Module, residual: torch.Tensor, spec: Spec, dropout: bool
) -> torch.Tensor:
    """LayerNorm(dropout(block.dense(x)) + residual): BertSelfOutput and BertOutput.

    Without dropout the residual joins in the GEMM's epilogue; with it, dropout must come between.
    """
    if dropout:
        y = _dropout(ops.linear(backend, x, block.dense.weight, block.dense.bias), spec.hidden_dropout, True)
        return ops.layernorm(backend, y, block.LayerNorm.weight, block.LayerNorm.bias, spec.eps, residual)
    y = ops.linear(backend, x, block.dense.weight, block.dense.bias, residual=residual)  # (T, H)
    return ops.layernorm(backend, y, block.LayerNorm.weight, block.LayerNorm.bias, spec.eps)


def layer_forward(
    layer: nn.Module, h: torch.Tensor, info: PackInfo, spec: Spec, backend: str, training: bool
) -> torch.Tensor:
    """One post-LN transformer layer on packed tokens: (T, H) -> (T, H)."""
    attn = layer.attention
    w_qkv, b_qkv = _fused_qkv(attn.self, differentiable=backend == "torch" and torch.is_grad_enabled())
    dropout = training and spec.hidden_dropout > 0
    qkv = ops.linear(backend, h, w_qkv, b_qkv)  # (T, 3H)
    ctx = ops.attention(backend, qkv, info, spec.num_heads, spec.attention_dropout if training else 0.0)  # (T, H)
    h = _dense_residual_layernorm(backend, ctx, attn.output, h, spec, dropout)  # (T, H)
    i = ops.linear(backend, h, layer.intermediate.dense.weight, layer.intermediate.dense.bias, spec.activation)  # (T, I)
    return _dense_residual_layernorm(backend, i, layer.output, h, spec, dropout)  # (T, H)


def packed_forward(
    bert: nn.Module,
    spec: Spec,
    info: PackInfo,
    input_ids: torch.Tensor | None,  # (T,)
    token_type_ids: torch.Tensor,  # (T,)
    position_ids: torch.Tensor,  # (T,)
    inputs_embeds: torch.Tensor | None,  # (T, H)
    backend: str,
    output_hidden_states: bool,
    first_token_index: torch.Tensor | None = None,  # (B,) rows the pooler reads; default info's
) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor] | None]:
    """The encoder on packed tokens. Returns (hidden (T, H), pooled (B, H) or None, all hidden states)."""
    training = bert.training
    emb = bert.embeddings
    h = ops.embed_layernorm(
        backend,
        input_ids,
        position_ids,
        token_type_ids,
        emb.word_embeddings.weight,
        emb.position_embeddings.weight,
        emb.token_type_embeddings.weight,
        emb.LayerNorm.weight,
        emb.LayerNorm.bias,
        spec.eps,
        inputs_embeds=inputs_embeds,
        padding_idx=emb.word_embeddings.padding_idx,
    )  # (T, H)
    h = _dropout(h, spec.hidden_dropout, training)
    states = [h] if output_hidden_states else None
    for layer in bert.encoder.layer:
        h = layer_forward(layer, h, info, spec, backend, training)  # (T, H)
        if states is not None:
            states.append(h)
    pooled = None
    pooler = getattr(bert, "pooler", None)
    if pooler is not None:
        index = info.first_token_index if first_token_index is None else first_token_index
        first = h.index_select(0, index)  # (B, H): each sequence's [CLS]
        pooled = ops.linear(backend, first, pooler.dense.weight, pooler.dense.bias, "tanh")  # (B, H)
    return h, pooled, states


# =============================================================================== boundary checks
def _raise_out_of_range(items: list[tuple[str, torch.Tensor, int]], host: list[int]) -> None:
    """`host` starts with (min, max) of each item's tensor; each must lie in [0, upper)."""
    for i, (name, _, upper) in enumerate(items):
        lo, hi = host[2 * i], host[2 * i + 1]
        if lo < 0 or hi >= upper:
            raise ValueError(f"{name} must be in [0, {upper}); found {lo if lo < 0 else hi}")


def _check_int(name: str, t: Any) -> None:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")


def prepare_inputs(
    spec: Spec,
    param: torch.Tensor,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
) -> tuple[PackInfo, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Check HF-style padded inputs at the boundary and pack them.

    Returns (info, ids (T,) or None, token types (T,), positions (T,), embeds (T, H) or None).
    Every error names the argument and the allowed range, before any compute.
    """
    device = param.device
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        _check_int("input_ids", input_ids)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D (batch, sequence), got shape {tuple(input_ids.shape)}")
        B, S = input_ids.shape
        lead = ("input_ids", input_ids)
    else:
        if not torch.is_tensor(inputs_embeds):
            raise TypeError(f"inputs_embeds must be a torch.Tensor, got {type(inputs_embeds).__name__}")
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != spec.hidden_size:
            raise ValueError(
                f"inputs_embeds must be (batch, sequence, {spec.hidden_size}), got {tuple(inputs_embeds.shape)}"
            )
        if inputs_embeds.dtype != param.dtype:
            raise TypeError(f"inputs_embeds must have the model's dtype {param.dtype}, got {inputs_embeds.dtype}")
        B, S = inputs_embeds.shape[:2]
        lead = ("inputs_embeds", inputs_embeds)
    if B == 0 or S == 0:
        raise ValueError(f"{lead[0]} is an empty batch (shape {tuple(lead[1].shape)})")
    for name, t in (lead, ("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                    ("position_ids", position_ids)):  # fmt: skip
        if t is not None and torch.is_tensor(t) and t.device != device:
            raise ValueError(f"{name} is on {t.device} but the model is on {device}")

    checks: list[tuple[str, torch.Tensor, int]] = []
    if input_ids is not None:
        checks.append(("input_ids", input_ids, spec.vocab_size))
    if token_type_ids is not None:
        _check_int("token_type_ids", token_type_ids)
        if tuple(token_type_ids.shape) != (B, S):
            raise ValueError(f"token_type_ids must have shape {(B, S)}, got {tuple(token_type_ids.shape)}")
        checks.append(("token_type_ids", token_type_ids, spec.type_vocab_size))
    if position_ids is not None:
        _check_int("position_ids", position_ids)
        if position_ids.dim() == 1:
            position_ids = position_ids[None, :]
        if position_ids.dim() != 2 or position_ids.shape[1] != S or position_ids.shape[0] not in (1, B):
            raise ValueError(f"position_ids must have shape {(B, S)} or {(1, S)}, got {tuple(position_ids.shape)}")
        checks.append(("position_ids", position_ids, spec.max_position_embeddings))
    elif S > spec.max_position_embeddings:
        raise ValueError(
            f"sequence length {S} of {lead[0]} exceeds the model's max_position_embeddings "
            f"({spec.max_position_embeddings}); truncate the input"
        )
    keep = None
    if attention_mask is not None:
        if not torch.is_tensor(attention_mask):
            raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
        if tuple(attention_mask.shape) != (B, S):
            raise ValueError(f"attention_mask must have shape {(B, S)}, got {tuple(attention_mask.shape)}")
        if attention_mask.is_complex():
            raise TypeError(f"attention_mask must be bool, integer or float, got {attention_mask.dtype}")
        keep = attention_mask != 0  # (B, S)

    # Everything the host must know, fetched in one sync: value ranges, mask validity, row lengths.
    parts = [torch.stack([t.min(), t.max()]).long() for _, t, _ in checks]
    if keep is not None:
        m = attention_mask
        bad = torch.zeros(1, dtype=torch.long, device=device) if m.dtype == torch.bool else (
            ((m != 0) & (m != 1)).any().long().reshape(1))  # fmt: skip
        parts += [bad, keep.sum(dim=1, dtype=torch.long)]  # (1,), (B,)
    host = torch.cat(parts).tolist() if parts else []
    _raise_out_of_range(checks, host)
    lengths = None
    if keep is not None:
        if host[2 * len(checks)]:
            raise ValueError("attention_mask must hold only 0 and 1 (1 = real token, 0 = padding)")
        lengths = host[2 * len(checks) + 1 :]
        if 0 in lengths:
            raise ValueError(
                f"attention_mask row {lengths.index(0)} has no real token; every sequence needs at least one"
            )
    info = pack_plan(keep, lengths, B, S, device)
    ids = unpad(input_ids, info) if input_ids is not None else None  # (T,)
    embeds = unpad(inputs_embeds, info) if inputs_embeds is not None else None  # (T, H)
    if token_type_ids is None:
        types = torch.zeros(info.num_tokens, dtype=torch.long, device=device)  # (T,)
    else:
        types = unpad(token_type_ids, info)  # (T,)
    if position_ids is None:
        position_ids = torch.arange(S, device=device)[None, :]
    positions = unpad(position_ids.expand(B, S), info)  # (T,)
    return info, ids, types, positions, embeds


def needs_autograd(module: nn.Module, *tensors: torch.Tensor | None) -> bool:
    if not torch.is_grad_enabled():
        return False
    if any(t is not None and t.requires_grad for t in tensors):
        return True
    return any(p.requires_grad for p in module.parameters())


def choose_backend(module: nn.Module, requested: str, param: torch.Tensor, *tensors: torch.Tensor | None) -> str:
    """The backend this call runs: the kernels are inference-only, so training or grads mean torch."""
    grads = needs_autograd(module, *tensors)
    dropping = module.training and any(
        isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules()
    )
    return ops.resolve_backend(requested, param.device, param.dtype, grads or dropping)


def graph_runner(bert: nn.Module, spec: Spec, enabled: bool, device: torch.device):
    """The module's CUDA-graph runner (created on first use on a CUDA device), or None."""
    if not enabled:
        return None
    runner = bert.__dict__.get("_bertfast_graphs")
    if runner is None and device.type == "cuda":
        from .graphs import CudaGraphEncoder

        runner = bert.__dict__["_bertfast_graphs"] = CudaGraphEncoder(bert, spec)
    return runner


def run_packed(
    bert: nn.Module,
    spec: Spec,
    info: PackInfo,
    ids: torch.Tensor | None,
    types: torch.Tensor,
    positions: torch.Tensor,
    embeds: torch.Tensor | None,
    backend: str,
    output_hidden_states: bool,
    cuda_graphs: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor] | None]:
    """packed_forward, replayed from a CUDA graph when the call allows one (Triton path, inference,
    token ids, last layer only) and the batch fits a bucket; eagerly otherwise."""
    if backend == "triton" and embeds is None and not output_hidden_states and not bert.training:
        runner = graph_runner(bert, spec, cuda_graphs, types.device)
        if runner is not None:
            cu_host = info.cu_host if info.cu_host is not None else info.cu_seqlens.tolist()
            out = runner(ids, types, positions, cu_host)
            if out is not None:
                return out[0], out[1], None
    return packed_forward(bert, spec, info, ids, types, positions, embeds, backend, output_hidden_states)


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
    param = bert.embeddings.word_embeddings.weight
    info, ids, types, positions, embeds = prepare_inputs(
        spec, param, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds
    )
    run = choose_backend(bert, backend, param, embeds)
    h, pooled, states = run_packed(
        bert, spec, info, ids, types, positions, embeds, run, output_hidden_states, cuda_graphs
    )
    hidden = tuple(pad(s, info) for s in states) if states is not None else None  # each (B, S, H)
    return pad(h, info), pooled, hidden


# =============================================================================== models
class BertPreTrainedModel(nn.Module):
    """Shared: weight init as BERT does it, strict loading, saving, the backend switch."""

    # Prefix of the encoder's parameters inside this model ("" for BertModel, "bert." for the heads).
    base_prefix = ""
    # Parameter-name prefixes of this class's own head: loaded if the checkpoint has them all,
    # freshly initialized (and reported) if it has none, an error if it has some.
    head_prefixes: tuple[str, ...] = ()

    def __init__(self, config: BertConfig):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(f"config must be a bertfast.BertConfig, got {type(config).__name__}")
        self.config = config
        self.backend = ops.check_backend("auto")
        # Replay the forward from CUDA graphs per token bucket (CUDA, Triton path, inference only).
        self.cuda_graphs = True
        self.newly_initialized_keys: list[str] = []

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Heads whose decoder shares the word embeddings override this."""

    def set_backend(self, backend: str) -> BertPreTrainedModel:
        self.backend = ops.check_backend(backend)
        return self

    def set_cuda_graphs(self, enabled: bool) -> BertPreTrainedModel:
        """CUDA graphs on or off for every encoder in this model; off drops the captured graphs."""
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
        for m in self.modules():
            if isinstance(m, BertPreTrainedModel):
                m.cuda_graphs = enabled
                if not enabled:
                    m.__dict__.pop("_bertfast_graphs", None)
        return self

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        backend: str = "auto",
        model_kwargs: dict[str, Any] | None = None,
        **config_overrides: Any,
    ):
        """Load `config.json` and `model.safetensors` (or `pytorch_model.bin`) from a directory, strictly.

        `config_overrides` set config fields (e.g. `num_labels=3`); `model_kwargs` go to the
        constructor. The model comes back in eval mode.
        """
        model_dir = os.fspath(model_dir)
        config = BertConfig.from_pretrained(model_dir)
        if config_overrides:
            data = config.to_dict()
            data.update(config_overrides)
            if "num_labels" in config_overrides and "id2label" not in config_overrides:
                data.pop("id2label", None)
            config = BertConfig.from_dict(data)
        model = cls(config, **(model_kwargs or {}))
        path = find_weights(model_dir)
        model.load_checkpoint(read_state_dict(path), source=path)
        if dtype is not None or device is not None:
            model.to(device=device, dtype=dtype)
        model.set_backend(backend)
        return model.eval()

    def _expected_keys(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict(keep_vars=True))

    def _tied_keys(self) -> set[str]:
        return set()

    def load_checkpoint(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Strict load: every parameter must come from the checkpoint (or be a fresh head), nothing
        unknown may be left over, and every shape must match. Errors list all offending keys."""
        expected = self._expected_keys()
        tied = self._tied_keys()
        encoder_roots = ("embeddings.", "encoder.", "pooler.")
        own_heads = self.head_prefixes
        other_heads = tuple(p for p in ("cls.", "classifier.", "qa_outputs.") if p not in own_heads)

        mapped: dict[str, torch.Tensor] = {}
        ignored: list[str] = []
        unexpected: list[str] = []
        for key, value in state.items():
            base = key.removeprefix("bert.")
            if base.startswith(encoder_roots):
                name = self.base_prefix + base
                if name not in expected and base.startswith("pooler."):
                    ignored.append(key)  # the checkpoint has a pooler this model does not use
                    continue
            else:
                name = key
            if name == "cls.predictions.decoder.bias" and "cls.predictions.bias" in expected:
                mapped.setdefault("cls.predictions.bias", value)  # the same vector under its other name
                continue
            if name in tied:
                continue  # tied to another parameter; the checkpoint's copy is redundant
            if name in expected:
                mapped[name] = value
            elif name.startswith(other_heads) or (
                name.startswith(own_heads) and own_heads and not name.startswith(tuple(expected))
            ):
                ignored.append(key)  # another task's head: not part of this model
            else:
                unexpected.append(key)

        missing = [k for k in expected if k not in mapped and k not in tied]
        head_missing = [k for k in missing if own_heads and k.startswith(own_heads)]
        head_present = [k for k in expected if own_heads and k.startswith(own_heads) and k in mapped]
        fresh_head = bool(head_missing) and not head_present
        missing = [k for k in missing if not (fresh_head and k in head_missing)]
        errors = []
        if missing:
            hint = ""
            if any(k.endswith("pooler.dense.weight") for k in missing):
                hint = " (a checkpoint without a pooler loads with add_pooling_layer=False)"
            errors.append(f"missing keys{hint}: {', '.join(missing)}")
        if unexpected:
            errors.append(f"unexpected keys: {', '.join(unexpected)}")
        for name, value in mapped.items():
            if tuple(value.shape) != tuple(expected[name].shape):
                errors.append(
                    f"shape mismatch for {name}: checkpoint {tuple(value.shape)}, model {tuple(expected[name].shape)}"
                )
        if errors:
            raise CheckpointError(f"{source} does not fit {type(self).__name__}: " + "; ".join(errors))

        self.init_weights()  # fresh heads get BERT's init; everything else is overwritten below
        with torch.no_grad():
            for name, value in mapped.items():
                expected[name].copy_(value.to(expected[name].dtype))
        self.tie_weights()
        self.newly_initialized_keys = head_missing if fresh_head else []
        if fresh_head:
            warnings.warn(
                f"{type(self).__name__}: {source} has no weights for the task head "
                f"({', '.join(head_missing)}); they are freshly initialized: train before use",
                stacklevel=3,
            )

    def save_pretrained(self, model_dir: str | os.PathLike) -> None:
        """Write config.json and model.safetensors in Hugging Face's layout (tied weights once)."""
        from safetensors.torch import save_file

        os.makedirs(model_dir, exist_ok=True)
        self.config.to_json_file(os.path.join(model_dir, "config.json"))
        tied = self._tied_keys()
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if k not in tied}
        save_file(state, os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})


class BertModel(BertPreTrainedModel):
    """BERT's encoder and pooler. Same forward signature and outputs as transformers' BertModel."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.spec = Spec.from_config(config)
        self.init_weights()

    @classmethod
    def from_pretrained(cls, model_dir, *, add_pooling_layer: bool | None = None, **kwargs):
        """As BertPreTrainedModel.from_pretrained; the pooler is kept when the checkpoint has one,
        unless `add_pooling_layer` says otherwise."""
        if add_pooling_layer is None:
            BertConfig.from_pretrained(model_dir)  # a broken config is reported before the weights are opened
            add_pooling_layer = _checkpoint_has_pooler(model_dir)
        return super().from_pretrained(model_dir, model_kwargs={"add_pooling_layer": add_pooling_layer}, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ):
        if output_attentions:
            raise ValueError(
                "output_attentions=True is not supported: bertfast never materializes attention "
                "probabilities (use the transformers model for that)"
            )
        last, pooled, hidden = hf_style_forward(
            self,
            self.spec,
            self.backend,
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            inputs_embeds,
            bool(output_hidden_states),
            self.cuda_graphs,
        )
        out = BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled, hidden_states=hidden)
        return out if return_dict is None or return_dict else out.to_tuple()

    def forward_packed(
        self,
        input_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_seqlen: int | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> PackedModelOutput:
        """The packed form, no padding anywhere: `input_ids` (T,) of B sequences laid end to end,
        `cu_seqlens` (B + 1,) their offsets. Positions restart at 0 in each sequence."""
        spec, param = self.spec, self.embeddings.word_embeddings.weight
        _check_int("input_ids", input_ids)
        _check_int("cu_seqlens", cu_seqlens)
        if input_ids.dim() != 1 or input_ids.numel() == 0:
            raise ValueError(f"input_ids must be a non-empty 1-D packed token list, got {tuple(input_ids.shape)}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError(f"cu_seqlens must be 1-D with at least 2 entries, got {tuple(cu_seqlens.shape)}")
        for name, t in (("input_ids", input_ids), ("cu_seqlens", cu_seqlens)):
            if t.device != param.device:
                raise ValueError(f"{name} is on {t.device} but the model is on {param.device}")
        T = input_ids.numel()
        cu = cu_seqlens.to(torch.int32)
        checks = [("input_ids", input_ids, spec.vocab_size)]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        else:
            _check_int("token_type_ids", token_type_ids)
            if tuple(token_type_ids.shape) != (T,):
                raise ValueError(f"token_type_ids must have shape {(T,)}, got {tuple(token_type_ids.shape)}")
            checks.append(("token_type_ids", token_type_ids, spec.type_vocab_size))
        if position_ids is not None:
            _check_int("position_ids", position_ids)
            if tuple(position_ids.shape) != (T,):
                raise ValueError(f"position_ids must have shape {(T,)}, got {tuple(position_ids.shape)}")
            checks.append(("position_ids", position_ids, spec.max_position_embeddings))
        # One host sync: value ranges and the offsets.
        host = torch.cat([*(torch.stack([t.min(), t.max()]).long() for _, t, _ in checks), cu.long()]).tolist()
        cu_host = host[2 * len(checks) :]
        lengths = [b - a for a, b in zip(cu_host[:-1], cu_host[1:])]
        if cu_host[0] != 0 or cu_host[-1] != T or min(lengths) < 1:
            raise ValueError(
                f"cu_seqlens must start at 0, end at len(input_ids)={T}, and increase strictly; got {cu_host}"
            )
        _raise_out_of_range(checks, host)
        longest = max(lengths)
        if max_seqlen is not None and max_seqlen != longest:
            raise ValueError(f"max_seqlen is {max_seqlen} but the longest sequence in cu_seqlens is {longest}")
        if position_ids is None and longest > spec.max_position_embeddings:
            raise ValueError(
                f"a sequence of length {longest} exceeds max_position_embeddings ({spec.max_position_embeddings})"
            )
        info = pack_info_from_lengths(cu, longest, cu_host)
        if position_ids is None:
            seq = torch.repeat_interleave(
                torch.arange(len(lengths), device=param.device), (cu[1:] - cu[:-1]).long(), output_size=T
            )  # (T,) sequence of each token, without a sync
            position_ids = torch.arange(T, device=param.device) - cu.long()[seq]  # (T,) restarts at 0
        run = choose_backend(self, self.backend, param)
        h, pooled, states = run_packed(
            self, spec, info, input_ids, token_type_ids, position_ids, None, run, output_hidden_states,
            self.cuda_graphs,
        )
        return PackedModelOutput(
            last_hidden_state=h,
            pooler_output=pooled,
            cu_seqlens=cu,
            hidden_states=tuple(states) if states is not None else None,
        )


def _checkpoint_has_pooler(model_dir: str | os.PathLike) -> bool:
    path = find_weights(model_dir)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                keys = list(f.keys())
        except Exception as e:
            raise CheckpointError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    else:
        keys = list(read_state_dict(path))
    return any(k.removeprefix("bert.").startswith("pooler.") for k in keys)
