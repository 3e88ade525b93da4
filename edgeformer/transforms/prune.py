"""Structured pruning that removes weights physically: attention heads, FFN neurons, layers.

A `Plan` says, in the original model's indices, which heads and FFN neurons each layer keeps
and which layers go. `apply_plan` cuts a Hugging Face model to the plan: rows of the Q/K/V
projections and columns of the output projection for heads, rows of the FFN input and
columns of the FFN output for neurons, whole blocks for layers. The result is a smaller
model of the same class, which `save_pretrained` writes and `edgeformer.models` loads back
(the config records the per-layer sizes under `edgeformer_pruning`).

Masking is the reference that pruning must equal: a head's (or neuron's) contribution is
its columns of the output projection, so zeroing them masks it (`mask_encoder`), and a
removed layer is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

CONFIG_KEY = "edgeformer_pruning"


@dataclass
class LayerPlan:
    heads: list[int]  # kept heads, original indices
    neurons: list[int]  # kept FFN neurons, original indices


@dataclass
class Plan:
    """What each original layer keeps; None for a removed layer."""

    layers: list[LayerPlan | None]
    head_dim: int = 64
    hidden: int = 768
    original: dict = field(default_factory=dict)  # heads, ffn, layers of the unpruned model

    @classmethod
    def full(cls, num_heads: list[int], ffn: list[int], head_dim: int, hidden: int) -> Plan:
        layers = [LayerPlan(list(range(h)), list(range(f))) for h, f in zip(num_heads, ffn, strict=True)]
        return cls(layers, head_dim, hidden, dict(heads=list(num_heads), ffn=list(ffn), layers=len(layers)))

    @property
    def kept_layers(self) -> list[int]:
        return [i for i, lp in enumerate(self.layers) if lp is not None]

    def sizes(self) -> tuple[list[int], list[int]]:
        """(heads per kept layer, FFN width per kept layer)."""
        kept = [lp for lp in self.layers if lp is not None]
        return [len(lp.heads) for lp in kept], [len(lp.neurons) for lp in kept]

    def without(self, layer: int, heads: list[int] = (), neurons: list[int] = (), whole: bool = False) -> Plan:
        """A new plan with `heads` / `neurons` (original indices) or the whole `layer` removed."""
        layers = [None if lp is None else LayerPlan(list(lp.heads), list(lp.neurons)) for lp in self.layers]
        lp = layers[layer]
        if lp is None:
            raise ValueError(f"layer {layer} is already removed")
        if whole:
            layers[layer] = None
        else:
            drop_h, drop_n = set(heads), set(neurons)
            lp.heads = [h for h in lp.heads if h not in drop_h]
            lp.neurons = [n for n in lp.neurons if n not in drop_n]
        return Plan(layers, self.head_dim, self.hidden, self.original)

    def flops(self, seq_len: int) -> int:
        heads, ffn = self.sizes()
        return encoder_flops(heads, ffn, self.head_dim, self.hidden, seq_len)

    def original_flops(self, seq_len: int) -> int:
        return encoder_flops(self.original["heads"], self.original["ffn"], self.head_dim, self.hidden, seq_len)

    def summary(self) -> list[dict]:
        """Per original layer: what is kept of what there was."""
        rows = []
        for i, lp in enumerate(self.layers):
            h0, f0 = self.original["heads"][i], self.original["ffn"][i]
            if lp is None:
                rows.append(dict(layer=i, removed=True, heads=f"0/{h0}", ffn=f"0/{f0}"))
            else:
                removed = sorted(set(range(h0)) - set(lp.heads))
                rows.append(dict(layer=i, removed=False, heads=f"{len(lp.heads)}/{h0}", ffn=f"{len(lp.neurons)}/{f0}",
                                 removed_heads=removed))
        return rows

    def to_dict(self) -> dict:
        return dict(layers=[None if lp is None else dict(heads=lp.heads, neurons=lp.neurons) for lp in self.layers],
                    head_dim=self.head_dim, hidden=self.hidden, original=self.original)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        layers = [None if x is None else LayerPlan(list(x["heads"]), list(x["neurons"])) for x in d["layers"]]
        return cls(layers, d["head_dim"], d["hidden"], d["original"])


def encoder_flops(heads: list[int], ffn: list[int], head_dim: int, hidden: int, seq_len: int) -> int:
    """FLOPs (2 x multiply-adds) of the transformer layers for one sequence of `seq_len` tokens."""
    s, macs = seq_len, 0
    for h, f in zip(heads, ffn, strict=True):
        inner = h * head_dim
        macs += s * hidden * inner * 4  # Q, K, V and the output projection
        macs += 2 * s * s * inner  # scores and the weighted sum of values
        macs += 2 * s * hidden * f  # FFN in and out
    return 2 * macs


def select_linear(lin: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping `keep` output rows (dim 0) or input columns (dim 1)."""
    w = lin.weight.detach().index_select(dim, keep).clone()
    bias = lin.bias is not None
    new = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        new.weight.copy_(w)
        if bias:
            new.bias.copy_(lin.bias.detach() if dim == 1 else lin.bias.detach().index_select(0, keep))
    return new


