"""`--quant mixed`: 8-bit or 4-bit per linear (and for the token table), chosen by measured
sensitivity so that the `.pte` fits its size budget with the least output error.

1. Quantize three copies of the model: every module at its high precision (int8 linears, the
   recipe's embedding scheme), and every module at 4-bit with each way torchao has of choosing
   4-bit scales (`affine`: min/max, `hqq`: HQQ scale-only, what ExecuTorch's Llama export uses).
2. Sensitivity: in the fp32 model, quantize one module at a time (its weight swapped in from a
   quantized copy) and measure the output error 4-bit adds over 8-bit on calibration inputs
   (task data when the build has it). Each module keeps the 4-bit method that adds less. (Moved
   one at a time within the all-8-bit model instead, a module's error partly cancels the
   others': on a fine-tuned MiniLM classifier the sum of the added errors came out negative.)
3. Plan: output errors of independent modules add (noise powers), so the plan is a 0/1
   knapsack: keep at 8-bit the set of modules that avoids the most noise within the bytes the
   budget leaves over all-4-bit. A budget nothing meets is refused, naming the smallest size.
4. Apply the plan in place with the same configs, measure the mixed model's real SQNR and
   record every module's choice (manifest.quantization, `inspect`).

Only symmetric 4-bit is used (XNNPACK drops zero points; targets/xnnpack.refuse_zero_points).
A linear whose width no group size divides stays 8-bit (a pruned FFN of 1255 neurons).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeformer.errors import UserError
from edgeformer.recipe import PER_ROW, Recipe, groups_fit

METHODS = ("affine", "hqq")  # torchao's IntxChooseQParamsAlgorithm: AFFINE, HQQ_SCALE_ONLY
PROGRAM_BYTES = 96 * 1024  # the program and delegate headers beside the weights (MiniLM: 83 KiB)

Run = Callable[[nn.Module], torch.Tensor]  # the calibration forward: model -> output


def weight_bytes(numel: int, rows: int, scheme: str, group_size: int) -> float:
    """Bytes a weight of `numel` values in `rows` output rows takes in the `.pte` at `scheme`
    (a linear's or the token table's): codes, plus an fp32 scale per row (8-bit), a bf16 scale
    per group (a 4-bit linear: XNNPACK stores them so) or an fp32 one (the 4-bit table)."""
    if scheme == "fp32":
        return 4.0 * numel
    if scheme == "int8":
        return numel + 4.0 * rows
    scales = rows if group_size == PER_ROW else numel / group_size
    if scheme == "8da4w":
        return numel / 2 + 2.0 * scales
    if scheme == "int4":
        return numel / 2 + 4.0 * scales
    raise ValueError(scheme)


@dataclass
class Module:
    """One module the plan can move: its bytes at high and low precision, and the output
    noise power it adds at 4-bit by each method."""

    name: str
    kind: str  # "linear" | "embedding"
    high: str  # its scheme when kept: int8 (linear) or the recipe's embedding scheme
    bytes_high: float
    bytes_low: float
    added: dict[str, float] = field(default_factory=dict)  # method -> noise power added

    @property
    def method(self) -> str:
        return min(self.added, key=self.added.get)

    def low(self) -> str:
        return "8da4w" if self.kind == "linear" else "int4"


@dataclass
class MixedPlan:
    budget_bytes: float
    fixed_bytes: float  # what no choice changes (norms, biases, positions, the program)
    modules: list[Module]
    low: set[str]  # names moved to 4-bit
    kept: dict[str, str]  # names that cannot move, and why
    signal: float  # the fp32 output's power
    noise_high: float  # everything at high precision
    noise_low: float  # everything movable at 4-bit, the better of the two methods for all
    measured_sqnr_db: float | None = None

    def size_bytes(self, low: set[str] | None = None) -> float:
        low = self.low if low is None else low
        return self.fixed_bytes + sum(m.bytes_low if m.name in low else m.bytes_high for m in self.modules)

    def choice(self, m: Module) -> str:
        return f"{m.low()} ({m.method})" if m.name in self.low else m.high

    def predicted_sqnr_db(self) -> float:
        noise = self.noise_high + sum(m.added[m.method] for m in self.modules if m.name in self.low)
        return _db(self.signal, noise)

    def record(self) -> dict:
        """manifest.quantization's body: every module's choice, the sizes and SQNRs, each
        module's added noise (relative to the fp32 output's power) by 4-bit method."""
        choices = {m.name: self.choice(m) for m in self.modules}
        choices.update({n: f"int8 ({why})" for n, why in self.kept.items()})
        mib = 2.0**20
        return dict(
            method="sensitivity: output noise each module adds at 4-bit, knapsack to the size budget",
            budget_mb=round(self.budget_bytes / mib, 3), estimated_mb=round(self.size_bytes() / mib, 3),
            smallest_mb=round(self.size_bytes({m.name for m in self.modules}) / mib, 3),
            largest_mb=round(self.size_bytes(set()) / mib, 3),
            sqnr_db=dict(all_high=_round(_db(self.signal, self.noise_high)), all_4bit=_round(_db(self.signal, self.noise_low)),
                         predicted=_round(self.predicted_sqnr_db()), measured=_round(self.measured_sqnr_db)),
            modules=choices,
            sensitivity={m.name: {k: float(f"{v / self.signal:.3g}") for k, v in m.added.items()} for m in self.modules},
        )


def quantize_mixed(model: nn.Module, recipe: Recipe, backend, budget_mb: float | None, run: Run) -> MixedPlan:
    """Measure, plan and apply `--quant mixed` to `model` in place (tensor subclasses still
    wrapped); returns the plan, with the mixed model's measured SQNR against fp32."""
    if backend.name != "xnnpack":
        raise UserError(f"--quant mixed chooses between XNNPACK's int8 and 4-bit kernels, and the {backend.name} backend "
                        f"has no 4-bit linear; use --quant int8")
    if budget_mb is None:
        raise UserError("--quant mixed fits the .pte to a size budget, and this target has none; give --max-pte-mb N")
    with torch.no_grad():
        ref = run(model)
        modules, kept, fixed = _movable(model, recipe)
        high = _quantized(model, recipe, set(), None)
        lows = {m: _quantized(model, recipe, {mod.name for mod in modules}, m) for m in METHODS}
        signal, noise_high = _power(ref), _power(run(high) - ref)
        for mod in modules:  # alone in the fp32 model: no other module's rounding to cancel or compound
            target = model.get_submodule(mod.name)
            keep = target.weight
            target.weight = high.get_submodule(mod.name).weight
            at_high = _power(run(model) - ref)
            for method, low in lows.items():
                target.weight = low.get_submodule(mod.name).weight
                mod.added[method] = _power(run(model) - ref) - at_high
            target.weight = keep
        noise_low = min(_power(run(low) - ref) for low in lows.values())
    del high, lows
    plan = MixedPlan(budget_mb * 2.0**20, fixed, modules, set(), kept, signal, noise_high, noise_low)
    _choose(plan)
    by_name = {m.name: m for m in modules}
    _apply(model, recipe, plan.low, lambda name: by_name[name].method)
    with torch.no_grad():
        plan.measured_sqnr_db = _db(signal, _power(run(model) - ref))
    return plan


