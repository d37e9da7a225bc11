"""Timing each kernel's short candidate-config list per shape: what `tuning.measure_configs` runs.

For every (kernel, shape) a `Case` holds fresh random operands, the config key, the candidate configs
(the heuristic's first, so measuring can only keep or beat it), a launch taking a config, and the
fp32 reference of the op. A candidate whose error against the reference fails the acceptance rule
(`_utils.acceptable_error`, with the heuristic config's error as the bar) is never timed; the fastest
of the rest is the winner recorded for the key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import triton

from .. import _dtypes
from . import _utils, attention, epilogue, gemm, gemm_splitk, gemm_tma
from .choice_table import parse_epilogue
from .config_file import TunedConfigCache
from .embed_layernorm import KERNEL as EMBED_LN_KERNEL
from .embed_layernorm import config_key as embed_ln_key
from .embed_layernorm import embed_layernorm_ref, launch_embed_layernorm
from .layernorm import KERNEL as LN_KERNEL
from .layernorm import bias_residual_layernorm_ref, launch_layernorm
from .layernorm import config_key as ln_key
from .state import launch_state

F32 = torch.float32


@dataclass
class Case:
    kernel: str
    key: tuple
    candidates: list[dict]
    launch: Callable[[dict], torch.Tensor]
    reference: torch.Tensor  # fp32


def _unique(configs: Iterable[dict]) -> list[dict]:
    out: list[dict] = []
    for c in configs:
        if c not in out:
            out.append(c)
    return out


def _rand(g: torch.Generator, device, dtype, *shape, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, generator=g)).to(device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# Candidates: a few per kernel around its heuristic (one small alternative under the interpreter)
# --------------------------------------------------------------------------------------------------


def _gemm_candidates(key: tuple, x: torch.Tensor) -> list[dict]:
    pick = gemm._gemm_heuristic(key)
    if _utils.interpreting():
        return _unique([pick, {**pick, "BLOCK_M": 16, "BLOCK_K": 16, "GROUP_M": 2}])
    named = {"x_ptr": x, "M_BUCKET": key[0], "N": key[1]}
    kept = gemm._prune_gemm_configs(gemm.GEMM_GPU_CONFIGS, named)
    return _unique([pick, *(gemm.fit_smem(gemm.from_triton(c), x.element_size()) for c in kept)])[:5]


def _splitk_candidates(key: tuple) -> list[dict]:
    pick = gemm_splitk._splitk_heuristic(key)
    split = pick["SPLIT_K"]
    return _unique([pick, {**pick, "SPLIT_K": max(1, split // 2)}, {**pick, "SPLIT_K": split * 2}])


def _tma_candidates(key: tuple) -> list[dict]:
    pick = gemm_tma._tma_heuristic(key)
    if _utils.interpreting():
        return _unique([pick, {**pick, "BLOCK_N": 64}])
    tiles = [(64, 128, 4, 4), (128, 128, 8, 4), (128, 256, 8, 3)]
    others = [
        gemm.fit_smem({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": w, "num_stages": s}, 2)
        for bm, bn, w, s in tiles
    ]
    return _unique([pick, *others])


def _row_candidates(pick: dict) -> list[dict]:
    """The row kernels: half and twice the rows per program, and the other warp count."""
    t, w = pick["BLOCK_T"], pick["num_warps"]
    return _unique(
        [pick, {**pick, "BLOCK_T": max(1, t // 2)}, {**pick, "BLOCK_T": min(16, 2 * t)}, {**pick, "num_warps": w * 2}]
    )


# --------------------------------------------------------------------------------------------------
# Cases per kernel
# --------------------------------------------------------------------------------------------------


def _gemm_cases(shape, dtype, device, g) -> list[Case]:
    M, N, K, epi = shape
    parts = parse_epilogue(epi)
    act = parts["activation"] or ""
    x = _rand(g, device, dtype, M, K)
    w = _rand(g, device, dtype, N, K, scale=K**-0.5)
    bias = _rand(g, device, dtype, N, scale=0.5) if parts["bias"] else None
    res = _rand(g, device, dtype, M, N) if parts["residual"] else None
    up = [t.float() if t is not None else None for t in (x, w, bias, res)]
    prec = _utils.check_input_precision(None, dtype)
    state = launch_state(device)
    cases = []
    activation = act or None  # a kernel name is also an activation name
    ref = gemm.linear_ref(*up[:3], activation, up[3], out_dtype=F32)
    key = gemm.config_key(M, N, K, bias is not None, res is not None, act, prec, dtype)

    def run_triton(cfg):
        return gemm.triton_linear(x, w, bias, activation, res, config=cfg)

    cases.append(Case(gemm.KERNEL, key, _gemm_candidates(key, x), run_triton, ref))
    if M <= 256:
        skey = gemm_splitk.config_key(M, N, K, prec, dtype, state.num_sms)

        def run_splitk(cfg):
            return gemm_splitk.linear_splitk(x, w, bias, activation, res, config=cfg)

        cases.append(Case(gemm_splitk.KERNEL, skey, _splitk_candidates(skey), run_splitk, ref))
    hopper = state.capability is None or state.capability >= (9, 0)
    if dtype in gemm_tma.TMA_DTYPES and hopper and not gemm_tma.layout_reasons(x, w):
        tkey = gemm_tma.config_key(M, N, K, dtype, state.num_sms)

        def run_tma(cfg):
            return gemm_tma.linear_tma(x, w, bias, activation, res, config=cfg)

        cases.append(Case(gemm_tma.KERNEL, tkey, _tma_candidates(tkey), run_tma, ref))
    y = _rand(g, device, dtype, M, N)  # what a cuBLAS product hands the row kernels
    if act:
        ekey = epilogue.config_key(N, dtype)
        eref = epilogue.bias_activation_ref(y.float(), up[2], activation, residual=up[3], out_dtype=F32)

        def run_epilogue(cfg):
            out = torch.empty_like(y)
            epilogue.launch_bias_activation(y, bias, act, res, out, config=cfg)
            return out

        cases.append(
            Case(epilogue.KERNEL, ekey, _row_candidates(epilogue._bias_activation_heuristic(ekey)), run_epilogue, eref)
        )
    if parts["layernorm"]:
        cases += _layernorm_cases(y, bias, res, dtype, g)
    return cases


def _layernorm_cases(y, bias, res, dtype, g) -> list[Case]:
    M, N = y.shape
    device = y.device
    lw, lb = 1.0 + _rand(g, device, dtype, N, scale=0.1), _rand(g, device, dtype, N, scale=0.1)
    lkey = ln_key(N, dtype)
    up = [t.float() if t is not None else None for t in (y, bias, res, lw, lb)]
    lref = bias_residual_layernorm_ref(*up, 1e-12, out_dtype=F32)

    def run_layernorm(cfg):
        out = torch.empty_like(y)
        return launch_layernorm(y, bias, res, lw, lb, 1e-12, out, config=cfg)

    cases = [Case(LN_KERNEL, lkey, _row_candidates(_utils.row_config(lkey)), run_layernorm, lref)]
    # The embedding LayerNorm at the same hidden size: M tokens over small tables.
    vocab, positions = 97, 64
    ids = torch.randint(0, vocab, (M,), generator=g).to(device)
    pos = torch.randint(0, positions, (M,), generator=g).to(device)
    types = torch.randint(0, 2, (M,), generator=g).to(device)
    tables = [_rand(g, device, dtype, rows, N) for rows in (vocab, positions, 2)]
    ekey = embed_ln_key(N, dtype)
    eref = embed_layernorm_ref(ids, pos, types, *(t.float() for t in tables), up[3], up[4], 1e-12)

    def run_embed(cfg):
        out = torch.empty((M, N), dtype=dtype, device=device)
        return launch_embed_layernorm(ids, pos, types, *tables, lw, lb, 1e-12, out, config=cfg)

    cases.append(Case(EMBED_LN_KERNEL, ekey, _row_candidates(_utils.row_config(ekey)), run_embed, eref))
    return cases


def _attention_cases(shape, dtype, device, g) -> list[Case]:
    seq_len, head_dim = shape
    heads, batch = (2, 2) if _utils.interpreting() else (12, max(1, 4096 // seq_len))
    cu = torch.arange(0, (batch + 1) * seq_len, seq_len, dtype=torch.int32).to(device)
    qkv = _rand(g, device, dtype, batch * seq_len, 3 * heads * head_dim)
    key = attention.config_key(seq_len, head_dim, _utils.check_input_precision(None, dtype), dtype, False)
    ref = attention.varlen_attention_ref(qkv, cu, heads, out_dtype=F32)

    def run(cfg):
        return attention.varlen_attention(qkv, cu, seq_len, heads, config=cfg)

    return [Case(attention.KERNEL, key, attention.CANDIDATE_CONFIGS(key), run, ref)]


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


def best_config(case: Case, dtype: torch.dtype, device: torch.device, reps: int) -> dict:
    """The fastest candidate that passes the acceptance rule against the heuristic's error."""

    def error(cfg):
        return (case.launch(cfg).float() - case.reference).abs().max().item()

    bar = error(case.candidates[0])
    timed = []
    for cfg in case.candidates:
        if cfg is case.candidates[0] or _utils.acceptable_error(error(cfg), bar, dtype):
            timed.append((_utils.median_ms(lambda i, c=cfg: case.launch(c), 1, reps, device), cfg))
    return min(timed, key=lambda t: t[0])[1]


def measure(
    device: torch.device,
    kernel_shapes: dict[str, Iterable[tuple]],
    reps: int,
    dtypes: Iterable[Any],
    device_name: str | None = None,
) -> TunedConfigCache:
    unknown = set(kernel_shapes) - {"gemm", "attention"}
    if unknown:
        raise ValueError(f"kernel_shapes may hold 'gemm' and 'attention', got {sorted(unknown)}")
    if device_name is None:
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} (interpreter)"
    cache = TunedConfigCache(device_name, triton.__version__)
    g = torch.Generator().manual_seed(0)
    for dtype in (_dtypes.parse_dtype(d, arg="dtypes") for d in dtypes):
        cases = [c for s in kernel_shapes.get("gemm", ()) for c in _gemm_cases(tuple(s), dtype, device, g)]
        cases += [c for s in kernel_shapes.get("attention", ()) for c in _attention_cases(tuple(s), dtype, device, g)]
        for case in cases:
            if cache.get(case.kernel, case.key) is None:
                cache.put(case.kernel, case.key, best_config(case, dtype, device, reps))
    return cache
