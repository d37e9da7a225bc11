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

    @property
    def dense(self) -> bool:
        return self.indices is None

    @property
    def num_tokens(self) -> int:
        return self.batch * self.seqlen if self.indices is None else self.indices.numel()

    @property
    def first_token_index(self) -> torch.Tensor:
        """(B,) packed index of each sequence's first real token (its [CLS])."""
        return self.cu_seqlens[:-1].long()


def unpad_info(attention_mask: torch.Tensor | None, batch: int, seqlen: int, device: torch.device) -> PackInfo:
    """Packing plan for a (B, S) mask of 0/1 values (bool, int or float); None means no padding."""
    if attention_mask is not None:
        keep = attention_mask.to(torch.bool)  # (B, S)
        lengths = keep.sum(dim=1, dtype=torch.int32)  # (B,)
        # One host sync for the whole plan: the token count and the longest sequence.
        total, longest = (int(v) for v in torch.stack([lengths.sum(), lengths.max()]).tolist())
        if total < batch * seqlen:
            indices = torch.nonzero(keep.reshape(-1), as_tuple=False).squeeze(1)  # (T,)
            cu = torch.zeros(batch + 1, dtype=torch.int32, device=device)
            cu[1:] = torch.cumsum(lengths, 0, dtype=torch.int32)
            return PackInfo(batch, seqlen, indices, cu, longest, keep)
    cu = torch.arange(0, (batch + 1) * seqlen, seqlen, dtype=torch.int32, device=device)
    return PackInfo(batch, seqlen, None, cu, seqlen, None)


def pack_info_from_lengths(cu_seqlens: torch.Tensor, max_seqlen: int) -> PackInfo:
    """Plan for input that arrives packed already: its padded form is (B, max_seqlen), right-padded."""
    batch = cu_seqlens.numel() - 1
    device = cu_seqlens.device
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()  # (B,)
    if bool((lengths == max_seqlen).all()):
        return PackInfo(batch, max_seqlen, None, cu_seqlens, max_seqlen, None)
    seq = torch.repeat_interleave(torch.arange(batch, device=device), lengths)  # (T,) sequence of each token
    offset = torch.arange(seq.numel(), device=device) - cu_seqlens.long()[seq]  # (T,) position within it
    indices = seq * max_seqlen + offset  # (T,)
    mask = torch.arange(max_seqlen, device=device)[None, :] < lengths[:, None]  # (B, max_seqlen)
    return PackInfo(batch, max_seqlen, indices, cu_seqlens, max_seqlen, mask)


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
