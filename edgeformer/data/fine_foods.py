"""The Amazon fine-food reviews of R's modeldata (`small_fine_foods`), from the Debian
package `r-cran-modeldata` (see `debian.py`). Train 4000 rows, test 1000; columns product,
review, score (great | other).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeformer.data.debian import fetch_objects

PACKAGE = "r-cran-modeldata"
OBJECTS = {"train": "training_data", "test": "testing_data"}
HOWTO = "or point --data at a CSV/JSONL file with text and label columns"


def fetch(cache: Path) -> dict[str, Path]:
    """{split: jsonl path}, downloading and converting on first use."""
    files = {split: cache / f"{split}.jsonl" for split in OBJECTS}
    return fetch_objects(files, OBJECTS, PACKAGE, "modeldata", HOWTO, _jsonl)


def _jsonl(df) -> str:
    columns = zip(df["review"], df["score"], df["product"], strict=True)
    return "".join(json.dumps(dict(text=str(r), label=str(s), product=str(p))) + "\n" for r, s, p in columns)
