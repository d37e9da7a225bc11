"""Embedding gather + sum + LayerNorm in one pass over the packed token list.

    word[input_ids] + position[position_ids] + token_type[token_type_ids or 0] -> LayerNorm -> out [T, H]

Each program handles BLOCK_T tokens as a [BLOCK_T, BLOCK_H] tile (BLOCK_H = next_power_of_2(H),
column-masked): it gathers the three table rows of each token, sums them in fp32, normalizes with
fp32 statistics (`_norm.layernorm_tile`, the math shared with layernorm) and stores in the tables'
dtype. Ids are the caller's promise to be in range (no device-side bounds check: an id past its
table reads out of bounds).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import _dtypes
from . import _utils
from ._norm import layernorm_tile
from .state import launch_state

KERNEL = "embed_layernorm"


@triton.jit(do_not_specialize=["T"])
def _embed_layernorm_fwd_kernel(
    ids_ptr,
    pos_ids_ptr,
    type_ids_ptr,
    word_ptr,
    pos_ptr,
    type_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    T,
    H,
    stride_ids,
    stride_pos_ids,
    stride_type_ids,
    stride_word,
    stride_pos,
    stride_type,
    stride_ot,
    eps,
    HAS_TYPE_IDS: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    cols = tl.arange(0, BLOCK_H)  # [BLOCK_H]
    row_ok = rows < T
    col_ok = cols < H
    mask = row_ok[:, None] & col_ok[None, :]
    rows = rows.to(tl.int64)

    # Masked-off tokens read row 0 of each table (never out of bounds) and are never stored.
    word_id = tl.load(ids_ptr + rows * stride_ids, mask=row_ok, other=0).to(tl.int64)
    pos_id = tl.load(pos_ids_ptr + rows * stride_pos_ids, mask=row_ok, other=0).to(tl.int64)
    x = tl.load(word_ptr + word_id[:, None] * stride_word + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    x += tl.load(pos_ptr + pos_id[:, None] * stride_pos + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_TYPE_IDS:
        type_id = tl.load(type_ids_ptr + rows * stride_type_ids, mask=row_ok, other=0).to(tl.int64)
        x += tl.load(type_ptr + type_id[:, None] * stride_type + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    else:
        type_row = tl.load(type_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)  # row 0 for every token
        x += type_row[None, :]

    y = layernorm_tile(x, cols, col_ok, H, eps, w_ptr, b_ptr)  # [BLOCK_T, BLOCK_H] fp32
    tl.store(out_ptr + rows[:, None] * stride_ot + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def _check_ids(name: str, ids, T: Optional[int] = None) -> torch.Tensor:
    _utils.check_tensor(name, ids, ndim=1, dtypes=_utils.INT_DTYPES)
    if T is not None and ids.shape[0] != T:
        raise ValueError(f"{name} must have shape ({T},) like input_ids, got {tuple(ids.shape)}")
    return ids


def _check_table(name: str, table, H: Optional[int] = None) -> torch.Tensor:
    _utils.check_tensor(name, table, ndim=2)
    if H is not None and table.shape[1] != H:
        raise ValueError(f"{name} must have {H} columns like word_embeddings, got shape {tuple(table.shape)}")
    if table.shape[0] < 1:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(table.shape)}")
    if table.shape[1] > 1 and table.stride(1) != 1:
        raise ValueError(f"{name} must have unit stride along its last dim, got strides {table.stride()}")
    return table


def embed_layernorm(
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    token_type_ids: Optional[torch.Tensor],
    word_embeddings: torch.Tensor,
    position_embeddings: torch.Tensor,
    token_type_embeddings: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    *,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """LayerNorm(word[input_ids] + position[position_ids] + type[token_type_ids]) -> [T, H].

    Ids are 1-D [T] int32/int64 tensors (any stride); token_type_ids=None means type 0 for every
    token. Tables are [rows, H] with unit column stride, all in one float dtype, which is the output's.
    """
    ids = (input_ids, position_ids, token_type_ids)  # (T,) each
    tables = (word_embeddings, position_embeddings, token_type_embeddings, weight, bias)
    out, eps = check_embed_layernorm_args(*ids, *tables, eps, out)
    if input_ids.shape[0] == 0:
        return out
    return launch_embed_layernorm(*ids, *tables, eps, out)


def check_embed_layernorm_args(
    input_ids,
    position_ids,
    token_type_ids,
    word_embeddings,
    position_embeddings,
    token_type_embeddings,
    weight,
    bias,
    eps,
    out,
) -> tuple[torch.Tensor, float]:
    """embed_layernorm's boundary checks; returns (out allocated or checked, eps)."""
    _check_ids("input_ids", input_ids)
    T = input_ids.shape[0]
    _check_ids("position_ids", position_ids, T)
    if token_type_ids is not None:
        _check_ids("token_type_ids", token_type_ids, T)
    _check_table("word_embeddings", word_embeddings)
    H = word_embeddings.shape[1]
    _check_table("position_embeddings", position_embeddings, H)
    _check_table("token_type_embeddings", token_type_embeddings, H)
    _utils.check_tensor("weight", weight, ndim=1)
    _utils.check_tensor("bias", bias, ndim=1)
    _utils.check_shape("weight", weight, (H,))
    _utils.check_shape("bias", bias, (H,))
    _utils.check_same_dtype(
        "word_embeddings",
        word_embeddings,
        position_embeddings=position_embeddings,
        token_type_embeddings=token_type_embeddings,
        weight=weight,
        bias=bias,
    )
    eps = _utils.check_eps(eps)
    inputs = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "token_type_ids": token_type_ids,
        "word_embeddings": word_embeddings,
        "position_embeddings": position_embeddings,
        "token_type_embeddings": token_type_embeddings,
        "weight": weight,
        "bias": bias,
    }
    device = _utils.check_devices(_embed_layernorm_fwd_kernel, **inputs)
    return _utils.check_out(out, (T, H), word_embeddings.dtype, device, **inputs), eps


