"""torchao quantization of an eager model (encoder or decoder), in the form the target's
backend expects: the scheme -> torchao config tables live with each backend (targets/).

`--quant gguf` keeps a GGUF causal LM's own codes (transforms/gguf_grid.py) and quantizes
only what is left with int8; `--quant mixed` measures each module's sensitivity and fits the
size budget with int8 and 4-bit (transforms/mixed.py); every other scheme lets torchao choose
the quantization, or GPTQ chooses the 4-bit codes on calibration data (transforms/gptq.py).
What each module became is left in `model.quantization_record`.
"""

from __future__ import annotations

from collections import Counter

from torch import nn
from torchao.quantization import quantize_
from torchao.utils import TorchAOBaseTensor, unwrap_tensor_subclass

from edgeformer.errors import UserError
from edgeformer.recipe import GROUP_SIZES, PER_ROW, QUANT_METHODS, Recipe, groups_fit, stores_4bit
from edgeformer.targets.backend import Backend, config_for
from edgeformer.transforms.gguf_grid import CORRECTED, GroupSumCorrected, keep_grid
from edgeformer.transforms.gguf_offsets import FOLDED, fold_offsets
from edgeformer.transforms.gptq import gptq_
from edgeformer.transforms.mixed import Run, quantize_mixed
from edgeformer.transforms.smooth import smooth_grid
from edgeformer.transforms.tied_table import SHARED, share_table

GGUF_FALLBACK = "int8"  # --quant gguf: the scheme of linears whose blocks cannot stay on their grid


