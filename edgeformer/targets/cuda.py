"""Server lowering (`--target server-cuda`): an AOTInductor package (`model.pt2`) compiled by
`torch._inductor.aoti_compile_and_package`, with torchao quantization for the device.

On a CUDA GPU: --quant int8 is torchao's int8 weight-only, 8da4w becomes int4 weight-only
(Int4WeightOnlyConfig, group 32..128). Without a GPU the build stops and says so; with
`--fallback cpu` it compiles the same package for the CPU (int8: dynamic int8 activations and
weights, the form inductor's CPU backend fuses). ExecuTorch's own CUDA backend is not used:
in executorch 1.5.1 it is experimental and needs a source-built runtime (NOTES.md).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeformer.errors import UserError

FORMAT = "aoti"
PACKAGE = "model.pt2"


def server_device(fallback: str | None) -> str:
    if fallback not in (None, "cpu"):
        raise UserError(f"--fallback {fallback!r}: the one fallback is cpu")
    if torch.cuda.is_available():
        return "cuda"
    if fallback == "cpu":
        return "cpu"
    raise UserError(f"target server-cuda needs a CUDA GPU and this machine has none (torch {torch.__version__}, "
                    "torch.cuda.is_available() is False); build on the GPU server, or add --fallback cpu for a CPU "
                    "server package")


def check_quant(quant: str, device: str) -> None:
    if quant not in ("fp32", "int8", "8da4w"):
        raise UserError(f"--quant {quant!r} is not available on server-cuda; use fp32, int8 or 8da4w (int4 weight-only)")
    if quant == "8da4w" and device != "cuda":
        raise UserError("--quant 8da4w on server-cuda is int4 weight-only, a CUDA kernel; with --fallback cpu "
                        "use --quant int8 or fp32")


def quantize_for(model: nn.Module, quant: str, group_size: int, device: str) -> tuple[nn.Module, str]:
    """torchao quantization for the server device, in place; returns (model, config name)."""
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        quantize_,
    )

    check_quant(quant, device)
    if quant == "fp32":
        return model, "none"
    if quant == "int8":
        cfg = Int8WeightOnlyConfig() if device == "cuda" else Int8DynamicActivationInt8WeightConfig()
    else:
        cfg = Int4WeightOnlyConfig(group_size=max(group_size, 32))
    quantize_(model, cfg, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    return model, type(cfg).__name__


def compile_package(ep, path: str) -> str:
    """AOTInductor: the exported program compiled to a self-contained package at `path`."""
    return torch._inductor.aoti_compile_and_package(ep, package_path=path)
