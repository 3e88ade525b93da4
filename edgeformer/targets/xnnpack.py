"""XNNPACK (CPU / ARM): torchao configs in the form XNNPACK's lowering expects; edge dialect,
partition, serialize.

Linear layers: `Int8DynamicActivationIntxWeightConfig` (8-bit per-token dynamic activations,
intx weights, unpacked to int8 so XNNPACK's dynamically quantized linear picks them up).
Embedding table: `IntxWeightOnlyConfig`; the dequantize + embedding pair is fused into
`quantized_decomposed::embedding_{byte,4bit}` by ExecuTorch's quant-fusion pass
(`ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)`).
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from edgeformer.errors import UserError
from edgeformer.recipe import PER_ROW, Recipe
from edgeformer.targets.backend import Lowered, edge_compile_config
from edgeformer.validate.delegation import summarize_delegation

BACKEND_ID = "XnnpackBackend"


def _int8(group_size: int, method: str = "affine"):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis

    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))


def _8da4w(group_size: int, method: str = "affine"):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, MappingType

    # Symmetric only: asymmetric groups measure 2 dB better in eager on MiniLM, but XNNPACK in
    # ExecuTorch 1.5.1 lowers their zero points wrongly and silently (.pte vs exported program
    # 2 dB on skewed weights; tests/targets/test_xnnpack.py).
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=_groups(group_size),
                                                 weight_mapping_type=MappingType.SYMMETRIC,
                                                 intx_choose_qparams_algorithm=_algorithm(method))


def _emb_int8(group_size: int, method: str = "affine"):
    from torchao.quantization import IntxWeightOnlyConfig, PerAxis

    return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))


def _emb_int4(group_size: int, method: str = "affine"):
    from torchao.quantization import IntxWeightOnlyConfig

    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=_groups(group_size),
                                intx_choose_qparams_algorithm=_algorithm(method))


def _groups(group_size: int):
    """torchao's granularity of 4-bit weights: groups of `group_size` inputs, or at PER_ROW a
    row's inputs all in one group (a scale per output row)."""
    from torchao.quantization import PerAxis, PerGroup

    return PerAxis(0) if group_size == PER_ROW else PerGroup(group_size)


def _algorithm(method: str):
    """torchao's way of choosing 4-bit scales: "affine" (min/max) or "hqq" (HQQ scale-only)."""
    from torchao.quantization.quantize_.workflows.intx.intx_choose_qparams_algorithm import IntxChooseQParamsAlgorithm

    return {"affine": IntxChooseQParamsAlgorithm.AFFINE, "hqq": IntxChooseQParamsAlgorithm.HQQ_SCALE_ONLY}[method]


def linear_config(scheme: str, group_size: int, method: str = "affine"):
    """The torchao config of a linear at `scheme` ("int8", "8da4w"), 4-bit scales by `method`."""
    return LINEAR_CONFIGS[scheme](group_size, method)


def embedding_config(scheme: str, group_size: int, method: str = "affine"):
    """The torchao config of the token table at `scheme` ("int8", "int4")."""
    return EMBEDDING_CONFIGS[scheme](group_size, method)


LINEAR_CONFIGS = {"fp32": None, "int8": _int8, "8da4w": _8da4w}
EMBEDDING_CONFIGS = {"fp32": None, "int8": _emb_int8, "int4": _emb_int4}


class Xnnpack:
    name = "xnnpack"
    linear_configs = LINEAR_CONFIGS
    embedding_configs = EMBEDDING_CONFIGS
    unwrap_subclasses = True

    def lower(self, ep: ExportedProgram, recipe: Recipe, methods: dict[str, ExportedProgram] | None = None) -> Lowered:
        """Lower an exported program to an ExecuTorch `.pte` with XNNPACK delegates (as its
        `forward`; `methods` are more entry points in the same file, e.g. the batch method:
        their weights are stored once, keyed by content)."""
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

        from edgeformer.targets.shared_data import data_file, equal_constants, program_constants_tag, tag_for_data_file

        programs = {"forward": ep, **(methods or {})}
        for program in programs.values():
            refuse_zero_points(program)
        shared = equal_constants(programs)  # e.g. a tied LM's head and embedding: stored once, in model.ptd
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()],
                                           compile_config=edge_compile_config(),
                                           transform_passes=[tag_for_data_file(shared)] if shared else None)
        # Quant fusion turns torchao's dequantize_affine + embedding into the quantized gather
        # kernels (quantized_decomposed::embedding_byte / embedding_4bit).
        # The reinplace pass turns index_put on a mutable buffer (the portable decoder's KV-cache
        # write) into index_put_: without it every call copies each layer's whole cache twice.
        et = edge.to_executorch(ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True, run_reinplace_pass=True,
                                                        external_constants=program_constants_tag(shared) if shared else False))
        final = et.exported_program()
        pte = et.buffer  # first: serializing makes the data file
        return Lowered(pte=pte, data=data_file(et) if shared else None,
                       delegation=summarize_delegation(final, BACKEND_ID), program=final,
                       methods={name: summarize_delegation(et.exported_program(name), BACKEND_ID) for name in methods or {}})

    def runs_here(self) -> str | None:
        return None  # the pip runtime registers XnnpackBackend on every CPU


def refuse_zero_points(ep: ExportedProgram) -> None:
    """UserError when a linear's weights carry nonzero zero points: XNNPACK in ExecuTorch 1.5.1
    serializes per-group and per-channel weights with scales only (zero point fixed at 8 for
    4-bit, 0 for 8-bit), so such a program lowers silently wrong (docs/int4-on-xnnpack.md).
    Checked on the exported program, before any lowering work."""
    sig = ep.graph_signature
    where = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    consts = {**ep.state_dict, **ep.constants}
    for node in ep.graph.nodes:
        if node.op != "call_function" or "dequantize_affine" not in str(node.target) or len(node.args) < 4:
            continue
        if not any(u.op == "call_function" and "linear" in str(u.target) for u in node.users):
            continue  # embeddings take zero points (quantized_decomposed::embedding_*)
        found = _weight_constant(node.args[3], where, consts)
        if found is not None and bool((found[1] != 0).any()):
            raise UserError(f"{found[0]}: weights with nonzero zero points (asymmetric quantization) would lower wrongly "
                            f"on XNNPACK, which keeps scales only; quantize symmetrically (--quant 8da4w) or keep a "
                            f"GGUF's grid with --quant gguf")


def _weight_constant(node, where: dict, consts: dict) -> tuple[str, torch.Tensor] | None:
    """(name, value) of a constant the graph reads (`where`: placeholder -> state name, `consts`:
    name -> tensor): a lifted parameter/buffer (torchao's unwrapped form) or a field of a
    tensor-subclass parameter; None for anything computed (an activation's dynamic
    quantization parameters)."""
    if getattr(node, "op", None) == "placeholder" and where.get(node.name) in consts:
        name = where[node.name]
        return name.split(".parametrizations")[0], consts[name]
    if getattr(node, "op", None) == "call_function" and "access_subclass_inner_tensor" in str(node.target):
        owner, field = node.args
        name = where.get(getattr(owner, "name", None))
        if name in consts and hasattr(consts[name], field):
            return name, getattr(consts[name], field)
    return None


XNNPACK = Xnnpack()
lower = XNNPACK.lower  # the plain function, for tests and benchmarks that lower one program
