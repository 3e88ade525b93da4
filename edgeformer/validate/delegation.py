"""What ran where: ops inside backend delegates vs ops left to portable kernels.

Anything outside the delegate is a performance bug to measure (shared/NOTES.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from torch.export import ExportedProgram

# Bookkeeping nodes of the ExecuTorch dialect, not compute.
_NOT_COMPUTE = {"alloc", "getitem"}


@dataclass
class Delegation:
    backend: str
    delegated_subgraphs: int
    delegated_nodes: int
    non_delegated_nodes: int
    non_delegated_ops: dict[str, int] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # backend-specific facts (e.g. AOTInductor's device, torchao config)

    @property
    def coverage(self) -> float:
        total = self.delegated_nodes + self.non_delegated_nodes
        return self.delegated_nodes / total if total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "coverage": round(self.coverage, 4)}

    @classmethod
    def from_dict(cls, d: dict) -> Delegation:
        return cls(**{k: v for k, v in d.items() if k != "coverage"})


def summarize_delegation(program: ExportedProgram, backend: str) -> Delegation:
    """Count compute ops inside and outside delegates of a lowered program."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(program.graph_module)
    outside: Counter[str] = Counter()
    delegated = 0
    for op, b in info.delegation_by_operator.items():
        if op in _NOT_COMPUTE:
            continue
        delegated += b.delegated
        if b.non_delegated:
            outside[op] += b.non_delegated
    return Delegation(
        backend=backend,
        delegated_subgraphs=info.num_delegated_subgraphs,
        delegated_nodes=delegated,
        non_delegated_nodes=sum(outside.values()),
        non_delegated_ops=dict(sorted(outside.items())),
    )