KNAPSACK_STEPS = 20000  # the size budget's resolution in the exact plan (rounded up: never over budget)


def _choose(plan: MixedPlan) -> None:
    """The least total added noise that fits: every module starts at 4-bit, and a 0/1 knapsack
    (dynamic programming over the bytes left, exact to 1/KNAPSACK_STEPS of them) picks which
    to keep at high precision; a module that adds no noise at 4-bit is never kept."""
    import numpy as np

    every = {m.name for m in plan.modules}
    room = plan.budget_bytes - plan.size_bytes(every)
    if room < 0:
        mib = 2.0**20
        raise UserError(f"--max-pte-mb {plan.budget_bytes / mib:g}: no mix of int8 and 4-bit fits; the smallest is "
                        f"{plan.size_bytes(every) / mib:.2f} MiB with every linear and the token table at 4-bit; "
                        f"raise the budget or prune the model (--prune)")
    items = [m for m in plan.modules if m.added[m.method] > 0]
    unit = max(room / KNAPSACK_STEPS, 1.0)
    cap = int(room // unit)
    best = np.zeros(cap + 1)  # best[w]: the most noise avoided within w units
    took = np.zeros((len(items), cap + 1), dtype=bool)
    for i, m in enumerate(items):
        w = math.ceil((m.bytes_high - m.bytes_low) / unit)
        if w > cap:
            continue
        with_it = best[:cap + 1 - w] + m.added[m.method]
        better = with_it > best[w:]
        took[i, w:] = better
        best[w:] = np.where(better, with_it, best[w:])
    keep, w = set(), cap
    for i in range(len(items) - 1, -1, -1):
        if took[i, w]:
            keep.add(items[i].name)
            w -= math.ceil((items[i].bytes_high - items[i].bytes_low) / unit)
    plan.low = every - keep


def _movable(model: nn.Module, recipe: Recipe) -> tuple[list[Module], dict[str, str], float]:
    """The modules a plan can move, those that stay 8-bit and why, and the fixed bytes."""
    g, emb_high = recipe.group_size, recipe.embedding_quant
    modules, kept, fixed = [], {}, float(PROGRAM_BYTES * recipe.programs)
    for name, m in model.named_modules():
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if isinstance(m, nn.Linear):
            fixed += 4.0 * (own - m.weight.numel())
            n, rows = m.weight.numel(), m.out_features
            if not groups_fit(m.in_features, g):
                why = "not a multiple of 32 (one group per row)" if g == PER_ROW else f"no group of {g}"
                kept[name] = f"{m.in_features} inputs: {why}"
                fixed += weight_bytes(n, rows, "int8", g)
            else:
                modules.append(Module(name, "linear", "int8", weight_bytes(n, rows, "int8", g), weight_bytes(n, rows, "8da4w", g)))
        elif isinstance(m, nn.Embedding) and emb_high != "fp32":
            n, rows = m.weight.numel(), m.num_embeddings
            if emb_high == "int4" or not groups_fit(m.embedding_dim, g):
                fixed += weight_bytes(n, rows, emb_high, g)
            else:
                modules.append(Module(name, "embedding", emb_high, weight_bytes(n, rows, emb_high, g),
                                      weight_bytes(n, rows, "int4", g)))
        else:
            fixed += 4.0 * own
    return modules, kept, fixed


def _quantized(model: nn.Module, recipe: Recipe, low: set[str], method: str | None) -> nn.Module:
    """A copy of `model` with the modules in `low` at 4-bit with `method`'s scales, the rest
    at their high precision."""
    q = copy.deepcopy(model)
    _apply(q, recipe, low, lambda name: method)
    return q


def _apply(model: nn.Module, recipe: Recipe, low: set[str], method: Callable[[str], str]) -> None:
    """Quantize `model` in place: modules named in `low` at 4-bit (scales by `method(name)`),
    every other linear int8 and the token table at the recipe's scheme."""
    from torchao.quantization import quantize_
    from torchao.utils import TorchAOBaseTensor

    from edgeformer.targets.xnnpack import embedding_config, linear_config

    def todo(kind: type, names=None, exclude=frozenset()):
        return lambda m, fqn: (isinstance(m, kind) and not isinstance(m.weight, TorchAOBaseTensor)
                               and (names is None or fqn in names) and fqn not in exclude)

    g = recipe.group_size
    for m in METHODS:  # one pass over the model per 4-bit method
        names = {name for name in low if method(name) == m}
        quantize_(model, linear_config("8da4w", g, m), filter_fn=todo(nn.Linear, names))
        quantize_(model, embedding_config("int4", g, m), filter_fn=todo(nn.Embedding, names))
    quantize_(model, linear_config("int8", g), filter_fn=todo(nn.Linear, exclude=low))
    if recipe.embedding_quant != "fp32":
        quantize_(model, embedding_config(recipe.embedding_quant, g), filter_fn=todo(nn.Embedding, exclude=low))


def _power(x: torch.Tensor) -> float:
    return x.double().pow(2).mean().item()


def _db(signal: float, noise: float) -> float:
    return math.inf if noise <= 0 else 10.0 * math.log10(signal / noise)


def _round(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else round(x, 2)
