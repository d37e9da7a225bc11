"""Input checks at the model boundary, and packing: the only place a call's inputs are validated.

Both entry points, padded (`prepare_padded`: HF's `input_ids` (B, S) + `attention_mask`) and packed
(`prepare_packed`: flat `input_ids` (T,) + `cu_seqlens` (B + 1,)), check types, shapes and devices on
the host first, then fetch everything the host must know (value ranges, mask validity, row lengths or
offsets) in ONE device sync (`_fetch`), and raise ValueError / TypeError naming the argument and the
allowed range before any compute. Past this module nothing re-checks: the encoder and the kernels
trust what they are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from .padding import PackInfo, pack_info_from_lengths, pack_plan, packed_positions, unpad

if TYPE_CHECKING:
    from .families import Family


class Limits(Protocol):
    """The ranges a model allows (encoder.Spec has them): ids < vocab_size, token types <
    type_vocab_size (0: the family takes none), positions < max_position_embeddings, sequence lengths
    <= max_seq_len, inputs_embeds' last dim = embedding_size; the family numbers default positions
    (from `padding_idx` in RoBERTa-style families)."""

    family: Family
    vocab_size: int
    type_vocab_size: int
    max_position_embeddings: int
    max_seq_len: int
    embedding_size: int
    padding_idx: int | None


def _too_long(what: str, limits: Limits) -> str:
    """The end of a too-long message: the limit, and where it comes from when positions start later."""
    P, longest = limits.max_position_embeddings, limits.max_seq_len
    if longest == P:
        return f"{what} max_position_embeddings ({P})"
    return f"{what} max_position_embeddings ({P}) less the {P - longest} positions up to padding_idx + 1 ({longest})"


def _check_types_allowed(token_type_ids: Any, limits: Limits) -> None:
    if token_type_ids is not None and limits.type_vocab_size == 0:
        raise ValueError(f"token_type_ids must be None: {limits.family.model_type} models have no token types")


def _holes(keep: torch.Tensor) -> torch.Tensor:
    """(1,) whether some row's real tokens are not one contiguous run (a padding hole between them)."""
    runs = keep[:, :1].long().sum(1) + (keep[:, 1:] & ~keep[:, :-1]).long().sum(1)  # (B,) runs of real tokens
    return (runs > 1).any().reshape(1)


@dataclass
class Packed:
    """A validated call, packed: T tokens in B sequences."""

    info: PackInfo
    ids: torch.Tensor | None  # (T,) or None when embeddings are given
    types: torch.Tensor  # (T,)
    positions: torch.Tensor  # (T,)
    embeds: torch.Tensor | None  # (T, H) or None


RangeCheck = tuple[str, torch.Tensor, int]  # (argument name, tensor, exclusive upper bound)


def check_int_tensor(name: str, t: Any) -> None:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an integer tensor (int64 or int32), got {t.dtype}")


def _check_device(device: torch.device, **tensors: Any) -> None:
    for name, t in tensors.items():
        if torch.is_tensor(t) and t.device != device:
            raise ValueError(f"{name} is on {t.device} but the model is on {device}")


def _fetch(checks: list[RangeCheck], extra: list[torch.Tensor]) -> list[int]:
    """One host sync for everything: each check's (min, max), then the `extra` tensors flattened.
    Raises on the first value outside [0, upper); returns the extras as host ints."""
    parts = [torch.stack([t.min(), t.max()]).long() for _, t, _ in checks] + [e.long().reshape(-1) for e in extra]
    host = torch.cat(parts).tolist() if parts else []
    for i, (name, _, upper) in enumerate(checks):
        lo, hi = host[2 * i], host[2 * i + 1]
        if lo < 0 or hi >= upper:
            raise ValueError(f"{name} must be in [0, {upper}); found {lo if lo < 0 else hi}")
    return host[2 * len(checks) :]


