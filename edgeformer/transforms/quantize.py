"""torchao quantization of an eager model (encoder or decoder), in the form the target's
backend expects: the scheme -> torchao config tables live with each backend (targets/).
"""

from __future__ import annotations

from torch import nn
from torchao.quantization import quantize_
from torchao.utils import unwrap_tensor_subclass

from edgeformer.errors import UserError
from edgeformer.recipe import GROUP_SIZES, Recipe
from edgeformer.targets.backend import Backend, config_for


def quantize_model(model: nn.Module, recipe: Recipe, backend: Backend | None = None) -> nn.Module:
    """Quantize `model` in place per the recipe with `backend`'s configs (default XNNPACK),
    and unwrap tensor subclasses for export where the backend needs plain tensors."""
    if backend is None:
        from edgeformer.targets.xnnpack import XNNPACK

        backend = XNNPACK
    lin = config_for(backend, "linear", recipe.quant, recipe.group_size)
    emb = config_for(backend, "embedding", recipe.embedding_quant, recipe.group_size)
    if lin is not None:
        if recipe.quant == "8da4w":
            _check_group_size(model, nn.Linear, "in_features", recipe)
        quantize_(model, lin, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    if emb is not None:
        if recipe.embedding_quant == "int4":
            _check_group_size(model, nn.Embedding, "embedding_dim", recipe)
        quantize_(model, emb, filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    if (lin is not None or emb is not None) and backend.unwrap_subclasses:
        unwrap_tensor_subclass(model)
    return model


def _check_group_size(model: nn.Module, kind: type, dim_attr: str, recipe: Recipe) -> None:
    for name, m in model.named_modules():
        if isinstance(m, kind):
            k = getattr(m, dim_attr)
            if k % recipe.group_size:
                valid = [g for g in GROUP_SIZES if k % g == 0]
                raise UserError(f"--group-size {recipe.group_size} must divide {dim_attr}={k} of {name}; try one of {valid}")
