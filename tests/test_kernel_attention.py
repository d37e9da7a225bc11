"""varlen_attention: bidirectional flash attention over packed sequences, Q/K/V read in place from qkv."""

from __future__ import annotations

import math

import pytest
import torch

from bertfast.kernels import attention as attention_module
from bertfast.kernels import interpreting, varlen_attention, varlen_attention_ref
from bertfast.kernels._configs import autotuning

from .helpers import (
    CUDA,
    DEVICE,
    FP64_ATOL,
    KERNEL_DTYPES,
    assert_close,
    assert_within_torch_error,
    seed_from_test_id,  # noqa: F401  (autouse: a fresh seed per test, from its id)
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


def test_attention_autotune_pruning_keeps_short_tiles_for_short_sequences():
    prune = attention_module._prune_attention_configs
    configs = attention_module.ATTENTION_GPU_CONFIGS
    q16, q32 = torch.empty(1, 1, dtype=torch.float16), torch.empty(1, 1, dtype=torch.float32)
    for qkv in (q16, q32):
        for head_dim in (32, 64, 80, 128):
            for bucket in (16, 32, 128, 512):
                kept = prune(configs, {"qkv_ptr": qkv, "SEQ_BUCKET": bucket, "HEAD_DIM": head_dim})
                assert kept and all(c in configs for c in kept), (qkv.dtype, head_dim, bucket)
                longest = max(max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kept)
                assert longest <= max(bucket, 32), (qkv.dtype, head_dim, bucket, longest)
    # Whether the kept tiles fit shared memory is checked by compiling them (test_kernel_build.py).


# --------------------------------------------------------------------------- configs without autotuning
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
def fresh_table():
    """ATTENTION_CONFIGS emptied for the test and restored after it (it is process-wide state)."""
    table = attention_module.ATTENTION_CONFIGS
    saved = table.known()
    table.clear()
    yield table
    table.clear()
    for key, cfg in saved.items():
        table.put(key, cfg)


def test_default_launch_uses_the_table_memoised_per_key(fresh_table, monkeypatch):
    lengths, num_heads, head_dim = [40, 3], 2, 16
    qkv, cu = _qkv(sum(lengths), num_heads, head_dim, torch.float16), _cu(lengths)
    spy = _LaunchSpy(attention_module._varlen_attention_fwd_kernel)
    monkeypatch.setattr(attention_module, "_varlen_attention_fwd_kernel", spy)
    heuristic_calls = []
    real_heuristic = fresh_table.heuristic
    monkeypatch.setattr(
        fresh_table, "heuristic", lambda key, args: heuristic_calls.append(key) or real_heuristic(key, args)
    )
    key = attention_module.config_key(40, head_dim, "tf32", torch.float16)
    assert key == (64, 16, "tf32", "float16")

    for _ in range(3):
        out = varlen_attention(qkv, cu, 40, num_heads)
        _check(qkv, cu, num_heads, out, torch.float16, "attention, heuristic config")
    assert heuristic_calls == [key], "the heuristic runs once per key; later launches reuse its answer"
    cfg = fresh_table.lookup(key)
    assert fresh_table.source(key) == "heuristic"
    grid, kwargs = spy.launches[-1]
    assert grid == (math.ceil(40 / cfg["BLOCK_M"]), num_heads, len(lengths))
    assert {k: kwargs[k] for k in cfg} == cfg

    # A put() (a tuned or committed winner) replaces the heuristic for that key on the next launch.
    tuned = {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 2, "num_stages": 2}
    fresh_table.put(key, tuned)
    out = varlen_attention(qkv, cu, 40, num_heads)
    grid, kwargs = spy.launches[-1]
    assert grid == (3, num_heads, len(lengths)) and {k: kwargs[k] for k in tuned} == tuned
    _check(qkv, cu, num_heads, out, torch.float16, "attention, tuned config")
    assert heuristic_calls == [key]


def test_heuristic_is_deterministic_and_covers_every_key():
    heuristic = attention_module._attention_heuristic
    for bucket in (16, 32, 64, 128, 256, 512, 1024):
        for head_dim in (16, 32, 64, 80, 128):
            for precision, dtype in (("tf32", "float16"), ("tf32", "bfloat16"), ("ieee", "float32")):
                key = (bucket, head_dim, precision, dtype)
                cfg = heuristic(key, {})
                assert cfg == heuristic(key, {}), key
                assert set(cfg) == {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"}, key
                gpu = attention_module.gpu_attention_config(bucket, head_dim, 4 if dtype == "float32" else 2)
                assert gpu == attention_module.gpu_attention_config(bucket, head_dim, 4 if dtype == "float32" else 2)
                assert gpu["BLOCK_M"] >= 16 and gpu["BLOCK_N"] >= 16 and gpu["num_stages"] >= 1, (key, gpu)
    if interpreting():  # the interpreter always runs its one small config
        assert heuristic((512, 64, "tf32", "float16"), {}) == attention_module.ATTENTION_INTERPRETER_CONFIG


@pytest.mark.parametrize("how", ["argument", "context"])
def test_autotune_runs_tritons_autotuner_and_records_the_winner(fresh_table, how):
    lengths, num_heads, head_dim = [0, 33, 9], 2, 32
    qkv, cu = _qkv(sum(lengths), num_heads, head_dim, torch.float32), _cu(lengths)
    tuner = attention_module._varlen_attention_fwd_tuned
    assert type(tuner).__name__ == "Autotuner"
    tuner.best_config = None
    if how == "argument":
        out = varlen_attention(qkv, cu, 33, num_heads, autotune=True)
    else:
        with autotuning():  # what `bertfast tune` does
            out = varlen_attention(qkv, cu, 33, num_heads)
    _check(qkv, cu, num_heads, out, torch.float32, "attention, autotuned")
    assert tuner.best_config is not None, "Triton's autotuner ran"
    key = (64, head_dim, "ieee", "float32")
    expected = {
        **tuner.best_config.kwargs,
        "num_warps": tuner.best_config.num_warps,
        "num_stages": tuner.best_config.num_stages,
    }
    assert fresh_table.known() == {key: expected}
    assert fresh_table.source(key) == "table"
    if interpreting():
        assert expected == attention_module.ATTENTION_INTERPRETER_CONFIG


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or interpreting(), reason="needs a CUDA device (compiled kernels)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 32, 80, 128])
def test_varlen_attention_every_gpu_config(dtype, head_dim, fresh_table):
    """Each autotune candidate on its own, on a ragged batch up to 512 tokens (BERT-base: 12 x 64)."""
    lengths = [128, 1, 77, 512, 300, 129, 64]
    num_heads = 768 // head_dim if head_dim in (32, 64) else 4
    qkv = _qkv(sum(lengths), num_heads, head_dim, dtype)
    cu = _cu(lengths)
    for c in attention_module._prune_attention_configs(
        attention_module.ATTENTION_GPU_CONFIGS, {"qkv_ptr": qkv, "SEQ_BUCKET": 512, "HEAD_DIM": head_dim}
    ):
        cfg = dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
        out = torch.full((sum(lengths), num_heads * head_dim), float("nan"), dtype=dtype, device=DEVICE)
        varlen_attention(qkv, cu, max(lengths), num_heads, out=out, config=cfg)
        _check(qkv, cu, num_heads, out, dtype, f"attention config={cfg}")
    for max_seqlen in (16, 64, 128, 512):  # the heuristic's config for each bucket
        short = [min(n, max_seqlen) for n in lengths]
        cu_short = _cu(short)
        qkv_short = qkv[: sum(short)]
        out = varlen_attention(qkv_short, cu_short, max_seqlen, num_heads)
        _check(qkv_short, cu_short, num_heads, out, dtype, f"attention heuristic max_seqlen={max_seqlen}")
    out = varlen_attention(qkv, cu, max(lengths), num_heads, autotune=True)  # Triton's autotuner
    _check(qkv, cu, num_heads, out, dtype, "attention autotuned")
