"""Linear layer with a fused epilogue: out = act(x @ weight^T + bias) + residual, one store.

    x [T, K] @ weight [N, K]^T -> fp32 accumulator [BLOCK_M, BLOCK_N]
        -> + bias [N] -> activation -> + residual [T, N] -> out [T, N] (x's dtype)

Tiles are visited in grouped order (GROUP_M row-tiles share a column sweep) so the weight tiles
and x tiles a group needs stay in L2. Out-of-range rows / columns of x and weight are wrapped
(index modulo M or N) instead of masked, so the K loop carries a mask only when K is not a multiple
of BLOCK_K; the store is masked. fp32 operands use IEEE fp32 dot products by default (accurate to
fp32, as the whole-model fp32 check needs); tf32 only when the caller asks (input_precision="tf32").

The launcher only computes: choosing cuBLAS or this kernel per shape is the caller's business.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _utils

ACTIVATIONS = ("gelu", "gelu_tanh", "gelu_fast", "quick_gelu", "relu", "silu", "tanh")
# Names that are the same function as another: "gelu_fast" (HF's 0.5x(1+tanh(0.79788x(1+0.044715x^2))))
# is the tanh approximation written differently.
_SAME_AS = {"gelu_fast": "gelu_tanh"}


@triton.jit
def _sigmoid(x):
    # 1 / (1 + e^-x): exp2 overflows to inf for very negative x, giving exactly 0 (never NaN).
    return 1.0 / (1.0 + tl.math.exp2(-1.4426950408889634 * x))


@triton.jit
def _apply_activation(x, ACTIVATION: tl.constexpr):
    """Activation on an fp32 tile; ACTIVATION is a constexpr name ("" for none)."""
    if ACTIVATION == "gelu":
        # exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACTIVATION == "gelu_tanh":
        # 0.5 x (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        x = x * _sigmoid(2.0 * u)
    elif ACTIVATION == "quick_gelu":
        x = x * _sigmoid(1.702 * x)
    elif ACTIVATION == "relu":
        x = tl.maximum(x, 0.0)
    elif ACTIVATION == "silu":
        x = x * _sigmoid(x)
    elif ACTIVATION == "tanh":
        # tanh(x) = 2 sigmoid(2x) - 1; saturates cleanly to +-1
        x = 2.0 * _sigmoid(2.0 * x) - 1.0
    return x


@triton.jit(do_not_specialize=["M"])
def _linear_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, res_ptr, out_ptr,
    M, N, K,
    stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_rm, stride_rn,
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
    # Grouped tile order: walk GROUP_M row-tiles down a column before moving right.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    tiles_per_group = GROUP_M * tiles_n
    group = pid // tiles_per_group
    first_m = group * GROUP_M
    rows_in_group = min(tiles_m - first_m, GROUP_M)
    local = pid % tiles_per_group
    pid_m = first_m + local % rows_in_group
    pid_n = local // rows_in_group

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    offs_k = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    # Wrap the edge tiles onto valid rows / columns: loads need no M / N mask, the store has one.
    # (No contiguity hints here: a wrapped index is not contiguous, and x or weight may be stored
    # with unit stride along M or N.)
    rows_in = (offs_m % M).to(tl.int64)
    cols_in = (offs_n % N).to(tl.int64)

    x_ptrs = x_ptr + rows_in[:, None] * stride_xm + offs_k[None, :] * stride_xk  # [BLOCK_M, BLOCK_K]
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + cols_in[None, :] * stride_wn  # [BLOCK_K, BLOCK_N]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
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

    # Epilogue in fp32: bias, activation, residual, then one store in the output dtype.
    n_ok = offs_n < N
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
    acc = _apply_activation(acc, ACTIVATION)
    rows = offs_m.to(tl.int64)
    mask = (offs_m < M)[:, None] & n_ok[None, :]
    if HAS_RESIDUAL:
        res = tl.load(res_ptr + rows[:, None] * stride_rm + offs_n[None, :] * stride_rn, mask=mask, other=0.0)
        acc += res.to(tl.float32)
    tl.store(out_ptr + rows[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


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


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    residual: Optional[torch.Tensor] = None,
    *,
    out: Optional[torch.Tensor] = None,
    input_precision: Optional[str] = None,
    config: Optional[dict] = None,
) -> torch.Tensor:
    """out [T, N] = activation(x [T, K] @ weight [N, K]^T + bias [N]) + residual [T, N].

    All operands share one dtype (fp16 / bf16 / fp32), the output's; accumulation is fp32.
    x, weight and residual may be strided; `out` ([T, N], unit column stride) is written when given.
    input_precision: None -> "ieee" for fp32 operands; "tf32" / "tf32x3" trade fp32 accuracy for speed.
    config: {"BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages"} skips autotuning.
    """
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
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {activation!r}")
    if input_precision is None:
        input_precision = "ieee" if x.dtype == torch.float32 else "tf32"
    elif input_precision not in ("ieee", "tf32", "tf32x3"):
        raise ValueError(f"input_precision must be None, 'ieee', 'tf32' or 'tf32x3', got {input_precision!r}")
    kernel = _linear_fwd_kernel if config is not None else _linear_fwd_tuned
    device = _utils.check_devices(kernel, x=x, weight=weight, bias=bias, residual=residual)
    if N == 0:
        raise ValueError("weight must have at least one row (N >= 1)")
    out = _utils.check_out(out, (T, N), x.dtype, device, x=x, weight=weight, bias=bias, residual=residual)
    if T == 0:
        return out
    if K == 0:
        raise ValueError("x must have a non-empty last dim (K >= 1)")

    if bias is not None:
        bias = bias.contiguous()
    res = residual if residual is not None else out  # dummy pointer when unused
    args = (
        x, weight, bias if bias is not None else out, res, out,
        T, N, K,
        x.stride(0), x.stride(1),
        weight.stride(0), weight.stride(1),
        res.stride(0), res.stride(1),
        out.stride(0),
        _utils.bucket(T),
    )
    flags = dict(
        HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None,
        ACTIVATION=_SAME_AS.get(activation, activation) if activation else "",
        INPUT_PRECISION=input_precision,
    )

    def grid(meta):
        return (triton.cdiv(T, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    if config is None:
        _linear_fwd_tuned[grid](*args, **flags)
    else:
        cfg = dict(config)
        launch = dict(num_warps=cfg.pop("num_warps", 4), num_stages=cfg.pop("num_stages", 3))
        missing = {"BLOCK_M", "BLOCK_N", "BLOCK_K"} - set(cfg)
        if missing:
            raise ValueError(f"config is missing {sorted(missing)}")
        cfg.setdefault("GROUP_M", 8)
        _linear_fwd_kernel[grid](*args, **flags, EVEN_K=K % cfg["BLOCK_K"] == 0, **cfg, **launch)
    return out


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
    raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {activation!r}")


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
