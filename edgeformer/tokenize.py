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
        self.specials = self.tok.num_special_tokens_to_add(False)
        self.seq_len = seq_len
        self.pad_id = pad_id
        self.pad = pad

    def encode(self, text: str, truncate: bool = True) -> Encoded:
        if not text.strip():
            raise UserError("input text is empty; pass a non-empty string, a file of lines, or text on stdin")
        # one tokenisation: the words, counted, then cut and wrapped in the special tokens
        # (what `encode` does in one call, which would hide the length before the cut)
        words = self.tok.encode(text, add_special_tokens=False)
        n = len(words.ids) + self.specials
        if n > self.seq_len and not truncate:
            raise UserError(
                f"text has {n} tokens, more than the exported sequence length {self.seq_len}; "
                "shorten it, drop --no-truncate to truncate, or rebuild with a larger --seq-len"
            )
        if n > self.seq_len:
            self.tok.enable_truncation(max_length=self.seq_len)  # post_process cuts the words to fit the specials
            try:
                ids = self.tok.post_process(words).ids
            finally:
                self.tok.no_truncation()
        else:
            ids = self.tok.post_process(words).ids
        pad = self.seq_len - len(ids) if self.pad else 0
        return Encoded(
            input_ids=torch.tensor([ids + [self.pad_id] * pad], dtype=torch.long),
            attention_mask=torch.tensor([[1] * len(ids) + [0] * pad], dtype=torch.long),
            num_tokens=n,
            truncated=n > self.seq_len,
        )


def decode_utf8(raw: bytes, where: str) -> str:
    """`raw` as text; bytes that are not UTF-8 become U+FFFD, and one note on stderr says where
    the first was and how many lines had any (the same in `run`, `eval` and data files)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        text = raw.decode("utf-8", errors="replace")
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1)
        bad = sum(1 for ln in raw.splitlines() if _not_utf8(ln))
        sys.stderr.write(f"note: {where} is not valid UTF-8 (line {line}, byte offset {col}: 0x{raw[e.start]:02x}; {bad} line(s) in all): "
                         "invalid bytes read as U+FFFD; re-encode it as UTF-8 to keep them\n")
        return text


def _not_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def from_argument(text: str, where: str) -> str:
    """A command-line argument as text: Python keeps an argument's non-UTF-8 bytes as lone
    surrogates, which the tokenizer refuses; read them as `decode_utf8` does."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return decode_utf8(text.encode("utf-8", errors="surrogateescape"), where)


def lines_of(text: str) -> list[str]:
    """Lines split at "\\n" (a "\\r" before it dropped) only, as the C++ runner reads them:
    str.splitlines() would also split at form feeds, U+2028 and other characters inside a text."""
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def read_texts(texts: list[str], file: Path | None) -> list[str]:
    """Texts from arguments, a file of lines, or stdin (`-` or nothing given and stdin piped)."""
    if file is not None:
        try:
            raw = decode_utf8(file.read_bytes(), f"input file {file}")
        except (FileNotFoundError, IsADirectoryError):
            raise UserError(f"input file {str(file)!r} does not exist; pass a text file with one input per line") from None
        lines = [ln for ln in lines_of(raw) if ln.strip()]
        if not lines:
            raise UserError(f"input file {str(file)!r} has no non-empty lines")
        return lines
    if texts == ["-"] or (not texts and not sys.stdin.isatty()):
        lines = [ln for ln in lines_of(decode_utf8(_stdin_bytes(), "stdin")) if ln.strip()]
        if not lines:
            raise UserError("stdin had no non-empty lines; pass text as an argument or pipe lines in")
        return lines
    if not texts:
        raise UserError("no input text; pass TEXT, --file FILE, or pipe lines on stdin")
    return [from_argument(t, f"argument {i}") for i, t in enumerate(texts, 1)]


def _stdin_bytes() -> bytes:
    buf = getattr(sys.stdin, "buffer", None)  # None when stdin was replaced by a text stream
    return buf.read() if buf is not None else sys.stdin.read().encode("utf-8", errors="surrogateescape")
