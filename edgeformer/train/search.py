"""Which heads, FFN neurons and layers to remove: importance scores and the accuracy search.

- `taylor_scores`: first-order Taylor importance (Michel et al. 2019, Molchanov et al. 2019).
  Gating a head (or neuron) by g scales its columns of the output projection, so
  dL/dg = sum(W * dL/dW) over those columns; the score is |dL/dg| summed over batches.
- `Evaluator`: validation loss and accuracy with a candidate removed, rerunning only the
  layers from the first one that changed (hidden states before it are cached).
- `search` (options: `SearchOptions`): the accuracy-driven greedy loop (AxFormer, arXiv
  2010.03688): each round it re-scores, proposes removing the least important chunk of
  heads, of FFN neurons, or a whole layer, for every layer, measures each on validation, and
  takes the one that costs the least validation loss per FLOP saved (or gains), as long as
  validation accuracy stays within the budget; several at once while they hold together.
- `by_ratio` (options: `RatioOptions`): remove whole layers by measured validation loss,
  then given shares of the remaining heads and neurons by Taylor score, re-scoring in rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgeformer.errors import UserError
from edgeformer.models.encoder import Encoder
from edgeformer.train.loop import batches
from edgeformer.transforms.prune import Plan, mask_encoder


@dataclass
class Batch:
    ids: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor


def make_batches(tok, texts: list[str], y: list[int], pad_id: int, batch_size: int = 32) -> list[Batch]:
    """Length-sorted, padded batches (less padding, same results)."""
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    return [Batch(ids, mask, torch.tensor([y[j] for j in idx.tolist()]))
            for ids, mask, idx in batches(tok, texts, batch_size, order, pad_id)]


def taylor_scores(enc: Encoder, batches: list[Batch]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(per-layer head scores [H_l], per-layer neuron scores [F_l]) of the current encoder."""
    heads = [torch.zeros(ly.attn.num_heads) for ly in enc.layers]
    neurons = [torch.zeros(ly.ffn_out.in_features) for ly in enc.layers]
    enc.eval()
    for b in batches:
        enc.zero_grad()
        F.cross_entropy(enc(b.ids, b.mask), b.y).backward()
        with torch.no_grad():
            for i, ly in enumerate(enc.layers):
                o = ly.attn.out.weight
                per_col = (o * o.grad).sum(0)  # dL/dg for each input column of the output projection
                heads[i] += per_col.reshape(ly.attn.num_heads, ly.attn.head_dim).sum(1).abs()
                f = ly.ffn_out.weight
                neurons[i] += (f * f.grad).sum(0).abs()
    enc.zero_grad()
    return heads, neurons


class Evaluator:
    """Validation (accuracy, loss) of an encoder, and of it with one layer changed."""

    def __init__(self, enc: Encoder, batches: list[Batch]):
        self.enc, self.batches = enc.eval(), batches
        self.inputs: list[list[torch.Tensor]] = []  # [layer][batch] hidden states entering the layer
        self.masks = []
        with torch.no_grad():
            xs = []
            for b in batches:
                x, mask, mask_add = enc.embed(b.ids, b.mask)
                xs.append(x)
                self.masks.append((mask, mask_add))
            for i in range(len(enc.layers)):
                self.inputs.append(xs)
                xs = [enc.run_layer(i, x, m[1]) for x, m in zip(xs, self.masks, strict=True)]
            self.inputs.append(xs)

    @torch.no_grad()
    def score(self, layer: int | None = None, heads: list[int] = (), neurons: list[int] = (), skip: bool = False) -> tuple[float, float]:
        """(accuracy, mean loss) with `heads`/`neurons` (current indices) of `layer` masked, or it skipped."""
        if layer is None:
            return self._finish(self.inputs[-1])
        ly = self.enc.layers[layer]
        saved = (ly.attn.out.weight.clone(), ly.ffn_out.weight.clone())
        mask_encoder(self.enc, heads={layer: list(heads)}, neurons={layer: list(neurons)})
        try:
            xs = self.inputs[layer]
            for j in range(layer, len(self.enc.layers)):
                if j == layer and skip:
                    continue
                xs = [self.enc.run_layer(j, x, m[1]) for x, m in zip(xs, self.masks, strict=True)]
            return self._finish(xs)
        finally:
            ly.attn.out.weight.copy_(saved[0])
            ly.ffn_out.weight.copy_(saved[1])

    def _finish(self, xs: list[torch.Tensor]) -> tuple[float, float]:
        correct, loss, n = 0, 0.0, 0
        for x, m, b in zip(xs, self.masks, self.batches, strict=True):
            logits = self.enc.pool(x, m[0])
            correct += int((logits.argmax(-1) == b.y).sum())
            loss += float(F.cross_entropy(logits, b.y, reduction="sum"))
            n += len(b.y)
        return correct / n, loss / n


