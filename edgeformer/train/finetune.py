"""Fine-tune an encoder with a sequence-classification head, on CPU, in minutes.

Interrupted runs resume exactly from `.<out>.ckpt/` beside the output (see `train.loop`);
`restart=True` throws the checkpoint away. The output folder appears only when training is
done (written to a temporary sibling, then renamed).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeformer.artifact import commit, staging
from edgeformer.data import training_splits
from edgeformer.errors import UserError
from edgeformer.models import folder_sha256, resolve
from edgeformer.models.hf import read_config
from edgeformer.train import loop
from edgeformer.train.loop import TrainData, TrainOptions, batches, make_tokenizer
from edgeformer.validate.accuracy import accuracy


@torch.no_grad()
def predict_eager(model, tok, texts: list[str], max_len: int, batch_size: int = 64) -> list[int]:
    model.eval()
    preds = []
    pad_id = int(model.config.pad_token_id or 0)
    for ids, mask, _ in batches(tok, texts, batch_size, list(range(len(texts))), pad_id):
        preds += model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
    return preds


@dataclass(frozen=True)
class FinetuneOptions:
    """The settings of a fine-tuning run (all but `restart` and `threads` identify its checkpoint).

    Example:
        >>> FinetuneOptions(epochs=3, lr=3e-4, max_len=64, threads=2)
    """

    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 16
    max_len: int = 128  # truncate training texts to this many tokens
    seed: int = 0
    restart: bool = False  # discard an interrupted run's checkpoint
    threads: int | None = None  # torch's intra-op threads; None: torch's default
    max_steps: int | None = None  # stop early (tests, smoke runs)

    def __post_init__(self):
        self.train_options()  # epochs, lr, batch_size, max_steps check themselves
        if self.max_len < 8:
            raise UserError(f"max_len={self.max_len}: must be >= 8 tokens; e.g. max_len=128")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads={self.threads}: must be >= 1, or None for torch's default")

    def train_options(self) -> TrainOptions:
        return TrainOptions(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
                            max_steps=self.max_steps)


def finetune(
    model: str,
    data: str,
    out: str | Path,
    options: FinetuneOptions = FinetuneOptions(),  # frozen, so sharing the default is safe
    *,
    text_column: str = "text",
    label_column: str = "label",
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Fine-tune `model` on the train split of `data`; save a Hugging Face folder at `out`.

    Returns the report also written to `out/finetune.json` (time, loss, validation accuracy).
    `progress(step, total_steps, loss)` is called after each step.

    Example:
        >>> report = finetune("minilm", "fine-foods", "out/minilm-ff", FinetuneOptions(epochs=1, threads=2))
        >>> report["validation_accuracy"]  # one entry per epoch
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # the "newly initialized head" report is expected here
    o = options
    if o.threads:
        torch.set_num_threads(o.threads)
    name, path = resolve(model)
    read_config(path)
    train, val = training_splits(data, text_column, label_column)
    labels = train.label_names
    if len(labels) < 2:
        raise UserError(f"training data {data!r} has {len(labels)} label(s) {labels}; a classifier needs at least 2")
    unknown = sorted(set(val.labels) - set(labels))
    if unknown:
        raise UserError(f"validation labels {unknown} do not occur in training data; labels: {labels}")
    label2id = {lab: i for i, lab in enumerate(labels)}

    out = Path(out)
    ckpt = out.resolve().parent / f".{out.name}.ckpt"
    config = dict(model=name, model_sha256=folder_sha256(path), data=train.name, labels=labels, epochs=o.epochs,
                  lr=o.lr, batch_size=o.batch_size, max_len=o.max_len, seed=o.seed)
    if o.restart:
        shutil.rmtree(ckpt, ignore_errors=True)

    torch.manual_seed(o.seed)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id,
        dtype=torch.float32, use_safetensors=True)
    tok = make_tokenizer(path / "tokenizer.json", o.max_len)
    y = torch.tensor([label2id[lab] for lab in train.labels])
    val_y = [label2id[v] for v in val.labels]

    def loss_fn(model, ids, mask, idx):
        return torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y[idx])

    log = loop.train(hf, loss_fn, TrainData(tok, train.texts, int(hf.config.pad_token_id or 0)), o.train_options(),
                     ckpt=ckpt, config=config, progress=progress,
                     validate=lambda m: accuracy(predict_eager(m, tok, val.texts, o.max_len), val_y))
    done = log["steps"]
    report = dict(config, train_examples=len(train), validation_examples=len(val), steps=done,
                  seconds=round(log["seconds"], 1), final_loss=log["loss"][-1] if log["loss"] else None,
                  validation_accuracy=log["val_accuracy"], loss_curve=log["loss"])
    with staging(out, marker="config.json") as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        shutil.copy(path / "tokenizer.json", tmp / "tokenizer.json")
        (tmp / "finetune.json").write_text(json.dumps(report, indent=2) + "\n")
        commit(tmp, out)
    shutil.rmtree(ckpt, ignore_errors=True)
    return report
