"""The one activation table: canonical name -> (what Hugging Face computes in torch, the kernels' name).

A BERT config names its activation in HF's spelling (`hidden_act`); `bertfast.config.ACTIVATIONS` maps
those spellings to the canonical names below. Everything that runs an activation reads this table:

- the torch path (`bertfast.ops`) calls `ACTIVATIONS[name].torch`, the same torch ops HF runs, so the
  torch backend matches HF to the last bit;
- the Triton launchers (`bertfast.kernels`) validate names against `NAMES` and pass
  `ACTIVATIONS[name].kernel` to their kernels as the ACTIVATION constexpr (names that are the same
  curve share one kernel branch: "gelu_fast" is the tanh GELU with HF's rounded constant).

This is a leaf module: it imports only torch, so `bertfast.kernels` may import it (the one exception to
"kernels import only torch and triton"; it knows nothing about BERT or configs).

The fp64 oracle, `bertfast.reference.activation_ref`, stays separate ON PURPOSE: it writes each curve
as its textbook formula, independently of the torch functions here, so a test comparing the two can
catch a wrong entry in this table. Do not make it call into this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Activation(NamedTuple):
    torch: Callable[[torch.Tensor], torch.Tensor]  # what HF computes (in the input's dtype)
    kernel: str  # the Triton kernels' ACTIVATION constexpr


def _gelu_fast(x: torch.Tensor) -> torch.Tensor:
    # HF's FastGELUActivation: the tanh GELU written with a rounded sqrt(2/pi).
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Activation] = {
    "gelu": Activation(F.gelu, "gelu"),  # exact erf form
    "gelu_tanh": Activation(_gelu_tanh, "gelu_tanh"),  # gelu_new / gelu_pytorch_tanh
    "gelu_fast": Activation(_gelu_fast, "gelu_tanh"),  # same curve as gelu_tanh
    "quick_gelu": Activation(_quick_gelu, "quick_gelu"),
    "relu": Activation(F.relu, "relu"),
    "silu": Activation(F.silu, "silu"),
    "tanh": Activation(torch.tanh, "tanh"),
}

NAMES: tuple[str, ...] = tuple(ACTIVATIONS)


def check_name(activation, arg: str = "activation") -> None:
    """Raise ValueError naming `arg` unless `activation` is None or a canonical name."""
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"{arg} must be None or one of {NAMES}, got {activation!r}")


def kernel_name(activation: str | None) -> str:
    """The kernels' ACTIVATION constexpr for a canonical name ("" for none)."""
    return ACTIVATIONS[activation].kernel if activation else ""


def apply(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    """The activation as HF computes it (identity for None)."""
    if activation is None:
        return x
    check_name(activation)
    return ACTIVATIONS[activation].torch(x)
