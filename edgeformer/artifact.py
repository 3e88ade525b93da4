"""The artifact folder: model.pte (+ model.ptd) + tokenizer.json + manifest.json.

Written whole or not at all (a temporary sibling folder, renamed into place), and read
back only after the `.pte`, data file and tokenizer hashes match the manifest. The data
file, where a program has one (`manifest.pte.data`), holds the weights it uses twice, once
(targets/shared_data.py); a runtime loads it with the `.pte`.
"""

from __future__ import annotations

import hashlib
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from edgeformer import stopping
from edgeformer.errors import UserError
from edgeformer.manifest import Manifest

PTE = "model.pte"
DATA = "model.ptd"
TOKENIZER = "tokenizer.json"
MANIFEST = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_out(out: Path, marker: str = MANIFEST) -> None:
    """UserError unless `out` is free to be written: absent, an empty folder, or one of ours
    (a folder holding `marker`). Call it before any work, so a bad -o fails at once.

    Example:
        >>> check_out(Path("out/minilm-host"))  # absent or an earlier artifact: fine
    """
    out = Path(out)
    if not out.exists() or (out / marker).is_file():
        return
    kind = "an edgeformer artifact" if marker == MANIFEST else "a model folder"
    if not out.is_dir():
        what = "a file"
    elif any(out.iterdir()):
        what = f"a non-empty folder without {marker}"
    else:
        return
    raise UserError(f"output {str(out)!r} exists and is not {kind} ({what}); choose another -o or remove it")


@contextmanager
def staging(out: Path, marker: str = MANIFEST):
    """A temporary folder beside `out`; the caller calls `commit(tmp, out)` to publish it.

    An existing `out` is replaced only if it holds `marker` (it is one of ours) or is empty
    (`check_out`). Whatever happens inside, the temporary folder is gone afterwards, and a
    SIGINT/SIGTERM under `stopping.guard` removes it too, even mid native call.
    """
    out = out.resolve()
    check_out(out, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = stopping.make_staging_dir(out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        stopping.unregister(tmp)


def commit(tmp: Path, out: Path) -> None:
    """Replace `out` with `tmp` (an earlier artifact there is replaced whole).

    Refused (`stopping.Stopped`) once a stop was requested; a stop and a publish never interleave.
    """
    out = out.resolve()
    with stopping.publishing(out):
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@dataclass
class Artifact:
    path: Path
    manifest: Manifest

    @property
    def pte_file(self) -> Path:
        """The verified `.pte`; load it by path (the runtime maps it) rather than as bytes."""
        return self.path / self.manifest.pte.get("file", PTE)

    @cached_property
    def pte(self) -> bytes:
        return self.pte_file.read_bytes()

    @property
    def data_file(self) -> Path | None:
        """The verified data file the `.pte` loads with, or None when it has none."""
        data = self.manifest.pte.get("data")
        return self.path / data.get("file", DATA) if data else None

    @property
    def files(self) -> list[str]:
        """The file names a runtime needs, the manifest and tokenizer included (what a device gets)."""
        data = self.data_file
        return [self.pte_file.name, *([data.name] if data else []), MANIFEST, TOKENIZER]

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER

    def check_runs_here(self) -> None:
        """UserError when no runtime here can execute this artifact's backend (Vulkan)."""
        if self.manifest.target.get("backend") == "vulkan":
            raise UserError(f"{self.path} is a Vulkan artifact ({self.manifest.target['alias']}): the pip ExecuTorch runtime "
                            "and the C++ runner have no Vulkan backend; run it on the phone with ExecuTorch's Android AAR "
                            "(runtimes/android/), or build for --target android (XNNPACK) to run it here")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a hidden sibling, then rename it over `path`: readers see old or new, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_artifact(path: Path | str) -> Artifact:
    """Read an artifact and verify its hashes; UserError names what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"artifact {str(path)!r} is not a folder; pass the -o folder of `edgeformer build`")
    mf = path / MANIFEST
    if not mf.is_file():
        raise UserError(f"{str(path)!r} has no {MANIFEST}; it is not an edgeformer artifact (build one with `edgeformer build`)")
    manifest = Manifest.from_json(mf.read_text(encoding="utf-8", errors="replace"), where=str(mf))
    a = Artifact(path=path, manifest=manifest)
    _verify(a.pte_file, manifest.pte)
    if a.data_file is not None:
        _verify(a.data_file, manifest.pte["data"])
    tok = a.tokenizer_file
    if not tok.is_file() or sha256_bytes(tok.read_bytes()) != manifest.tokenizer.get("sha256"):
        raise UserError(f"{tok} is missing or does not match the manifest; rebuild the artifact")
    return a


def _verify(file: Path, entry: dict) -> None:
    """UserError unless `file` is readable and its sha256 is the manifest `entry`'s."""
    try:
        digest = sha256_file(file)
    except OSError as e:
        raise UserError(f"cannot read {file}: {e.strerror}; rebuild the artifact") from None
    if digest != entry.get("sha256"):
        raise UserError(
            f"{file} sha256 {digest[:12]}… does not match the manifest ({str(entry.get('sha256'))[:12]}…): "
            "the file was changed or damaged; rebuild the artifact"
        )
