"""A causal LM's output head made easy for int8 dynamic activations (SmoothQuant, Xiao et al. 2023).

XNNPACK's int8 linears quantize their input per token with one scale. The final hidden
state of a small LM has a few channels many times larger than the rest (SmolLM2-135M: the
largest 12x the median), so that one scale leaves the other channels a handful of levels.
On SmolLM2's GGUF build the int8 head took the mean KL divergence from the fp32 model from
0.0180 to 0.0233 (benchmarks/results/head-smoothing.md); smoothed, 0.0221.

Per channel j, s_j = amax(x_j)^α / amax(W[:, j])^(1 − α): the final RMSNorm's weight is
divided by s and the head's columns multiplied by it. In fp32 the model is unchanged
(exactly a reparametrisation); the head's input is flatter and its weight a little less
so, which int8 per-channel weights absorb. The activation maxima come from text the fp32
model writes itself after a fixed prompt (no data needed; neither the evaluation text nor
the prompt the build's numerics are measured on).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeformer.models.gguf import BLOCK
from edgeformer.transforms.gguf_grid import scale_columns, scale_rows

ALPHA = 0.5  # SmoothQuant's default
GRID_ALPHA = 0.35  # smooth_grid's, chosen by measured KL (below)
MIN_AMAX_OF_MEDIAN = 0.1
CALIBRATION_TOKENS = 200  # greedy tokens the fp32 model writes after the prompt
# not the numerics prompt (lm/numerics.py): the build's SQNR is measured on that one
CALIBRATION_PROMPT = "Here is a short story about one ordinary day in a small town by the sea."


def calibrate(decoder: nn.Module, prompt: list[int], modules: dict[str, nn.Module],
              new: int = CALIBRATION_TOKENS) -> tuple[list[int], dict[str, torch.Tensor]]:
    """(ids, amax): the prompt (what fits one call) and up to `new` greedy tokens the decoder
    writes after it (as many as a full cache holds), and for each of `modules` each input
    channel's largest |value| over all of them, seen as they are fed. The cache is left empty."""
    shape = decoder.shape
    ids = list(prompt[:shape.max_tokens_per_call])  # one call (at most the whole of a full cache)
    if shape.window is None or shape.mixed:  # a full cache: the prompt and its continuation must fit
        new = max(0, min(new, shape.max_context - len(ids)))
    amax: dict[str, torch.Tensor] = {}

    def seen(name):
        def hook(module, args):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
            amax[name] = x if name not in amax else torch.maximum(amax[name], x)
        return hook

    hooks = [m.register_forward_pre_hook(seen(name)) for name, m in modules.items()]
    full, decoder.full_logits = decoder.full_logits, True  # every prompt position through the head too
    try:
        with torch.no_grad():
            decoder.reset()
            logits = decoder(torch.tensor([ids]), torch.tensor([0]))
            for _ in range(new):
                ids.append(int(logits[0, -1].argmax()))
                logits = decoder(torch.tensor([ids[-1:]]), torch.tensor([len(ids) - 1]))
    finally:
        for h in hooks:
            h.remove()
        decoder.reset()
        decoder.full_logits = full
    return ids, amax


def smooth_head(decoder: nn.Module, amax: torch.Tensor, calibration_tokens: int, alpha: float = ALPHA) -> dict:
    """Move the head input's outliers into the head's weight columns, in place (the head gets
    its own weight: a head tied to the embedding table is untied; `decoder.head_smoothing` keeps
    s for `tied_table.share_table`); `amax`: the head input's channel maxima from `calibrate`
    (over `calibration_tokens` tokens) on the fp32 model. Returns the record."""
    amax = _floor(amax)
    w = decoder.lm_head.weight.detach()
    s = amax**alpha / w.abs().amax(0).clamp(min=1e-5) ** (1 - alpha)
    s = s / s.mean()
    with torch.no_grad():
        decoder.lm_head.weight = nn.Parameter(w * s[None, :], requires_grad=False)
        decoder.norm.weight.div_(s)
    decoder.head_smoothing = s
    return dict(method="SmoothQuant on the head's input", alpha=alpha, calibration_tokens=calibration_tokens,
                calibration=f"greedy text the fp32 model wrote after {CALIBRATION_PROMPT!r}",
                input_peak_to_median=[round(v, 1) for v in _peak(amax, s)])


def _floor(amax: torch.Tensor) -> torch.Tensor:
    """A channel the calibration text hardly used is not blown up (its input divided by a tiny
    s) in case other text does use it: its maximum is taken as at least a tenth of the median."""
    return amax.clamp(min=max(MIN_AMAX_OF_MEDIAN * float(amax.median()), 1e-5))


