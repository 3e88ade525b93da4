"""Reproduction: ExecuTorch's XNNPACK lowering drops per-group zero points of 4-bit weights.

Self-contained (torch, torchao, executorch only; no edgeformer), to attach to an upstream
report. One nn.Linear(256, 64) quantized by torchao with 8-bit dynamic activations and 4-bit
groupwise weights, symmetric and asymmetric, on weights skewed so that the groups are not
centred (as in GGUF Q4_1 files). Each is exported, lowered with XnnpackPartitioner and run
in ExecuTorch's Python runtime; the printed SQNR is the .pte against the exported program
it was lowered from (what lowering alone changed; > 40 dB means it lowered right).

    python tools/xnnpack_int4_zero_points.py

Measured with torch 2.13.0, torchao 0.18.0, executorch 1.5.1 (x86-64):
    symmetric   .pte vs exported program  57.3 dB
    asymmetric  .pte vs exported program   2.4 dB   <- the zero points are gone

Why (executorch 1.5.1 source): backends/xnnpack/operators/node_visitor.py serializes
per-group weights as PerChannelGroupQuant(scale, group_size) with no zero-point field;
runtime/XNNCompiler.cpp sets zero_point = 8 for qbint4; XNNPACK's blockwise tensor has one
zero point per tensor. Nothing refuses the asymmetric case.
"""

from __future__ import annotations

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime
from torchao.quantization import Int8DynamicActivationIntxWeightConfig, MappingType, PerGroup, quantize_
from torchao.utils import unwrap_tensor_subclass


def sqnr(ref: torch.Tensor, x: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - x).pow(2).mean()))


def lowered_sqnr(mapping: MappingType) -> float:
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64, bias=False)
    with torch.no_grad():  # skewed groups: a per-group offset, as Q4_1's minimums make
        lin.weight.copy_(torch.rand(64, 256) * 0.1 + torch.randn(64, 8).repeat_interleave(32, dim=1) * 0.05)
    quantize_(lin, Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=PerGroup(32), weight_mapping_type=mapping))
    unwrap_tensor_subclass(lin)
    x = torch.randn(1, 256)
    ep = torch.export.export(lin, (x,))
    expected = ep.module()(x)
    pte = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    got = Runtime.get().load_program(pte).load_method("forward").execute([x])[0]
    return sqnr(expected, got)


if __name__ == "__main__":
    for mapping in (MappingType.SYMMETRIC, MappingType.ASYMMETRIC):
        print(f"{mapping.name.lower():11s} .pte vs exported program {lowered_sqnr(mapping):6.1f} dB")
