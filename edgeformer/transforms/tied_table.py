"""A tied token table stored once: the embedding gathers the int8 output head's own rows.

A causal LM whose output head is its token table (SmolLM2, Qwen2/3 small, Gemma) would keep
the table twice in the program: as the int8 head XNNPACK multiplies with (packed in the
delegate's data) and as the table the embedding gather reads (the program's constants),
2 x 28 MB of SmolLM2-135M's. Here, once the head is int8 with a scale per row (per output
token), the embedding becomes a gather of those very rows and scales
(`quantized_decomposed::embedding_byte` on the same int8 tensor), and the lowering writes a
tensor that appears twice with equal bytes once, in the artifact's data file
(`targets/xnnpack.py`, `artifact.DATA`).

Where the head was smoothed (`transforms/smooth.py`: its columns multiplied by s, the final
norm divided by s), its rows are the table times s: the gathered rows are divided by s again
(one [hidden] multiply after the gather), so the model is the same reparametrisation.
"""

from __future__ import annotations

import torch
from torch import nn
from torchao.quantization import IntxUnpackedToInt8Tensor

SHARED = "int8 rows of the output head (one table, stored once)"


class SharedTableEmbedding(nn.Module):
    """`table[ids] / smoothing`: the gather of a head's int8 rows, undoing its column scales."""

    def __init__(self, table: nn.Parameter, smoothing: torch.Tensor | None):
        super().__init__()
        self.table = nn.Embedding(table.shape[0], table.shape[1])
        self.table.weight = table
        self.register_buffer("inv", None if smoothing is None else (1.0 / smoothing).float())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.table(ids)
        return x if self.inv is None else x * self.inv


def per_row_int8(w: torch.Tensor) -> bool:
    """Whether `w` is a torchao int8 weight with one scale per row and no zero points (what
    XNNPACK's int8 linear and the byte gather both take as is)."""
    return (isinstance(w, IntxUnpackedToInt8Tensor) and w.target_dtype == torch.int8 and w.dim() == 2
            and tuple(w.block_size) == (1, w.shape[1]) and not bool(w.zero_point.ne(0).any()))


def share_table(decoder: nn.Module) -> bool:
    """Replace a tied decoder's embedding with a gather of its int8 head's rows, in place;
    False (nothing done) when the head is not tied or not int8 per row. `decoder.head_smoothing`
    (set by `smooth_head`) is the column scale to undo."""
    head = decoder.lm_head.weight
    if not decoder.shape.tie_embeddings or not per_row_int8(head):
        return False
    # a parameter of its own (the head keeps its own): export lifts both, the lowering finds them equal
    table = IntxUnpackedToInt8Tensor(head.qdata, head.scale, head.zero_point, torch.int8, (1, head.shape[1]),
                                     torch.float32, None)
    decoder.embed = SharedTableEmbedding(nn.Parameter(table, requires_grad=False), getattr(decoder, "head_smoothing", None))
    return True
