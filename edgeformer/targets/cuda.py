"""Server backend (`--target server-cuda`): an AOTInductor package (`model.pt2`) compiled by
`torch._inductor.aoti_compile_and_package`, with torchao quantization for the device.

On a CUDA GPU: --quant int8 is torchao's int8 weight-only, 8da4w becomes int4 weight-only
(Int4WeightOnlyConfig, group 32..128). Without a GPU the build stops and says so; with
`--fallback cpu` it compiles the same package for the CPU (int8: dynamic int8 activations and
weights, the form inductor's CPU backend fuses). ExecuTorch's own CUDA backend is not used:
in executorch 1.5.1 it is experimental and needs a source-built runtime.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch.export import ExportedProgram

from edgeformer.errors import UserError
from edgeformer.recipe import Recipe
from edgeformer.targets.backend import Lowered
from edgeformer.validate.delegation import Delegation

FORMAT = "aoti"
PACKAGE = "model.pt2"
FALLBACKS = ("cpu",)


def server_device(fallback: str | None) -> str:
    """"cuda" when this machine has a GPU, "cpu" with `--fallback cpu`, else a UserError."""
    if fallback not in (None, *FALLBACKS):
        raise UserError(f"--fallback {fallback!r}: the one fallback is cpu")
    if torch.cuda.is_available():
        return "cuda"
    if fallback == "cpu":
        return "cpu"
    raise UserError(f"target server-cuda needs a CUDA GPU and this machine has none (torch {torch.__version__}, "
                    "torch.cuda.is_available() is False); build on the GPU server, or add --fallback cpu for a CPU "
                    "server package")


def check_quant(quant: str, device: str) -> None:
    """UserError for a scheme the server backend does not have on `device`."""
    if quant not in ("fp32", "int8", "8da4w"):
        raise UserError(f"--quant {quant!r} is not available on server-cuda; use fp32, int8 or 8da4w (int4 weight-only)")
    if quant == "8da4w" and device != "cuda":
        raise UserError("--quant 8da4w on server-cuda is int4 weight-only, a CUDA kernel; with --fallback cpu "
                        "use --quant int8 or fp32")


def _int8_weight_only(group_size: int):
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


def _int8_dynamic(group_size: int):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig()


def _int4_weight_only(group_size: int):
    from torchao.quantization import Int4WeightOnlyConfig

    return Int4WeightOnlyConfig(group_size=max(group_size, 32))


class Cuda:
    """AOTInductor for `device` ("cuda", or "cpu" for `--fallback cpu`)."""

    name = "cuda"
    unwrap_subclasses = False  # inductor compiles torchao's tensor subclasses itself
    embedding_configs = {"fp32": None}

    def __init__(self, device: str = "cuda"):
        self.device = device
        if device == "cuda":
            self.linear_configs = {"fp32": None, "int8": _int8_weight_only, "8da4w": _int4_weight_only}
        else:  # 8da4w is int4 weight-only on the GPU, a CUDA kernel: not offered on the CPU
            self.linear_configs = {"fp32": None, "int8": _int8_dynamic}

    def lower(self, ep: ExportedProgram, recipe: Recipe, methods: dict[str, ExportedProgram] | None = None) -> Lowered:
        """AOTInductor: the exported program compiled to a self-contained package (its bytes);
        one entry point, so `methods` must be empty."""
        if methods:
            raise ValueError(f"an AOTInductor package has one entry point; got more: {sorted(methods)}")
        with tempfile.TemporaryDirectory(prefix="edgeformer-aoti-") as d:
            path = Path(d) / PACKAGE
            try:
                torch._inductor.aoti_compile_and_package(ep, package_path=str(path))
            except Exception as e:  # an inductor failure is a bug to report, not a user error
                raise UserError(f"AOTInductor could not compile the model for {self.device}: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200]}") from e
            package = path.read_bytes()
        nodes = sum(1 for n in ep.graph.nodes if n.op == "call_function")
        delegation = Delegation(backend="AOTInductor", delegated_subgraphs=1, delegated_nodes=nodes, non_delegated_nodes=0,
                                details=dict(device=self.device))
        return Lowered(pte=package, delegation=delegation, program=ep)

    def runs_here(self) -> str | None:
        if self.device == "cuda" and not torch.cuda.is_available():
            return "this machine has no CUDA GPU"
        return None
