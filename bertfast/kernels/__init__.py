"""Fused Triton kernels for BERT encoders: one file per op (kernel, launcher, reference).

`linear` is the GEMM entry point (gemm_dispatch: the fastest measured implementation per shape);
`triton_linear`, `linear_splitk` and `linear_tma` are single implementations. What decides a launch
lives in `state.launch_state(device)`. Importing this package never touches the GPU and installs
nothing. Launchers run on CUDA tensors, or on CPU tensors when the Triton interpreter is on
(TRITON_INTERPRET=1 set before triton is first imported).
"""

from ._utils import interpreting
from .attention import launch_varlen_attention, varlen_attention, varlen_attention_ref
from .embed_layernorm import embed_layernorm, embed_layernorm_ref, launch_embed_layernorm
from .epilogue import bias_activation, bias_activation_ref
from .gemm import ACTIVATIONS, activation_ref, linear_ref, triton_linear
from .gemm_dispatch import linear, linear_residual_layernorm
from .gemm_splitk import linear_splitk
from .gemm_tma import linear_tma
from .layernorm import bias_residual_layernorm, bias_residual_layernorm_ref, launch_layernorm, layernorm, layernorm_ref

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
    "launch_embed_layernorm",
    "launch_layernorm",
    "launch_varlen_attention",
    "layernorm",
    "layernorm_ref",
    "linear",
    "linear_ref",
    "linear_residual_layernorm",
    "linear_splitk",
    "linear_tma",
    "triton_linear",
    "varlen_attention",
    "varlen_attention_ref",
]
