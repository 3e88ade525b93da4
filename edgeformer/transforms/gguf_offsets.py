"""`--gguf-offsets folded`: a Q4_1 linear's offsets inside XNNPACK's 4-bit kernel.

`gguf_grid.GroupSumCorrected` keeps a Q4_1 group's offset (8d + m) exact: an fp32 linear over
the input's 32-group means and an add beside each symmetric 4-bit linear. At one token that
is 630 small XNNPACK ops on SmolLM2 and nearly doubles what its linears cost (210 linears:
3.7 ms against 1.96 for the 4-bit kernels alone). Folded, each linear is one 4-bit kernel
over its input widened by the group means, its offsets written as extra 4-bit groups:
2.8 ms. SmolLM2 decodes 1.11x faster (1.10x in the C++ runner) from a 6.8 MiB smaller `.pte`.
The means then take the kernel's int8 activation rounding, which the fp32 correction did
not: fed 16x larger, that costs 4% in mean KL from fp32 and 3.5-4.5 dB of logit SQNR
(benchmarks/results/gguf-offsets.md), so the exact form stays the default.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeformer.models.gguf import BLOCK
from edgeformer.transforms import int4
from edgeformer.transforms.gguf_grid import GroupSumCorrected, group_means

FOLDED = "4-bit groups + offsets as 4-bit digit groups (folded)"  # the plan's entry (gguf_grid.CORRECTED: exact)
# --gguf-offsets folded (FoldedOffsets). The group means are fed to the kernel times GAIN, so the
# int8 rounding of their per-token quantization is GAIN times smaller against the offsets; a
# layer input's range is 6-30x its means' (SmolLM2, 200 calibration tokens), so the token's
# scale rarely grows. Mean KL from fp32 on Persuasion (eager, 2048 tokens; exact offsets
# 0.0158): gain 1 0.1035, 4 0.0226, 8 0.0173, 16 0.0164, 32 0.0248 (benchmarks/results/gguf-offsets.md).
GAIN = 16.0
DIGITS = 2  # base-16 digits of each offset: a linear's output 56 dB from the fp32 correction's (3: 70 dB, no better in KL)


class Widen(nn.Module):
    """x [1, T, in] -> [x | g·m | g·m …]: m the means of x's 32-groups times GAIN, zero-padded
    to whole 32-blocks, once per digit: the inputs of the offsets' extra 4-bit groups."""

    def __init__(self, in_features: int, digits: int = DIGITS, gain: float = GAIN):
        super().__init__()
        self.groups, self.digits, self.gain = in_features // BLOCK, digits, gain
        self.pad = -self.groups % BLOCK

    @property
    def extra(self) -> int:
        return (self.groups + self.pad) * self.digits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = group_means(x, self.groups) * self.gain
        if self.pad:
            means = nn.functional.pad(means, (0, self.pad))
        return torch.cat([x] + [means] * self.digits, dim=-1)


class FoldedOffsets(nn.Module):
    """`GroupSumCorrected` in one 4-bit kernel (`--gguf-offsets folded`): the input widened by
    its group means (`Widen`), each row's offsets written as extra 4-bit groups over them,
    base-16 digits of one another (scales s, s/16, …: powers of two apart, so XNNPACK's bf16
    scales keep them exact). One qb4w linear instead of a mean, an fp32 linear and an add;
    SmolLM2's 210 linears at one token: 2.8 ms against 3.7 (symmetric 4-bit alone: 1.96)."""

    def __init__(self, main: nn.Linear, widen: Widen):
        super().__init__()
        self.main, self.widen = main, widen

    @property
    def in_features(self) -> int:
        return self.widen.groups * BLOCK

    @property
    def out_features(self) -> int:
        return self.main.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(self.widen(x))


def offset_digits(offsets: torch.Tensor, digits: int = DIGITS) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [out, digits·P] in [-8, 7], scales [out, digits·P/32]) whose groups add up to
    `offsets` [out, G] (P: G padded to whole 32-blocks), each to within its block's last digit
    step (the first step is the block's largest offset / 7, each next one 16 times finer).
    The scales are bf16 values, as XNNPACK stores them."""
    rows, g = offsets.shape
    padded = torch.zeros(rows, -(-g // BLOCK) * BLOCK, dtype=torch.float64)
    padded[:, :g] = offsets.double()
    blocks = padded.view(rows, -1, BLOCK)
    top = (blocks.abs().amax(-1) / int4.QMAX).clamp(min=1e-30) * (1 + 2**-7)  # bf16 rounds to nearest: stays >= amax / 7
    s = top.float().to(torch.bfloat16).double()
    rest, codes, scales = blocks, [], []
    for i in range(digits):
        # rounded up by 1/32 of a step before the last digit: the remainder then lies in [-8.5, 7.5] of the next
        # digit's steps, which a code in [-8, 7] rounds to (plain rounding leaves up to +8, past the codes)
        k = (rest / s[..., None] + (1 / 32 if i < digits - 1 else 0)).round().clamp(int4.QMIN, int4.QMAX)
        rest = rest - k * s[..., None]
        codes.append(k.reshape(rows, -1))
        scales.append(s)
        s = s / 16
    return torch.cat(codes, 1).to(torch.int8), torch.cat(scales, 1).float()


def widened(lin: GroupSumCorrected, widen: Widen) -> nn.Linear:
    """`lin` as one 4-bit linear over `widen`'s output: its codes and scales, then the digits
    of its offsets (the correction's weights, divided by the means' gain)."""
    w = lin.main.weight
    codes, scales = offset_digits(lin.correction.weight.detach() / widen.gain, widen.digits)
    main = nn.Linear(lin.in_features + widen.extra, lin.out_features, bias=lin.main.bias is not None)
    main.weight = nn.Parameter(int4.groups(torch.cat([w.qdata, codes], 1), torch.cat([w.scale, scales], 1)), requires_grad=False)
    if lin.main.bias is not None:
        main.bias = lin.main.bias
    return main


def folded(lin: GroupSumCorrected, digits: int, gain: float) -> FoldedOffsets:
    """`lin` widening its own input."""
    widen = Widen(lin.in_features, digits, gain)
    return FoldedOffsets(widened(lin, widen), widen)


def fold_offsets(decoder: nn.Module, digits: int = DIGITS, gain: float = GAIN) -> dict:
    """Every `GroupSumCorrected` of a Decoder in its folded form, in place. Where q, k and v (or
    gate and up) all carry offsets, their shared input is widened once (the layer's `attn_in`,
    `ffn_in`) and they become plain 4-bit linears over it; o and down widen their own input.
    Returns what `manifest.quantization` records."""
    shared = done = 0
    for layer in decoder.layers:
        for adapter, names in (("attn_in", ("q", "k", "v")), ("ffn_in", ("gate", "up"))):
            lins = [getattr(layer, n) for n in names]
            if all(isinstance(lin, GroupSumCorrected) for lin in lins):
                widen = Widen(lins[0].in_features, digits, gain)
                setattr(layer, adapter, widen)
                for n, lin in zip(names, lins, strict=True):
                    setattr(layer, n, widened(lin, widen))
                shared, done = shared + 1, done + len(names)
        for name, child in list(layer.named_children()):
            if isinstance(child, GroupSumCorrected):
                setattr(layer, name, folded(child, digits, gain))
                done += 1
    if isinstance(decoder.lm_head, GroupSumCorrected):  # a head on a 4-bit grid of its own
        decoder.lm_head, done = folded(decoder.lm_head, digits, gain), done + 1
    return dict(form="folded", linears=done, shared_inputs=shared, digits=digits, gain=gain)