def _set(module: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at dotted `path` (relative to `module`)."""
    *parents, last = path.split(".")
    for p in parents:
        module = getattr(module, p)
    setattr(module, last, new)


def _path_of(root: nn.Module, target: nn.Module) -> str:
    for name, mod in root.named_modules():
        if mod is target:
            return name
    raise ValueError("module not found under root")


def apply_plan(model: nn.Module, model_type: str, plan: Plan) -> nn.Module:
    """Cut `model` (a Hugging Face model at its original sizes) to `plan`, in place; returns it."""
    # Imported here: importing any edgeformer.models submodule runs edgeformer/models/__init__,
    # which loads models.hf, which imports this module (the module graph itself has no cycle).
    from edgeformer.models.families import FAMILIES

    fam = FAMILIES[model_type]
    base = model.base_model
    d = plan.head_dim
    for lyr, mods, lp in zip(fam.stack(base), fam.layers(base), plan.layers, strict=True):
        if lp is None:
            continue
        if not lp.heads:
            raise ValueError("a kept layer needs at least one head; remove the layer instead")
        rows = torch.tensor([h * d + j for h in lp.heads for j in range(d)], dtype=torch.long)
        neurons = torch.tensor(lp.neurons, dtype=torch.long)
        for key, keep, dim in (("q", rows, 0), ("k", rows, 0), ("v", rows, 0), ("o", rows, 1),
                               ("ffn_in", neurons, 0), ("ffn_out", neurons, 1)):
            _set(lyr, _path_of(lyr, mods[key]), select_linear(mods[key], keep, dim))
        for attn in lyr.modules():  # keep the bookkeeping attributes the modules hold in step
            if hasattr(attn, "all_head_size"):
                attn.num_attention_heads = len(lp.heads)
                attn.all_head_size = len(lp.heads) * d
            elif hasattr(attn, "n_heads") and hasattr(attn, "q_lin"):
                attn.n_heads = len(lp.heads)
    stack = fam.stack(base)
    kept = plan.kept_layers
    if not kept:
        raise ValueError("a plan must keep at least one layer")
    new_stack = nn.ModuleList(stack[i] for i in kept)
    _set(base, _path_of(base, stack), new_stack)
    heads, ffn = plan.sizes()
    setattr(model.config, fam.layers_key, len(kept))
    setattr(model.config, CONFIG_KEY, dict(heads=heads, ffn=ffn, kept_layers=kept, original=plan.original))
    return model


def shrink_to_config(model: nn.Module, model_type: str, record: dict, head_dim: int, hidden: int) -> nn.Module:
    """Give a freshly configured model the per-layer sizes a pruned checkpoint was saved with.

    The model is built at the kept layer count with the original widths; cutting it to the
    recorded sizes (first indices; the weights are loaded next) makes the shapes match.
    """
    heads, ffn = record["heads"], record["ffn"]
    plan = Plan([LayerPlan(list(range(h)), list(range(f))) for h, f in zip(heads, ffn, strict=True)], head_dim, hidden,
                record.get("original", {}))
    return apply_plan(model, model_type, plan)


@torch.no_grad()
def mask_encoder(enc: nn.Module, heads: dict[int, list[int]] | None = None, neurons: dict[int, list[int]] | None = None) -> None:
    """Zero the contribution of `heads` / `neurons` (per layer, current indices) of an `Encoder`, in place."""
    for li, hs in (heads or {}).items():
        attn = enc.layers[li].attn
        for h in hs:
            attn.out.weight[:, h * attn.head_dim : (h + 1) * attn.head_dim] = 0
    for li, ns in (neurons or {}).items():
        enc.layers[li].ffn_out.weight[:, list(ns)] = 0
