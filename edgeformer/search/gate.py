"""The accuracy gate: a candidate's drop against the fp32 model, bounded, not point-estimated.

A search compares many candidates on one validation split, and the best-looking of many is
lucky on it (issue 4 measured the greedy prune at +0.6 points on validation, -0.8 on test).
So the gate asks for the drop's upper confidence bound to be within budget: the paired
bootstrap over the same examples (each resample keeps an example's fp32 and candidate
predictions together), one-sided at `confidence`. A candidate that changes no prediction
has a bound of 0; one that flips a few either way pays for the uncertainty.
"""

from __future__ import annotations

import torch

DEFAULT_CONFIDENCE = 0.9
ROUNDS = 4000


def paired_drop(reference_correct: list[bool], candidate_correct: list[bool], confidence: float = DEFAULT_CONFIDENCE,
                seed: int = 0) -> dict:
    """The accuracy drop in points (reference minus candidate) and its one-sided upper bound.

    Example:
        >>> paired_drop([True] * 100, [True] * 100)["drop_upper_points"]
        0.0
    """
    if len(reference_correct) != len(candidate_correct) or not reference_correct:
        raise ValueError(f"paired examples needed: {len(reference_correct)} against {len(candidate_correct)}")
    diff = torch.tensor(reference_correct, dtype=torch.float64) - torch.tensor(candidate_correct, dtype=torch.float64)
    n = len(diff)
    g = torch.Generator().manual_seed(seed)
    means = torch.empty(ROUNDS, dtype=torch.float64)
    for start in range(0, ROUNDS, 500):  # resamples in chunks: [500, n] indices at a time
        idx = torch.randint(0, n, (min(500, ROUNDS - start), n), generator=g)
        means[start:start + len(idx)] = diff[idx].mean(1)
    upper = torch.quantile(means, confidence).item()
    return dict(drop_points=round(diff.mean().item() * 100, 2), drop_upper_points=round(upper * 100, 2),
                confidence=confidence, examples=n, changed=int((diff != 0).sum().item()))


BLOCK_TOKENS = 64  # a causal LM's tokens are resampled in runs this long (neighbours are not independent)
MIN_BLOCKS = 10  # fewer blocks than this and the bootstrap's bound means little: the text is refused


def paired_increase(reference_nll: list[float], candidate_nll: list[float], confidence: float = DEFAULT_CONFIDENCE,
                    block: int = BLOCK_TOKENS, seed: int = 0) -> dict:
    """A causal LM's perplexity increase in percent (candidate over reference, the same tokens)
    and its one-sided upper bound: the paired block bootstrap of the per-token difference of
    negative log-likelihoods (perplexity ratio = exp(mean difference)). One text scored by many
    candidates makes the luckiest look best, as accuracy on one split does.

    Example:
        >>> paired_increase([2.0] * 128, [2.0] * 128)["increase_upper_pct"]
        0.0
    """
    if len(reference_nll) != len(candidate_nll) or not reference_nll:
        raise ValueError(f"paired tokens needed: {len(reference_nll)} against {len(candidate_nll)}")
    diff = torch.tensor(candidate_nll, dtype=torch.float64) - torch.tensor(reference_nll, dtype=torch.float64)
    blocks = [diff[i:i + block] for i in range(0, len(diff), block)]
    sums = torch.stack([b.sum() for b in blocks])
    sizes = torch.tensor([len(b) for b in blocks], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(blocks), (ROUNDS, len(blocks)), generator=g)
    means = sums[idx].sum(1) / sizes[idx].sum(1)
    upper = torch.quantile(means, confidence).item()

    def pct(mean_diff: float) -> float:
        return round((torch.tensor(mean_diff).exp().item() - 1) * 100, 3)

    return dict(increase_pct=pct(diff.mean().item()), increase_upper_pct=pct(upper),
                confidence=confidence, tokens=len(diff), blocks=len(blocks), block_tokens=block)
