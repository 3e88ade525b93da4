"""The build of a server artifact (`--target server-cuda`), readable in one place.

    Phase 1  load       bundled name or Hugging Face folder -> fp32 reference + Encoder
    Phase 2  quantize   torchao for the server device (targets/cuda.py)
    Phase 3  export     torch.export at the recipe's static shape, on the device
    Phase 4  compile    AOTInductor -> model.pt2 (a self-contained package)
    Phase 5  validate   the package vs the exported program and vs fp32; latency and memory
                        here when this machine has the device; budgets
    Phase 6  write      tokenizer + manifest + report beside model.pt2, published atomically
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch

from edgeformer import artifact as art
from edgeformer.errors import UserError
from edgeformer.models import load_model
from edgeformer.models.hf import reference_forward
from edgeformer.recipe import Recipe
from edgeformer.runtime import AotiProgram
from edgeformer.targets import Target
from edgeformer.targets import cuda as server
from edgeformer.tokenize import TextEncoder
from edgeformer.validate.budgets import check_budgets
from edgeformer.validate.numerics import SAMPLE_TEXTS, check_numerics


class _OnDevice:
    """An exported program that takes CPU inputs (check_numerics' side of the comparison)."""

    def __init__(self, ep, device: str):
        self._m, self._device = ep.module(), device

    def module(self):
        return lambda *xs: self._m(*(x.to(self._device) for x in xs)).cpu()


def build_server(model: str, tgt: Target, recipe: Recipe, out: Path, budgets, *, fallback: str | None, enforce: bool,
                 bench_iters: int, stage):
    from edgeformer.pipeline import BuildResult, _check_seq_len, _manifest, measure_stage, publish
    from edgeformer.validate.bench import measure

    device = server.server_device(fallback)
    server.check_quant(recipe.quant, device)
    if device == "cpu" and tgt.fallback_budgets is not None:
        budgets = replace(tgt.fallback_budgets, min_sqnr_db=budgets.min_sqnr_db)

    # Phase 1: load
    with stage("load model"):
        loaded = load_model(model)
        _check_seq_len(loaded, recipe, False)
        text = TextEncoder(loaded.hf.tokenizer_file, recipe.seq_len, loaded.pad_id)
        samples = [(e.input_ids, e.attention_mask) for e in map(text.encode, SAMPLE_TEXTS)]

    # Phase 2: quantize for the device
    with stage(f"quantize ({recipe.quant} on {device})"):
        module = copy.deepcopy(loaded.encoder).eval().to(device)
        module, config = server.quantize_for(module, recipe.quant, recipe.group_size, device)

    # Phase 3 + 4: export, compile
    with stage("export"):
        example = tuple(x.to(device) for x in samples[0])
        with torch.no_grad():
            exported = torch.export.export(module, example)
    with art.staging(out) as tmp:
        with stage(f"compile (AOTInductor, {device})"):
            try:
                server.compile_package(exported, str(tmp / server.PACKAGE))
            except Exception as e:  # an inductor failure is a bug to report, not a user error
                raise UserError(f"AOTInductor could not compile the model for {device}: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200]}") from e
        package = (tmp / server.PACKAGE).read_bytes()
        (tmp / art.TOKENIZER).write_bytes(loaded.hf.tokenizer_file.read_bytes())

        # Phase 5: validate
        with stage("check numerics"):
            program = AotiProgram(tmp / server.PACKAGE, device, recipe.threads)
            numerics = check_numerics(program, _OnDevice(exported, device), lambda i, m: reference_forward(loaded.hf, i, m),
                                      samples, is_logits=loaded.hf.task == "classifier")
            numerics["reference"] = "fp32 Hugging Face"
        delegation = dict(backend="AOTInductor", device=device, quantization=config, delegated_subgraphs=None,
                          delegated_nodes=None, non_delegated_nodes=0, non_delegated_ops={}, coverage=1.0)
        manifest = _manifest(loaded, tgt, recipe, package, delegation, {"AOTInductor package": len(package)}, text, numerics)
        manifest.pte.update(file=server.PACKAGE, format=server.FORMAT, device=device)
        if device == "cpu":
            manifest.notes.append("built with --fallback cpu: a CPU server package (no CUDA GPU on the build machine)")
        (tmp / art.MANIFEST).write_text(manifest.to_json())
        here = replace(tgt, measure_here=True)  # this machine has the package's device
        bench, where = measure_stage(manifest, here, bench_iters, stage, "measure latency and memory",
                                     lambda: measure(tmp, recipe.threads, iters=bench_iters))
        checks = check_budgets(budgets, len(package), numerics, bench, where)
        manifest.budgets = [c.to_dict() for c in checks]
        return publish(tmp, out, tgt, BuildResult(None, manifest, exported, exported), checks, enforce)
