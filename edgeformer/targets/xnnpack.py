"""XNNPACK (CPU / ARM) lowering: edge dialect, partition, serialize."""

from __future__ import annotations

from dataclasses import dataclass

from torch.export import ExportedProgram

from edgeformer.recipe import Recipe
from edgeformer.validate.delegation import Delegation, summarize_delegation

BACKEND_ID = "XnnpackBackend"


@dataclass
class Lowered:
    """The serialized program and what was delegated."""

    pte: bytes
    delegation: Delegation
    program: ExportedProgram  # the final ExecuTorch-dialect program (for dumps, inspection)


def lower(ep: ExportedProgram, recipe: Recipe) -> Lowered:
    """Lower an exported program to an ExecuTorch `.pte` with XNNPACK delegates."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    # Quant fusion turns torchao's dequantize_affine + embedding into the quantized gather
    # kernels (quantized_decomposed::embedding_byte / embedding_4bit).
    # The reinplace pass turns index_put on a mutable buffer (the portable decoder's KV-cache
    # write) into index_put_: without it every call copies each layer's whole cache twice.
    et = edge.to_executorch(ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True, run_reinplace_pass=True))
    final = et.exported_program()
    return Lowered(pte=et.buffer, delegation=summarize_delegation(final, BACKEND_ID), program=final)
