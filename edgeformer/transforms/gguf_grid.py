"""`--quant gguf`: a Decoder's weights put on the grid its GGUF file was shipped in, unchanged.

transformers' GGUF loader dequantizes to fp32; requantizing that to torchao's own symmetric
4-bit groups moves every weight off its grid (SmolLM2 Q4_1: perplexity +65%). Here the
codes and scales go into the quantized tensors as they are:

- Q4_1 linear: w = d·q + m = d·(q − 8) + (8d + m) per group. XNNPACK in ExecuTorch 1.5.1
  drops per-group zero points (docs/int4-on-xnnpack.md), so the asymmetric part is split off
  exactly: the symmetric qb4w linear on d·(q − 8), plus a small linear over the per-group
  sums of x ([in / 32] inputs: 18 for SmolLM2's 576) whose weights are 8d + m. Both are
  delegated.
- Q4_0 linear: w = d·(q − 8), symmetric, but XNNPACK takes positive scales only and ggml's d
  is negative in about half the groups: |d|·(7 − q) + |d| there, the same correction.
- Q8_0 embedding table: 8-bit codes with a scale per 32, gathered by
  `quantized_decomposed::embedding_byte` (the groupwise form), exact.
- Anything else (Q8_0 or float linears, e.g. a tied output head stored as Q8_0): the
  recipe's `fallback` scheme, requantized by torchao; the manifest lists each choice.

The eager modules dequantize with the same formulas as ggml, so the transformed model equals
the fp32 GGUF model to fp32 rounding, before the int8 dynamic quantization of activations
that XNNPACK's 4-bit kernels take.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import IntxUnpackedToInt8Tensor

from edgeformer.errors import UserError
from edgeformer.models.gguf import BLOCK, Blocks, GGUFWeights, unpermute_rope_rows
from edgeformer.transforms import int4

# Decoder linear -> GGUF tensor name in block N (llama.cpp's names; the same for Qwen2/Qwen3)
LINEARS = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
           "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
# the GGUF block types a linear layer keeps on their grid
ON_GRID = ("Q4_0", "Q4_1")
EMBED_ON_GRID = "Q8_0 -> int8 groups of 32 (exact)"  # the plan's entry for a table kept as shipped
CORRECTED = "4-bit groups + group-sum correction (exact)"  # the plan's entry for a Q4_1 linear (gguf_offsets.FOLDED: folded)


class GroupSumCorrected(nn.Module):
    """y = main(x) + correction(group means of x): an asymmetric 4-bit linear written as a
    symmetric one plus the zero-point term, which XNNPACK lowers correctly.

    main: 4-bit symmetric groupwise weights [out, in]; correction: fp32 [out, in / 32], the
    per-group offsets (8d + m) times 32 (it takes the groups' means, the form XNNPACK's mean
    op lowers: a 4-D view reduced over dims (2, 3))."""

    def __init__(self, main: nn.Linear, correction: nn.Linear):
        super().__init__()
        self.main, self.correction = main, correction
        self.groups = main.in_features // BLOCK

    @property
    def in_features(self) -> int:
        return self.main.in_features

    @property
    def out_features(self) -> int:
        return self.main.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [1, T, in]
        return self.main(x) + self.correction(group_means(x, self.groups))


def group_means(x: torch.Tensor, groups: int) -> torch.Tensor:
    """x [1, T, groups·32] -> the mean of each 32-group [1, T, groups], in the form XNNPACK's
    mean lowers (a 4-D view reduced over dims (2, 3); one -1 in the views keeps a symbolic T
    delegable, as RMSNorm in models/decoder.py)."""
    return x.reshape(1, -1, 1, BLOCK).mean(dim=(2, 3), keepdim=True).view(1, -1, groups)


def scale_columns(lin: nn.Module, factor: torch.Tensor) -> None:
    """Multiply a decoder linear's input columns by `factor` [in / 32], one per 32-column
    group, in place. On the grid each group's scale and offset take the factor and the codes
    stay as shipped; a float linear (quantized later) takes it column by column."""
    main = lin.main if isinstance(lin, GroupSumCorrected) else lin
    with torch.no_grad():
        if isinstance(main.weight, IntxUnpackedToInt8Tensor):
            main.weight.scale.mul_(factor[None, :])
        else:
            main.weight.mul_(factor.repeat_interleave(BLOCK)[None, :])
        if isinstance(lin, GroupSumCorrected):
            lin.correction.weight.mul_(factor[None, :])


def scale_rows(lin: nn.Module, factor: torch.Tensor) -> None:
    """Divide a decoder linear's outputs by `factor` [out], in place: every row's scales,
    offsets and bias (on the grid the codes stay as shipped)."""
    main = lin.main if isinstance(lin, GroupSumCorrected) else lin
    with torch.no_grad():
        (main.weight.scale if isinstance(main.weight, IntxUnpackedToInt8Tensor) else main.weight).div_(factor[:, None])
        if main.bias is not None:
            main.bias.div_(factor)
        if isinstance(lin, GroupSumCorrected):
            lin.correction.weight.div_(factor[:, None])


def on_grid_linear(blocks: Blocks, bias: torch.Tensor | None) -> nn.Module:
    """The eager module for one Q4_0 / Q4_1 matrix: `nn.Linear` with 4-bit symmetric groups
    (codes and scales as shipped), plus the group-sum correction where a group has an offset."""
    rows, cols = blocks.codes.shape
    codes, scale, offset = centred(blocks)
    main = nn.Linear(cols, rows, bias=bias is not None)
    main.weight = nn.Parameter(int4.groups(codes, scale), requires_grad=False)
    if bias is not None:
        main.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    if not offset.any():
        return main
    correction = nn.Linear(cols // BLOCK, rows, bias=False)
    with torch.no_grad():
        correction.weight.copy_(torch.from_numpy(offset * BLOCK))
    correction.weight.requires_grad_(False)
    return GroupSumCorrected(main, correction)


def centred(blocks: Blocks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes k in [-8, 7], scales s > 0, offsets o) with w = s·k + o per group, exactly.

    XNNPACK takes positive scales only: Q4_0's d is negative wherever a group's largest
    magnitude is negative (ggml divides by it), and d(q − 8) = |d|(7 − q) + |d| then; an
    all-equal group has d = 0, written as k = 0 and the value in the offset."""
    d, q = blocks.scale, blocks.codes.reshape(*blocks.scale.shape, BLOCK)
    if blocks.kind == "Q4_1":
        k, s, o = q - 8, d.copy(), 8 * d + blocks.minimum
    else:
        neg = d < 0
        k = np.where(neg[..., None], 7 - q, q - 8)
        s, o = np.abs(d), np.where(neg, -d, 0.0)
    zero = s == 0
    k = np.where(zero[..., None], 0, k)
    s = np.where(zero, 1.0, s)  # any positive scale: every code of the group is 0
    return k.reshape(blocks.codes.shape), s.astype(np.float32), o.astype(np.float32)


