"""Per-kernel: bertfast's Triton launchers against the torch ops they replace (bertfast.ops' torch
path), at BERT-base / BERT-large sizes, fp16 and bf16. GPU only (skipped without CUDA).

Each case first checks the kernel against the same fp32 reference the tests use (bertfast.kernels'
*_ref), within 2x the torch op's own error plus a small atol, then times it.
"""

from __future__ import annotations

import math

import pytest
import torch

from bertfast import ops
from bertfast.padding import pack_info_from_lengths

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16]
ATOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}
SIZES = {"base": (768, 3072, 12), "large": (1024, 4096, 16)}  # H, I, heads
TOKENS = [1024, 16384]  # 8 x 128 and 128 x 128 real tokens
N_SETS = 3


def _kernels():
    from bertfast import kernels

    return kernels


def _err(a, b):
    return (a.float() - b.float()).abs().max().item()


def _check(triton_out, torch_out, ref, dtype, what):
    bound = 2 * _err(torch_out, ref) + ATOL[dtype]
    err = _err(triton_out, ref)
    assert math.isfinite(err) and err <= bound, f"{what}: triton error {err:.3e} > bound {bound:.3e}"


def _rand(*shape, dtype, scale=1.0, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(*shape, device="cuda", generator=g) * scale).to(dtype)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", ["qkv", "ffn1_gelu", "ffn2_residual"])
def test_linear(benchmark, bench_run, op, size, T, dtype, impl):
    H, I, _ = SIZES[size]
    K, N = {"qkv": (H, 3 * H), "ffn1_gelu": (H, I), "ffn2_residual": (I, H)}[op]
    act = "gelu" if op == "ffn1_gelu" else None
    w, b = _rand(N, K, dtype=dtype, scale=K**-0.5, seed=1), _rand(N, dtype=dtype, seed=2)
    sets = []
    for k in range(N_SETS):
        x = _rand(T, K, dtype=dtype, seed=10 + k)
        r = _rand(T, N, dtype=dtype, seed=20 + k) if op == "ffn2_residual" else None
        sets.append((x, w, b, act, r))
    x, _, _, _, r = sets[0]
    ref = _kernels().linear_ref(x, w, b, act, r, out_dtype=torch.float32)
    _check(ops.linear("triton", x, w, b, act, r), ops.linear("torch", x, w, b, act, r), ref, dtype, op)
    benchmark.extra_info.update(op=op, size=size, T=T, dtype=str(dtype), impl=impl, flops=2 * T * K * N)
    bench_run(benchmark, lambda *a: ops.linear(impl, *a), sets)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lengths", ["fixed", "varlen"])
@pytest.mark.parametrize("seq", [128, 512])
@pytest.mark.parametrize("size", SIZES)
def test_attention(benchmark, bench_run, size, seq, lengths, dtype, impl):
    from bertfast.bench import varlen_lengths

    H, _, heads = SIZES[size]
    batch = 32
    lens = [seq] * batch if lengths == "fixed" else varlen_lengths("uniform", batch, seq, seed=3)
    cu = torch.zeros(batch + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens), 0)
    cu = cu.cuda()
    T = sum(lens)
    info = pack_info_from_lengths(cu, max(lens))
    sets = [(_rand(T, 3 * H, dtype=dtype, seed=30 + k),) for k in range(N_SETS)]
    qkv = sets[0][0]
    ref = _kernels().varlen_attention_ref(qkv, cu, heads, out_dtype=torch.float32)
    _check(ops.attention("triton", qkv, info, heads), ops.attention("torch", qkv, info, heads), ref, dtype, "attention")
    benchmark.extra_info.update(
        size=size, seq=seq, lengths=lengths, dtype=str(dtype), impl=impl, flops=4 * sum(n * n for n in lens) * H
    )
    bench_run(benchmark, lambda q: ops.attention(impl, q, info, heads), sets)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("size", SIZES)
def test_layernorm_residual(benchmark, bench_run, size, T, dtype, impl):
    H = SIZES[size][0]
    w, b = (1 + 0.1 * _rand(H, dtype=torch.float32, seed=4)).to(dtype), _rand(H, dtype=dtype, scale=0.1, seed=5)
    sets = [
        (_rand(T, H, dtype=dtype, seed=40 + k), w, b, 1e-12, _rand(T, H, dtype=dtype, seed=50 + k))
        for k in range(N_SETS)
    ]
    x, _, _, _, r = sets[0]
    ref = _kernels().layernorm_ref(x, w, b, 1e-12, r, out_dtype=torch.float32)
    _check(
        ops.layernorm("triton", x, w, b, 1e-12, r), ops.layernorm("torch", x, w, b, 1e-12, r), ref, dtype, "layernorm"
    )
    benchmark.extra_info.update(size=size, T=T, dtype=str(dtype), impl=impl, bytes=3 * T * H * x.element_size())
    bench_run(benchmark, lambda *a: ops.layernorm(impl, *a), sets)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("size", SIZES)
def test_embed_layernorm(benchmark, bench_run, size, T, dtype, impl):
    H = SIZES[size][0]
    word, pos, typ = (_rand(n, H, dtype=dtype, scale=0.05, seed=60 + i) for i, n in enumerate((30522, 512, 2)))
    w, b = (1 + 0.1 * _rand(H, dtype=torch.float32, seed=6)).to(dtype), _rand(H, dtype=dtype, scale=0.1, seed=7)
    sets = []
    for k in range(N_SETS):
        g = torch.Generator(device="cuda").manual_seed(70 + k)
        ids = torch.randint(1000, 30522, (T,), device="cuda", generator=g)
        sets.append((ids, torch.arange(T, device="cuda") % 128, torch.zeros(T, dtype=torch.long, device="cuda")))
    args = (word, pos, typ, w, b, 1e-12)
    ref = _kernels().embed_layernorm_ref(*sets[0], *args, out_dtype=torch.float32)
    _check(
        ops.embed_layernorm("triton", *sets[0], *args),
        ops.embed_layernorm("torch", *sets[0], *args),
        ref,
        dtype,
        "embed",
    )
    benchmark.extra_info.update(size=size, T=T, dtype=str(dtype), impl=impl)
    bench_run(benchmark, lambda i, p, t: ops.embed_layernorm(impl, i, p, t, *args), sets)
