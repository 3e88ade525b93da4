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

ALPHA = 0.5  # SmoothQuant's default
MIN_AMAX_OF_MEDIAN = 0.1
CALIBRATION_TOKENS = 200  # greedy tokens the fp32 model writes after the prompt
# not the numerics prompt (lm/numerics.py): the build's SQNR is measured on that one
CALIBRATION_PROMPT = "Here is a short story about one ordinary day in a small town by the sea."


def calibrate(decoder: nn.Module, prompt: list[int], new: int = CALIBRATION_TOKENS) -> tuple[list[int], torch.Tensor]:
    """(ids, amax): the prompt (what fits one call) and up to `new` greedy tokens the decoder
    writes after it (as many as a full cache holds), and each channel's largest |value|
    entering the head over all of them, seen as they are fed. The cache is left empty."""
    shape = decoder.shape
    ids = list(prompt[:shape.max_tokens_per_call])  # one call (at most the whole of a full cache)
    if shape.window is None or shape.mixed:  # a full cache: the prompt and its continuation must fit
        new = max(0, min(new, shape.max_context - len(ids)))
    amax = torch.zeros(decoder.lm_head.in_features)

    def seen(module, args):
        amax.copy_(torch.maximum(amax, args[0].detach().abs().reshape(-1, amax.numel()).amax(0)))

    hook = decoder.lm_head.register_forward_pre_hook(seen)
    full, decoder.full_logits = decoder.full_logits, True  # every prompt position through the head too
    try:
        with torch.no_grad():
            decoder.reset()
            logits = decoder(torch.tensor([ids]), torch.tensor([0]))
            for _ in range(new):
                ids.append(int(logits[0, -1].argmax()))
                logits = decoder(torch.tensor([ids[-1:]]), torch.tensor([len(ids) - 1]))
    finally:
        hook.remove()
        decoder.reset()
        decoder.full_logits = full
    return ids, amax


def smooth_head(decoder: nn.Module, prompt: list[int], alpha: float = ALPHA) -> dict:
    """Move the head input's outliers into the head's weight columns, in place (the head gets
    its own weight: a head tied to the embedding table is untied; `decoder.head_smoothing` keeps
    s for `tied_table.share_table`); `prompt`: the ids of CALIBRATION_PROMPT, which the model
    continues. Returns the record."""
    ids, amax = calibrate(decoder, prompt)
    # a channel the calibration text hardly used is not blown up (its input divided by a tiny
    # s) in case other text does use it: its maximum is taken as at least a tenth of the median
    amax = amax.clamp(min=max(MIN_AMAX_OF_MEDIAN * float(amax.median()), 1e-5))
    w = decoder.lm_head.weight.detach()
    s = amax**alpha / w.abs().amax(0).clamp(min=1e-5) ** (1 - alpha)
    s = s / s.mean()
    with torch.no_grad():
        decoder.lm_head.weight = nn.Parameter(w * s[None, :], requires_grad=False)
        decoder.norm.weight.div_(s)
    decoder.head_smoothing = s
    flat = amax / s
    return dict(method="SmoothQuant on the head's input", alpha=alpha, calibration_tokens=len(ids),
                calibration=f"greedy text the fp32 model wrote after {CALIBRATION_PROMPT!r}",
                input_peak_to_median=[round(float(amax.max() / amax.median()), 1), round(float(flat.max() / flat.median()), 1)])
