"""Text -> (input_ids, attention_mask) with the artifact's own tokenizer.json."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from edgeformer.errors import UserError


@dataclass
class Encoded:
    input_ids: torch.Tensor  # [1, S] int64
    attention_mask: torch.Tensor  # [1, S] int64
    num_tokens: int  # before truncation
    truncated: bool


class TextEncoder:
    """Truncates to the longest sequence the `.pte` takes (`seq_len`), and with `pad` pads
    to it (a static-shaped `.pte`); without, each text keeps its own length."""

    def __init__(self, tokenizer_file: Path, seq_len: int, pad_id: int, pad: bool = True):
        self.tok = Tokenizer.from_file(str(tokenizer_file))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.seq_len = seq_len
        self.pad_id = pad_id
        self.pad = pad

    def encode(self, text: str, truncate: bool = True) -> Encoded:
        if not text.strip():
            raise UserError("input text is empty; pass a non-empty string, a file of lines, or text on stdin")
        full = self.tok.encode(text)
        n = len(full.ids)
        if n > self.seq_len:
            if not truncate:
                raise UserError(
                    f"text has {n} tokens, more than the exported sequence length {self.seq_len}; "
                    "shorten it, drop --no-truncate to truncate, or rebuild with a larger --seq-len"
                )
            self.tok.enable_truncation(max_length=self.seq_len)
            try:
                ids = self.tok.encode(text).ids
            finally:
                self.tok.no_truncation()
        else:
            ids = full.ids
        pad = self.seq_len - len(ids) if self.pad else 0
        return Encoded(
            input_ids=torch.tensor([ids + [self.pad_id] * pad], dtype=torch.long),
            attention_mask=torch.tensor([[1] * len(ids) + [0] * pad], dtype=torch.long),
            num_tokens=n,
            truncated=n > self.seq_len,
        )


def read_texts(texts: list[str], file: Path | None) -> list[str]:
    """Texts from arguments, a file of lines, or stdin (`-` or nothing given and stdin piped)."""
    if file is not None:
        try:
            raw = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"input file {str(file)!r} does not exist; pass a text file with one input per line") from None
        except UnicodeDecodeError:
            raise UserError(f"input file {str(file)!r} is not UTF-8 text; re-encode it as UTF-8") from None
        lines = [ln for ln in raw.splitlines() if ln.strip()]
        if not lines:
            raise UserError(f"input file {str(file)!r} has no non-empty lines")
        return lines
    if texts == ["-"] or (not texts and not sys.stdin.isatty()):
        lines = [ln for ln in sys.stdin.read().splitlines() if ln.strip()]
        if not lines:
            raise UserError("stdin had no non-empty lines; pass text as an argument or pipe lines in")
        return lines
    if not texts:
        raise UserError("no input text; pass TEXT, --file FILE, or pipe lines on stdin")
    return texts
