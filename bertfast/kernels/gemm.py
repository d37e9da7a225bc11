"""Linear layer with a fused epilogue: out = act(x @ weight^T + bias) + residual, one store.

    x [T, K] @ weight [N, K]^T -> fp32 accumulator [BLOCK_M, BLOCK_N]
        -> + bias [N] -> activation -> + residual [T, N] -> out [T, N] (x's dtype)

Tiles are visited in grouped order (GROUP_M row-tiles share a column sweep) so the weight tiles
and x tiles a group needs stay in L2. Out-of-range rows / columns of x and weight are wrapped
(index modulo M or N) instead of masked, so the K loop carries a mask only when K is not a multiple
of BLOCK_K; the store is masked. fp32 operands use IEEE fp32 dot products by default (accurate to
fp32, as the whole-model fp32 check needs); tf32 only when the caller asks (input_precision="tf32").

Launch configs come from the device's launch state (`state.launch_state(device).config("triton_linear",
key, _gemm_heuristic)`: the per-GPU file or `bertfast tune`'s winners, else a deterministic heuristic),
resolved once per shape key: a user's first call never autotunes. The launcher only computes: choosing
cuBLAS, split-K, the Hopper kernel or this one per shape is gemm_dispatch.py's business.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import _dtypes
from .. import activations as _act
from . import _utils
from ._configs import Config, from_triton, split_launch
from .epilogue import _epilogue_store_tile
from .state import launch_state

KERNEL = "triton_linear"  # the name of this kernel's configs in the launch state and config files

# The canonical activation names (bertfast.activations is the one table); names that are the same
# curve as another run that one's kernel branch ("gelu_fast" -> "gelu_tanh").
ACTIVATIONS = _act.NAMES
_SAME_AS = {name: a.kernel for name, a in _act.ACTIVATIONS.items() if a.kernel != name}


@triton.jit
def _grouped_tile(tile, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    """(row tile, column tile) of linear tile index `tile` in grouped order: GROUP_M row-tiles walk
    down a column before moving right, so the weight and x tiles a group needs stay in L2."""
    tiles_per_group = GROUP_M * tiles_n
    first_m = (tile // tiles_per_group) * GROUP_M
    rows_in_group = min(tiles_m - first_m, GROUP_M)
    local = tile % tiles_per_group
    return first_m + local % rows_in_group, local // rows_in_group


@triton.jit
def _dot_k_range(
    x_ptr,
    w_ptr,
    rows_in,  # [BLOCK_M] int64 rows of x (edge tiles wrapped onto valid rows)
    cols_in,  # [BLOCK_N] int64 rows of weight
    k_start,
    k_end,
    K,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    INPUT_PRECISION: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """fp32 [BLOCK_M, BLOCK_N] = x[rows_in, k_start:k_end] @ weight[cols_in, k_start:k_end]^T; only the
    K tail is masked, and only when K is not a multiple of BLOCK_K (EVEN_K)."""
    offs_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    x_ptrs = x_ptr + rows_in[:, None] * stride_xm + (k_start + offs_k)[None, :] * stride_xk  # [BLOCK_M, BLOCK_K]
    w_ptrs = w_ptr + (k_start + offs_k)[:, None] * stride_wk + cols_in[None, :] * stride_wn  # [BLOCK_K, BLOCK_N]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_start, k_end, BLOCK_K):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_left = K - k
            a = tl.load(x_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    return acc


@triton.jit(do_not_specialize=["M"])
def _linear_fwd_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    res_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_rm,
    stride_rn,
    stride_om,
    M_BUCKET,  # autotune key only (M rounded up to a power of two)
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    # Wrap the edge tiles onto valid rows / columns: loads need no M / N mask, the store has one.
    # (No contiguity hints here: a wrapped index is not contiguous, and x or weight may be stored
    # with unit stride along M or N.)
    rows_in = (offs_m % M).to(tl.int64)
    cols_in = (offs_n % N).to(tl.int64)
    acc = _dot_k_range(
        x_ptr,
        w_ptr,
        rows_in,
        cols_in,
        0,
        K,
        K,
        stride_xm,
        stride_xk,
        stride_wn,
        stride_wk,
        INPUT_PRECISION,
        EVEN_K,
        BLOCK_M,
        BLOCK_N,
        BLOCK_K,
    )

    # Epilogue in fp32: bias, activation, residual, then one store in the output dtype.
    _epilogue_store_tile(
        acc,
        offs_m,
        offs_n,
        M,
        N,
        bias_ptr,
        res_ptr,
        out_ptr,
        stride_rm,
        stride_rn,
        stride_om,
        HAS_BIAS,
        HAS_RESIDUAL,
        ACTIVATION,
    )


def _gemm_config(bm, bn, bk, group, stages, warps):
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group}, num_stages=stages, num_warps=warps
    )


# H100: 128x256 / 128x128 tiles for the large BERT GEMMs (T = 4K tokens), 64-row tiles for short
# batches, one 32-row tile for a handful of tokens (batch-1 latency). BLOCK_K 64 = 128 B of fp16.
GEMM_GPU_CONFIGS = [
    _gemm_config(128, 256, 64, 8, 3, 8),
    _gemm_config(128, 128, 64, 8, 4, 8),
    _gemm_config(128, 128, 64, 8, 4, 4),
    _gemm_config(128, 128, 32, 8, 4, 4),
    _gemm_config(128, 64, 64, 8, 4, 4),
    _gemm_config(64, 256, 64, 8, 4, 8),
    _gemm_config(64, 128, 64, 8, 4, 4),
    _gemm_config(64, 64, 64, 8, 4, 4),
    _gemm_config(32, 64, 128, 8, 4, 4),
]
GEMM_INTERPRETER_CONFIG = _gemm_config(32, 32, 32, 4, 1, 4)


def _prune_gemm_configs(configs, named_args, **kwargs):
    """Drop tiles that cannot fit the operand dtype's shared memory or are far larger than the problem."""
    args = {**named_args, **kwargs}
    x = args["x_ptr"]
    elem = x.element_size()
    m_bucket, n = args["M_BUCKET"], args["N"]
    kept = []
    for c in configs:
        bm, bn, bk = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]
        if _utils.smem_bytes(c.num_stages, elem, bm * bk, bk * bn) > _utils.SMEM_LIMIT:
            continue
        if elem == 4 and bm * bn > 128 * 128:  # IEEE fp32 dots run on FMA units: keep accumulators sane
            continue
        if bm > 2 * max(m_bucket, 32) or bn > 2 * max(triton.next_power_of_2(n), 32):
            continue
        kept.append(c)
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


