"""`edgeformer prune`: choose what to remove, cut it out, distill, save a smaller model.

1. choose: by accuracy (`max_accuracy_drop`: the AxFormer-style greedy search on the
   validation split) or by ratio (`heads`, `ffn`, `layers`), see `train.search`;
2. cut: `transforms.prune.apply_plan` removes the weights physically;
3. recover: distillation from the unpruned model (its logits, softened, plus the labels) on
   the train split, with `train.loop` (resumable);
4. save: a Hugging Face folder whose config records the per-layer sizes, plus `prune.json`.

Interruption loses no finished work: the search state after every accepted step, the
teacher's logits and the distillation checkpoints live in `.<out>.ckpt/` beside the output.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from edgeformer.artifact import commit, staging
from edgeformer.data import training_splits
from edgeformer.errors import UserError
from edgeformer.models import folder_sha256, load_model
from edgeformer.models.hf import no_pruning, to_encoder
from edgeformer.train import loop, search
from edgeformer.train.finetune import predict_eager
from edgeformer.train.loop import TrainData, TrainOptions, make_tokenizer
from edgeformer.transforms.prune import Plan, apply_plan
from edgeformer.validate.accuracy import accuracy

Progress = Callable[[str, float, float | None, str], None]  # (stage, done, total, info)


@dataclass(frozen=True)
class PruneOptions:
    """What `prune` removes and how it recovers. Say what to remove: ratios (`heads`, `ffn`,
    `layers`) or `max_accuracy_drop` for the accuracy-driven search, not both.

    Example:
        >>> PruneOptions(heads=0.5, ffn=0.5)  # ratios
        >>> PruneOptions(max_accuracy_drop=1.0, target_flops=0.5)  # the search, stopped at half the FLOPs
    """

    heads: float | None = None  # share of the heads to remove, in [0, 1)
    ffn: float | None = None  # share of the FFN neurons to remove, in [0, 1)
    layers: int = 0  # whole layers to remove
    max_accuracy_drop: float | None = None  # the search's budget, in validation accuracy points
    target_flops: float | None = None  # stop the search at this share of the original FLOPs
    drop_empty_layers: bool = False  # remove a layer whose heads all go, instead of refusing
    distill_epochs: int = 2  # 0 skips distillation
    lr: float = 1e-4  # distillation learning rate
    batch_size: int = 16
    temperature: float = 2.0  # of the softened teacher logits
    alpha: float = 0.5  # weight of the distillation loss against the labels' cross-entropy
    max_len: int = 128  # tokens per text; also the sequence length FLOPs are counted at
    score_examples: int = 256  # training examples the Taylor scores are computed on
    seed: int = 0
    restart: bool = False  # discard an interrupted run's state
    threads: int | None = None  # torch's intra-op threads; None: torch's default

    def __post_init__(self):
        ratio = self.heads is not None or self.ffn is not None or self.layers
        for name, v in (("heads", self.heads), ("ffn", self.ffn)):
            if v is not None and not 0.0 <= v < 1.0:
                raise UserError(f"--{name} {v}: a pruning ratio is the share to remove, in [0, 1); e.g. --{name} 0.5 removes half")
        if self.layers < 0:
            raise UserError(f"--layers {self.layers}: the number of whole layers to remove must be >= 0")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise UserError(f"--max-accuracy-drop {self.max_accuracy_drop}: accuracy points the search may lose; must be >= 0")
        if self.target_flops is not None and not 0 < self.target_flops < 1:
            raise UserError(f"--target-flops {self.target_flops}: the share of the original FLOPs to stop at, in (0, 1); e.g. 0.5")
        if self.distill_epochs < 0:
            raise UserError(f"--distill-epochs {self.distill_epochs}: must be >= 0 (0 skips distillation)")
        if ratio and self.max_accuracy_drop is not None:
            raise UserError("pass either ratios (--heads/--ffn/--layers) or --max-accuracy-drop for the accuracy-driven search, not both")
        if not ratio and self.max_accuracy_drop is None:
            raise UserError("say what to remove: --heads/--ffn ratios and --layers N, or --max-accuracy-drop POINTS "
                            "for the accuracy-driven search")
        if self.target_flops is not None and self.max_accuracy_drop is None:
            raise UserError("--target-flops stops the accuracy-driven search; pass it with --max-accuracy-drop")
        if not 0 < self.lr < 1:
            raise UserError(f"--lr {self.lr}: the distillation learning rate must be in (0, 1); e.g. --lr 1e-4")
        if self.batch_size < 1 or self.score_examples < 1:
            raise UserError(f"batch_size={self.batch_size}, score_examples={self.score_examples}: each must be >= 1")
        if self.max_len < 8:
            raise UserError(f"max_len={self.max_len}: must be >= 8 tokens; e.g. max_len=128")
        if self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise UserError(f"temperature={self.temperature}, alpha={self.alpha}: need temperature > 0 and alpha in [0, 1]; "
                            "e.g. temperature=2.0, alpha=0.5")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: must be >= 1, or None for torch's default")

    @property
    def mode(self) -> str:
        """The mode: "ratio" or "accuracy" (the search)."""
        return "accuracy" if self.max_accuracy_drop is not None else "ratio"

    def ratio_options(self) -> search.RatioOptions:
        return search.RatioOptions(heads=self.heads or 0.0, ffn=self.ffn or 0.0, layers=self.layers,
                                   drop_empty_layers=self.drop_empty_layers)

    def search_options(self) -> search.SearchOptions:
        return search.SearchOptions(max_drop_points=self.max_accuracy_drop, seq_len=self.max_len, target_flops=self.target_flops)

    def distill_options(self) -> TrainOptions:
        return TrainOptions(epochs=self.distill_epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed)


def prune(
    model: str,
    data: str,
    out: str | Path,
    options: PruneOptions,
    *,
    text_column: str = "text",
    label_column: str = "label",
    progress: Progress | None = None,
) -> dict:
    """Prune `model` (a fine-tuned classifier) for `data`; write the smaller model to `out`.

    Returns the report also written to `out/prune.json` (plan, trajectory, FLOPs, accuracy).
    `progress(stage, done, total, info)` follows the search and the distillation.

    Example:
        >>> r = prune("out/minilm-ff", "fine-foods", "out/minilm-ff-pruned", PruneOptions(heads=0.5, ffn=0.5))
        >>> r["flops_per_sequence"]["ratio"]
    """
    o = options
    heads, ffn, layers, max_len, seed = o.heads, o.ffn, o.layers, o.max_len, o.seed
    if o.threads:
        torch.set_num_threads(o.threads)
    torch.manual_seed(seed)
    loaded = load_model(model)
    refusal = no_pruning(loaded.hf.model_type)
    if refusal:
        raise UserError(f"cannot prune {model!r} ({loaded.hf.model_type}): {refusal}")
    if loaded.hf.task != "classifier":
        raise UserError(f"prune needs a classifier (task accuracy decides what goes); {model!r} is an embedder: "
                        f"fine-tune it first with `edgeformer finetune {model} --data {data} -o DIR`")
    train, val = training_splits(data, text_column, label_column)
    labels = loaded.hf.labels
    unknown = sorted(set(train.labels) - set(labels))
    if unknown:
        raise UserError(f"data labels {unknown} are not in the model's head {labels}; prune with the data it was fine-tuned on")
    y = [labels.index(v) for v in train.labels]
    val_y = [labels.index(v) for v in val.labels]
    tok = make_tokenizer(loaded.hf.tokenizer_file, max_len)
    pad = loaded.pad_id
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    pick = order[:o.score_examples]
    score_batches = search.make_batches(tok, [train.texts[i] for i in pick], [y[i] for i in pick], pad, batch_size=32)
    val_batches = search.make_batches(tok, val.texts, val_y, pad, batch_size=50)

    shape = loaded.encoder.shape
    plan = Plan.full(list(shape.num_heads), list(shape.ffn), shape.head_dim, shape.hidden)
    reference, model_type = loaded.hf.reference, loaded.hf.model_type

    def cut(p: Plan) -> torch.nn.Module:
        return apply_plan(copy.deepcopy(reference), model_type, p)

    def build_encoder(p: Plan):
        hf = copy.copy(loaded.hf)
        hf.reference = cut(p)
        return to_encoder(hf)

    out = Path(out)
    ckpt = out.resolve().parent / f".{out.name}.ckpt"
    config = dict(model=loaded.source["name"], model_sha256=folder_sha256(Path(loaded.source["path"])), data=train.name,
                  mode=o.mode, heads=heads, ffn=ffn, layers=layers, max_accuracy_drop=o.max_accuracy_drop,
                  target_flops=o.target_flops, drop_empty_layers=o.drop_empty_layers, max_len=max_len,
                  score_examples=o.score_examples, seed=seed)
    if o.restart:
        shutil.rmtree(ckpt, ignore_errors=True)
    t0 = time.perf_counter()
    state = _load_search(ckpt, config)
    if state and state["done"]:
        plan, trajectory = Plan.from_dict(state["plan"]), state["trajectory"]
    else:
        if progress:
            progress("search", 0, None, "scoring")

        def on_step(p: Plan, traj: list[dict]) -> None:
            _save_search(ckpt, config, p, traj, done=False)
            if progress:
                last = traj[-1]
                progress("search", 1 - last["flops_ratio"], None if o.target_flops is None else 1 - o.target_flops,
                         f"{last['removed']}: FLOPs x{last['flops_ratio']:.2f}, val {last['val_accuracy']:.3f}")

        if o.mode == "accuracy":
            start = Plan.from_dict(state["plan"]) if state else plan
            plan, trajectory = search.search(build_encoder, start, val_batches, score_batches, o.search_options(),
                                             trajectory=state["trajectory"] if state else None, on_step=on_step,
                                             on_candidate=progress and (lambda i, n: progress("round", i, n, "measuring candidates")))
        else:
            plan = search.by_ratio(build_encoder, plan, val_batches, score_batches, o.ratio_options())
            ev = search.Evaluator(build_encoder(plan), val_batches)
            base = search.Evaluator(loaded.encoder, val_batches)  # the unpruned model
            trajectory = [_point(0, "nothing", 1.0, *base.score()),
                          _point(1, f"ratios heads={heads or 0} ffn={ffn or 0} layers={layers}",
                                 plan.flops(max_len) / plan.original_flops(max_len), *ev.score())]
        _save_search(ckpt, config, plan, trajectory, done=True)
    search_seconds = time.perf_counter() - t0

    student = cut(plan)
    distill_log = None
    if o.distill_epochs > 0:
        teacher = _teacher_logits(ckpt, reference, tok, train.texts, pad)
        yt = torch.tensor(y)

        def loss_fn(m, ids, mask, idx):
            s = m(input_ids=ids, attention_mask=mask).logits
            t = o.temperature
            kd = F.kl_div(F.log_softmax(s / t, -1), F.log_softmax(teacher[idx] / t, -1), log_target=True,
                          reduction="batchmean") * t**2
            return o.alpha * kd + (1 - o.alpha) * F.cross_entropy(s, yt[idx])

        def step(done: int, total: int, loss: float) -> None:
            if progress:
                progress("distill", done, total, f"loss {loss:.3f}")

        torch.manual_seed(seed)
        distill_log = loop.train(student, loss_fn, TrainData(tok, train.texts, pad), o.distill_options(),
                                 ckpt=ckpt / "distill", config=dict(config, plan=plan.to_dict()),
                                 validate=lambda m: accuracy(predict_eager(m, tok, val.texts, max_len), val_y), progress=step)

    final_val = distill_log["val_accuracy"][-1] if distill_log else trajectory[-1]["val_accuracy"]
    report = dict(
        config, plan=plan.summary(), trajectory=trajectory,
        flops_per_sequence=dict(seq_len=max_len, before=plan.original_flops(max_len), after=plan.flops(max_len),
                                ratio=round(plan.flops(max_len) / plan.original_flops(max_len), 4)),
        params=dict(before=sum(p.numel() for p in reference.parameters()), after=sum(p.numel() for p in student.parameters())),
        validation_accuracy=dict(unpruned=trajectory[0]["val_accuracy"], pruned=trajectory[-1]["val_accuracy"],
                                 distilled=final_val if distill_log else None),
        distill=None if distill_log is None else dict(epochs=o.distill_epochs, steps=distill_log["steps"],
                                                      seconds=round(distill_log["seconds"], 1),
                                                      val_accuracy_by_epoch=distill_log["val_accuracy"]),
        search_seconds=round(search_seconds, 1),
    )
    with staging(out, marker="config.json") as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        shutil.copy(loaded.hf.tokenizer_file, tmp / "tokenizer.json")
        (tmp / "prune.json").write_text(json.dumps(report, indent=2) + "\n")
        commit(tmp, out)
    shutil.rmtree(ckpt, ignore_errors=True)
    return report


def parse_spec(spec: str) -> dict:
    """`auto` or `heads=R,ffn=R,layers=N` (any subset) -> `PruneOptions` fields."""
    if spec == "auto":
        return {}
    out: dict = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        try:
            if key in ("heads", "ffn"):
                out[key] = float(value)
            elif key == "layers":
                out[key] = int(value)
            else:
                raise ValueError
        except ValueError:
            raise UserError(f"--prune {spec!r}: {part!r} is not understood; use auto, or heads=R,ffn=R,layers=N "
                            "(e.g. heads=0.5,ffn=0.5)") from None
    return out


def prune_for_build(model: str, spec: str, data: str | None, out: Path, max_drop: float) -> tuple[str, dict]:
    """Prune `model` into `<out>.pruned/` for `edgeformer build --prune SPEC`; returns that folder and
    prune's report."""
    kwargs = parse_spec(spec)
    if data is None:
        raise UserError(f"--prune {spec} is data-driven: pass --data (e.g. fine-foods) or --eval-data")
    if not kwargs:
        kwargs = dict(max_accuracy_drop=max_drop)
    folder = out.parent / f"{out.name}.pruned"
    return str(folder), prune(model, data, folder, PruneOptions(**kwargs))


