"""Task accuracy of what ships: the `.pte` through the ExecuTorch runtime, or the eager
fp32 model as the baseline, over labelled data.

Classifier: accuracy, macro-F1 and agreement with the fp32 model's predictions.
Embedder (no head): a logistic-regression probe is trained on the train-split embeddings of
the same model and evaluated on the requested split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from edgeformer.data import BUILTIN, Dataset, load_data, parse_spec
from edgeformer.errors import UserError


def accuracy(pred: list[int], gold: list[int]) -> float:
    """Share of `pred` equal to `gold` (also agreement, with gold = another model's predictions)."""
    return sum(p == g for p, g in zip(pred, gold, strict=True)) / max(1, len(gold))


def macro_f1(pred: list[int], gold: list[int], n: int) -> float:
    f1s = []
    for c in range(n):
        tp = sum(p == c and g == c for p, g in zip(pred, gold, strict=True))
        fp = sum(p == c and g != c for p, g in zip(pred, gold, strict=True))
        fn = sum(p != c and g == c for p, g in zip(pred, gold, strict=True))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / n


def train_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-3) -> torch.nn.Linear:
    """Multinomial logistic regression on fixed features (full-batch L-BFGS)."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


EAGER_BATCH = 16  # texts per call of the eager fp32 model


class Runner:
    """Outputs (logits or embeddings) for texts: the artifact's `.pte`, or the eager fp32 model."""

    def __init__(self, target: str, threads: int | None = None, seq_len: int | None = None):
        self.is_artifact = (Path(target) / "manifest.json").is_file()
        if self.is_artifact:
            from edgeformer.artifact import load_artifact
            from edgeformer.predict import Predictor

            art = load_artifact(target)
            self.pred = Predictor(art, threads=threads)
            self.task, self.labels, self.source = self.pred.task, self.pred.labels, art.manifest.model["path"]
            self.seq_len = self.pred.seq_len
        else:
            from edgeformer.models import load_model

            if threads:
                torch.set_num_threads(threads)
            self.loaded = load_model(target)
            self.task, self.labels = self.loaded.hf.task, self.loaded.hf.labels
            # The artifact's length when this is its reference (same truncation), else 128.
            self.source = str(self.loaded.source["path"])
            # (capped at the model's positions: an artifact built with positions=copy may be longer)
            self.seq_len = min(seq_len or 128, self.loaded.encoder.shape.max_positions)
            from edgeformer.tokenize import TextEncoder

            # unpadded: the eager model takes any length, and padding only costs time
            self.text = TextEncoder(self.loaded.hf.tokenizer_file, self.seq_len, self.loaded.pad_id, pad=False)

    @torch.no_grad()
    def outputs(self, texts: list[str]) -> torch.Tensor:
        """[N, ...] in the order of `texts`, sorted by length into batches: the `.pte`'s batch
        method (Predictor.outputs), or the eager model on each batch padded to its longest."""
        if self.is_artifact:
            return self.pred.outputs([self.pred.text.encode(t) for t in texts])
        from edgeformer.batching import run_batched
        from edgeformer.models.hf import reference_forward

        return run_batched([self.text.encode(t) for t in texts], self.loaded.pad_id, EAGER_BATCH,
                           lambda ids, mask: reference_forward(self.loaded.hf, ids, mask), static=False)


def evaluate(target: str, data: str, *, text_column: str = "text", label_column: str = "label",
             threads: int | None = None, reference: bool = True, stage: Callable | None = None) -> dict:
    """Evaluate an artifact folder or a model (bundled name / folder) on `data`.

    `reference=True` also runs the fp32 source model eagerly, for agreement and for the
    accuracy drop of an artifact.
    """
    run = Runner(target, threads)
    ds = load_data(data, text_column, label_column)
    t0 = time.perf_counter()
    out = run.outputs(ds.texts)
    seconds = time.perf_counter() - t0
    result = dict(target=str(target), data=ds.name, examples=len(ds), task=run.task,
                  runtime="executorch" if run.is_artifact else "eager-fp32",
                  throughput_per_s=round(len(ds) / seconds, 1))
    scores, pred = _score(run, ds, out, data, text_column, label_column)
    result.update(scores)
    if reference and run.is_artifact:
        ref = Runner(run.source, threads, seq_len=run.seq_len)
        ref_scores, ref_pred = _score(ref, ds, ref.outputs(ds.texts), data, text_column, label_column)
        result["reference_accuracy"] = ref_scores["accuracy"]
        result["accuracy_drop_points"] = round((ref_scores["accuracy"] - result["accuracy"]) * 100, 2)
        result["agreement"] = round(accuracy(pred, ref_pred), 4)
    return result


def _score(run: Runner, ds: Dataset, out: torch.Tensor, data: str, text_column: str, label_column: str) -> tuple[dict, list[int]]:
    """({accuracy, macro_f1}, predicted class indices)."""
    if run.task == "classifier":
        labels = run.labels
        unknown = sorted(set(ds.labels) - set(labels))
        if unknown:
            raise UserError(f"data labels {unknown} are not in the model's head {labels}; evaluate with data of the same label set")
        gold = [labels.index(lab) for lab in ds.labels]
        pred = out.argmax(-1).tolist()
    else:  # embedder: a probe trained on the train split's embeddings of the same runner
        labels = ds.label_names
        train = load_data(_probe_train_spec(data), text_column, label_column)
        labels = sorted(set(labels) | set(train.label_names))
        probe = train_probe(run.outputs(train.texts), torch.tensor([labels.index(lab) for lab in train.labels]), len(labels))
        gold = [labels.index(lab) for lab in ds.labels]
        with torch.no_grad():
            pred = probe(out).argmax(-1).tolist()
    return dict(accuracy=round(accuracy(pred, gold), 4), macro_f1=round(macro_f1(pred, gold, len(labels)), 4)), pred


def _probe_train_spec(data: str) -> str:
    name, _ = parse_spec(data)
    if name in BUILTIN:
        return f"{name}:train"
    raise UserError("an embedder's probe needs a training split: use a built-in data set (e.g. fine-foods:test)")
