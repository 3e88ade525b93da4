"""manifest.json: everything known about an artifact, versioned, JSON in and out.

Sections are plain JSON objects; `from_json` checks the version and that each required
section is present, and never imports or evaluates anything from the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from edgeformer.errors import UserError

SCHEMA_VERSION = 1


@dataclass
class Manifest:
    model: dict  # name, path, sha256, architecture, task, params, labels
    target: dict  # name, alias, arch, backend
    recipe: dict  # Recipe.to_dict()
    toolchain: dict  # versions of edgeformer, torch, executorch, torchao, transformers
    pte: dict  # file, sha256, bytes; data: the data file's (file, sha256, bytes), where the program has one
    tokenizer: dict  # file, sha256, pad_id
    inputs: list  # [{name, dtype, shape}]
    outputs: list  # [{name, dtype, shape, meaning}]
    numerics: dict  # sqnr_db vs reference, max_abs_err vs exported program, samples
    delegation: dict  # Delegation.to_dict()
    size: dict  # bytes by part of the .pte
    measurements: dict  # latency/memory and where they were measured
    budgets: list  # [BudgetCheck.to_dict()]
    accuracy: dict | None = None  # validate.accuracy.evaluate() (or a causal LM's perplexity) with eval data
    generation: dict | None = None  # causal LMs: cache layout, stop ids, chat template
    devices: list | None = None  # `bench --device` runs: the runner's numbers + where they were measured
    spec: dict | None = None  # pipeline.BuildSpec.to_dict(): what `build --from` rebuilds
    quantization: dict | None = None  # scheme, method, and what each quantized module became
    search: dict | None = None  # `edgeformer search`: the space, what each candidate measured, why this one won
    batch: dict | None = None  # encoders: the batch method (method, size, inputs, delegation, numerics)
    created: str = ""
    schema_version: int = SCHEMA_VERSION
    notes: list = field(default_factory=list)

    @property
    def data_bytes(self) -> int:
        """The data file's bytes (`pte.data`), 0 when the program has none."""
        return (self.pte.get("data") or {}).get("bytes", 0)

    @property
    def stored_bytes(self) -> int:
        """What the device stores: the `.pte` and its data file (where it has one)."""
        return self.pte["bytes"] + self.data_bytes

    @property
    def passed(self) -> bool:
        return all(b["passed"] is not False for b in self.budgets)

    @property
    def any_length(self) -> bool:
        """An encoder whose `.pte` takes any length up to its inputs' shape (`min_shape` given)."""
        return bool(self.inputs) and "min_shape" in self.inputs[0]

    @property
    def batch_size(self) -> int:
        """Texts per call of the batch method; 1 when the `.pte` has none."""
        return self.batch["size"] if self.batch else 1

    def failed_budgets(self) -> list[dict]:
        return [b for b in self.budgets if b["passed"] is False]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "manifest.json") -> Manifest:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{where} is not valid JSON ({e}); rebuild the artifact with `edgeformer build`") from None
        if not isinstance(d, dict):
            raise UserError(f"{where} is not a JSON object; rebuild the artifact with `edgeformer build`")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(
                f"{where} has schema_version {version!r}, this edgeformer reads {SCHEMA_VERSION}; "
                "rebuild the artifact with this version of edgeformer"
            )
        names = {f.name for f in fields(cls)}
        optional = ("created", "notes", "accuracy", "generation", "devices", "spec", "quantization", "search", "batch")
        missing = sorted(n for n in names if n not in d and n not in optional)
        if missing:
            raise UserError(f"{where} lacks {missing}; rebuild the artifact with `edgeformer build`")
        return cls(**{k: v for k, v in d.items() if k in names})
