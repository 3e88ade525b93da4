"""Real data from Debian packages, read without R: download, unpack, read R lazy-load objects.

`apt-get download` needs no root; `dpkg-deb -x` unpacks. R packages keep their data in a
lazy-load database: `Rdata.rdx` is a gzip'd index of (offset, length) per object; each
object in `Rdata.rdb` is a 4-byte length, a type byte (Z = raw LZMA2, 2 = bzip2,
1 = zlib), then a serialized R object that `rdata` converts (DataFrame, string vector...).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import subprocess
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

from edgeformer.errors import UserError


def fetch_objects(files: dict[str, Path], objects: dict[str, str], package: str, r_package: str, howto: str,
                  to_text: Callable[[object], str]) -> dict[str, Path]:
    """`files` ({key: path}), each holding `to_text` of the R object `objects[key]` of R package
    `r_package` from Debian package `package`: downloaded and converted on first use, each file
    written whole (a `.part` renamed into place)."""
    if all(f.is_file() for f in files.values()):
        return files
    cache = next(iter(files.values())).parent
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        base = find_lazyload(unpack_package(package, Path(tmp), howto), r_package, howto)
        for key, obj in objects.items():
            part = Path(tmp) / f"{key}.part"  # this process's own: two fetching at once never share a file
            part.write_text(to_text(read_lazyload(base, obj)), encoding="utf-8")
            os.replace(part, files[key])
    return files


def unpack_package(package: str, into: Path, howto: str) -> Path:
    """Download the Debian package `package` and unpack it under `into`; the unpacked root."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise UserError(f"this data set needs {tool} to fetch the Debian package {package} (Debian/Ubuntu only); {howto}")
    p = subprocess.run(["apt-get", "download", package], cwd=into, capture_output=True, text=True)
    debs = list(into.glob("*.deb"))
    if p.returncode or not debs:
        why = (p.stderr.strip().splitlines() or ["no .deb downloaded"])[-1]
        raise UserError(f"could not download {package} ({why}); run `apt-get update` or check the network, {howto}")
    root = into / "x"
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True, capture_output=True)
    return root


def find_lazyload(root: Path, r_package: str, howto: str) -> Path:
    """The lazy-load base (…/data/Rdata, without suffix) of R package `r_package` under `root`."""
    found = list(root.rglob(f"{r_package}/data/Rdata.rdx"))
    if not found:
        raise UserError(f"the Debian package has no {r_package}/data/Rdata.rdx; {howto}")
    return found[0].with_suffix("")


def read_lazyload(base: Path, name: str):
    """One object from an R lazy-load database (`base`.rdx + `base`.rdb), converted by rdata."""
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