def grid_embedding(blocks: Blocks) -> nn.Embedding:
    """A Q8_0 table as an int8 embedding with a scale per 32 (quantized_decomposed::embedding_byte)."""
    rows, cols = blocks.codes.shape
    emb = nn.Embedding(rows, cols)
    w = IntxUnpackedToInt8Tensor(
        torch.from_numpy(blocks.codes.astype(np.int8)), torch.from_numpy(blocks.scale),
        torch.zeros(blocks.scale.shape, dtype=torch.int8), torch.int8, (1, BLOCK), torch.float32, None)
    emb.weight = nn.Parameter(w, requires_grad=False)
    return emb


def keep_grid(decoder: nn.Module, weights: GGUFWeights, linear_fallback: str = "fallback",
              embedding_fallback: str = "fallback") -> dict:
    """Replace the decoder's linears and embedding table whose GGUF blocks can stay on their
    grid; returns {module name: what it became} for every module looked at (the others are
    left in fp32, named in the plan by the scheme the caller will quantize them with)."""
    shape = decoder.shape
    if f"blk.0.{LINEARS['q']}.weight" not in weights.names():
        fused = [n for n in weights.names() if n.startswith("blk.0.")]
        raise UserError(f"{weights.path.name} ({weights.architecture}) has no separate q/k/v blocks (layer 0 holds "
                        f"{', '.join(sorted(fused)[:6])}); --quant gguf keeps separate q/k/v/gate/up grids only: "
                        f"use --quant int8 or 8da4w")
    plan: dict[str, str] = {}
    for i, layer in enumerate(decoder.layers):
        for mine, theirs in LINEARS.items():
            name = f"layers.{i}.{mine}"
            blocks = weights.blocks(f"blk.{i}.{theirs}.weight")
            if blocks is not None and mine in ("q", "k") and weights.rope_rows_permuted:  # undo llama.cpp's RoPE row order
                heads = shape.num_heads if mine == "q" else shape.num_kv_heads
                blocks = blocks.permute_rows(unpermute_rope_rows(blocks.codes.shape[0], heads))
            plan[name] = _replace_linear(layer, mine, blocks, weights.kind(f"blk.{i}.{theirs}.weight"), linear_fallback)
    emb = weights.blocks("token_embd.weight")
    if emb is not None and emb.kind == "Q8_0":
        decoder.embed = grid_embedding(emb)
        plan["embed"] = EMBED_ON_GRID
    else:
        plan["embed"] = f"{weights.kind('token_embd.weight')} -> {embedding_fallback}"
    head = head_tensor(weights)
    plan["lm_head"] = _replace_linear(decoder, "lm_head", weights.blocks(head), weights.kind(head), linear_fallback)
    return plan


@functools.lru_cache(maxsize=8)
def linears_on_grid(path: str) -> bool:
    """Whether `--quant gguf` keeps this GGUF's linears as shipped: separate q/k/v blocks, each of
    the first layer's linears Q4_0 or Q4_1 (read from the header; the weights stay on disk). Such
    a file builds with `--quant gguf` by default: exact on its grid, it is closer to the fp32
    model than int8 requantized from it, smaller and faster (docs/causal-lms.md)."""
    names = GGUFWeights(Path(path))
    present = set(names.names())
    wanted = [f"blk.0.{theirs}.weight" for theirs in LINEARS.values()]
    return all(n in present for n in wanted) and all(names.kind(n) in ON_GRID for n in wanted)


def head_tensor(weights: GGUFWeights) -> str:
    """The GGUF tensor the output head is read from (a tied head: the token table)."""
    return "output.weight" if "output.weight" in weights.names() else "token_embd.weight"


def head_on_grid(weights: GGUFWeights) -> bool:
    """Whether `keep_grid` keeps the head on its 4-bit grid (else it is requantized by the fallback)."""
    return weights.kind(head_tensor(weights)) in ON_GRID


def _replace_linear(parent: nn.Module, attr: str, blocks: Blocks | None, kind: str, fallback: str) -> str:
    if blocks is None or blocks.kind not in ON_GRID:
        return f"{kind} -> {fallback}"
    new = on_grid_linear(blocks, getattr(parent, attr).bias)
    setattr(parent, attr, new)
    return f"{kind} -> {CORRECTED if isinstance(new, GroupSumCorrected) else '4-bit groups (exact)'}"