def prepare_padded(
    limits: Limits,
    param: torch.Tensor,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
) -> Packed:
    """Check HF-style padded inputs (B, S) against the model (`param`: its device and dtype) and pack them."""
    device = param.device
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        check_int_tensor("input_ids", input_ids)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D (batch, sequence), got shape {tuple(input_ids.shape)}")
        lead_name, lead = "input_ids", input_ids
    else:
        if not torch.is_tensor(inputs_embeds):
            raise TypeError(f"inputs_embeds must be a torch.Tensor, got {type(inputs_embeds).__name__}")
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != limits.embedding_size:
            raise ValueError(
                f"inputs_embeds must be (batch, sequence, {limits.embedding_size}), got {tuple(inputs_embeds.shape)}"
            )
        if inputs_embeds.dtype != param.dtype:
            raise TypeError(f"inputs_embeds must have the model's dtype {param.dtype}, got {inputs_embeds.dtype}")
        lead_name, lead = "inputs_embeds", inputs_embeds
    B, S = lead.shape[:2]
    if B == 0 or S == 0:
        raise ValueError(f"{lead_name} is an empty batch (shape {tuple(lead.shape)})")
    others = {"attention_mask": attention_mask, "token_type_ids": token_type_ids, "position_ids": position_ids}
    _check_device(device, **{lead_name: lead}, **others)

    checks: list[RangeCheck] = []
    if input_ids is not None:
        checks.append(("input_ids", input_ids, limits.vocab_size))
    _check_types_allowed(token_type_ids, limits)
    if token_type_ids is not None:
        check_int_tensor("token_type_ids", token_type_ids)
        if tuple(token_type_ids.shape) != (B, S):
            raise ValueError(f"token_type_ids must have shape {(B, S)}, got {tuple(token_type_ids.shape)}")
        checks.append(("token_type_ids", token_type_ids, limits.type_vocab_size))
    if position_ids is not None:
        check_int_tensor("position_ids", position_ids)
        if position_ids.dim() == 1:
            position_ids = position_ids[None, :]
        if position_ids.dim() != 2 or position_ids.shape[1] != S or position_ids.shape[0] not in (1, B):
            raise ValueError(f"position_ids must have shape {(B, S)} or {(1, S)}, got {tuple(position_ids.shape)}")
        checks.append(("position_ids", position_ids, limits.max_position_embeddings))
    elif S > limits.max_seq_len:
        limit = _too_long("exceeds the model's", limits)
        raise ValueError(f"sequence length {S} of {lead_name} {limit}; truncate the input")
    keep = None
    extra: list[torch.Tensor] = []
    if attention_mask is not None:
        if not torch.is_tensor(attention_mask):
            raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
        if tuple(attention_mask.shape) != (B, S):
            raise ValueError(f"attention_mask must have shape {(B, S)}, got {tuple(attention_mask.shape)}")
        if attention_mask.is_complex():
            raise TypeError(f"attention_mask must be bool, integer or float, got {attention_mask.dtype}")
        keep = attention_mask != 0  # (B, S)
        m = attention_mask
        if m.dtype == torch.bool:
            bad = torch.zeros(1, dtype=torch.long, device=device)  # (1,) a bool mask holds only 0 and 1
        else:
            bad = ((m != 0) & (m != 1)).any().reshape(1)  # (1,)
        # A relative-position bias counts distances in the padded row: packing keeps them only without holes.
        holes = [_holes(keep)] if limits.family.bias_buckets else []  # (1,) or none
        extra = [bad, *holes, keep.sum(dim=1, dtype=torch.long)]  # (1,), ..., (B,)

    host = _fetch(checks, extra)  # the one sync
    lengths = None
    if keep is not None:
        if host[0]:
            raise ValueError("attention_mask must hold only 0 and 1 (1 = real token, 0 = padding)")
        if holes and host[1]:
            raise ValueError(
                "attention_mask must mark each row's real tokens as one run (left or right padding): "
                f"{limits.family.model_type}'s relative-position bias counts distances across padding holes"
            )
        lengths = host[1 + len(holes) :]
        if 0 in lengths:
            raise ValueError(
                f"attention_mask row {lengths.index(0)} has no real token; every sequence needs at least one"
            )
    longest = max(lengths) if lengths is not None else S
    if longest > limits.max_seq_len:  # explicit position_ids do not lift the model's limit
        limit = _too_long("exceeds the model's", limits)
        raise ValueError(f"a sequence of {longest} real tokens in {lead_name} {limit}; truncate the input")
    info = pack_plan(keep, lengths, B, S, device)
    ids = unpad(input_ids, info) if input_ids is not None else None  # (T,)
    embeds = unpad(inputs_embeds, info) if inputs_embeds is not None else None  # (T, H)
    if token_type_ids is None:
        types = torch.zeros(info.num_tokens, dtype=torch.long, device=device)  # (T,)
    else:
        types = unpad(token_type_ids, info)  # (T,)
    if position_ids is None:
        position_ids = limits.family.positions.padded(input_ids, B, S, limits.padding_idx, device)  # (B, S)
    positions = unpad(position_ids.expand(B, S), info)  # (T,)
    return Packed(info, ids, types, positions, embeds)


