"""Text in, embedding or label out, through an artifact's `.pte` and tokenizer."""

from __future__ import annotations

import torch

from edgeformer.artifact import Artifact
from edgeformer.batching import run_batched
from edgeformer.program import open_program
from edgeformer.tokenize import Encoded, TextEncoder


class Predictor:
    """`Predictor(load_artifact(path))(text)` -> dict with the embedding or the label;
    `.batch(texts)` -> one dict per text, through the `.pte`'s batch method when it has one."""

    def __init__(self, artifact: Artifact, threads: int | None = None):
        m = artifact.manifest
        self.artifact = artifact
        self.seq_len = m.inputs[0]["shape"][1]
        self.task = m.model["task"]
        self.labels = m.model.get("labels") or []
        self.threads = threads or m.recipe["threads"]
        self.batch_size = m.batch_size
        self.text = TextEncoder(artifact.tokenizer_file, self.seq_len, m.tokenizer["pad_id"], pad=not m.any_length)
        self.program = open_program(artifact, self.threads)
        self._batch_program = None  # loaded on first use: its packed weights are a second copy in memory

    def __call__(self, text: str, truncate: bool = True) -> dict:
        enc = self.text.encode(text, truncate=truncate)
        return self.result(text, enc, self.program(enc.input_ids, enc.attention_mask)[0])

    def batch(self, texts: list[str], truncate: bool = True) -> list[dict]:
        """One result per text, as `predictor(text)` gives (equal within float rounding)."""
        encoded = [self.text.encode(t, truncate=truncate) for t in texts]
        return [self.result(t, e, o) for t, e, o in zip(texts, encoded, self.outputs(encoded), strict=True)]

    def outputs(self, encoded: list[Encoded]) -> torch.Tensor:
        """The `.pte`'s outputs [N, ...] for encoded texts: sorted by length, `batch_size` per
        call of the batch method (one call per text without one)."""
        if self.batch_size == 1:
            return torch.stack([self.program(e.input_ids, e.attention_mask)[0] for e in encoded])
        if self._batch_program is None:
            self._batch_program = open_program(self.artifact, self.threads, method=self.artifact.manifest.batch["method"])
        return run_batched(encoded, self.text.pad_id, self.batch_size, self._batch_program, single=self.program)

    def result(self, text: str, enc: Encoded, out: torch.Tensor) -> dict:
        r = dict(text=text, tokens=enc.num_tokens, truncated=enc.truncated)
        if self.task == "classifier":
            probs = out.softmax(-1)
            i = int(probs.argmax())
            r.update(label=self.labels[i] if i < len(self.labels) else str(i), score=float(probs[i]),
                     probs={lab: float(p) for lab, p in zip(self.labels, probs.tolist(), strict=True)})
        else:
            r["embedding"] = (out.double() * 1e6).round().div(1e6).tolist()  # 6 decimals, as one tensor op
        return r
