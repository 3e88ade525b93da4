"""The training loop that fine-tuning and distillation share: AdamW, warm-up then linear
decay, gradient clipping, and checkpoints that make an interrupted run resume exactly.

Resume story: every `CHECKPOINT_EVERY` steps the model, optimizer, scheduler and RNG state go
to the checkpoint folder with the position (epoch, step). The data order of each epoch is a
function of (seed, epoch), so a resumed run continues exactly where it stopped. A checkpoint
written with other settings is refused (the caller offers --restart).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeformer.errors import UserError

CHECKPOINT_EVERY = 50


def batches(tok, texts: list[str], batch_size: int, order: list[int], pad_id: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """Dynamically padded batches: (input_ids, attention_mask, example indices)."""
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        enc = tok.encode_batch([texts[j] for j in idx])
        n = max(len(e.ids) for e in enc)
        ids = torch.tensor([e.ids + [pad_id] * (n - len(e.ids)) for e in enc])
        mask = torch.tensor([[1] * len(e.ids) + [0] * (n - len(e.ids)) for e in enc])
        yield ids, mask, torch.tensor(idx)


def make_tokenizer(tokenizer_file: Path, max_len: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


@dataclass(frozen=True)
class TrainOptions:
    """How long and how fast `train` runs.

    Example:
        >>> TrainOptions(epochs=3, lr=3e-4, batch_size=8)
        TrainOptions(epochs=3, lr=0.0003, batch_size=8, seed=0, max_steps=None)
    """

    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 16
    seed: int = 0  # the data order of epoch e is a function of (seed, e)
    max_steps: int | None = None  # stop early (tests, smoke runs)

    def __post_init__(self):
        if self.epochs < 1:
            raise UserError(f"epochs={self.epochs}: must be >= 1; e.g. epochs=2")
        if not 0 < self.lr < 1:
            raise UserError(f"lr={self.lr}: the learning rate must be in (0, 1); e.g. lr=1e-4")
        if self.batch_size < 1:
            raise UserError(f"batch_size={self.batch_size}: must be >= 1; e.g. batch_size=16")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"max_steps={self.max_steps}: must be >= 1, or None to run every epoch")


@dataclass(frozen=True)
class TrainData:
    """The texts to train on and how to batch them: the tokenizer (see `make_tokenizer`) and the
    padding id."""

    tok: object
    texts: list[str]
    pad_id: int


def train(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    data: TrainData,
    options: TrainOptions,
    *,
    ckpt: Path,
    config: dict,
    validate: Callable[[torch.nn.Module], float],
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train `model` in place on `data`; `loss_fn(model, ids, mask, idx)` gives a batch's loss.

    `ckpt` is the checkpoint folder; `config` the settings it must have been written with to
    be resumed. Returns the log: loss per step, `validate(model)` after each epoch, seconds, steps.

    Example:
        >>> log = train(model, loss_fn, TrainData(tok, texts, pad_id=0), TrainOptions(epochs=1),
        ...             ckpt=Path(".run.ckpt"), config=dict(run="demo"), validate=lambda m: 1.0)
    """
    tok, texts, pad_id = data.tok, data.texts, data.pad_id
    epochs, lr, batch_size, seed, max_steps = options.epochs, options.lr, options.batch_size, options.seed, options.max_steps
    state = load_checkpoint(ckpt, config)
    steps_per_epoch = math.ceil(len(texts) / batch_size)
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    log = dict(loss=[], val_accuracy=[], seconds=0.0)
    epoch0, step0 = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        epoch0, step0, log = state["epoch"], state["step"], state["log"]

    t0 = time.perf_counter() - log["seconds"]
    done = epoch0 * steps_per_epoch + step0
    for epoch in range(epoch0, epochs):
        order = list(range(len(texts)))
        random.Random(seed * 1000 + epoch).shuffle(order)
        model.train()
        skip = step0 if epoch == epoch0 else 0
        for step, (ids, mask, idx) in enumerate(batches(tok, texts, batch_size, order, pad_id)):
            if step < skip:
                continue
            loss = loss_fn(model, ids, mask, idx)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            done += 1
            log["loss"].append(round(loss.item(), 5))
            if progress:
                progress(done, total, loss.item())
            if (step + 1) % CHECKPOINT_EVERY == 0:
                log["seconds"] = time.perf_counter() - t0
                save_checkpoint(ckpt, config, model, opt, sched, epoch, step + 1, log)
            if max_steps is not None and done >= max_steps:
                break
        model.eval()
        log["val_accuracy"].append(round(validate(model), 4))
        log["seconds"] = time.perf_counter() - t0
        save_checkpoint(ckpt, config, model, opt, sched, epoch + 1, 0, log)
        if max_steps is not None and done >= max_steps:
            break
    model.eval()
    return dict(log, steps=done)


def save_checkpoint(ckpt: Path, config: dict, model, opt, sched, epoch: int, step: int, log: dict) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(dict(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                    rng=torch.get_rng_state()), tmp / "state.pt")  # rng: dropout masks resume identically
    (tmp / "progress.json").write_text(json.dumps(dict(config=config, epoch=epoch, step=step, log=log)))
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)


def load_checkpoint(ckpt: Path, config: dict) -> dict | None:
    """The saved state if it belongs to this exact run, else None (a different run starts fresh)."""
    meta = ckpt / "progress.json"
    if not meta.is_file():
        return None
    progress = json.loads(meta.read_text())
    if progress.get("config") != config:
        raise UserError(f"{ckpt} holds an interrupted run with other settings; pass --restart to discard it")
    state = torch.load(ckpt / "state.pt", weights_only=True)  # our own file, still no pickled code
    return dict(state, epoch=progress["epoch"], step=progress["step"], log=progress["log"])
