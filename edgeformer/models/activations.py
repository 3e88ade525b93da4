"""Activation functions by their Hugging Face config names, in ops the XNNPACK delegate runs exactly.

GELU's tanh approximation is written out: ExecuTorch 1.5.1's XNNPACK partitioner takes
`aten.gelu(approximate="tanh")` and lowers it as XNNPACK's erf GELU, dropping `approximate`
(a Gemma 3 `.pte` was 2e-4 off its eager logits). As muls, adds and a tanh it is delegated
and exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
}
