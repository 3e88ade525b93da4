"""Labelled text: CSV / JSONL files, and built-in real data sets, with fixed splits.

A data spec is `NAME[:SPLIT]` for a built-in set (`fine-foods:test`) or `PATH[:SPLIT]` for a
file. Validation is carved out of train with a fixed seed, so compression decisions made on
validation never see test. For a file, no split means the whole file; `:train` and
`:validation` carve the same seeded split out of it.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from edgeformer.errors import UserError

SPLITS = ("train", "validation", "test")
VALIDATION_FRACTION = 0.125  # fine-foods: 500 of the 4000 training reviews
SPLIT_SEED = 0


@dataclass
class Dataset:
    name: str
    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> list[str]:
        return sorted(set(self.labels))


# Built-in data sets: name -> module with `fetch(cache_dir) -> {"train": path, "test": path}`.
BUILTIN: dict[str, str] = {"fine-foods": "edgeformer.data.fine_foods"}


def cache_dir() -> Path:
    root = os.environ.get("EDGEFORMER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeformer"
    return Path(root)


def load_data(spec: str, text_column: str = "text", label_column: str = "label") -> Dataset:
    """The examples named by `spec` (see module docstring)."""
    name, split = parse_spec(spec)
    if name in BUILTIN:
        files = importlib.import_module(BUILTIN[name]).fetch(cache_dir() / name)
        split = split or "test"
        if split == "test":
            return _renamed(read_file(files["test"], "text", "label"), f"{name}:test")
        return _renamed(carve(read_file(files["train"], "text", "label"), split), f"{name}:{split}")
    data = read_file(Path(name), text_column, label_column)
    if split in ("train", "validation"):
        return _renamed(carve(data, split), f"{name}:{split}")
    if split == "test":
        raise UserError(f"data spec {spec!r}: a file has no test split; pass the test file itself (without :test)")
    return data


def training_splits(spec: str, text_column: str = "text", label_column: str = "label") -> tuple[Dataset, Dataset]:
    """(train, validation) to train on: a built-in set's train split and the validation carved
    from it, or a file carved the same way. Held-out splits are refused."""
    name, split = parse_spec(spec)
    if split in ("test", "validation"):
        raise UserError(f"--data {spec!r}: finetune trains on the train split (validation is carved from it); pass {name!r}")
    return load_data(f"{name}:train", text_column, label_column), load_data(f"{name}:validation", text_column, label_column)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """(name or path, split or None) of a data spec; UserError for an unknown one."""
    if Path(spec).is_file() or ":" not in spec:
        name, split = spec, None
    else:
        name, split = spec.rsplit(":", 1)
        if split not in SPLITS:
            raise UserError(f"data spec {spec!r}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if name not in BUILTIN and not Path(name).is_file():
        raise UserError(f"data {name!r} is neither a file nor a built-in data set; built-in: {', '.join(BUILTIN)}")
    return name, split


def carve(data: Dataset, split: str) -> Dataset:
    """The fixed, seeded train/validation split of `data`."""
    order = list(range(len(data)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_val = max(1, round(len(data) * VALIDATION_FRACTION))
    keep = sorted(order[:n_val] if split == "validation" else order[n_val:])
    return Dataset(data.name, [data.texts[i] for i in keep], [data.labels[i] for i in keep])


def _renamed(d: Dataset, name: str) -> Dataset:
    return Dataset(name, d.texts, d.labels)


def read_file(path: Path, text_column: str, label_column: str) -> Dataset:
    """Read a .csv or .jsonl file; every row needs a non-empty text and label."""
    from edgeformer.tokenize import decode_utf8, lines_of

    raw = decode_utf8(path.read_bytes(), f"data file {path}")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(raw, newline="")))  # quoted fields may hold line breaks
        columns = list(rows[0].keys()) if rows else []
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for i, line in enumerate(lines_of(raw), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{path} line {i} is not valid JSON; each line must be one JSON object") from None
        columns = sorted({k for r in rows for k in r}) if rows else []
    else:
        raise UserError(f"data file {path} must end in .csv or .jsonl; got {path.suffix!r}")
    if not rows:
        raise UserError(f"data file {path} has no rows")
    for col, opt in ((text_column, "--text-column"), (label_column, "--label-column")):
        if col not in columns:
            raise UserError(f"data file {path} has no column {col!r}; columns: {columns}; choose one with {opt}")
    texts, labels = [], []
    for i, r in enumerate(rows, 1):
        t, lab = r.get(text_column), r.get(label_column)
        if t is None or not str(t).strip() or lab is None or not str(lab).strip():
            raise UserError(f"data file {path} row {i} has an empty {text_column!r} or {label_column!r}; fix or remove the row")
        texts.append(str(t))
        labels.append(str(lab))
    return Dataset(str(path), texts, labels)
