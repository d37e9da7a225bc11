"""Removing padding once, restoring it once.

A padded batch (B, S) with an attention mask becomes a packed token list of T = sum of real lengths
rows plus `cu_seqlens` (int32, B + 1 offsets). Every GEMM then runs on T rows, and attention is told
where each sequence starts. Real tokens need not be a prefix of their row: any 0/1 mask pattern
(left padding, holes) packs, each row's real tokens in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackInfo:
    """How a (B, S) batch maps to its T packed tokens."""

    batch: int
    seqlen: int
    # Flat indices (into B * S) of the real tokens, in row-major order; None when no token is padding.
    indices: torch.Tensor | None
    cu_seqlens: torch.Tensor  # (B + 1,) int32
    max_seqlen: int
    # (B, S) bool, True at real tokens; None when no token is padding.
    mask: torch.Tensor | None
    # cu_seqlens on the host, when the caller already has it (saves a device sync).
    cu_host: list[int] | None = None

    @property
    def num_tokens(self) -> int:
        return self.batch * self.seqlen if self.indices is None else self.indices.numel()

    @property
    def first_token_index(self) -> torch.Tensor:
        """(B,) packed index of each sequence's first real token (its [CLS])."""
        return self.cu_seqlens[:-1].long()


def pack_plan(
    keep: torch.Tensor | None, lengths: list[int] | None, batch: int, seqlen: int, device: torch.device
) -> PackInfo:
    """Packing plan for a (B, S) bool mask of real tokens (None: no padding) whose per-row counts the
    caller has already fetched to the host (`lengths`). Builds everything on the device, no sync."""
    cu_host = [0]
    for n in lengths if lengths is not None else [seqlen] * batch:
        cu_host.append(cu_host[-1] + n)
    total = cu_host[-1]
    if keep is None or total == batch * seqlen:
        cu = torch.arange(0, (batch + 1) * seqlen, seqlen, dtype=torch.int32, device=device)
        return PackInfo(batch, seqlen, None, cu, seqlen, None, cu_host)
    # Flat indices of the real tokens in row-major order: a stable sort puts them first, in order,
    # without nonzero()'s device sync.
    indices = torch.argsort((~keep).reshape(-1).to(torch.int8), stable=True)[:total]  # (T,)
    cu = torch.tensor(cu_host, dtype=torch.int32).to(device, non_blocking=True)
    return PackInfo(batch, seqlen, indices, cu, max(lengths), keep, cu_host)


def pack_info_from_lengths(cu_seqlens: torch.Tensor, max_seqlen: int, cu_host: list[int] | None = None) -> PackInfo:
    """Plan for input that arrives packed already: its padded form is (B, max_seqlen), right-padded."""
    batch = cu_seqlens.numel() - 1
    device = cu_seqlens.device
    if cu_host is None:
        cu_host = cu_seqlens.tolist()
    if all(b - a == max_seqlen for a, b in zip(cu_host[:-1], cu_host[1:])):
        return PackInfo(batch, max_seqlen, None, cu_seqlens, max_seqlen, None, cu_host)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()  # (B,)
    seq, offset = packed_positions(cu_seqlens, cu_host[-1])  # (T,) each token's sequence and position in it
    indices = seq * max_seqlen + offset  # (T,)
    mask = torch.arange(max_seqlen, device=device)[None, :] < lengths[:, None]  # (B, max_seqlen)
    return PackInfo(batch, max_seqlen, indices, cu_seqlens, max_seqlen, mask, cu_host)


def packed_positions(cu_seqlens: torch.Tensor, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For packed tokens laid out by `cu_seqlens` (B + 1,): each token's sequence (T,) and its position
    within that sequence (T,), restarting at 0. No device sync (`num_tokens` = cu_seqlens[-1], known)."""
    cu = cu_seqlens.long()
    lengths = cu[1:] - cu[:-1]  # (B,)
    seq = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=cu.device), lengths, output_size=num_tokens
    )  # (T,)
    return seq, torch.arange(num_tokens, device=cu.device) - cu[seq]  # (T,), (T,)


def unpad(x: torch.Tensor, info: PackInfo) -> torch.Tensor:
    """(B, S, ...) -> (T, ...)."""
    flat = x.reshape(info.batch * info.seqlen, *x.shape[2:])  # (B*S, ...)
    return flat if info.indices is None else flat.index_select(0, info.indices)


def pad(x: torch.Tensor, info: PackInfo) -> torch.Tensor:
    """(T, ...) -> (B, S, ...), zeros at padding positions."""
    if info.indices is None:
        return x.reshape(info.batch, info.seqlen, *x.shape[1:])
    out = x.new_zeros(info.batch * info.seqlen, *x.shape[1:])  # (B*S, ...)
    out = out.index_copy(0, info.indices, x)  # differentiable with respect to x
    return out.view(info.batch, info.seqlen, *x.shape[1:])
