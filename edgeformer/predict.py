"""Text in, embedding or label out, through an artifact's `.pte` and tokenizer."""

from __future__ import annotations

from edgeformer.artifact import Artifact
from edgeformer.program import open_program
from edgeformer.tokenize import TextEncoder


class Predictor:
    """`Predictor(load_artifact(path))(text)` -> dict with the embedding or the label."""

    def __init__(self, artifact: Artifact, threads: int | None = None):
        m = artifact.manifest
        self.seq_len = m.inputs[0]["shape"][1]
        self.task = m.model["task"]
        self.labels = m.model.get("labels") or []
        self.text = TextEncoder(artifact.tokenizer_file, self.seq_len, m.tokenizer["pad_id"], pad=not m.any_length)
        self.program = open_program(artifact, threads or m.recipe["threads"])

    def __call__(self, text: str, truncate: bool = True) -> dict:
        enc = self.text.encode(text, truncate=truncate)
        out = self.program(enc.input_ids, enc.attention_mask)[0]
        r = dict(text=text, tokens=enc.num_tokens, truncated=enc.truncated)
        if self.task == "classifier":
            probs = out.softmax(-1)
            i = int(probs.argmax())
            r.update(label=self.labels[i] if i < len(self.labels) else str(i), score=float(probs[i]),
                     probs={lab: float(p) for lab, p in zip(self.labels, probs.tolist(), strict=True)})
        else:
            r["embedding"] = (out.double() * 1e6).round().div(1e6).tolist()  # 6 decimals, as one tensor op
        return r
