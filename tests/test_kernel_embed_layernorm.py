"""embed_layernorm: gather word + position + type rows, sum, LayerNorm, in one kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bertfast.kernels import embed_layernorm, embed_layernorm_ref

from .helpers import (
    DEVICE,
    KERNEL_DTYPES,
    assert_close,
    assert_within_torch_error,
    seed_from_test_id,  # noqa: F401  (autouse: a fresh seed per test, from its id)
)

DTYPES = KERNEL_DTYPES
VOCAB, MAX_POS, TYPES = 101, 40, 2


def _tables(H, dtype):
    word = torch.randn(VOCAB, H, device=DEVICE).to(dtype)
    pos = (0.5 * torch.randn(MAX_POS, H, device=DEVICE)).to(dtype)
    typ = (0.5 * torch.randn(TYPES, H, device=DEVICE)).to(dtype)
    weight = (1.0 + 0.5 * torch.randn(H, device=DEVICE)).to(dtype)
    bias = (0.5 * torch.randn(H, device=DEVICE)).to(dtype)
    return word, pos, typ, weight, bias


def _ids(T, id_dtype=torch.int64):
    ids = torch.randint(0, VOCAB, (T,), device=DEVICE, dtype=id_dtype)
    pos_ids = torch.randint(0, MAX_POS, (T,), device=DEVICE, dtype=id_dtype)
    type_ids = torch.randint(0, TYPES, (T,), device=DEVICE, dtype=id_dtype)
    return ids, pos_ids, type_ids


def _check(ids, pos_ids, type_ids, word, pos, typ, weight, bias, eps, out, dtype, what):
    ref = embed_layernorm_ref(
        ids, pos_ids, type_ids, word, pos, typ, weight, bias, eps, compute_dtype=torch.float64, out_dtype=torch.float64
    )
    tids = type_ids if type_ids is not None else torch.zeros_like(ids)
    h = word[ids.long()] + pos[pos_ids.long()] + typ[tids.long()]  # torch's own unfused op, in dtype
    same = F.layer_norm(h, (word.shape[1],), weight, bias, eps)
    assert_within_torch_error(out, ref, same, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 33, 127, 257])
@pytest.mark.parametrize("H", [48, 96])
@pytest.mark.parametrize("with_type_ids", [True, False])
def test_embed_layernorm_matches_reference(dtype, T, H, with_type_ids):
    word, pos, typ, weight, bias = _tables(H, dtype)
    ids, pos_ids, type_ids = _ids(T)
    type_ids = type_ids if with_type_ids else None
    out = torch.full((T, H), float("nan"), dtype=dtype, device=DEVICE)
    got = embed_layernorm(ids, pos_ids, type_ids, word, pos, typ, weight, bias, 1e-12, out=out)
    assert got is out
    _check(ids, pos_ids, type_ids, word, pos, typ, weight, bias, 1e-12, out, dtype, f"embed T={T} H={H}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_embed_layernorm_int32_strided_ids_and_sliced_tables(dtype):
    T, H = 33, 96
    ids, pos_ids, type_ids = _ids(2 * T, torch.int32)
    ids, pos_ids = ids[::2], pos_ids[1::2]  # stride-2 id vectors
    type_ids = type_ids[:T].long()  # mixed id dtypes are fine
    word_wide = torch.randn(VOCAB, H + 16, device=DEVICE).to(dtype)
    word = word_wide[:, 8 : 8 + H]  # row stride H + 16
    _, pos, typ, weight, bias = _tables(H, dtype)
    out = embed_layernorm(ids, pos_ids, type_ids, word, pos, typ, weight, bias, 1e-5)
    _check(ids, pos_ids, type_ids, word, pos, typ, weight, bias, 1e-5, out, dtype, "embed strided")


def test_embed_layernorm_bert_hidden_size():
    T, H = 5, 768
    word, pos, typ, weight, bias = _tables(H, torch.float32)
    ids, pos_ids, type_ids = _ids(T)
    out = embed_layernorm(ids, pos_ids, type_ids, word, pos, typ, weight, bias, 1e-12)
    _check(ids, pos_ids, type_ids, word, pos, typ, weight, bias, 1e-12, out, torch.float32, "embed H=768")


def test_embed_layernorm_ref_none_type_ids_is_row_zero():
    word, pos, typ, weight, bias = _tables(48, torch.float64)
    ids, pos_ids, _ = _ids(7)
    a = embed_layernorm_ref(ids, pos_ids, None, word, pos, typ, weight, bias, 1e-6, compute_dtype=torch.float64)
    b = embed_layernorm_ref(
        ids, pos_ids, torch.zeros_like(ids), word, pos, typ, weight, bias, 1e-6, compute_dtype=torch.float64
    )
    assert_close(a, b, 0.0, "type ids None")
    h = word[ids] + pos[pos_ids] + typ[0]
    assert_close(a, F.layer_norm(h, (48,), weight, bias, 1e-6), 1e-12, "embed_layernorm_ref")


def test_embed_layernorm_bad_inputs():
    word, pos, typ, weight, bias = _tables(48, torch.float32)
    ids, pos_ids, type_ids = _ids(6)
    good = (ids, pos_ids, type_ids, word, pos, typ, weight, bias, 1e-5)

    def call(**change):
        names = [
            "input_ids",
            "position_ids",
            "token_type_ids",
            "word_embeddings",
            "position_embeddings",
            "token_type_embeddings",
            "weight",
            "bias",
            "eps",
        ]
        kwargs = dict(zip(names, good))
        kwargs.update(change)
        return embed_layernorm(**kwargs)

    with pytest.raises(TypeError, match="input_ids must have dtype"):
        call(input_ids=ids.float())
    with pytest.raises(ValueError, match="input_ids must be 1-D"):
        call(input_ids=ids[None])
    with pytest.raises(ValueError, match="position_ids must have shape"):
        call(position_ids=pos_ids[:5])
    with pytest.raises(ValueError, match="token_type_ids must have shape"):
        call(token_type_ids=type_ids[:5])
    with pytest.raises(TypeError, match="token_type_ids must have dtype"):
        call(token_type_ids=type_ids.to(torch.int16))
    with pytest.raises(ValueError, match="position_embeddings must have 48 columns"):
        call(position_embeddings=pos[:, :40])
    with pytest.raises(TypeError, match="token_type_embeddings has dtype"):
        call(token_type_embeddings=typ.half())
    with pytest.raises(ValueError, match="word_embeddings must have unit stride"):
        call(word_embeddings=torch.randn(48, VOCAB, device=DEVICE).t())
    with pytest.raises(ValueError, match="weight must have shape"):
        call(weight=weight[:47])
    with pytest.raises(ValueError, match="eps"):
        call(eps=-1.0)
    with pytest.raises(ValueError, match="position_ids is on meta"):
        call(position_ids=pos_ids.to("meta"))
