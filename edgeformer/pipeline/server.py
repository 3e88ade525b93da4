"""An encoder for a server (`--target server-cuda`): an AOTInductor package, not a .pte.

    load       bundled name or Hugging Face folder -> fp32 reference + Encoder, tokenizer staged
    quantize   torchao for the server device (targets/cuda.py's table), on that device
    export     torch.export at the recipe's static shape, on the device
    lower      AOTInductor -> model.pt2 (a self-contained package)
    validate   the package vs the exported program and vs fp32; the manifest
    measure    latency and memory here (this machine has the package's device)
    budgets    every budget (a CPU server's with --fallback cpu)
    publish    manifest + report, renamed into place (or nothing, when a budget fails)
"""

from __future__ import annotations

import copy
from dataclasses import replace

from edgeformer.pipeline import encoder
from edgeformer.pipeline import stages as st
from edgeformer.pipeline.stages import BuildState, Stage


class OnDevice:
    """An exported program that takes CPU inputs (check_numerics' side of the comparison)."""

    def __init__(self, ep, device: str):
        self._m, self._device = ep.module(), device

    def module(self):
        return lambda *xs: self._m(*(x.to(self._device) for x in xs)).cpu()


def load(s: BuildState) -> None:
    from edgeformer.models.hf import reference_forward
    from edgeformer.targets.cuda import FORMAT, PACKAGE

    encoder.load(s)
    s.extra.update(program_file=PACKAGE, format=FORMAT, reference="fp32 Hugging Face")
    s.reference = lambda i, m: reference_forward(s.loaded.hf, i, m)
    if s.backend.device == "cpu" and s.target.fallback_budgets is not None:  # a CPU server's limits
        s.budgets = replace(s.target.fallback_budgets, min_sqnr_db=s.budgets.min_sqnr_db)


def quantize(s: BuildState) -> None:
    from edgeformer.models.attention_kernels import constants_to
    from edgeformer.transforms.quantize import quantize_model

    device = s.backend.device
    module = copy.deepcopy(s.module).eval().to(device)
    constants_to(module, device)  # ModernBERT's local layers hold their band as plain tensors
    s.module = quantize_model(module, s.recipe, s.backend)
    s.example = tuple(x.to(device) for x in s.example)


def validate(s: BuildState) -> None:
    from edgeformer.program import AotiProgram
    from edgeformer.targets.backend import config_for
    from edgeformer.validate.numerics import check_numerics

    device = s.backend.device
    program = AotiProgram(s.staged / st.pte_name(s), device, s.recipe.threads)
    numerics = check_numerics(program, OnDevice(s.exported, device), s.reference, s.extra["samples"],
                              is_logits=s.loaded.hf.task == "classifier")
    config = config_for(s.backend, "linear", s.recipe.quant, s.recipe.group_size)
    s.lowered.delegation.details.update(quantization=type(config).__name__ if config is not None else "none")
    s.extra["size"] = {"AOTInductor package": len(s.lowered.pte)}
    s.manifest = m = encoder.encoder_manifest(s, dict(numerics, reference=s.extra["reference"]))
    m.pte.update(format=s.extra["format"], device=device)
    if device == "cpu":
        m.notes.append("built with --fallback cpu: a CPU server package (no CUDA GPU on the build machine)")


def measure(s: BuildState) -> None:
    from edgeformer import artifact as art
    from edgeformer.validate.latency import measure as measure_package

    (s.staged / art.MANIFEST).write_text(s.manifest.to_json())
    s.target = replace(s.target, measure_here=True)  # this machine has the package's device
    st.measure(s, lambda: measure_package(s.staged, s.recipe.threads, iters=s.spec.bench_iters))


STAGES = [
    Stage("load", load, label=lambda s: "load model"),
    Stage("quantize", quantize, label=lambda s: f"quantize ({s.recipe.quant} on {s.backend.device})"),
    Stage("export", st.export),
    Stage("lower", st.lower, label=lambda s: f"compile (AOTInductor, {s.backend.device})"),
    Stage("validate", validate, label=lambda s: "check numerics"),
    Stage("measure", measure, label=lambda s: "measure latency and memory"),
    Stage("budgets", st.budgets),
    Stage("publish", st.publish),
]