_linear_fwd_tuned = triton.autotune(
    configs=_utils.configs(GEMM_GPU_CONFIGS, GEMM_INTERPRETER_CONFIG),
    key=["M_BUCKET", "N", "K", "HAS_BIAS", "HAS_RESIDUAL", "ACTIVATION", "INPUT_PRECISION"],
    cache_results=True,  # winners persist in triton's cache dir across processes
    prune_configs_by={"early_config_prune": _prune_gemm_configs},
)(triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})(_linear_fwd_kernel))


# --------------------------------------------------------------------------------------------------
# Launch configs without autotuning: the launch state answers per shape key from known winners (the
# committed per-GPU file, `bertfast tune`), else from `_gemm_heuristic`.
# Key: (M bucket, N, K, HAS_BIAS, HAS_RESIDUAL, ACTIVATION, INPUT_PRECISION, dtype name).
# --------------------------------------------------------------------------------------------------

NUM_SMS_HOPPER = 132  # H100 SXM / H200: what the heuristics size grids for (tables override)


def _interpreted() -> bool:
    return _utils.is_interpreted(_linear_fwd_kernel)


def fit_smem(config: Config, elem_bytes: int) -> Config:
    """Lower num_stages (to 2), then BLOCK_K (to 32), until the pipelined tiles fit SMEM_LIMIT."""
    c = dict(config)

    def smem():
        return _utils.smem_bytes(c["num_stages"], elem_bytes, c["BLOCK_M"] * c["BLOCK_K"], c["BLOCK_K"] * c["BLOCK_N"])

    while smem() > _utils.SMEM_LIMIT and c["num_stages"] > 2:
        c["num_stages"] -= 1
    while smem() > _utils.SMEM_LIMIT and c["BLOCK_K"] > 32:
        c["BLOCK_K"] //= 2
    return c


