"""Vulkan (mobile GPU) lowering: ExecuTorch's VulkanPartitioner, validated structurally.

The pip runtime registers no Vulkan backend ("Backend VulkanBackend is not registered"), so
the `.pte` cannot run here: the build checks what was delegated and the size; numerics and
latency need the phone (ExecuTorch's Android AAR, which has the Vulkan delegate).
"""

from __future__ import annotations

import logging

from torch.export import ExportedProgram

from edgeformer.recipe import Recipe
from edgeformer.targets import xnnpack
from edgeformer.targets.backend import Lowered, edge_compile_config
from edgeformer.validate.delegation import summarize_delegation

BACKEND_ID = "VulkanBackend"
CANNOT_RUN_HERE = "the pip ExecuTorch runtime has no Vulkan backend; run it on the phone (ExecuTorch's Android AAR)"


class Vulkan:
    name = "vulkan"
    # The same torchao forms as XNNPACK; the target's default recipe is fp32, and quantized
    # Vulkan programs have been lowered here but never run.
    linear_configs = xnnpack.LINEAR_CONFIGS
    embedding_configs = xnnpack.EMBEDDING_CONFIGS
    unwrap_subclasses = True

    def lower(self, ep: ExportedProgram, recipe: Recipe, methods: dict[str, ExportedProgram] | None = None) -> Lowered:
        from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner
        from executorch.exir import to_edge_transform_and_lower

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.WARNING)  # the partitioner logs every op it sees at INFO
        try:
            edge = to_edge_transform_and_lower({"forward": ep, **(methods or {})}, partitioner=[VulkanPartitioner()],
                                                compile_config=edge_compile_config())
            et = edge.to_executorch()
        finally:
            root.setLevel(level)
        final = et.exported_program()
        return Lowered(pte=et.buffer, delegation=summarize_delegation(final, BACKEND_ID), program=final,
                       methods={name: summarize_delegation(et.exported_program(name), BACKEND_ID) for name in methods or {}})

    def runs_here(self) -> str | None:
        return CANNOT_RUN_HERE


VULKAN = Vulkan()