def prepare_packed(
    limits: Limits,
    param: torch.Tensor,
    input_ids: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int | None,
    token_type_ids: torch.Tensor | None,
    position_ids: torch.Tensor | None,
) -> Packed:
    """Check packed inputs ((T,) ids laid end to end, (B + 1,) offsets) and plan their padded form."""
    device = param.device
    check_int_tensor("input_ids", input_ids)
    check_int_tensor("cu_seqlens", cu_seqlens)
    if input_ids.dim() != 1 or input_ids.numel() == 0:
        raise ValueError(f"input_ids must be a non-empty 1-D packed token list, got {tuple(input_ids.shape)}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with at least 2 entries, got {tuple(cu_seqlens.shape)}")
    others = {"token_type_ids": token_type_ids, "position_ids": position_ids}
    _check_device(device, input_ids=input_ids, cu_seqlens=cu_seqlens, **others)
    T = input_ids.numel()
    cu = cu_seqlens.to(torch.int32)
    _check_types_allowed(token_type_ids, limits)
    checks: list[RangeCheck] = [("input_ids", input_ids, limits.vocab_size)]
    optional = [
        ("token_type_ids", token_type_ids, limits.type_vocab_size),
        ("position_ids", position_ids, limits.max_position_embeddings),
    ]
    for name, t, upper in optional:
        if t is not None:
            check_int_tensor(name, t)
            if tuple(t.shape) != (T,):
                raise ValueError(f"{name} must have shape {(T,)}, got {tuple(t.shape)}")
            checks.append((name, t, upper))

    cu_host = _fetch(checks, [cu])  # the one sync: value ranges and the offsets
    lengths = [b - a for a, b in zip(cu_host[:-1], cu_host[1:])]
    if cu_host[0] != 0 or cu_host[-1] != T or min(lengths) < 1:
        raise ValueError(f"cu_seqlens must start at 0, end at len(input_ids)={T}, and increase strictly; got {cu_host}")
    longest = max(lengths)
    if max_seqlen is not None and max_seqlen != longest:
        raise ValueError(f"max_seqlen is {max_seqlen} but the longest sequence in cu_seqlens is {longest}")
    if longest > limits.max_seq_len:  # with or without position_ids: the model's limit
        raise ValueError(f"a sequence of length {longest} {_too_long('exceeds', limits)}")
    info = pack_info_from_lengths(cu, longest, cu_host)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)  # (T,)
    if position_ids is None:
        within = packed_positions(cu, T)[1]  # (T,) restarts at 0 in each sequence
        position_ids = limits.family.positions.packed(input_ids, within, limits.padding_idx)  # (T,)
    return Packed(info, input_ids, token_type_ids, position_ids, None)