def _gemm_heuristic(key: tuple) -> Config:
    """Deterministic tiles from the key alone (no benchmarking).

    - interpreter: the one small interpreter config;
    - fp32 with IEEE dots (FMA units, no tensor cores): 32/64 x 64 x 32 tiles;
    - fp16 / bf16 / tf32: a handful of rows (M <= 32) -> 32 x 64 x 128 (a weight-streaming tile);
      M <= 256 -> 64 x 128; larger -> 128 x 128, or 128 x 256 when that still gives >= 2 waves of
      programs on 132 SMs;
    - never a tile much wider than N or deeper than K; then shrink stages / BLOCK_K to fit SMEM_LIMIT.
    """
    m_bucket, n, k, _bias, _res, _act_name, precision, dtype = key
    if _interpreted():
        return from_triton(GEMM_INTERPRETER_CONFIG)
    elem = 4 if dtype == "float32" else 2
    if dtype == "float32" and precision == "ieee":
        bm, bn, bk, warps, stages = (32 if m_bucket <= 32 else 64), 64, 32, 4, 3
    elif m_bucket <= 32:
        bm, bn, bk, warps, stages = 32, 64, 128, 4, 4
    elif m_bucket <= 256:
        bm, bn, bk, warps, stages = 64, 128, 64, 4, 4
    else:
        wide_tiles = triton.cdiv(m_bucket, 128) * triton.cdiv(n, 256)
        if wide_tiles >= 2 * NUM_SMS_HOPPER:
            bm, bn, bk, warps, stages = 128, 256, 64, 8, 3
        else:
            bm, bn, bk, warps, stages = 128, 128, 64, 8, 4
    bn = min(bn, max(32, triton.next_power_of_2(n)))
    bk = min(bk, max(32, triton.next_power_of_2(k)))
    config = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": warps, "num_stages": stages}
    return fit_smem(config, elem)


def _prepared(state, key: tuple) -> tuple[dict, int, int]:
    """(kernel kwargs incl. EVEN_K, BLOCK_M, BLOCK_N) of the state's config for a key, built once per key."""
    return _launch_kwargs(state.config(KERNEL, key, _gemm_heuristic), key[2])


def _launch_kwargs(config: Config, K: int) -> tuple[dict, int, int]:
    """(kernel kwargs, BLOCK_M, BLOCK_N) of a config dict; validates it names the block sizes."""
    meta, launch = split_launch(config)
    missing = {"BLOCK_M", "BLOCK_N", "BLOCK_K"} - set(meta)
    if missing:
        raise ValueError(f"config is missing {sorted(missing)}")
    meta.setdefault("GROUP_M", 8)
    meta["EVEN_K"] = K % meta["BLOCK_K"] == 0
    return {**meta, **launch}, meta["BLOCK_M"], meta["BLOCK_N"]


def config_key(
    T: int,
    N: int,
    K: int,
    has_bias: bool,
    has_residual: bool,
    kernel_activation: str,
    input_precision: str,
    dtype: torch.dtype,
) -> tuple:
    """The config key of a launch (JSON-friendly: ints, bools, strings)."""
    dtype_name = _dtypes.dtype_name(dtype)
    return (_utils.bucket(T), N, K, has_bias, has_residual, kernel_activation, input_precision, dtype_name)


# --------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------


def check_linear_args(x, weight, bias, activation, residual, out, input_precision, kernel):
    """The checks every GEMM launcher makes; returns (out, input_precision) with out allocated."""
    _utils.check_tensor("x", x, ndim=2)
    _utils.check_tensor("weight", weight, ndim=2)
    T, K = x.shape
    N = weight.shape[0]
    if weight.shape[1] != K:
        raise ValueError(f"weight must have shape (N, {K}) to match x [T, {K}], got {tuple(weight.shape)}")
    if bias is not None:
        _utils.check_tensor("bias", bias, ndim=1)
        _utils.check_shape("bias", bias, (N,))
    if residual is not None:
        _utils.check_tensor("residual", residual, ndim=2)
        _utils.check_shape("residual", residual, (T, N))
    _utils.check_same_dtype("x", x, weight=weight, bias=bias, residual=residual)
    _act.check_name(activation)
    input_precision = _utils.check_input_precision(input_precision, x.dtype)
    device = _utils.check_devices(kernel, x=x, weight=weight, bias=bias, residual=residual)
    if N == 0:
        raise ValueError("weight must have at least one row (N >= 1)")
    out = _utils.check_out(out, (T, N), x.dtype, device, x=x, weight=weight, bias=bias, residual=residual)
    if K == 0 and T > 0:
        raise ValueError("x must have a non-empty last dim (K >= 1)")
    return out, input_precision