# Every on-grid linear's input, smoothed with one factor per 32-group (`--quant gguf`) ----------
# A factor constant over a 32-column group keeps a GGUF grid exact: the group's scale and
# offset take it, the codes stay as shipped (gguf_grid.scale_columns). Where the input comes
# from (a layer's RMSNorm weight, or the rows of v and up) takes 1 / factor, exactly, per
# channel. What the int8 dynamic activations cost SmolLM2's GGUF build (mean KL from fp32,
# eager, benchmarks/bench_head_smoothing.py): 0.0179 in all, of which qkv's input 0.0070,
# down's 0.0066, gate/up's 0.0037, o's 0.0004. Smoothed with s = group amax^α (mean 1): α 0.25
# 0.0117, 0.35 0.0113, 0.5 0.0131 (SmoothQuant's weight term, amax^0.5 / wmax^0.5: 0.0124);
# α 1 makes it worse (0.0403): the calibration's maxima are not every token's.
GRID_SITES = ("q", "o", "gate", "down")  # the first linear reading each distinct input


def grid_sites(decoder: nn.Module) -> dict[str, nn.Module]:
    """The modules whose inputs `smooth_grid` flattens, by name, for `calibrate`."""
    return {f"layers.{i}.{site}": getattr(layer, site) for i, layer in enumerate(decoder.layers) for site in GRID_SITES}


def smooth_grid(decoder: nn.Module, amax: dict[str, torch.Tensor], calibration_tokens: int,
                alpha: float = GRID_ALPHA) -> dict:
    """Flatten the inputs of every layer's linears for their int8 dynamic quantization, in
    place, with `amax` from `calibrate(..., grid_sites(decoder))` (taken before `keep_grid`: the
    fp32 model's, which the grid model equals). In fp32 the model is unchanged. Returns the
    record."""
    peaks = []
    for i, layer in enumerate(decoder.layers):
        seen = {site: _floor(amax[f"layers.{i}.{site}"]) for site in GRID_SITES}
        if any(x.numel() % BLOCK for x in seen.values()):  # no 32-groups (not a 4-bit grid; pruned)
            continue
        for site, norm, readers in (("q", layer.norm1, (layer.q, layer.k, layer.v)), ("gate", layer.norm2, (layer.gate, layer.up))):
            s = _group_factor(seen[site], alpha)
            with torch.no_grad():
                norm.weight.div_(s.repeat_interleave(BLOCK))
            for lin in readers:
                scale_columns(lin, s)
            peaks.append(_peak(seen[site], s.repeat_interleave(BLOCK)))
        s = _group_factor(seen["down"], alpha)  # down reads act(gate) · up: up's rows take 1 / s
        scale_rows(layer.up, s.repeat_interleave(BLOCK))
        scale_columns(layer.down, s)
        peaks.append(_peak(seen["down"], s.repeat_interleave(BLOCK)))
        # o reads attention's output, a mix of v's rows: o's column (head, i) is v's row (kv head, i)
        s_v, s_o = attention_factors(seen["o"], layer.h, layer.kv, layer.d, alpha)
        scale_rows(layer.v, s_v)
        scale_columns(layer.o, s_o)
        peaks.append(_peak(seen["o"], s_o.repeat_interleave(BLOCK)))
    peaks_t = torch.tensor(peaks or [(1.0, 1.0)])  # [sites, (before, after)]
    return dict(method="SmoothQuant on every layer's linear inputs, one factor per 32-group (the grid kept exact)",
                alpha=alpha, calibration_tokens=calibration_tokens,
                input_peak_to_median=[round(float(v), 1) for v in peaks_t.median(0).values])


def attention_factors(amax: torch.Tensor, heads: int, kv: int, d: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(v's row factors [kv·d], o's column-group factors [heads·d / 32]) for o's input. A v row
    feeds one column of o per query head sharing its kv head; every 32-group of o's columns
    needs one factor, so groups that share a v row share a factor (connected components)."""
    col = torch.arange(heads * d)
    row = (col // d) // (heads // kv) * d + col % d  # the v row behind each o column
    group = (col // BLOCK).tolist()
    parent = list(range(heads * d // BLOCK))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[int, int] = {}
    for c, r in enumerate(row.tolist()):
        parent[find(group[c])] = find(first.setdefault(r, group[c]))
    comp = torch.tensor([find(g) for g in range(len(parent))])
    peak = torch.zeros(len(parent)).scatter_reduce_(0, comp, amax.view(-1, BLOCK).amax(1), "amax")  # per component root
    s_o = peak[comp] ** alpha
    s_o = s_o / s_o.mean()
    s_v = torch.empty(kv * d)
    s_v[row] = s_o.repeat_interleave(BLOCK)
    return s_v, s_o


def _group_factor(amax: torch.Tensor, alpha: float) -> torch.Tensor:
    """One factor per 32 channels from the group's largest input, mean 1."""
    s = amax.view(-1, BLOCK).amax(1) ** alpha
    return s / s.mean()


def _peak(amax: torch.Tensor, s: torch.Tensor) -> tuple[float, float]:
    """The input's largest channel maximum over its median, before and after dividing by s (per channel)."""
    flat = amax / s
    return float(amax.max() / amax.median()), float(flat.max() / flat.median())
