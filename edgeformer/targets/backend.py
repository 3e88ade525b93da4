"""The contract every backend follows (xnnpack, vulkan, cuda): one small shape, as each of
ExecuTorch's `backends/<name>/` has a partitioner, a quantizer config and a preprocess.

    name             "xnnpack"
    linear_configs   scheme -> (group_size -> torchao config) for nn.Linear; None entry: fp32
    embedding_configs  the same for the token-embedding table
    unwrap_subclasses  unwrap torchao tensor subclasses before export (ExecuTorch needs plain
                     tensors; AOTInductor compiles the subclasses' kernels)
    lower(ep, recipe, methods) -> Lowered   the serialized program and what was delegated;
                     `methods` ({name: ExportedProgram}, or None) are more entry points
                     beside `forward` in the same program, where the backend has them
    runs_here()      None when a runtime on this machine can execute what `lower` makes,
                     else the reason (validation is then structural only)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from edgeformer.errors import UserError

if TYPE_CHECKING:  # kept out of `edgeformer targets` and other light commands
    from torch.export import ExportedProgram

    from edgeformer.recipe import Recipe
    from edgeformer.validate.delegation import Delegation

ConfigTable = dict[str, Callable[[int], object] | None]


@dataclass
class Lowered:
    """The serialized program and what was delegated."""

    pte: bytes  # the .pte (or the server package's bytes)
    delegation: Delegation  # what ran inside the backend, what outside
    program: ExportedProgram  # the final program (for dumps, inspection)
    methods: dict[str, Delegation] = field(default_factory=dict)  # what each extra entry point delegated
    data: bytes | None = None  # the program's data file (model.ptd: weights it uses twice, stored once), if any

    @property
    def size(self) -> int:
        """Bytes on the device: the program and its data file."""
        return len(self.pte) + len(self.data or b"")


# ExecuTorch's edge verifier re-runs the whole graph under fake tensors after each of its passes
# (6-8 times a method) to check that every op is core ATen or edge dialect. Our programs come
# from torch.export and ExecuTorch's own passes, and XNNPACK's preprocess already turns the
# check off for its subgraphs. Off, a tiny encoder builds ~12% faster to the same `.pte` bytes;
# tests/targets/test_xnnpack.py lowers with it on and asserts the bytes equal.
CHECK_IR_VALIDITY = False


def edge_compile_config():
    """The `EdgeCompileConfig` every backend lowers with (`to_edge_transform_and_lower`)."""
    from executorch.exir import EdgeCompileConfig

    return EdgeCompileConfig(_check_ir_validity=CHECK_IR_VALIDITY)


class Backend(Protocol):
    name: str
    linear_configs: ConfigTable
    embedding_configs: ConfigTable
    unwrap_subclasses: bool

    def lower(self, ep: ExportedProgram, recipe: Recipe, methods: dict[str, ExportedProgram] | None = None) -> Lowered: ...

    def runs_here(self) -> str | None: ...


def config_for(backend: Backend, table: str, scheme: str, group_size: int, method: str = "affine"):
    """The torchao config for `scheme` in the backend's `table` ("linear" or "embedding"), or
    None for fp32; UserError naming the schemes this backend has. `method` ("hqq") chooses
    4-bit scales on the backends that take it (XNNPACK's tables)."""
    configs = backend.linear_configs if table == "linear" else backend.embedding_configs
    if scheme not in configs:
        option = "--quant" if table == "linear" else "--embedding-quant"
        raise UserError(f"{option} {scheme} is not available on the {backend.name} backend; use one of: {', '.join(configs)}")
    make = configs[scheme]
    if make is None:
        return None
    return make(group_size) if method == "affine" else make(group_size, method)
