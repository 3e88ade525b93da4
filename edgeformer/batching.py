"""Many texts through one model call: sorted by length, in chunks, each padded to its longest.

An encoder `.pte` built for XNNPACK carries a batch method (`forward_batch`, [B, 1..S]) beside
`forward` ([1, 1..S]): B is static, because XNNPACK's reshapes take one inferred size and the
length already is it. So a chunk of fewer than B texts is filled with copies of its last row
(never an all-padding row: its softmax would divide by zero), and the copies' outputs dropped.
Sorting first keeps the padding small: texts of similar length share a chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from edgeformer.tokenize import Encoded

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids [N, S], mask [N, S]) -> [N, ...]


def by_length(encoded: Sequence[Encoded], size: int) -> list[list[int]]:
    """Indices of `encoded`, longest first, in chunks of at most `size`."""
    order = sorted(range(len(encoded)), key=lambda i: -encoded[i].input_ids.shape[1])
    return [order[i:i + size] for i in range(0, len(order), size)]


def stack(encoded: Sequence[Encoded], pad_id: int, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) [rows, longest]: each text padded to the longest, then the last text repeated
    to `rows` (default: as many rows as texts)."""
    n = max(e.input_ids.shape[1] for e in encoded)
    ids = [F.pad(e.input_ids, (0, n - e.input_ids.shape[1]), value=pad_id) for e in encoded]
    mask = [F.pad(e.attention_mask, (0, n - e.attention_mask.shape[1]), value=0) for e in encoded]
    fill = (rows or len(encoded)) - len(encoded)
    return torch.cat(ids + ids[-1:] * fill), torch.cat(mask + mask[-1:] * fill)


def run_batched(encoded: Sequence[Encoded], pad_id: int, size: int, batch: Forward, *, static: bool = True,
                single: Forward | None = None) -> torch.Tensor:
    """Outputs [N, ...] in the order of `encoded`. `batch` takes exactly `size` rows (a static
    batch method), or with `static=False` any number up to `size` (an eager model). With
    `single`, a last chunk of at most size/2 texts runs one text at a time: cheaper than a
    call on mostly copies."""
    out: list[torch.Tensor | None] = [None] * len(encoded)
    for chunk in by_length(encoded, size):
        part = [encoded[i] for i in chunk]
        if single is not None and len(chunk) <= size // 2:
            rows = [single(e.input_ids, e.attention_mask) for e in part]
        else:
            rows = list(batch(*stack(part, pad_id, size if static else None)))
        for i, r in zip(chunk, rows, strict=False):  # copies filling a static batch are dropped
            out[i] = r.reshape(r.shape[-1])
    return torch.stack(out)