def config_key(H: int, dtype: torch.dtype) -> tuple:
    return (H, _dtypes.dtype_name(dtype))


def launch_embed_layernorm(
    input_ids,
    position_ids,
    token_type_ids,
    word_embeddings,
    position_embeddings,
    token_type_embeddings,
    weight,
    bias,
    eps: float,
    out,
    *,
    config: Optional[dict] = None,
) -> torch.Tensor:
    """The launch alone, on inputs checked by check_embed_layernorm_args (T >= 1); `config`
    ({"BLOCK_T", "num_warps"}) overrides the launch state's config for the shape."""
    T, H = input_ids.shape[0], word_embeddings.shape[1]
    if config is None:
        key = config_key(H, word_embeddings.dtype)
        config = launch_state(out.device).config(KERNEL, key, _utils.row_config)
    block_h, block_t, num_warps = triton.next_power_of_2(H), config["BLOCK_T"], config["num_warps"]
    weight, bias = weight.contiguous(), bias.contiguous()
    type_ids = token_type_ids if token_type_ids is not None else input_ids
    grid = (triton.cdiv(T, block_t),)
    _embed_layernorm_fwd_kernel[grid](
        input_ids,
        position_ids,
        type_ids,
        word_embeddings,
        position_embeddings,
        token_type_embeddings,
        weight,
        bias,
        out,
        T,
        H,
        input_ids.stride(0),
        position_ids.stride(0),
        type_ids.stride(0),
        word_embeddings.stride(0),
        position_embeddings.stride(0),
        token_type_embeddings.stride(0),
        out.stride(0),
        eps,
        HAS_TYPE_IDS=token_type_ids is not None,
        BLOCK_T=block_t,
        BLOCK_H=block_h,
        num_warps=num_warps,
    )
    return out


def embed_layernorm_ref(
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    token_type_ids: Optional[torch.Tensor],
    word_embeddings: torch.Tensor,
    position_embeddings: torch.Tensor,
    token_type_embeddings: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    *,
    compute_dtype: torch.dtype = torch.float32,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Readable reference: gather in compute_dtype, sum, LayerNorm, cast to out_dtype (the tables' by default)."""
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    h = (
        word_embeddings.to(compute_dtype)[input_ids.long()]
        + position_embeddings.to(compute_dtype)[position_ids.long()]
        + token_type_embeddings.to(compute_dtype)[token_type_ids.long()]
    )  # [T, H]
    mean = h.mean(dim=-1, keepdim=True)
    var = (h - mean).pow(2).mean(dim=-1, keepdim=True)
    y = (h - mean) * torch.rsqrt(var + eps) * weight.to(compute_dtype) + bias.to(compute_dtype)
    return y.to(out_dtype or word_embeddings.dtype)
