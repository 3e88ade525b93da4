"""CUDA server lowering: defined as a target, not implemented yet.

The plan (issue 7): an AOTInductor package via `torch._inductor.aoti_compile_and_package`
with torchao int8/int4 for the GPU. Until it lands, building for it fails with this message.
"""

from __future__ import annotations

from torch.export import ExportedProgram

from edgeformer.errors import UserError
from edgeformer.recipe import Recipe


def lower(ep: ExportedProgram, recipe: Recipe):
    raise UserError(
        "target server-cuda: CUDA lowering is not implemented yet (tracked in the on-device issue); "
        "build for --target host for a CPU artifact meanwhile"
    )
