"""varlen_attention: bidirectional flash attention over packed sequences, Q/K/V read in place from qkv."""

from __future__ import annotations

import math

import pytest
import torch
import triton
import triton.language as tl
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

from bertfast import ops
from bertfast.kernels import attention as attention_module
from bertfast.kernels import interpreting, varlen_attention, varlen_attention_ref
from bertfast.padding import pack_plan

from .helpers import (
    CUDA,
    DEVICE,
    FP64_ATOL,
    GRAD_ATOL_FP32_RELATIVE,
    KERNEL_DTYPES,
    assert_close,
    assert_within_torch_error,
    seed_from_test_id,  # noqa: F401  (autouse: a fresh seed per test, from its id)
    without_known_configs,
)

DTYPES = KERNEL_DTYPES
RAGGED = [1, 70, 5, 33]  # a single token, one longer than every interpreter block, odd lengths
WITH_EMPTY = [0, 33, 0, 1, 70, 0, 0]  # empty sequences first, between and trailing (a CUDA-graph bucket)


def _cu(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)


def _qkv(T, num_heads, head_dim, dtype, extra_cols=0):
    """[T, 3H] activations with a spread of attention logits (not uniform softmax), optionally a column slice."""
    H = num_heads * head_dim
    wide = torch.randn(T, 3 * H + extra_cols, device=DEVICE)
    wide[:, : 2 * H] *= 1.5
    wide = wide.to(dtype)
    return wide[:, extra_cols:] if extra_cols else wide


def _check(qkv, cu, num_heads, out, dtype, what, scale=None):
    ref = varlen_attention_ref(qkv, cu, num_heads, scale, compute_dtype=torch.float64, out_dtype=torch.float64)
    same = varlen_attention_ref(qkv, cu, num_heads, scale, compute_dtype=dtype)  # torch's own ops in dtype
    assert_within_torch_error(out, ref, same, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [16, 32])
