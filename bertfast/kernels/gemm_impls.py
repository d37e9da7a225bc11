"""The GEMM implementations the dispatcher chooses from, each declaring what it supports.

    out [M, N] = activation(x [M, K] @ weight [N, K]^T + bias [N]) + residual [M, N]

Each implementation states its dtypes, the oldest GPU architecture it runs on, the row range it is
offered for, and whether it reads the operands' layout (strides, alignment), and answers
`not_supported_reasons(x, weight, state)` with every reason it cannot run a call. A reason carries the
exception type a refusal raises (TypeError for a dtype, ValueError otherwise), so the dispatcher never
has to read the message to pick one.

    "cublas": torch.mm / torch.addmm, then one epilogue pass (epilogue.bias_activation) when an
              activation is asked for (always the exact erf GELU for "gelu": never cuBLASLt's tanh
              epilogue), or an in-place residual add; "cublas" is torch.mm on CPU tensors
    "triton": gemm.triton_linear, everything fused in the GEMM
    "splitk": gemm_splitk.linear_splitk (few rows: the weight read spread over every SM)
    "tma":    gemm_tma.linear_tma (Hopper; fp16 / bf16, 16-byte aligned rows)
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _utils, epilogue, gemm, gemm_splitk, gemm_tma
from .layernorm import launch_layernorm
from .state import LaunchState


class Reason(str):
    """Why an implementation cannot run a call; `error` is the exception type refusing it raises."""

    error: type[Exception]

    def __new__(cls, text: str, error: type[Exception] = ValueError) -> Reason:
        reason = super().__new__(cls, text)
        reason.error = error
        return reason


class GemmImpl:
    """One way to run the GEMM: its declared support, and its launch on checked operands."""

    name: str = ""
    dtypes: tuple[torch.dtype, ...] = _utils.FLOAT_DTYPES
    min_arch: Optional[tuple[int, int]] = None  # (major, minor) of the oldest CUDA GPU it runs on
    max_rows: Optional[int] = None  # the most rows (M) it is offered for
    reads_layout = False  # whether not_supported_reasons looks at strides / pointers, not only the key

    def key_reasons(self, M: int, dtype: torch.dtype, state: LaunchState) -> list[Reason]:
        """What the shape, dtype and device alone rule out (the same for every call with this key)."""
        reasons = []
        if dtype not in self.dtypes:
            names = " / ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            reasons.append(Reason(f"{self.name} takes {names} only, got {dtype}", TypeError))
        if self.min_arch is not None and state.capability is not None and state.capability < self.min_arch:
            arch = f"sm_{self.min_arch[0]}{self.min_arch[1]}"
            reasons.append(Reason(f"{self.name} needs a GPU of {arch} or later, got {state.capability}"))
        if self.max_rows is not None and M > self.max_rows:
            reasons.append(Reason(f"{self.name} is offered for at most {self.max_rows} rows, got M={M}"))
        return reasons

    def layout_reasons(self, x: torch.Tensor, weight: torch.Tensor) -> list[Reason]:
        return []

    def not_supported_reasons(self, x: torch.Tensor, weight: torch.Tensor, state: LaunchState) -> list[Reason]:
        return self.key_reasons(x.shape[0], x.dtype, state) + self.layout_reasons(x, weight)

    def launch(self, x, weight, bias, kernel_activation: str, residual, out, precision: str) -> None:
        raise NotImplementedError

    def launch_residual_layernorm(self, x, weight, bias, residual, ln_weight, ln_bias, eps, y, out, precision) -> None:
        """out = LayerNorm(x @ W^T + bias + residual): this GEMM with bias + residual fused into y,
        then the LayerNorm row pass."""
        self.launch(x, weight, bias, "", residual, y, precision)
        launch_layernorm(y, None, None, ln_weight, ln_bias, eps, out)


class Cublas(GemmImpl):
    name = "cublas"

    def launch(self, x, weight, bias, kernel_activation, residual, out, precision) -> None:
        # cuBLAS adds the bias in its fp32 epilogue (addmm); the activation (+ residual) is one more pass.
        if bias is not None:
            torch.addmm(bias, x, weight.t(), out=out)
        else:
            torch.mm(x, weight.t(), out=out)
        if kernel_activation:
            epilogue.launch_bias_activation(out, None, kernel_activation, residual, out)
        elif residual is not None:
            out.add_(residual)

    def launch_residual_layernorm(self, x, weight, bias, residual, ln_weight, ln_bias, eps, y, out, precision) -> None:
        """torch.mm without bias, then one row pass adds bias and residual and normalizes."""
        torch.mm(x, weight.t(), out=y)
        launch_layernorm(y, bias, residual, ln_weight, ln_bias, eps, out)


class TritonGemm(GemmImpl):
    name = "triton"

    def launch(self, x, weight, bias, kernel_activation, residual, out, precision) -> None:
        gemm.launch_triton_linear(x, weight, bias, kernel_activation, residual, out, precision)


class SplitK(GemmImpl):
    name = "splitk"
    max_rows = 256  # past a few hundred rows the plain tiling already fills the GPU

    def launch(self, x, weight, bias, kernel_activation, residual, out, precision) -> None:
        gemm_splitk.launch_linear_splitk(x, weight, bias, kernel_activation, residual, out, precision)


class Tma(GemmImpl):
    name = "tma"
    dtypes = gemm_tma.TMA_DTYPES
    min_arch = (9, 0)
    reads_layout = True

    def layout_reasons(self, x, weight) -> list[Reason]:
        return [Reason(r) for r in gemm_tma.layout_reasons(x, weight)]

    def launch(self, x, weight, bias, kernel_activation, residual, out, precision) -> None:
        gemm_tma.launch_linear_tma(x, weight, bias, kernel_activation, residual, out)


IMPLEMENTATIONS: dict[str, GemmImpl] = {impl.name: impl for impl in (Cublas(), TritonGemm(), SplitK(), Tma())}
# Where no table measured a shape, cuBLAS + the fused epilogue pass runs: vendor-tuned for every shape
# and architecture; a Triton GEMM runs only where this GPU's table measured it faster.
DEFAULT = "cublas"
# When the preferred choice cannot run a call, the first of these that can: the Triton GEMM takes
# every operand the Triton-family choices take, with the epilogue still fused, so it stands in first.
PRIORITY = ("triton", "cublas", "splitk", "tma")
