"""GGUF weights as they were shipped: the codes, scales and minimums of each block, not the
fp32 that transformers' GGUF loader makes of them.

`transforms/gguf_grid.py` puts these codes into the quantized linears and embedding table
unchanged, so a Q4_0 / Q4_1 / Q8_0 model runs on the grid it was quantized to. Blocks are
read with the `gguf` package's memory-mapped reader; nothing is unpickled.

Block layouts (ggml's `ggml-common.h`), 32 weights per block along a row (in_features):
    Q4_0  fp16 d, 16 bytes of nibbles         w = d·(q − 8),  q in 0..15
    Q4_1  fp16 d, fp16 m, 16 bytes of nibbles w = d·q + m,    q in 0..15
    Q8_0  fp16 d, 32 int8                     w = d·q,        q in −128..127
A byte j of the nibbles holds element j (low nibble) and element j + 16 (high nibble).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeformer.errors import UserError

BLOCK = 32  # weights per block, every type read here
# the block types read here -> bytes per block
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
# what other GGUF types would need (said when one is met)
NOT_READ = "K-quants (Q4_K, Q5_K, Q6_K: 256-weight super-blocks with 6-bit sub-scales), Q5_0/Q5_1 (5-bit codes)"


@dataclass(frozen=True)
class Blocks:
    """One GGUF matrix [rows, cols] as codes and per-block parameters (rows = output features).

    `codes` are int16 [rows, cols], `scale` and `minimum` fp32 [rows, cols // 32]; `minimum` is
    None for the symmetric types. `zero` is the code that means 0 for the symmetric types
    (8 for Q4_0, 0 for Q8_0)."""

    kind: str
    codes: np.ndarray
    scale: np.ndarray
    minimum: np.ndarray | None

    @property
    def zero(self) -> int:
        return {"Q4_0": 8, "Q4_1": 0, "Q8_0": 0}[self.kind]

    def dequantize(self) -> np.ndarray:
        """fp32 [rows, cols], exactly as ggml (and transformers' loader) compute it."""
        rows, cols = self.codes.shape
        q = self.codes.reshape(rows, -1, BLOCK).astype(np.float32)
        w = (q - self.zero) * self.scale[..., None]
        if self.minimum is not None:
            w = w + self.minimum[..., None]
        return w.reshape(rows, cols)

    def permute_rows(self, order: np.ndarray) -> Blocks:
        """The same blocks with rows reordered (a row permutation keeps every block whole)."""
        m = None if self.minimum is None else self.minimum[order]
        return Blocks(self.kind, self.codes[order], self.scale[order], m)


def decode(kind: str, raw: np.ndarray, rows: int) -> Blocks:
    """Blocks from a GGUF tensor's raw bytes (uint8, [rows, bytes per row])."""
    if kind not in BLOCK_BYTES:
        raise UserError(f"GGUF block type {kind} is not read by edgeformer; read: {', '.join(BLOCK_BYTES)}, "
                        f"and F32/F16 as floats; {NOT_READ} would need their own decoder")
    b = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, BLOCK_BYTES[kind])
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)[:, 0]
    if kind == "Q8_0":
        codes = b[:, 2:].copy().view(np.int8).astype(np.int16)
        m = None
    else:
        nib = b[:, 4:] if kind == "Q4_1" else b[:, 2:]
        codes = np.concatenate([nib & 0xF, nib >> 4], axis=1).astype(np.int16)
        m = b[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0].reshape(rows, -1) if kind == "Q4_1" else None
    return Blocks(kind, codes.reshape(rows, -1), d.reshape(rows, -1), m)


class GGUFWeights:
    """The tensors of a GGUF file, by GGUF name (`blk.3.attn_q.weight`, `token_embd.weight`)."""

    def __init__(self, path: Path):
        from gguf import GGUFReader

        self.path = Path(path)
        try:
            self._reader = GGUFReader(str(self.path))
        except (ValueError, OSError) as e:
            raise UserError(f"{self.path} is not a readable GGUF file ({e}); pass a GGUF model file") from None
        self._tensors = {t.name: t for t in self._reader.tensors}
        field = self._reader.fields.get("general.architecture")
        self.architecture = bytes(field.parts[field.data[0]]).decode() if field is not None else "unknown"

    @property
    def rope_rows_permuted(self) -> bool:
        """Whether llama.cpp's converter permuted the q/k rows (it does for its "llama" architecture,
        Mistral's files included; not for Qwen2/Qwen3/Phi-3, as transformers' GGUF loader knows)."""
        return self.architecture == "llama"

    def names(self) -> list[str]:
        return list(self._tensors)

    def kind(self, name: str) -> str:
        return self._tensor(name).tensor_type.name

    def blocks(self, name: str) -> Blocks | None:
        """The tensor's blocks, or None for a float tensor (F32/F16: nothing to keep)."""
        t = self._tensor(name)
        kind = t.tensor_type.name
        if kind in ("F32", "F16", "BF16"):
            return None
        return decode(kind, np.asarray(t.data), int(t.data.shape[0]))

    def _tensor(self, name: str):
        if name not in self._tensors:
            raise KeyError(f"{self.path.name} has no tensor {name!r}")
        return self._tensors[name]


def unpermute_rope_rows(rows: int, heads: int) -> np.ndarray:
    """The row order that undoes llama.cpp's convert-time permutation of q/k for its RoPE
    layout (transformers' `_reverse_permute_weights` does the same on fp32 rows)."""
    dim = rows // heads // 2
    return np.arange(rows).reshape(heads, dim, 2).swapaxes(2, 1).reshape(rows)
