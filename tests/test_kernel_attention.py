"""varlen_attention: bidirectional flash attention over packed sequences, Q/K/V read in place from qkv."""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from bertfast.kernels import attention as attention_module
from bertfast.kernels import interpreting, varlen_attention, varlen_attention_ref

from .helpers import assert_close, assert_within_torch_error

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CUDA = torch.cuda.is_available()
DTYPES = [
    torch.float32,
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not CUDA, reason="bf16 needs CUDA")),
]
RAGGED = [1, 70, 5, 33]  # a single token, one longer than every interpreter block, odd lengths


@pytest.fixture(autouse=True)
def _seed(request):
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _cu(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)


def _qkv(T, num_heads, head_dim, dtype, extra_cols=0):
    """[T, 3H] activations with a spread of attention logits (not uniform softmax), optionally a column slice."""
    H = num_heads * head_dim
    wide = torch.randn(T, 3 * H + extra_cols, device=DEVICE)
    wide[:, :2 * H] *= 1.5
    wide = wide.to(dtype)
    return wide[:, extra_cols:] if extra_cols else wide


def _check(qkv, cu, num_heads, out, dtype, what, scale=None):
    ref = varlen_attention_ref(qkv, cu, num_heads, scale, compute_dtype=torch.float64, out_dtype=torch.float64)
    same = varlen_attention_ref(qkv, cu, num_heads, scale, compute_dtype=dtype)  # torch's own ops in dtype
    assert_within_torch_error(out, ref, same, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [16, 32])
@pytest.mark.parametrize("lengths", [RAGGED, [1], [17, 17, 17]], ids=["ragged", "one-token", "equal"])
def test_varlen_attention_matches_reference(dtype, head_dim, lengths):
    num_heads = 2
    T = sum(lengths)
    qkv = _qkv(T, num_heads, head_dim, dtype)
    cu = _cu(lengths)
    out = torch.full((T, num_heads * head_dim), float("nan"), dtype=dtype, device=DEVICE)
    got = varlen_attention(qkv, cu, max(lengths), num_heads, out=out)
    assert got is out
    _check(qkv, cu, num_heads, out, dtype, f"attention D={head_dim} lengths={lengths}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_varlen_attention_head_dim_80(dtype):
    lengths, num_heads = [3, 20], 1  # BLOCK_D = 128 with the padded columns masked
    qkv = _qkv(sum(lengths), num_heads, 80, dtype)
    cu = _cu(lengths)
    out = varlen_attention(qkv, cu, max(lengths), num_heads)
    _check(qkv, cu, num_heads, out, dtype, "attention D=80")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_varlen_attention_strided_qkv_and_output(dtype):
    lengths, num_heads, head_dim = [9, 40], 3, 16
    T, H = sum(lengths), num_heads * head_dim
    qkv = _qkv(T, num_heads, head_dim, dtype, extra_cols=24)  # a column slice: row stride 3H + 24
    assert not qkv.is_contiguous()
    cu = _cu(lengths)
    buf = torch.full((T, H + 16), float("nan"), dtype=dtype, device=DEVICE)
    out = buf[:, :H]
    varlen_attention(qkv, cu, max(lengths), num_heads, out=out)
    _check(qkv, cu, num_heads, out, dtype, "attention strided")
    assert torch.isnan(buf[:, H:]).all(), "wrote outside the output view"


def test_varlen_attention_scale_empty_sequence_and_loose_max_seqlen():
    lengths, num_heads, head_dim = [6, 0, 37], 2, 16  # an empty sequence in the middle
    qkv = _qkv(sum(lengths), num_heads, head_dim, torch.float32)
    cu = _cu(lengths)
    out = torch.full((sum(lengths), num_heads * head_dim), float("nan"), device=DEVICE)
    varlen_attention(qkv, cu, 64, num_heads, scale=0.3, out=out)  # max_seqlen above the longest: fine
    _check(qkv, cu, num_heads, out, torch.float32, "attention scale=0.3", scale=0.3)


@pytest.mark.parametrize(
    "config",
    [
        {"BLOCK_M": 16, "BLOCK_N": 16},
        {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 2},
        {"BLOCK_M": 64, "BLOCK_N": 32, "num_stages": 2},
    ],
)
def test_varlen_attention_explicit_block_sizes(config):
    """Each tile shape the launcher can be told to use gives the same result on the ragged batch."""
    qkv = _qkv(sum(RAGGED), 2, 16, torch.float32)
    cu = _cu(RAGGED)
    out = torch.full((sum(RAGGED), 32), float("nan"), device=DEVICE)
    varlen_attention(qkv, cu, max(RAGGED), 2, out=out, config=config)
    _check(qkv, cu, 2, out, torch.float32, f"attention config={config}")


def test_varlen_attention_ref_matches_sdpa():
    lengths, num_heads, head_dim = [5, 12], 2, 16
    qkv = _qkv(sum(lengths), num_heads, head_dim, torch.float64)
    cu = _cu(lengths)
    ref = varlen_attention_ref(qkv, cu, num_heads, compute_dtype=torch.float64)
    for (s, e) in [(0, 5), (5, 17)]:
        q, k, v = (qkv[s:e, i * 32:(i + 1) * 32].reshape(e - s, 2, 16).transpose(0, 1) for i in range(3))
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(16))
        assert_close(ref[s:e], o.transpose(0, 1).reshape(e - s, 32), 1e-12, "varlen_attention_ref")


