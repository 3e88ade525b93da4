"""The Amazon fine-food reviews of R's modeldata (`small_fine_foods`), from the Debian
package `r-cran-modeldata` (see `debian.py`). Train 4000 rows, test 1000; columns product,
review, score (great | other).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgeformer.data.debian import find_lazyload, read_lazyload, unpack_package

PACKAGE = "r-cran-modeldata"
OBJECTS = {"train": "training_data", "test": "testing_data"}
HOWTO = "or point --data at a CSV/JSONL file with text and label columns"


def fetch(cache: Path) -> dict[str, Path]:
    """{split: jsonl path}, downloading and converting on first use."""
    files = {split: cache / f"{split}.jsonl" for split in OBJECTS}
    if all(f.is_file() for f in files.values()):
        return files
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        base = find_lazyload(unpack_package(PACKAGE, Path(tmp), HOWTO), "modeldata", HOWTO)
        for split, obj in OBJECTS.items():
            df = read_lazyload(base, obj)
            columns = zip(df["review"], df["score"], df["product"], strict=True)
            rows = [dict(text=str(r), label=str(s), product=str(p)) for r, s, p in columns]
            part = files[split].with_suffix(".part")
            part.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            part.rename(files[split])
    return files
