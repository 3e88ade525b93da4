"""4-bit symmetric group weights in the form ExecuTorch lowers to XNNPACK's qb4w kernels
(int8 dynamic activations), built from codes and scales chosen outside torchao: the GGUF's own
grid (`gguf_grid`) or GPTQ's (`gptq`)."""

from __future__ import annotations

import numpy as np
import torch
from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
    IntxUnpackedToInt8Tensor,
    IntxUnpackedToInt8TensorActivationQuantization,
)

QMIN, QMAX = -8, 7  # the codes of a signed 4-bit symmetric group


def groups(codes: np.ndarray | torch.Tensor, scale: np.ndarray | torch.Tensor) -> IntxUnpackedToInt8Tensor:
    """torchao's unpacked 4-bit tensor with the given codes [out, in] in [-8, 7] and positive
    scales [out, in / group] (the group size follows from the shapes), instead of ones
    torchao would choose itself."""
    codes = torch.as_tensor(np.asarray(codes, dtype=np.int8))
    scale = torch.as_tensor(np.ascontiguousarray(scale, dtype=np.float32))
    group = codes.shape[1] // scale.shape[1]
    return IntxUnpackedToInt8Tensor(
        codes, scale, torch.zeros(scale.shape, dtype=torch.int8), torch.int4, (1, group), torch.float32,
        IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN)
