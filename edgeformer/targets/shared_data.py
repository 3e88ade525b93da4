"""Weights used twice, stored once: the program's data file (`model.ptd`).

ExecuTorch keeps a delegate's weights (XNNPACK's named data) apart from the program's own
constants (what portable kernels such as the embedding gather read): a tensor both use is
written twice into the `.pte`. ExecuTorch can put both kinds in a data file instead
(a constant's `constant_tag`, a delegate constant's `delegate_constant_tag`), and its data
file stores equal bytes once whatever their names. So the constants that equal another
constant of the same program (an LM's int8 head and the embedding that gathers its rows,
`transforms/tied_table.py`) are tagged for the data file; everything else stays in the
`.pte`. Runtimes load the pair: `Runtime.load_program(pte, data_path=ptd)`, the C++
`Module(pte, ptd)`.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import torch
from torch.export import ExportedProgram
from torch.fx.passes.infra.pass_base import PassResult

TAG = "model"  # the data file's name: model.ptd
MIN_BYTES = 4096  # smaller equal constants (zero points, norms) are not worth a second file


def equal_constants(programs: dict[str, ExportedProgram]) -> set[str]:
    """Placeholder names, in any of `programs`, of constants whose bytes equal another
    constant's of the same program (never a buffer the program writes: a KV cache)."""
    names: set[str] = set()
    for ep in programs.values():
        sig = ep.graph_signature
        where = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
        mutated = set(sig.buffers_to_mutate.values())
        consts = {**ep.state_dict, **ep.constants}
        groups: dict[tuple, list[str]] = {}
        for node in ep.graph.nodes:
            name = where.get(node.name) if node.op == "placeholder" else None
            t = consts.get(name)
            if isinstance(t, torch.Tensor) and name not in mutated and t.numel() * t.element_size() >= MIN_BYTES:
                groups.setdefault((t.dtype, tuple(t.shape)), []).append(node.name)
        for group in groups.values():
            if len(group) < 2:
                continue
            by_bytes: dict[bytes, list[str]] = {}
            for node_name in group:
                t = consts[where[node_name]].detach().contiguous()
                by_bytes.setdefault(hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).digest(), []).append(node_name)
            names.update(n for same in by_bytes.values() if len(same) > 1 for n in same)
    return names


def tag_for_data_file(names: set[str]):
    """An edge transform pass marking the named placeholders' data for the data file when a
    delegate takes them (`to_edge_transform_and_lower(transform_passes=...)`)."""

    def tag(gm: torch.fx.GraphModule) -> PassResult:
        for node in gm.graph.nodes:
            if node.op == "placeholder" and node.name in names:
                node.meta.setdefault("custom", {})["delegate_constant_tag"] = TAG
        return PassResult(gm, bool(names))

    return tag


def program_constants_tag(names: set[str]):
    """`ExecutorchBackendConfig(external_constants=...)`: the same constants, where the
    program's own kernels read them."""
    return lambda node: TAG if node.name in names else None


def data_file(manager) -> bytes | None:
    """The serialized data file of an `ExecutorchProgramManager`, or None when it has none;
    after `manager.buffer` (serializing the program is what makes its data files)."""
    with tempfile.TemporaryDirectory() as tmp:
        manager.write_tensor_data_to_file(tmp)
        path = Path(tmp) / f"{TAG}.ptd"
        return path.read_bytes() if path.is_file() else None