@dataclass
class Candidate:
    kind: str  # "heads" | "ffn" | "layer"
    layer: int  # original index
    local: list[int]  # current indices within the layer (what the evaluator masks)
    units: list[int]  # the same units, original indices (what the plan removes)
    plan: Plan

    def describe(self) -> str:
        if self.kind == "layer":
            return f"layer {self.layer}"
        unit = "head" if self.kind == "heads" else "FFN neuron"
        return f"{len(self.local)} {unit}{'s' if len(self.local) > 1 else ''} of layer {self.layer}"


def candidates(plan: Plan, heads: list[torch.Tensor], neurons: list[torch.Tensor], head_chunk: int, ffn_chunk: int) -> list[Candidate]:
    """For every kept layer: its least important chunk of heads, of neurons, and the layer itself."""
    out = []
    kept = plan.kept_layers
    for pos, li in enumerate(kept):
        lp = plan.layers[li]
        nh = min(head_chunk, len(lp.heads) - 1)
        if nh > 0:
            local = heads[pos].argsort()[:nh].tolist()
            units = [lp.heads[i] for i in local]
            out.append(Candidate("heads", li, local, units, plan.without(li, heads=units)))
        nf = min(ffn_chunk, len(lp.neurons) - ffn_chunk)
        if nf > 0:
            local = neurons[pos].argsort()[:nf].tolist()
            units = [lp.neurons[i] for i in local]
            out.append(Candidate("ffn", li, local, units, plan.without(li, neurons=units)))
        if len(kept) > 1:
            out.append(Candidate("layer", li, [], [], plan.without(li, whole=True)))
    return out


@dataclass(frozen=True)
class SearchOptions:
    """The accuracy-driven search's budget and stopping point.

    Example:
        >>> SearchOptions(max_drop_points=1.0, seq_len=128, target_flops=0.5)
    """

    max_drop_points: float  # validation accuracy points the search may lose
    seq_len: int  # the sequence length FLOPs are counted at
    target_flops: float | None = None  # stop at this share of the original FLOPs
    max_batch: int = 8  # candidates taken together in one round, at most

    def __post_init__(self):
        if self.max_drop_points < 0:
            raise UserError(f"max_drop_points={self.max_drop_points}: accuracy points the search may lose; must be >= 0")
        if self.seq_len < 1:
            raise UserError(f"seq_len={self.seq_len}: must be >= 1; e.g. the model's max length, 128")
        if self.target_flops is not None and not 0 < self.target_flops < 1:
            raise UserError(f"target_flops={self.target_flops}: the share of the original FLOPs to stop at, in (0, 1); "
                            "e.g. 0.5")
        if self.max_batch < 1:
            raise UserError(f"max_batch={self.max_batch}: must be >= 1 (1 takes one candidate per round)")


