"""The MLP activations an architecture may name (``ModelConfig.activation``), and their Hugging Face names.

Module-level functions (picklable, as megatron's ``TransformerConfig.activation_func`` must be when configs
travel between processes); torch's own where one exists, so ``gelu`` is exactly megatron's default.  Imports
only torch: the converters read the name tables without megatron.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["gelu_tanh", "quick_gelu", "ACTIVATIONS", "FROM_HF_ACTIVATION", "TO_HF_ACTIVATION"]


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (GPT-2's, GPT-Neo's)."""
    return F.gelu(x, approximate="tanh")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(1.702 x)`` (CLIP's, Hugging Face's ``quick_gelu``)."""
    return x * torch.sigmoid(1.702 * x)


#: Our activation names -> the function.  ``gelu`` is the exact (erf) GELU, megatron's default.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu, "gelu_tanh": gelu_tanh, "relu": F.relu, "silu": F.silu, "quick_gelu": quick_gelu}

#: Hugging Face ``activation_function`` / ``hidden_act`` names -> ours.
FROM_HF_ACTIVATION = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                      "gelu_fast": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu",
                      "quick_gelu": "quick_gelu"}

#: Ours -> the Hugging Face name an export writes.
TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu",
                    "quick_gelu": "quick_gelu"}

