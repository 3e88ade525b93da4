"""The Amazon fine-food reviews of R's modeldata (`small_fine_foods`), read without R.

Debian packages them as `r-cran-modeldata`. We download the .deb with apt-get (no root
needed for `apt-get download`), unpack it with dpkg-deb, and read two objects from R's
lazy-load database. `Rdata.rdx` is a gzip'd index of (offset, length) per object. Each
object in `Rdata.rdb` is a 4-byte length, a type byte (Z = raw LZMA2, 2 = bzip2,
1 = zlib), then a serialized R object that `rdata` converts to a DataFrame.
Train 4000 rows, test 1000; columns product, review, score (great | other).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
import subprocess
import tempfile
import warnings
import zlib
from pathlib import Path

from edgeformer.errors import UserError

PACKAGE = "r-cran-modeldata"
OBJECTS = {"train": "training_data", "test": "testing_data"}
HOWTO = "or point --data at a CSV/JSONL file with text and label columns"


def fetch(cache: Path) -> dict[str, Path]:
    """{split: jsonl path}, downloading and converting on first use."""
    files = {split: cache / f"{split}.jsonl" for split in OBJECTS}
    if all(f.is_file() for f in files.values()):
        return files
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise UserError(f"fine-foods needs {tool} to fetch the Debian package {PACKAGE} (Debian/Ubuntu only); {HOWTO}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        p = subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if p.returncode or not debs:
            why = (p.stderr.strip().splitlines() or ["no .deb downloaded"])[-1]
            raise UserError(f"could not download {PACKAGE} ({why}); run `apt-get update` or check the network, {HOWTO}")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")], check=True, capture_output=True)
        found = list((Path(tmp) / "x").rglob("modeldata/data/Rdata.rdx"))
        if not found:
            raise UserError(f"{PACKAGE} has no modeldata/data/Rdata.rdx; {HOWTO}")
        for split, obj in OBJECTS.items():
            df = read_lazyload(found[0].with_suffix(""), obj)
            columns = zip(df["review"], df["score"], df["product"], strict=True)
            rows = [dict(text=str(r), label=str(s), product=str(p)) for r, s, p in columns]
            part = files[split].with_suffix(".part")
            part.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            part.rename(files[split])
    return files


def read_lazyload(base: Path, name: str):
    """One object from an R lazy-load database (`base`.rdx + `base`.rdb) as a DataFrame."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata: "Unknown file type: assumed RDS" for raw payloads
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(base.with_suffix(".rdx").read_bytes())))
        offset, length = (int(x) for x in index["variables"][name])
        with base.with_suffix(".rdb").open("rb") as f:
            f.seek(offset)
            blob = f.read(length)
        kind, payload = blob[4:5], blob[5:]
        if kind == b"Z":
            raw = lzma.decompress(payload, format=lzma.FORMAT_RAW,
                                  filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}])
        elif kind == b"2":
            raw = bz2.decompress(payload)
        elif kind == b"1":
            raw = zlib.decompress(payload)
        else:
            raw = zlib.decompress(blob[4:])
        return rdata.conversion.convert(rdata.parser.parse_data(raw, expand_altrep=True))