def quantize_model(model: nn.Module, recipe: Recipe, backend: Backend | None = None, gguf=None,
                   calibrate: Run | None = None, budget_mb: float | None = None, share_tied: bool = False,
                   grid_inputs: tuple[int, dict] | None = None) -> nn.Module:
    """Quantize `model` in place per the recipe with `backend`'s configs (default XNNPACK),
    and unwrap tensor subclasses for export where the backend needs plain tensors.

    With `recipe.quant == "gguf"`, `gguf` (a `models.gguf.GGUFWeights`) gives the codes; with
    "mixed", `calibrate` (model -> output on calibration inputs) measures sensitivity and
    `budget_mb` is the size to fit; with "8da4w" and `quant_method` "gptq", GPTQ runs on what
    `calibrate` feeds each linear. `share_tied`: a causal LM whose int8 head is its token table
    gathers its embeddings from the head's rows (transforms/tied_table.py) when the recipe's
    embedding is int8. `grid_inputs`: with "gguf", (calibration tokens, input maxima) from
    `smooth.calibrate(..., smooth.grid_sites(model))` on the float model: the on-grid linears'
    inputs are smoothed (transforms/smooth.py, `smooth_grid`)."""
    if backend is None:
        from edgeformer.targets.xnnpack import XNNPACK

        backend = XNNPACK
    if recipe.group_size == PER_ROW and stores_4bit(recipe.quant, recipe.embedding_quant) and backend.name != "xnnpack":
        raise UserError(f"--group-size 0 (one group per row) is XNNPACK's; the {backend.name} backend takes "
                        f"{', '.join(map(str, GROUP_SIZES[1:]))}")
    if recipe.quant == "mixed":
        if calibrate is None:
            raise ValueError("--quant mixed needs calibration inputs")
        model.quantization_record = quantize_mixed(model, recipe, backend, budget_mb, calibrate).record()
        if backend.unwrap_subclasses:
            unwrap_tensor_subclass(model)
        return model
    plan: dict[str, str] = {}
    scheme = recipe.quant  # before gguf's override to its fallback
    if recipe.quant == "gguf":
        if gguf is None or backend.name != "xnnpack":
            raise UserError(f"--quant gguf needs a GGUF causal LM on the xnnpack backend (got {backend.name}"
                            f"{', no GGUF file' if gguf is None else ''}); use --quant int8 or 8da4w")
        plan = keep_grid(model, gguf, GGUF_FALLBACK, recipe.embedding_quant)
        smoothing = None if grid_inputs is None else smooth_grid(model, grid_inputs[1], grid_inputs[0])
        offsets = dict(form="fp32 correction")
        if recipe.gguf_offsets == "folded":
            offsets = fold_offsets(model)
            plan = {name: became.replace(CORRECTED, FOLDED) for name, became in plan.items()}
        recipe = recipe.with_overrides(quant=GGUF_FALLBACK, gguf_offsets="fp32")
    if recipe.quant_method != "affine" and backend.name != "xnnpack":
        raise UserError(f"--quant-method {recipe.quant_method} chooses XNNPACK's 4-bit scales, and this target lowers "
                        f"to {backend.name}; drop --quant-method")
    method = "affine" if recipe.quant_method == "gptq" else recipe.quant_method  # what GPTQ leaves, torchao does
    lin = config_for(backend, "linear", recipe.quant, recipe.group_size, method)
    emb = config_for(backend, "embedding", recipe.embedding_quant, recipe.group_size)
    keep = {id(m.correction) for m in model.modules() if isinstance(m, GroupSumCorrected)}  # fp32 by design

    def todo(kind: type):
        return lambda m, fqn: isinstance(m, kind) and not isinstance(m.weight, TorchAOBaseTensor) and id(m) not in keep

    if lin is not None:
        if recipe.quant == "8da4w":
            _check_group_size(model, nn.Linear, "in_features", recipe, todo(nn.Linear))
            if recipe.quant_method == "gptq":
                if calibrate is None:
                    raise ValueError("--quant-method gptq needs calibration inputs")
                done = gptq_(model, calibrate, recipe.group_size)
                plan = {name: "8da4w (gptq)" for name in done}
        quantize_(model, lin, filter_fn=todo(nn.Linear))
    if share_tied and recipe.embedding_quant == "int8" and share_table(model):
        plan["embed"] = SHARED
    if emb is not None:
        if recipe.embedding_quant == "int4":
            _check_group_size(model, nn.Embedding, "embedding_dim", recipe, todo(nn.Embedding))
        quantize_(model, emb, filter_fn=todo(nn.Embedding))
    if scheme == "gguf":
        model.quantization_record = dict(method="GGUF codes and scales kept as shipped", modules=plan, offsets=offsets,
                                         **({} if smoothing is None else dict(input_smoothing=smoothing)))
    elif scheme == "8da4w":
        model.quantization_record = dict(method=QUANT_METHODS[recipe.quant_method], scales=recipe.quant_method,
                                         **(dict(modules=plan) if plan else {}))
    elif plan:  # int8: the embedding gathers the head's rows
        model.quantization_record = dict(modules=plan)
    if (lin is not None or emb is not None or plan) and backend.unwrap_subclasses:
        unwrap_tensor_subclass(model)
    return model


def _check_group_size(model: nn.Module, kind: type, dim_attr: str, recipe: Recipe, todo) -> None:
    for name, m in model.named_modules():
        if todo(m, name):
            k = getattr(m, dim_attr)
            if not groups_fit(k, recipe.group_size):
                valid = [g for g in GROUP_SIZES if groups_fit(k, g)]
                fix = f"try one of {valid}" if valid else \
                    f"no group size XNNPACK takes ({', '.join(map(str, GROUP_SIZES))}) fits {k}: use 8-bit for this model"
                if recipe.group_size == PER_ROW:
                    raise UserError(f"--group-size 0 (one group per row) needs {dim_attr}={k} of {name} to be a multiple "
                                    f"of 32 (XNNPACK); {fix}")
                raise UserError(f"--group-size {recipe.group_size} must divide {dim_attr}={k} of {name}; {fix}")


def quantization_record(recipe: Recipe, model: nn.Module) -> dict:
    """manifest.quantization: the scheme, and where modules differ (gguf, mixed) what each
    became and why."""
    rec = dict(scheme=recipe.quant, embedding=recipe.embedding_quant, **getattr(model, "quantization_record", {}))
    if "modules" in rec:
        rec["summary"] = dict(Counter(rec["modules"].values()))
    return rec
