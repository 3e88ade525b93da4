"""Structured pruning of a causal LM (the Llama layout of `lm_families`), physically.

The units: a key-value group (one key/value head and the query heads that read it; under
grouped-query attention they go together, so the query heads per group never change), an FFN
neuron (a row of gate and up, a column of down), a whole layer. A `prune.Plan` says, per
original layer, which groups (its `heads`) and neurons stay, or that the layer goes.

`cut` applies a plan to a Hugging Face model: the query rows of the kept groups' heads, their
key and value rows, the matching columns of the output projection, the kept neurons' gate/up
rows and down columns; removed layers leave the stack, and `layer_types` and every
`layer_idx` are renumbered. transformers' own attention runs the cut model unchanged (it
infers the head count from the projections), so the cut Hugging Face model is the fp32
reference of the pruned model, and `lm_families.from_hf` reads its per-layer sizes off the
weights. The config records the sizes under `edgeformer_pruning`; `shrink` rebuilds those
shapes from it when a pruned folder is loaded.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeformer.errors import UserError
from edgeformer.transforms.prune import CONFIG_KEY, LayerPlan, Plan, select_linear

PRUNABLE = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")  # Phi-3's fused projections are not cut yet


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def check_prunable(config, name: str) -> None:
    """UserError naming the family when its layers cannot be cut."""
    if config.model_type not in PRUNABLE:
        raise UserError(f"{name}: pruning a {config.model_type!r} causal LM is not supported (its fused qkv_proj and "
                        f"gate_up_proj are not cut yet); prunable: {', '.join(PRUNABLE)}")


def full_plan(config) -> Plan:
    """The plan that keeps everything: `heads` counts key-value groups."""
    n = config.num_hidden_layers
    return Plan.full([config.num_key_value_heads] * n, [config.intermediate_size] * n, head_dim(config),
                     config.hidden_size)


def _rows(units: list[int], per_unit: int) -> torch.Tensor:
    return torch.tensor([u * per_unit + i for u in units for i in range(per_unit)], dtype=torch.long)


def cut(model: nn.Module, plan: Plan) -> nn.Module:
    """Cut a Hugging Face causal LM (at the sizes `plan` is in the indices of) to `plan`, in place."""
    c = model.config
    d, group = head_dim(c), c.num_attention_heads // c.num_key_value_heads
    stack = model.model.layers
    if len(plan.layers) != len(stack):
        raise ValueError(f"the plan names {len(plan.layers)} layers, the model has {len(stack)}")
    for lyr, lp in zip(stack, plan.layers, strict=True):
        if lp is None:
            continue
        if not lp.heads or not lp.neurons:
            raise ValueError("a kept layer needs at least one key-value group and one FFN neuron; remove the layer instead")
        a, m = lyr.self_attn, lyr.mlp
        q = _rows(lp.heads, group * d)  # a group's query heads are contiguous: heads g*group .. g*group + group - 1
        kv = _rows(lp.heads, d)
        neurons = torch.tensor(lp.neurons, dtype=torch.long)
        a.q_proj, a.o_proj = select_linear(a.q_proj, q, 0), select_linear(a.o_proj, q, 1)
        a.k_proj, a.v_proj = select_linear(a.k_proj, kv, 0), select_linear(a.v_proj, kv, 0)
        m.gate_proj, m.up_proj = select_linear(m.gate_proj, neurons, 0), select_linear(m.up_proj, neurons, 0)
        m.down_proj = select_linear(m.down_proj, neurons, 1)
    kept = plan.kept_layers
    if not kept:
        raise ValueError("a plan must keep at least one layer")
    model.model.layers = nn.ModuleList(stack[i] for i in kept)
    for new, lyr in enumerate(model.model.layers):  # the cache is indexed by layer_idx
        for mod in lyr.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = new
    if getattr(c, "layer_types", None):
        c.layer_types = [c.layer_types[i] for i in kept]
    c.num_hidden_layers = len(kept)
    heads, ffn = plan.sizes()
    setattr(c, CONFIG_KEY, dict(unit="kv_group", kv_heads=heads, ffn=ffn, kept_layers=kept, original=plan.original))
    return model


def shrink(model: nn.Module, record: dict) -> nn.Module:
    """Give a model built from a pruned config (kept layer count, original widths) the recorded
    per-layer sizes; its weights are loaded next."""
    plan = Plan([LayerPlan(list(range(h)), list(range(f))) for h, f in zip(record["kv_heads"], record["ffn"], strict=True)],
                head_dim(model.config), model.config.hidden_size, record.get("original", {}))
    original = getattr(model.config, CONFIG_KEY)
    cut(model, plan)
    setattr(model.config, CONFIG_KEY, original)  # the record of the original cut, not of this re-cut
    return model


def params(plan: Plan, config) -> int:
    """Parameters of the transformer layers a plan keeps (attention and FFN linears; norms and
    embeddings are not pruned)."""
    d, group, hidden = head_dim(config), config.num_attention_heads // config.num_key_value_heads, config.hidden_size
    heads, ffn = plan.sizes()
    return sum(2 * hidden * g * group * d + 2 * hidden * g * d + 3 * hidden * f for g, f in zip(heads, ffn, strict=True))
