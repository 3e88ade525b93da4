"""Jane Austen's six novels (R's janeaustenr, Debian package `r-cran-janeaustenr`) as plain
text, for the perplexity of causal LMs. A spec is `janeausten[:BOOK]`; the default book is
Persuasion, which nothing in edgeformer trains or calibrates on.
"""

from __future__ import annotations

from pathlib import Path

from edgeformer.data import cache_dir
from edgeformer.errors import UserError

PACKAGE = "r-cran-janeaustenr"
BOOKS = ("persuasion", "emma", "mansfieldpark", "northangerabbey", "prideprejudice", "sensesensibility")
HOWTO = "or pass a UTF-8 .txt file to --data"


def fetch(cache: Path) -> dict[str, Path]:
    """{book: .txt path}, downloading and converting on first use."""
    from edgeformer.data.debian import fetch_objects

    files = {b: cache / f"{b}.txt" for b in BOOKS}
    return fetch_objects(files, {b: b for b in BOOKS}, PACKAGE, "janeaustenr", HOWTO,
                         lambda lines: "\n".join(str(line) for line in lines) + "\n")


def load_text(spec: str) -> tuple[str, str]:
    """(name, text) for `janeausten[:BOOK]` or a .txt file."""
    name, _, book = spec.partition(":")
    if name == "janeausten":
        book = book or BOOKS[0]
        if book not in BOOKS:
            raise UserError(f"janeausten has no book {book!r}; use one of: {', '.join(BOOKS)}")
        return f"janeausten:{book}", fetch(cache_dir() / "janeausten")[book].read_text(encoding="utf-8")
    path = Path(spec).expanduser()
    if path.suffix != ".txt" or not path.is_file():
        raise UserError(f"--data {spec!r}: use janeausten[:BOOK] ({', '.join(BOOKS)}) or a UTF-8 .txt file")
    return path.name, path.read_text(encoding="utf-8", errors="replace")
