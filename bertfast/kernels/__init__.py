"""Fused Triton kernels for BERT encoders: one file per op (kernel, launcher, reference).

Importing this package never touches the GPU. Launchers run on CUDA tensors, or on CPU tensors when
the Triton interpreter is on (TRITON_INTERPRET=1 set before triton is first imported).
"""

from ._utils import interpreting
from .attention import varlen_attention, varlen_attention_ref
from .embed_layernorm import embed_layernorm, embed_layernorm_ref
from .epilogue import bias_activation, bias_activation_ref
from .gemm import ACTIVATIONS, activation_ref, linear, linear_ref
from .gemm_dispatch import linear_residual_layernorm
from .gemm_splitk import linear_splitk
from .gemm_tma import linear_tma
from .layernorm import bias_residual_layernorm, bias_residual_layernorm_ref, layernorm, layernorm_ref

__all__ = [
    "ACTIVATIONS",
    "activation_ref",
    "bias_activation",
    "bias_activation_ref",
    "bias_residual_layernorm",
    "bias_residual_layernorm_ref",
    "embed_layernorm",
    "embed_layernorm_ref",
    "interpreting",
    "layernorm",
    "layernorm_ref",
    "linear",
    "linear_ref",
    "linear_residual_layernorm",
    "linear_splitk",
    "linear_tma",
    "varlen_attention",
    "varlen_attention_ref",
]
