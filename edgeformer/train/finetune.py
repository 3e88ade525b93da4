"""Fine-tune an encoder with a sequence-classification head, on CPU, in minutes.

Resume story: every `CHECKPOINT_EVERY` steps the model, optimizer and scheduler state go to
`.<out>.ckpt/` beside the output with the position (epoch, step). The data order of each
epoch is a function of (seed, epoch), so a resumed run continues exactly where it stopped.
`restart=True` throws the checkpoint away. The output folder appears only when training is
done (written to a temporary sibling, then renamed).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from edgeformer.artifact import commit, staging
from edgeformer.data import training_splits
from edgeformer.errors import UserError
from edgeformer.models import folder_sha256, resolve
from edgeformer.models.hf import read_config
from edgeformer.validate.accuracy import accuracy

CHECKPOINT_EVERY = 50


def batches(tok, texts: list[str], labels: list[int] | None, batch_size: int, max_len: int, order: list[int], pad_id: int):
    """Dynamically padded batches: (input_ids, attention_mask, labels or None)."""
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        enc = tok.encode_batch([texts[j] for j in idx])
        n = max(len(e.ids) for e in enc)
        ids = torch.tensor([e.ids + [pad_id] * (n - len(e.ids)) for e in enc])
        mask = torch.tensor([[1] * len(e.ids) + [0] * (n - len(e.ids)) for e in enc])
        y = None if labels is None else torch.tensor([labels[j] for j in idx])
        yield ids, mask, y


def make_tokenizer(tokenizer_file: Path, max_len: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


@torch.no_grad()
def predict_eager(model, tok, texts: list[str], max_len: int, batch_size: int = 64) -> list[int]:
    model.eval()
    preds = []
    pad_id = int(model.config.pad_token_id or 0)
    for ids, mask, _ in batches(tok, texts, None, batch_size, max_len, list(range(len(texts))), pad_id):
        preds += model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
    return preds


def finetune(
    model: str,
    data: str,
    out: str | Path,
    *,
    epochs: int = 2,
    lr: float = 1e-4,
    batch_size: int = 16,
    max_len: int = 128,
    seed: int = 0,
    restart: bool = False,
    text_column: str = "text",
    label_column: str = "label",
    threads: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    max_steps: int | None = None,
) -> dict:
    """Fine-tune `model` on the train split of `data`; save a Hugging Face folder at `out`.

    Returns the report also written to `out/finetune.json` (time, loss, validation accuracy).
    `progress(step, total_steps, loss)` is called after each step. `max_steps` stops early
    (tests, smoke runs).
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # the "newly initialized head" report is expected here
    if epochs < 1 or batch_size < 1 or not 0 < lr < 1 or max_len < 8:
        raise UserError(f"need epochs >= 1, batch size >= 1, 0 < lr < 1, max length >= 8; got {epochs}, {batch_size}, {lr}, {max_len}")
    if threads:
        torch.set_num_threads(threads)
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
    config = dict(model=name, model_sha256=folder_sha256(path), data=train.name, labels=labels, epochs=epochs,
                  lr=lr, batch_size=batch_size, max_len=max_len, seed=seed)
    if restart:
        shutil.rmtree(ckpt, ignore_errors=True)
    state = _load_checkpoint(ckpt, config)

    torch.manual_seed(seed)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id,
        dtype=torch.float32, use_safetensors=True)
    tok = make_tokenizer(path / "tokenizer.json", max_len)
    pad_id = int(hf.config.pad_token_id or 0)
    y = [label2id[lab] for lab in train.labels]
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(hf.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup))))
    log = dict(loss=[], val_accuracy=[], seconds=0.0)
    epoch0, step0 = 0, 0
    if state is not None:
        hf.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        epoch0, step0, log = state["epoch"], state["step"], state["log"]

    t0 = time.perf_counter() - log["seconds"]
    done = epoch0 * steps_per_epoch + step0
    for epoch in range(epoch0, epochs):
        order = list(range(len(train)))
        random.Random(seed * 1000 + epoch).shuffle(order)
        hf.train()
        skip = step0 if epoch == epoch0 else 0
        for step, (ids, mask, yb) in enumerate(batches(tok, train.texts, y, batch_size, max_len, order, pad_id)):
            if step < skip:
                continue
            loss = torch.nn.functional.cross_entropy(hf(input_ids=ids, attention_mask=mask).logits, yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            done += 1
            log["loss"].append(round(loss.item(), 5))
            if progress:
                progress(done, total, loss.item())
            if (step + 1) % CHECKPOINT_EVERY == 0:
                log["seconds"] = time.perf_counter() - t0
                _save_checkpoint(ckpt, config, hf, opt, sched, epoch, step + 1, log)
            if max_steps is not None and done >= max_steps:
                break
        acc = accuracy(predict_eager(hf, tok, val.texts, max_len), [label2id[v] for v in val.labels])
        log["val_accuracy"].append(round(acc, 4))
        log["seconds"] = time.perf_counter() - t0
        _save_checkpoint(ckpt, config, hf, opt, sched, epoch + 1, 0, log)
        if max_steps is not None and done >= max_steps:
            break

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


def _save_checkpoint(ckpt: Path, config: dict, hf, opt, sched, epoch: int, step: int, log: dict) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(dict(model=hf.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                    rng=torch.get_rng_state()), tmp / "state.pt")  # rng: dropout masks resume identically
    (tmp / "progress.json").write_text(json.dumps(dict(config=config, epoch=epoch, step=step, log=log)))
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)


def _load_checkpoint(ckpt: Path, config: dict) -> dict | None:
    """The saved state if it belongs to this exact run, else None (a different run starts fresh)."""
    meta = ckpt / "progress.json"
    if not meta.is_file():
        return None
    progress = json.loads(meta.read_text())
    if progress.get("config") != config:
        raise UserError(f"{ckpt} holds an interrupted run with other settings; pass --restart to discard it")
    state = torch.load(ckpt / "state.pt", weights_only=True)  # our own file, still no pickled code
    return dict(state, epoch=progress["epoch"], step=progress["step"], log=progress["log"])