def _point(step: int, removed: str, flops_ratio: float, acc: float, loss: float) -> dict:
    return dict(step=step, removed=removed, flops_ratio=round(flops_ratio, 4), val_accuracy=round(acc, 4), val_loss=round(loss, 4))


@torch.no_grad()
def _teacher_logits(ckpt: Path, reference, tok, texts: list[str], pad: int) -> torch.Tensor:
    """The unpruned model's logits for every training text (cached in the checkpoint)."""
    from safetensors.torch import load_file, save_file

    f = ckpt / "teacher.safetensors"
    if f.is_file():
        return load_file(str(f))["logits"]
    reference.eval()
    logits = torch.zeros(len(texts), reference.config.num_labels)
    for ids, mask, idx in loop.batches(tok, texts, 64, list(range(len(texts))), pad):
        logits[idx] = reference(input_ids=ids, attention_mask=mask).logits
    ckpt.mkdir(parents=True, exist_ok=True)
    save_file({"logits": logits}, str(f.with_suffix(".tmp")))
    f.with_suffix(".tmp").rename(f)
    return logits


def _save_search(ckpt: Path, config: dict, plan: Plan, trajectory: list[dict], done: bool) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    tmp = ckpt / "search.json.tmp"
    tmp.write_text(json.dumps(dict(config=config, plan=plan.to_dict(), trajectory=trajectory, done=done)))
    tmp.rename(ckpt / "search.json")


def _load_search(ckpt: Path, config: dict) -> dict | None:
    f = ckpt / "search.json"
    if not f.is_file():
        return None
    state = json.loads(f.read_text())
    if state["config"] != config:
        raise UserError(f"{ckpt} holds an interrupted prune with other settings; pass --restart to discard it")
    return state