@pytest.mark.parametrize(
    "lengths, max_seqlen",
    [(RAGGED, 70), ([1], 1), ([17, 17, 17], 17), (WITH_EMPTY, 70), ([5, 0, 127], 257)],
    ids=["ragged", "one-token", "equal", "empty-sequences", "loose-max-seqlen"],
)
def test_varlen_attention_matches_reference(dtype, head_dim, lengths, max_seqlen):
    num_heads = 2
    T = sum(lengths)
    qkv = _qkv(T, num_heads, head_dim, dtype)
    cu = _cu(lengths)
    out = torch.full((T, num_heads * head_dim), float("nan"), dtype=dtype, device=DEVICE)
    got = varlen_attention(qkv, cu, max_seqlen, num_heads, out=out)
    assert got is out
    _check(qkv, cu, num_heads, out, dtype, f"attention D={head_dim} lengths={lengths} max_seqlen={max_seqlen}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_varlen_attention_head_dim_80(dtype):
    lengths, num_heads = [3, 0, 20], 2  # BLOCK_D = 128 with the padded columns masked
    qkv = _qkv(sum(lengths), num_heads, 80, dtype)
    cu = _cu(lengths)
    out = torch.full((sum(lengths), num_heads * 80), float("nan"), dtype=dtype, device=DEVICE)
    varlen_attention(qkv, cu, max(lengths), num_heads, out=out)
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


@pytest.mark.parametrize("scale", [0.3, 40.0])  # 40: scaled logits in the thousands, softmax nearly one-hot
def test_varlen_attention_scale_empty_sequence_and_loose_max_seqlen(scale):
    lengths, num_heads, head_dim = [6, 0, 37], 2, 16  # an empty sequence in the middle
    qkv = _qkv(sum(lengths), num_heads, head_dim, torch.float32)
    cu = _cu(lengths)
    out = torch.full((sum(lengths), num_heads * head_dim), float("nan"), device=DEVICE)
    varlen_attention(qkv, cu, 64, num_heads, scale=scale, out=out)  # max_seqlen above the longest: fine
    _check(qkv, cu, num_heads, out, torch.float32, f"attention scale={scale}", scale=scale)


@pytest.mark.parametrize(
    "config",
    [
        {"BLOCK_M": 16, "BLOCK_N": 16},
        {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 2},
        {"BLOCK_M": 64, "BLOCK_N": 32, "num_stages": 2},
        {"BLOCK_M": 64, "BLOCK_N": 64},  # the GPU heuristic's tiles, run here by their block sizes
        {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8},
        {"BLOCK_M": 32, "BLOCK_N": 32},
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
    for s, e in [(0, 5), (5, 17)]:
        q, k, v = (qkv[s:e, i * 32 : (i + 1) * 32].reshape(e - s, 2, 16).transpose(0, 1) for i in range(3))
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(16))
        assert_close(ref[s:e], o.transpose(0, 1).reshape(e - s, 32), FP64_ATOL, "varlen_attention_ref")


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
    with pytest.raises(ValueError, match="scale must be a positive"):
        varlen_attention(qkv, cu, 6, 2, scale=-0.5)
    with pytest.raises(ValueError, match="scale must be a positive"):
        varlen_attention(qkv, cu, 6, 2, scale=0.0)
    with pytest.raises(ValueError, match="config is missing"):
        varlen_attention(qkv, cu, 6, 2, config={"BLOCK_M": 16})
    with pytest.raises(TypeError, match="config must be a dict"):
        varlen_attention(qkv, cu, 6, 2, config=[16, 16])
    with pytest.raises(ValueError, match="out must have shape"):
        varlen_attention(qkv, cu, 6, 2, out=torch.empty(10, 31, device=DEVICE))
    with pytest.raises(ValueError, match="cu_seqlens is on meta"):
        varlen_attention(qkv, cu.to("meta"), 6, 2)
    with pytest.raises(ValueError, match="out overlaps qkv"):
        varlen_attention(qkv, cu, 6, 2, out=qkv[:, 32:64])


def test_gpu_candidate_configs_lead_with_the_heuristic_and_fit_the_sequences():
    """The compiled kernels' choices, asked for here under the interpreter too: the heuristic's pick first,
    no duplicate, no tile longer than the sequences beyond 32, fp32 (FMA-unit dots) at most 128 x 64."""
    for dtype in ("float16", "bfloat16", "float32"):
        for head_dim in (32, 64, 80, 128):
            for bucket in (16, 32, 128, 512):
                for has_bias in (False, True):
                    key = (bucket, head_dim, "ieee" if dtype == "float32" else "tf32", dtype, has_bias)
                    candidates = attention_module.CANDIDATE_CONFIGS(key, interpreted=False)
                    assert candidates[0] == attention_module.heuristic_config(key, interpreted=False), key
                    assert len({tuple(sorted(c.items())) for c in candidates}) == len(candidates), key
                    for c in candidates:
                        assert set(c) == {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"}, (key, c)
                        assert max(c["BLOCK_M"], c["BLOCK_N"]) <= max(bucket, 32), (key, c)
                        if dtype == "float32":
                            assert c["BLOCK_M"] * max(c["BLOCK_N"], head_dim) <= 128 * 64, (key, c)
    big = attention_module.CANDIDATE_CONFIGS((512, 64, "tf32", "float16", False), interpreted=False)
    assert {(c["BLOCK_M"], c["BLOCK_N"]) for c in big} >= {(128, 64), (64, 64), (128, 128)}, big
    # Whether they fit shared memory is checked by compiling them (test_kernel_build.py); the interpreter
    # always runs its one small config.
    assert attention_module.CANDIDATE_CONFIGS((512, 64, "tf32", "float16", True), interpreted=True) == [
        attention_module.INTERPRETER_CONFIG
    ]


# --------------------------------------------------------------------------- launch configs
class _LaunchSpy:
    """Stands in for the jitted kernel: records each launch's grid and keyword args, then runs it."""

    def __init__(self, kernel):
        self.fn = kernel  # what _utils.is_interpreted unwraps
        self.launches = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((grid, kwargs))
            return self.fn[grid](*args, **kwargs)

        return launch


@pytest.fixture
def fresh_state():
    with without_known_configs(attention_module.KERNEL) as state:
        yield state


def test_default_launch_uses_the_launch_state_then_a_put_config(fresh_state, monkeypatch):
    lengths, num_heads, head_dim = [40, 3], 2, 16
    qkv, cu = _qkv(sum(lengths), num_heads, head_dim, torch.float16), _cu(lengths)
    spy = _LaunchSpy(attention_module._varlen_attention_fwd_kernel)
    monkeypatch.setattr(attention_module, "_varlen_attention_fwd_kernel", spy)
    key = attention_module.config_key(40, head_dim, "tf32", torch.float16, False)
    assert key == (64, 16, "tf32", "float16", False)

    out = varlen_attention(qkv, cu, 40, num_heads)
    _check(qkv, cu, num_heads, out, torch.float16, "attention, heuristic config")
    cfg = attention_module.heuristic_config(key)
    assert fresh_state.config_source(attention_module.KERNEL, key) == "heuristic"
    grid, kwargs = spy.launches[-1]
    assert grid == (math.ceil(40 / cfg["BLOCK_M"]), num_heads, len(lengths))
    assert {k: kwargs[k] for k in cfg} == cfg and kwargs["HAS_REL_BIAS"] is False

    # A put_config (a tuned or committed winner) replaces the heuristic for that key on the next launch.
    tuned = {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 2, "num_stages": 2}
    fresh_state.put_config(attention_module.KERNEL, key, tuned)
    out = varlen_attention(qkv, cu, 40, num_heads)
    grid, kwargs = spy.launches[-1]
    assert grid == (3, num_heads, len(lengths)) and {k: kwargs[k] for k in tuned} == tuned
    _check(qkv, cu, num_heads, out, torch.float16, "attention, tuned config")


def test_autotuning_times_the_candidates_and_puts_the_winner(fresh_state):
    lengths, num_heads, head_dim = [0, 33, 9], 2, 32
    qkv, cu, table = _qkv(sum(lengths), num_heads, head_dim, torch.float32), _cu(lengths), _table(num_heads)
    with fresh_state.autotuning():  # what `bertfast tune` does
        out = varlen_attention(qkv, cu, 33, num_heads, rel_bias=table)
    _check_rel_bias(qkv, cu, num_heads, table, out, torch.float32, "rel-bias attention, autotuned")
    key = (64, head_dim, "ieee", "float32", True)
    known = fresh_state.known_configs(attention_module.KERNEL)
    assert list(known) == [key] and known[key] in attention_module.CANDIDATE_CONFIGS(key)
    assert fresh_state.config_source(attention_module.KERNEL, key) == "table"
    if interpreting():
        assert known[key] == attention_module.INTERPRETER_CONFIG


# --------------------------------------------------------------------------- MPNet's relative-position bias
@triton.jit
def _buckets_kernel(rel_ptr, out_ptr, n, NUM_BUCKETS: tl.constexpr, MAX_DISTANCE: tl.constexpr,
                    REL_LOG_SCALE: tl.constexpr, REL_LOG_POW: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    rel = tl.load(rel_ptr + offs, mask=ok)
    bucket = attention_module._relative_bucket(rel, NUM_BUCKETS, MAX_DISTANCE, REL_LOG_SCALE, REL_LOG_POW)
    tl.store(out_ptr + offs, bucket, mask=ok)


@pytest.mark.parametrize(
    "num_buckets, max_distance, log_pow", [(32, 128, 2), (16, 64, 1), (64, 256, 0), (32, 64, 0), (20, 100, 0)]
)
def test_relative_bucket_matches_transformers_at_every_distance(num_buckets, max_distance, log_pow):
    """The kernel's bucket of every distance in [-600, 600] is transformers' MPNet bucket (float32 log,
    truncation and clamping included: the edges 8/16/32/64/128 of MPNet's 32 / 128), on the exponent
    path (log_pow > 0) and the float log2 path."""
    rel = torch.arange(-600, 601, dtype=torch.int32, device=DEVICE)
    expected = MPNetEncoder.relative_position_bucket(rel.long(), num_buckets, max_distance)
    got = torch.full_like(rel, -1)
    flags = attention_module._rel_bias_flags(num_buckets, max_distance)
    assert flags["REL_LOG_POW"] == log_pow
    consts = {k: flags[k] for k in ("NUM_BUCKETS", "MAX_DISTANCE", "REL_LOG_SCALE", "REL_LOG_POW")}
    _buckets_kernel[(triton.cdiv(rel.numel(), 512),)](rel, got, rel.numel(), **consts, BLOCK=512)
    bad = (got.long() != expected).nonzero().flatten()
    assert bad.numel() == 0, (
        f"distances {rel[bad][:8].tolist()}: kernel {got[bad][:8].tolist()}, HF {expected[bad][:8]}"
    )
    ref = attention_module.relative_position_bucket_ref(rel.long(), num_buckets, max_distance)
    assert torch.equal(ref, expected), "relative_position_bucket_ref"


def _mpnet_attention(qkv, cu, num_heads, table):
    """transformers' MPNet attention math per sequence in float64: softmax(Q K^T / sqrt(D) + bias) V with the
    bias table[bucket(j - i), head] from transformers' own bucket function."""
    x, H = qkv.double(), qkv.shape[1] // 3
    D = H // num_heads
    out = torch.empty(qkv.shape[0], H, dtype=torch.float64, device=qkv.device)
    bounds = cu.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        S = end - start
        if S == 0:
            continue
        q, k, v = (x[start:end, i * H : (i + 1) * H].view(S, num_heads, D).transpose(0, 1) for i in range(3))
        pos = torch.arange(S, device=qkv.device)
        bucket = MPNetEncoder.relative_position_bucket(pos[None, :] - pos[:, None], table.shape[0])  # [S, S]
        scores = q @ k.transpose(1, 2) / math.sqrt(D) + table.double()[bucket].permute(2, 0, 1)  # [N, S, S]
        out[start:end] = (torch.softmax(scores, -1) @ v).transpose(0, 1).reshape(S, H)
    return out


def _check_rel_bias(qkv, cu, num_heads, table, out, dtype, what):
    ref = _mpnet_attention(qkv, cu, num_heads, table)
    same = varlen_attention_ref(qkv, cu, num_heads, rel_bias=table, compute_dtype=dtype)  # torch's own ops in dtype
    assert_within_torch_error(out, ref, same, dtype, what)


def _table(num_heads, dtype=torch.float32, num_buckets=32):
    return (3.0 * torch.randn(num_buckets, num_heads, device=DEVICE)).to(dtype)  # bias comparable to the scores


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [32, 64])
@pytest.mark.parametrize("lengths", [[1, 33, 0, 127], [257, 9]], ids=["1-33-empty-127", "257 (past max_distance)-9"])
def test_varlen_attention_rel_bias_matches_mpnet(dtype, head_dim, lengths):
    """Every bucket edge (distances 7/8, 15/16, 127/128) and beyond max_distance in one ragged batch; the
    long batch on 64 x 64 tiles (the GPU heuristic's, and fewer interpreter steps)."""
    num_heads = 2
    T = sum(lengths)
    qkv, cu, table = _qkv(T, num_heads, head_dim, dtype), _cu(lengths), _table(num_heads, dtype)
    out = torch.full((T, num_heads * head_dim), float("nan"), dtype=dtype, device=DEVICE)
    config = {"BLOCK_M": 64, "BLOCK_N": 64} if max(lengths) > 128 else None
    assert varlen_attention(qkv, cu, max(lengths), num_heads, rel_bias=table, out=out, config=config) is out
    _check_rel_bias(qkv, cu, num_heads, table, out, dtype, f"rel-bias attention D={head_dim} lengths={lengths}")


def test_varlen_attention_rel_bias_strided_inputs_and_other_tables():
    """A column slice of qkv; a transposed view of an fp16 table (strides (1, 32)) under fp32 activations
    (read as fp32); 64 buckets; an output view with NaN columns around it."""
    lengths, num_heads, head_dim = [70, 1, 20], 3, 32
    T, H = sum(lengths), num_heads * head_dim
    qkv, cu = _qkv(T, num_heads, head_dim, torch.float32, extra_cols=24), _cu(lengths)
    assert not qkv.is_contiguous()
    for table in (_table(num_heads, num_buckets=64), _table(num_heads, torch.float16).t().contiguous().t()):
        buf = torch.full((T, H + 8), float("nan"), device=DEVICE)
        out = buf[:, 8:]
        varlen_attention(qkv, cu, max(lengths), num_heads, rel_bias=table, out=out)
        what = f"rel-bias attention, table {tuple(table.shape)} {table.dtype} strides {table.stride()}"
        _check_rel_bias(qkv, cu, num_heads, table.float(), out, torch.float32, what)
        assert torch.isnan(buf[:, :8]).all(), "wrote outside the output view"


def test_varlen_attention_rel_bias_bad_inputs():
    qkv, cu = _qkv(10, 2, 16, torch.float32), _cu([4, 6])
    with pytest.raises(ValueError, match=r"rel_bias must be \[num_buckets >= 4, num_heads=2\]"):
        varlen_attention(qkv, cu, 6, 2, rel_bias=torch.randn(32, 3, device=DEVICE))
    with pytest.raises(ValueError, match="rel_bias must be 2-D"):
        varlen_attention(qkv, cu, 6, 2, rel_bias=torch.randn(32, device=DEVICE))
    with pytest.raises(TypeError, match="rel_bias must have dtype"):
        varlen_attention(qkv, cu, 6, 2, rel_bias=torch.ones(32, 2, dtype=torch.int64, device=DEVICE))
    with pytest.raises(TypeError, match="rel_bias must be a torch.Tensor"):
        varlen_attention(qkv, cu, 6, 2, rel_bias=[[0.5] * 2] * 32)
    with pytest.raises(ValueError, match="rel_bias is on meta"):
        varlen_attention(qkv, cu, 6, 2, rel_bias=torch.randn(32, 2, device="meta"))
    with pytest.raises(ValueError, match="max_distance must be an int > num_buckets // 4 = 8"):
        varlen_attention(qkv, cu, 6, 2, rel_bias=torch.randn(32, 2, device=DEVICE), max_distance=8)
    with pytest.raises(ValueError, match="max_distance must be an int"):
        varlen_attention(qkv, cu, 6, 2, rel_bias=torch.randn(32, 2, device=DEVICE), max_distance=128.0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or interpreting(), reason="needs a CUDA device (compiled kernels)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 32, 80, 128])
def test_varlen_attention_every_gpu_config(dtype, head_dim):
    """Each tuning candidate on its own, with and without MPNet's bias, on a ragged batch up to 512 tokens
    (BERT-base: 12 x 64), and the heuristic's config for each bucket."""
    lengths = [128, 1, 77, 512, 300, 129, 64]
    num_heads = 768 // head_dim if head_dim in (32, 64) else 4
    qkv = _qkv(sum(lengths), num_heads, head_dim, dtype)
    cu, table = _cu(lengths), _table(num_heads, dtype)
    precision = "ieee" if dtype == torch.float32 else "tf32"
    for has_bias in (False, True):
        key = attention_module.config_key(512, head_dim, precision, dtype, has_bias)
        bias = table if has_bias else None
        for cfg in attention_module.CANDIDATE_CONFIGS(key):
            out = torch.full((sum(lengths), num_heads * head_dim), float("nan"), dtype=dtype, device=DEVICE)
            varlen_attention(qkv, cu, max(lengths), num_heads, rel_bias=bias, out=out, config=cfg)
            if has_bias:
                _check_rel_bias(qkv, cu, num_heads, table, out, dtype, f"rel-bias attention config={cfg}")
            else:
                _check(qkv, cu, num_heads, out, dtype, f"attention config={cfg}")
    for max_seqlen in (16, 64, 128, 512):  # the heuristic's config for each bucket
        short = [min(n, max_seqlen) for n in lengths]
        cu_short = _cu(short)
        qkv_short = qkv[: sum(short)]
        out = varlen_attention(qkv_short, cu_short, max_seqlen, num_heads)
        _check(qkv_short, cu_short, num_heads, out, dtype, f"attention heuristic max_seqlen={max_seqlen}")


# --------------------------------------------------------------------------- ops.attention with the bias
@pytest.mark.parametrize("padding", ["right", "left", "holes", "none"])
def test_ops_attention_rel_bias_torch_and_triton_match_mpnet(padding):
    """ops.attention(rel_bias=...) on a padded (B, S) batch: the torch path (SDPA with an additive mask)
    and the kernel both equal transformers' MPNet math over each sequence's real tokens, positions
    counted within the sequence; the torch path's gradient reaches the table as transformers' does."""
    B, S, num_heads, head_dim = 3, 37, 2, 16
    keep = torch.ones(B, S, dtype=torch.bool, device=DEVICE)
    if padding == "right":
        keep[0, 30:], keep[2, 1:] = False, False
    elif padding == "left":
        keep[0, :7], keep[1, :36] = False, False
    elif padding == "holes":
        keep[0, 3:5], keep[1, 20:] = False, False
    lengths = keep.sum(1).tolist()
    info = pack_plan(None if padding == "none" else keep, lengths, B, S, DEVICE)
    qkv = _qkv(sum(lengths), num_heads, head_dim, torch.float32)
    table = _table(num_heads).requires_grad_()
    ref = _mpnet_attention(qkv, info.cu_seqlens, num_heads, table)
    same = varlen_attention_ref(qkv, info.cu_seqlens, num_heads, rel_bias=table.detach())
    with torch.no_grad():
        kernel = ops.attention("triton", qkv, info, num_heads, rel_bias=table)
    assert_within_torch_error(kernel, ref.detach(), same, torch.float32, f"ops.attention triton, {padding} padding")
    out = ops.attention("torch", qkv, info, num_heads, rel_bias=table)
    assert_within_torch_error(out, ref.detach(), same, torch.float32, f"ops.attention torch, {padding} padding")
    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), table)
    (grad_ref,) = torch.autograd.grad((ref * weights.double()).sum(), table)
    top = grad_ref.abs().max()
    assert_close(grad / top, grad_ref / top, GRAD_ATOL_FP32_RELATIVE, f"d table / max |d table|, {padding} padding")