def test_varlen_attention_empty():
    qkv = _qkv(0, 2, 16, torch.float32)
    assert varlen_attention(qkv, _cu([]), 0, 2).shape == (0, 32)


def test_varlen_attention_bad_inputs():
    qkv = _qkv(10, 2, 16, torch.float32)
    cu = _cu([4, 6])
    with pytest.raises(TypeError, match="cu_seqlens must have dtype"):
        varlen_attention(qkv, cu.long(), 6, 2)
    with pytest.raises(ValueError, match="cu_seqlens must be 1-D"):
        varlen_attention(qkv, cu[None], 6, 2)
    with pytest.raises(ValueError, match="qkv must be"):
        varlen_attention(qkv[:, :95], cu, 6, 2)
    with pytest.raises(ValueError, match="num_heads=5"):
        varlen_attention(qkv, cu, 6, 5)
    with pytest.raises(ValueError, match="num_heads must be"):
        varlen_attention(qkv, cu, 6, 0)
    with pytest.raises(ValueError, match="max_seqlen must be"):
        varlen_attention(qkv, cu, 6.5, 2)
    with pytest.raises(ValueError, match="max_seqlen must be >= 1"):
        varlen_attention(qkv, cu, 0, 2)
    with pytest.raises(TypeError, match="qkv must have dtype"):
        varlen_attention(qkv.to(torch.int32), cu, 6, 2)
    with pytest.raises(ValueError, match="scale must be"):
        varlen_attention(qkv, cu, 6, 2, scale=float("nan"))
    with pytest.raises(ValueError, match="out must have shape"):
        varlen_attention(qkv, cu, 6, 2, out=torch.empty(10, 31, device=DEVICE))
    with pytest.raises(ValueError, match="cu_seqlens is on meta"):
        varlen_attention(qkv, cu.to("meta"), 6, 2)
    with pytest.raises(ValueError, match="out overlaps qkv"):
        varlen_attention(qkv, cu, 6, 2, out=qkv[:, 32:64])


def test_attention_autotune_pruning():
    prune = attention_module._prune_attention_configs
    configs = attention_module.ATTENTION_GPU_CONFIGS
    q16, q32 = torch.empty(1, 1, dtype=torch.float16), torch.empty(1, 1, dtype=torch.float32)
    for qkv, block_d in [(q16, 64), (q16, 128), (q32, 64), (q32, 128)]:
        kept = prune(configs, {"qkv_ptr": qkv, "SEQ_BUCKET": 512, "BLOCK_D": block_d})
        assert kept, (qkv.dtype, block_d)
        for c in kept:
            bm, bn, e = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], qkv.element_size()
            assert c.num_stages * 2 * bn * block_d * e + bm * block_d * e <= 200 * 1024
    assert prune(configs, {"qkv_ptr": q16, "SEQ_BUCKET": 512, "BLOCK_D": 64}) == configs
    short = prune(configs, {"qkv_ptr": q16, "SEQ_BUCKET": 32, "BLOCK_D": 64})
    assert short and all(c.kwargs["BLOCK_M"] <= 32 and c.kwargs["BLOCK_N"] <= 32 for c in short)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or interpreting(), reason="needs a CUDA device (compiled kernels)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 32, 80, 128])
def test_varlen_attention_every_gpu_config(dtype, head_dim):
    """Each autotune candidate on its own, on a ragged batch up to 512 tokens (BERT-base: 12 x 64)."""
    lengths = [128, 1, 77, 512, 300, 129, 64]
    num_heads = 768 // head_dim if head_dim in (32, 64) else 4
    qkv = _qkv(sum(lengths), num_heads, head_dim, dtype)
    cu = _cu(lengths)
    bd = 128 if head_dim == 80 else head_dim
    for c in attention_module._prune_attention_configs(
        attention_module.ATTENTION_GPU_CONFIGS, {"qkv_ptr": qkv, "SEQ_BUCKET": 512, "BLOCK_D": bd}
    ):
        cfg = dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
        out = torch.full((sum(lengths), num_heads * head_dim), float("nan"), dtype=dtype, device=DEVICE)
        varlen_attention(qkv, cu, max(lengths), num_heads, out=out, config=cfg)
        _check(qkv, cu, num_heads, out, dtype, f"attention config={cfg}")
    out = varlen_attention(qkv, cu, max(lengths), num_heads)  # the autotuned path
    _check(qkv, cu, num_heads, out, dtype, "attention autotuned")