def triton_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    residual: Optional[torch.Tensor] = None,
    *,
    out: Optional[torch.Tensor] = None,
    input_precision: Optional[str] = None,
    config: Optional[dict] = None,
    autotune: bool = False,
) -> torch.Tensor:
    """out [T, N] = activation(x [T, K] @ weight [N, K]^T + bias [N]) + residual [T, N].

    All operands share one dtype (fp16 / bf16 / fp32), the output's; accumulation is fp32.
    x, weight and residual may be strided; `out` ([T, N], unit column stride) is written when given.
    input_precision: None -> "ieee" for fp32 operands; "tf32" / "tf32x3" trade fp32 accuracy for speed.

    Launch config: `config` when given ({"BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps",
    "num_stages"}), else the launch state's answer for the shape key (no autotuning, memoised per key).
    autotune=True (or inside `launch_state(device).autotuning()`): Triton's autotuner picks, and its
    winner is recorded in the launch state (what `bertfast tune` does).
    """
    out, input_precision = check_linear_args(
        x, weight, bias, activation, residual, out, input_precision, _linear_fwd_kernel
    )
    if x.shape[0] == 0:
        return out
    launch_triton_linear(
        x, weight, bias, _act.kernel_name(activation), residual, out, input_precision, config=config, autotune=autotune
    )
    return out


def launch_triton_linear(
    x,
    weight,
    bias,
    kernel_activation: str,
    residual,
    out,
    input_precision: str,
    *,
    config: Optional[dict] = None,
    autotune: bool = False,
) -> None:
    """The launch alone, for callers that checked the inputs already (check_linear_args); T >= 1."""
    T, K = x.shape
    N = weight.shape[0]
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()  # the kernel reads bias with unit stride
    res = residual if residual is not None else out  # dummy pointer when unused
    args = (
        x,
        weight,
        bias if bias is not None else out,
        res,
        out,
        T,
        N,
        K,
        x.stride(0),
        x.stride(1),
        weight.stride(0),
        weight.stride(1),
        res.stride(0),
        res.stride(1),
        out.stride(0),
        _utils.bucket(T),
    )
    flags = dict(
        HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None,
        ACTIVATION=kernel_activation,
        INPUT_PRECISION=input_precision,
    )
    if config is None:
        state = launch_state(x.device)
        key = config_key(T, N, K, bias is not None, residual is not None, kernel_activation, input_precision, x.dtype)
        if autotune or state.autotune:

            def grid(meta):
                return (triton.cdiv(T, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

            _linear_fwd_tuned[grid](*args, **flags)
            state.put_config(KERNEL, key, from_triton(_linear_fwd_tuned.best_config))
            return
        kwargs, block_m, block_n = state.memo(KERNEL, key, lambda k: _prepared(state, k))
    else:
        kwargs, block_m, block_n = _launch_kwargs(config, K)
    grid = (triton.cdiv(T, block_m) * triton.cdiv(N, block_n),)
    _linear_fwd_kernel[grid](*args, **flags, **kwargs)


def activation_ref(x: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    """The activations by their textbook formulas (in x's dtype)."""
    if activation is None:
        return x
    if activation == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / 2.0**0.5))
    if activation in ("gelu_tanh", "gelu_fast"):
        return 0.5 * x * (1.0 + torch.tanh((2.0 / torch.pi) ** 0.5 * (x + 0.044715 * x.pow(3))))
    if activation == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if activation == "relu":
        return torch.relu(x)
    if activation == "silu":
        return x * torch.sigmoid(x)
    if activation == "tanh":
        return torch.tanh(x)
    _act.check_name(activation)
    raise AssertionError(f"activation_ref has no formula for {activation!r}")  # a name added to the table only


def linear_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    residual: Optional[torch.Tensor] = None,
    *,
    compute_dtype: torch.dtype = torch.float32,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Readable reference: upcast, x @ weight^T + bias, activation, + residual, cast to out_dtype (x's by default)."""
    y = x.to(compute_dtype) @ weight.to(compute_dtype).t()
    if bias is not None:
        y = y + bias.to(compute_dtype)
    y = activation_ref(y, activation)
    if residual is not None:
        y = y + residual.to(compute_dtype)
    return y.to(out_dtype or x.dtype)
