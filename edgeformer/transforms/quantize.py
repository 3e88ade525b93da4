"""torchao quantization of an eager encoder, in the form ExecuTorch's XNNPACK lowering expects.

Linear layers: `Int8DynamicActivationIntxWeightConfig` (8-bit per-token dynamic activations,
intx weights, unpacked to int8 so XNNPACK's dynamically quantized linear picks them up).
Embedding table: `IntxWeightOnlyConfig`; the dequantize + embedding pair is fused into
`quantized_decomposed::embedding_{byte,4bit}` by ExecuTorch's quant-fusion pass
(`ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)`, see targets/xnnpack.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torchao.quantization import (
    Int8DynamicActivationIntxWeightConfig,
    IntxWeightOnlyConfig,
    MappingType,
    PerAxis,
    PerGroup,
    quantize_,
)
from torchao.utils import unwrap_tensor_subclass

from edgeformer.errors import UserError
from edgeformer.recipe import GROUP_SIZES, Recipe


def linear_config(quant: str, group_size: int):
    """The torchao config for the linear layers, or None for fp32."""
    if quant == "fp32":
        return None
    if quant == "int8":
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    if quant == "8da4w":
        # Symmetric only: asymmetric groups measure 2 dB better in eager on MiniLM, but
        # XNNPACK in ExecuTorch 1.5.1 lowers their zero points wrongly and silently (.pte vs
        # exported program 2 dB on skewed weights; tests/targets/test_xnnpack.py).
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4,
            weight_granularity=PerGroup(group_size),
            weight_mapping_type=MappingType.SYMMETRIC,
        )
    raise AssertionError(f"unhandled scheme {quant}")  # Recipe validates the name


def embedding_config(scheme: str, group_size: int):
    if scheme == "fp32":
        return None
    if scheme == "int8":
        return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    if scheme == "int4":
        return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))
    raise AssertionError(f"unhandled scheme {scheme}")


def quantize_model(model: nn.Module, recipe: Recipe) -> nn.Module:
    """Quantize `model` in place per the recipe and unwrap tensor subclasses for export."""
    lin = linear_config(recipe.quant, recipe.group_size)
    emb = embedding_config(recipe.embedding_quant, recipe.group_size)
    if lin is not None:
        _check_group_size(model, nn.Linear, "in_features", recipe)
        quantize_(model, lin, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    if emb is not None:
        if recipe.embedding_quant == "int4":
            _check_group_size(model, nn.Embedding, "embedding_dim", recipe)
        quantize_(model, emb, filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    if lin is not None or emb is not None:
        unwrap_tensor_subclass(model)
    return model


def _check_group_size(model: nn.Module, kind: type, dim_attr: str, recipe: Recipe) -> None:
    if recipe.quant != "8da4w" and kind is nn.Linear:
        return
    for name, m in model.named_modules():
        if isinstance(m, kind):
            k = getattr(m, dim_attr)
            if k % recipe.group_size:
                valid = [g for g in GROUP_SIZES if k % g == 0]
                raise UserError(f"--group-size {recipe.group_size} must divide {dim_attr}={k} of {name}; try one of {valid}")
