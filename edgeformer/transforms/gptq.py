"""Data-aware 4-bit weights: GPTQ (Frantar et al., 2022) onto XNNPACK's symmetric groups.

torchao 0.18's `prototype.gptq` quantizes to its CUDA int4 tensors only, so the algorithm is
written here for the weights ExecuTorch lowers to XNNPACK's qb4w kernels: symmetric codes in
[-8, 7] with one scale per group of `group_size` inputs, int8 dynamic activations.

1. Observe: run the float model on calibration inputs (task texts, or for a causal LM the
   `--data` text) and sum each linear's input Gram matrix H = Σ xᵀx.
2. Quantize each linear's columns in order of falling input energy (H's diagonal, GPTQ's
   act-order); after each column the rounding error is spread over the columns not yet
   quantized, weighted by H⁻¹ (the Cholesky form of the inverse), so the layer's output on
   the calibration inputs moves as little as it can. Group scales are fixed beforehand
   (XNNPACK's groups are contiguous columns): per group and row, the max-magnitude scale
   shrunk by the factor (of `SHRINK`) with the least squared rounding error. On SmolLM2
   (eager, Persuasion) act-order halves the perplexity increase: +10.4% against +20.6%.
3. The codes and scales become torchao's unpacked 4-bit tensor (`int4.groups`), exactly the
   form `--quant 8da4w` lowers, so the `.pte` costs the same bytes and time.

All linears observe the float model's activations in one pass (the usual non-sequential
form); inputs a linear never saw (H's diagonal 0) quantize by plain rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgeformer.recipe import PER_ROW, groups_fit
from edgeformer.transforms.int4 import QMAX, QMIN, groups

DAMP = 0.01  # H's diagonal raised by this share of its mean (GPTQ's percdamp)
BLOCK = 256  # columns updated together: without act-order, a multiple of every group size (128 broke 256)
SHRINK = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)  # group scales tried, times max|w| / 7.5

Run = Callable[[nn.Module], object]  # runs the model on the calibration inputs


def observe(model: nn.Module, run: Run, linears: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
    """Each named linear's input Gram matrix Σ xᵀx (fp64) over what `run(model)` feeds it."""
    grams = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for name, m in linears.items()}

    def hook(name):
        def add(_module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            grams[name].add_(x.T @ x)
        return add

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in linears.items()]
    try:
        with torch.no_grad():
            run(model)
    finally:
        for h in handles:
            h.remove()
    return grams


def quantize_weight(w: torch.Tensor, gram: torch.Tensor, group_size: int, act_order: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ of one weight [out, in] given its inputs' Gram matrix [in, in]: returns (codes int8
    [out, in] in [-8, 7], scales fp32 [out, in / group_size]).

    `act_order`: columns are quantized in order of falling input energy (H's diagonal), the
    scales then fixed beforehand from the original groups (XNNPACK's groups are contiguous)."""
    rows, cols = w.shape
    if cols % group_size or (not act_order and BLOCK % group_size):
        raise ValueError(f"{cols} inputs do not split into groups of {group_size}")
    w = w.detach().double().clone()
    h = gram.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += DAMP * torch.diag(h).mean() * torch.eye(cols, dtype=h.dtype)
    order = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(cols)
    scales = torch.zeros(rows, cols // group_size, dtype=torch.float64)
    if act_order:
        for g in range(cols // group_size):
            scales[:, g] = _best_scale(w[:, g * group_size:(g + 1) * group_size])
    w, h = w[:, order], h[order][:, order]
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.zeros(rows, cols, dtype=torch.int8)
    for b0 in range(0, cols, BLOCK):
        b1 = min(b0 + BLOCK, cols)
        wb, errs, hb = w[:, b0:b1].clone(), torch.zeros(rows, b1 - b0, dtype=w.dtype), hinv[b0:b1, b0:b1]
        for i in range(b1 - b0):
            g = int(order[b0 + i]) // group_size
            if not act_order and (b0 + i) % group_size == 0:
                scales[:, g] = _best_scale(wb[:, i:i + group_size])
            s = scales[:, g]
            q = torch.clamp(torch.round(wb[:, i] / s), QMIN, QMAX)
            codes[:, order[b0 + i]] = q.to(torch.int8)
            err = (wb[:, i] - q * s) / hb[i, i]
            wb[:, i:] -= err[:, None] * hb[i, i:][None, :]
            errs[:, i] = err
        w[:, b1:] -= errs @ hinv[b0:b1, b1:]
    return codes, scales.float()


def _best_scale(group: torch.Tensor) -> torch.Tensor:
    """Per row, the scale of `SHRINK` × max|w| / 7.5 whose rounding error on `group` is least."""
    top = group.abs().amax(dim=1).clamp_min(1e-12) / ((QMAX - QMIN) / 2)
    best, best_err = top, torch.full_like(top, float("inf"))
    for f in SHRINK:
        s = top * f
        err = ((torch.clamp(torch.round(group / s[:, None]), QMIN, QMAX) * s[:, None] - group) ** 2).sum(dim=1)
        better = err < best_err
        best, best_err = torch.where(better, s, best), torch.where(better, err, best_err)
    return best


def gptq_(model: nn.Module, run: Run, group_size: int) -> list[str]:
    """Quantize every `nn.Linear` of `model` to 4-bit groups by GPTQ on what `run(model)`
    feeds them, in place (PER_ROW: one group per row); returns the names quantized."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and groups_fit(m.in_features, group_size)}
    grams = observe(model, run, linears)
    for name, m in linears.items():
        g = m.in_features if group_size == PER_ROW else group_size
        codes, scales = quantize_weight(m.weight, grams.pop(name), g)
        m.weight = nn.Parameter(groups(codes, scales), requires_grad=False)
    return list(linears)