def search(
    build_encoder: Callable[[Plan], Encoder],
    plan: Plan,
    val: list[Batch],
    score_batches: list[Batch],
    options: SearchOptions,
    *,
    trajectory: list[dict] | None = None,
    on_step: Callable[[Plan, list[dict]], None] | None = None,
    on_candidate: Callable[[int, int], None] | None = None,
) -> tuple[Plan, list[dict]]:
    """Greedy, accuracy-driven removal until no candidate keeps validation accuracy within
    `options.max_drop_points` of the start (or `options.target_flops`, a share of the
    original, is reached).

    Each round measures every candidate alone, then takes the best-ranked ones that fit the
    budget together (up to `options.max_batch`, measured together, halved until they hold), so
    the many free removals early on do not each cost a round. `trajectory` continues an
    interrupted search; `on_step(plan, trajectory)` follows each accepted step.

    Example:
        >>> plan, trajectory = search(build_encoder, plan, val, score, SearchOptions(max_drop_points=1.0, seq_len=128))
    """
    max_drop_points, seq_len, target_flops, max_batch = (options.max_drop_points, options.seq_len, options.target_flops,
                                                        options.max_batch)
    trajectory = list(trajectory or [])
    o = plan.original
    head_chunk = max(1, round(o["heads"][0] / 6))
    ffn_chunk = max(1, o["ffn"][0] // 8)
    full = plan.original_flops(seq_len)
    while True:
        enc = build_encoder(plan)
        ev = Evaluator(enc, val)
        acc, loss = ev.score()
        if not trajectory:
            trajectory.append(dict(step=0, removed="nothing", flops_ratio=round(plan.flops(seq_len) / full, 4),
                                   val_accuracy=round(acc, 4), val_loss=round(loss, 4)))
        floor = trajectory[0]["val_accuracy"] - max_drop_points / 100 - 1e-9
        if target_flops is not None and plan.flops(seq_len) <= target_flops * full:
            break
        heads, neurons = taylor_scores(enc, score_batches)
        passing = []
        cands = candidates(plan, heads, neurons, head_chunk, ffn_chunk)
        for i, c in enumerate(cands):
            if on_candidate:
                on_candidate(i, len(cands))
            pos = plan.kept_layers.index(c.layer)
            a, lo = ev.score(pos, heads=c.local if c.kind == "heads" else (), neurons=c.local if c.kind == "ffn" else (),
                             skip=c.kind == "layer")
            if a >= floor:
                saved = (plan.flops(seq_len) - c.plan.flops(seq_len)) / full
                passing.append(((lo - loss) / saved, c, a, lo))
        if not passing:
            break
        passing.sort(key=lambda t: t[0])
        step = _combine(build_encoder, plan, [t[1] for t in passing], val, floor, max_batch)
        if step is None:  # no combination holds: the single best, measured alone
            _, c, a, lo = passing[0]
            step = ([c], c.plan, a, lo)
        taken, plan, a, lo = step
        trajectory.append(dict(step=len(trajectory), removed="; ".join(c.describe() for c in taken),
                               flops_ratio=round(plan.flops(seq_len) / full, 4), val_accuracy=round(a, 4), val_loss=round(lo, 4)))
        if on_step:
            on_step(plan, trajectory)
    return plan, trajectory


def _combine(build_encoder, plan: Plan, ranked: list[Candidate], val: list[Batch], floor: float, max_batch: int):
    """Take the best-ranked candidates that do not overlap (at most one per layer and kind, a
    layer removal alone in its layer) together, measured together; halve until they hold.
    Returns (taken, plan, accuracy, loss) or None if only single candidates hold."""
    batch: list[Candidate] = []
    for c in ranked:
        clash = any(b.layer == c.layer and (b.kind == c.kind or "layer" in (b.kind, c.kind)) for b in batch)
        dropped = sum(b.kind == "layer" for b in batch) + (c.kind == "layer")
        clash = clash or dropped >= len(plan.kept_layers)  # keep a layer
        if not clash:
            batch.append(c)
        if len(batch) == max_batch:
            break
    while len(batch) > 1:
        combined = plan
        for c in batch:
            combined = combined.without(c.layer, whole=c.kind == "layer", heads=c.units if c.kind == "heads" else (),
                                        neurons=c.units if c.kind == "ffn" else ())
        a, lo = Evaluator(build_encoder(combined), val).score()
        if a >= floor:
            return batch, combined, a, lo
        batch = batch[: len(batch) // 2]
    return None


@dataclass(frozen=True)
class RatioOptions:
    """What `by_ratio` removes: whole layers, then shares of the heads and FFN neurons.

    Example:
        >>> RatioOptions(heads=0.5, ffn=0.25, layers=1)
    """

    heads: float = 0.0  # share of the heads to remove, in [0, 1)
    ffn: float = 0.0  # share of the FFN neurons to remove, in [0, 1)
    layers: int = 0  # whole layers to remove
    drop_empty_layers: bool = False  # a layer whose heads all go is removed (else refused)
    rounds: int = 4  # re-scoring rounds

    def __post_init__(self):
        for name, v in (("heads", self.heads), ("ffn", self.ffn)):
            if not 0.0 <= v < 1.0:
                raise UserError(f"{name}={v}: a pruning ratio is the share to remove, in [0, 1); e.g. {name}=0.5 removes half")
        if self.layers < 0:
            raise UserError(f"layers={self.layers}: the number of whole layers to remove must be >= 0")
        if self.rounds < 1:
            raise UserError(f"rounds={self.rounds}: must be >= 1; e.g. rounds=4")


def by_ratio(
    build_encoder: Callable[[Plan], Encoder],
    plan: Plan,
    val: list[Batch],
    score_batches: list[Batch],
    options: RatioOptions,
) -> Plan:
    """Remove `options.layers` whole layers (least validation loss first), then the shares
    `options.heads` and `options.ffn` of the original heads and neurons by Taylor score
    (normalised per layer), in rounds.

    Example:
        >>> plan = by_ratio(build_encoder, plan, val, score, RatioOptions(heads=0.5, ffn=0.5))
    """
    heads, ffn, layers = options.heads, options.ffn, options.layers
    drop_empty_layers, rounds = options.drop_empty_layers, options.rounds
    o = plan.original
    if layers >= o["layers"]:
        raise UserError(f"--layers {layers}: the model has {o['layers']} layers; remove at most {o['layers'] - 1}")
    for _ in range(layers):
        ev = Evaluator(build_encoder(plan), val)
        losses = [(ev.score(pos, skip=True)[1], li) for pos, li in enumerate(plan.kept_layers)]
        plan = plan.without(min(losses)[1], whole=True)
    kept = plan.kept_layers
    have_heads = sum(len(plan.layers[i].heads) for i in kept)
    want_heads = round(heads * have_heads)
    want_ffn = round(ffn * sum(len(plan.layers[i].neurons) for i in kept))
    if want_heads > have_heads - len(kept) and not drop_empty_layers:
        most = (have_heads - len(kept)) / have_heads
        raise UserError(f"--heads {heads} would remove every head of some layers ({want_heads} of {have_heads} heads, "
                        f"{len(kept)} layers): at most {math.floor(most * 100) / 100} keeps one head per layer; "
                        "pass --drop-empty-layers to remove such layers instead")
    removed_h = removed_f = 0
    for r in range(1, rounds + 1):
        enc = build_encoder(plan)
        hs, ns = taylor_scores(enc, score_batches)
        kept = plan.kept_layers
        take_h = round(want_heads * r / rounds) - removed_h
        take_f = round(want_ffn * r / rounds) - removed_f
        plan = remove_lowest(plan, kept, hs, "heads", take_h, drop_empty_layers)
        plan = remove_lowest(plan, kept, ns, "neurons", take_f, False)
        removed_h += take_h
        removed_f += take_f
    if not plan.kept_layers:
        raise UserError(f"--heads {heads} removes every head of every layer; lower it")
    return plan


def remove_lowest(plan: Plan, kept: list[int], scores: list[torch.Tensor], kind: str, n: int, drop_empty: bool) -> Plan:
    """Remove the `n` lowest-scoring units (scores normalised per layer) across the layers
    `kept` (those removed meanwhile are skipped)."""
    if n <= 0:
        return plan
    pool = []
    for li, s in zip(kept, scores, strict=True):
        if plan.layers[li] is None:
            continue
        s = s / (s.norm() + 1e-12)
        current = getattr(plan.layers[li], kind)
        pool += [(float(v), li, current[i]) for i, v in enumerate(s)]
    pool.sort()
    removing: dict[int, list[int]] = {}
    for _, li, unit in pool:
        if n == 0:
            break
        left = len(getattr(plan.layers[li], kind)) - len(removing.get(li, []))
        if left <= 1 and not (drop_empty and kind == "heads"):
            continue
        removing.setdefault(li, []).append(unit)
        n -= 1
    for li, units in removing.items():
        if len(units) == len(getattr(plan.layers[li], kind)):
            plan = plan.without(li, whole=True)
        else:
            plan = plan.without(li, **{kind: units})
    return plan

