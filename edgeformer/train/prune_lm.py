"""`edgeformer prune` for causal LMs: choose on text what to remove, cut it out, distill, save.

1. text: `--data` (janeausten[:BOOK] or a .txt) is tokenized once and cut into chunks of
   `seq_len` tokens; the last tenth is held out (validation), the rest trains;
2. choose, by ratio: whole layers first, each the one whose skipping raises the held-out loss
   least (measured, again after every removal); then the shares of key-value groups and FFN
   neurons with the lowest first-order Taylor scores (|Σ w·∂L/∂w| over a unit's output
   columns, normalised per layer), in rounds that re-score the cut model, as for encoders;
3. cut: `transforms.prune_lm.cut` (physically, on the Hugging Face model);
4. distill: the unpruned model's next-token distribution is the target (KL divergence, every
   position of every training chunk), AdamW;
5. save: a Hugging Face folder (safetensors; the config records the per-layer sizes) with the
   tokenizer and `prune.json`, staged and renamed into place.

The report gives the held-out perplexity of the unpruned model, of the cut one and of the
distilled one, on the same tokens. Text the model was distilled on says little about what it
lost: measure on another text (`build --eval-data janeausten:persuasion` after pruning on
`janeausten:emma`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from edgeformer.artifact import commit, staging
from edgeformer.errors import UserError
from edgeformer.train.search import remove_lowest
from edgeformer.transforms.prune import Plan
from edgeformer.transforms.prune_lm import check_prunable, cut, full_plan, params

Progress = Callable[[str, float, float | None, str], None]  # (stage, done, total, info)


@dataclass(frozen=True)
class LMPruneOptions:
    """What pruning a causal LM removes (shares of key-value groups and FFN neurons, whole
    layers) and how it recovers.

    Example:
        >>> LMPruneOptions(heads=1 / 3, ffn=0.4, distill_steps=300)
    """

    heads: float = 0.0  # share of the key-value groups (each with its query heads) to remove, in [0, 1)
    ffn: float = 0.0  # share of the FFN neurons to remove, in [0, 1)
    layers: int = 0  # whole layers to remove
    drop_empty_layers: bool = False  # remove a layer whose groups all go, instead of refusing
    max_perplexity_increase: float | None = None  # the search's budget: held-out perplexity increase bound, %
    target_params: float | None = None  # stop the search at this share of the layers' parameters
    distill_steps: int = 200  # optimizer steps of distillation, one chunk each; 0 skips it
    lr: float = 5e-5
    seq_len: int = 256  # tokens per chunk
    score_chunks: int = 8  # training chunks the Taylor scores are computed on
    val_chunks: int = 8  # held-out chunks for the layer choice and the report (at most the last tenth)
    rounds: int = 4  # re-scoring rounds of the group and neuron removal
    seed: int = 0
    threads: int | None = None  # torch's intra-op threads; None: torch's default

    def __post_init__(self):
        for name, v in (("heads", self.heads), ("ffn", self.ffn)):
            if not 0.0 <= v < 1.0:
                raise UserError(f"--{name} {v}: a pruning ratio is the share to remove, in [0, 1); e.g. --{name} 0.25")
        if self.layers < 0:
            raise UserError(f"--layers {self.layers}: the number of whole layers to remove must be >= 0")
        ratio = bool(self.heads or self.ffn or self.layers)
        if self.max_perplexity_increase is not None:
            if ratio:
                raise UserError("give ratios (--heads/--ffn/--layers) or --max-perplexity-increase for the search, not both")
            if not self.max_perplexity_increase > 0:
                raise UserError(f"--max-perplexity-increase {self.max_perplexity_increase}: the held-out perplexity "
                                f"increase the search may reach, in percent, > 0; e.g. 10")
        elif not ratio:
            raise UserError("nothing to prune: give --heads, --ffn and/or --layers (e.g. --heads 0.33 --ffn 0.4), or "
                            "--max-perplexity-increase P for the search")
        if self.target_params is not None and not 0 < self.target_params < 1:
            raise UserError(f"--target-params {self.target_params}: the share of the layers' parameters to stop at, "
                            f"in (0, 1); e.g. 0.7")
        if self.distill_steps < 0:
            raise UserError(f"--distill-steps {self.distill_steps}: must be >= 0 (0 skips distillation)")
        if self.seq_len < 16:
            raise UserError(f"--seq-len {self.seq_len}: chunks of at least 16 tokens; e.g. 256")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: must be >= 1")

    @property
    def mode(self) -> str:
        """ratio, or perplexity (the search within max_perplexity_increase)."""
        return "ratio" if self.max_perplexity_increase is None else "perplexity"


def text_chunks(ids: list[int], seq_len: int, val_chunks: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(training chunks, held-out chunks) of `seq_len` tokens: the held-out ones are the last
    `val_chunks`, at most a tenth of the text (never fewer than one)."""
    chunks = [torch.tensor([ids[p:p + seq_len]]) for p in range(0, len(ids) - seq_len + 1, seq_len)]
    n_val = max(1, min(val_chunks, len(chunks) // 10))
    if len(chunks) < n_val + 2:
        raise UserError(f"the text has {len(ids)} tokens: pruning needs at least {(n_val + 2) * seq_len} "
                        f"({n_val + 2} chunks of --seq-len {seq_len}); give a longer text or a smaller --seq-len")
    return chunks[:-n_val], chunks[-n_val:]


@torch.no_grad()
def token_nll(model, chunks: list[torch.Tensor]) -> list[float]:
    """Next-token negative log-likelihood of every position of `chunks`, in order."""
    model.eval()
    return [x for ids in chunks for x in F.cross_entropy(model(ids).logits[0, :-1].float(), ids[0, 1:],
                                                         reduction="none").tolist()]


def heldout_nll(model, chunks: list[torch.Tensor]) -> float:
    """Mean next-token negative log-likelihood over every position of `chunks`."""
    nll = token_nll(model, chunks)
    return sum(nll) / len(nll)


def taylor_scores(model, chunks: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(per-layer key-value group scores, per-layer neuron scores) of a Hugging Face causal LM."""
    layers = model.model.layers
    groups = [torch.zeros(ly.self_attn.k_proj.out_features // ly.self_attn.head_dim) for ly in layers]
    neurons = [torch.zeros(ly.mlp.down_proj.in_features) for ly in layers]
    model.eval()
    for ids in chunks:
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        with torch.no_grad():
            for i, ly in enumerate(layers):
                o = ly.self_attn.o_proj.weight
                per_col = (o * o.grad).sum(0)  # first-order change of the loss if a column's input is zeroed
                groups[i] += per_col.view(len(groups[i]), -1).sum(1).abs()  # a group's query heads are contiguous
                f = ly.mlp.down_proj.weight
                neurons[i] += (f * f.grad).sum(0).abs()
    model.zero_grad(set_to_none=True)
    return groups, neurons


def skip_losses(model, chunks: list[torch.Tensor]) -> list[float]:
    """Held-out loss with each layer in turn skipped (its output replaced by its input)."""
    out = []
    for layer in model.model.layers:
        def identity(mod, args, kwargs, result):
            x = args[0] if args else kwargs["hidden_states"]
            return x if isinstance(result, torch.Tensor) else (x, *result[1:])

        handle = layer.register_forward_hook(identity, with_kwargs=True)
        try:
            out.append(heldout_nll(model, chunks))
        finally:
            handle.remove()
    return out


def by_ratio(reference, plan: Plan, train: list[torch.Tensor], val: list[torch.Tensor], o: LMPruneOptions) -> Plan:
    """The plan that removes `o.layers` layers, then `o.heads` of the groups and `o.ffn` of the neurons."""
    def build(p: Plan):
        return cut(copy.deepcopy(reference), p)

    n = plan.original["layers"]
    if o.layers >= n:
        raise UserError(f"--layers {o.layers}: the model has {n} layers; remove at most {n - 1}")
    for _ in range(o.layers):
        losses = skip_losses(build(plan), val)
        kept = plan.kept_layers
        plan = plan.without(kept[min(range(len(kept)), key=losses.__getitem__)], whole=True)
    kept = plan.kept_layers
    have = sum(len(plan.layers[i].heads) for i in kept)
    want_groups = round(o.heads * have)
    want_ffn = round(o.ffn * sum(len(plan.layers[i].neurons) for i in kept))
    if want_groups > have - len(kept) and not o.drop_empty_layers:
        most = (have - len(kept)) / have
        raise UserError(f"--heads {o.heads} would leave some layers without a key-value group ({want_groups} of {have} "
                        f"groups, {len(kept)} layers): at most {math.floor(most * 100) / 100} keeps one per layer; "
                        f"pass --drop-empty-layers to remove such layers instead")
    done_g = done_f = 0
    chunks = train[:o.score_chunks]
    for r in range(1, o.rounds + 1):
        gs, ns = taylor_scores(build(plan), chunks)
        kept = plan.kept_layers
        take_g, take_f = round(want_groups * r / o.rounds) - done_g, round(want_ffn * r / o.rounds) - done_f
        plan = remove_lowest(plan, kept, gs, "heads", take_g, o.drop_empty_layers)
        plan = remove_lowest(plan, kept, ns, "neurons", take_f, False)
        done_g, done_f = done_g + take_g, done_f + take_f
    if not plan.kept_layers:
        raise UserError(f"--heads {o.heads} removes every group of every layer; lower it")
    return plan


SEARCH_STEP = 0.05  # share of the original groups (neurons) one search step removes


def by_budget(reference, plan: Plan, train: list[torch.Tensor], val: list[torch.Tensor], base: list[float],
              o: LMPruneOptions, progress: Progress | None = None) -> tuple[Plan, list[dict]]:
    """Greedy search: each step scores the cut model, then tries removing the lowest-scoring
    `SEARCH_STEP` of the groups, and of the neurons; it keeps the try whose held-out perplexity
    increase bound (paired block bootstrap over the per-token NLL, `search.gate`) is lower, while
    that bound stays within `o.max_perplexity_increase` (half steps are tried once before it
    stops). The bound is of the cut model before distillation, which only lowers it.
    `base` is the reference's per-token NLL of `val`. Returns the plan and the trajectory."""
    from edgeformer.search.gate import paired_increase

    config = reference.config
    total = params(plan, config)
    o_groups, o_neurons = sum(plan.original["heads"]), sum(plan.original["ffn"])
    trajectory: list[dict] = []
    step_share = SEARCH_STEP
    while step_share >= SEARCH_STEP / 2:
        if o.target_params is not None and params(plan, config) <= o.target_params * total:
            break
        model = cut(copy.deepcopy(reference), plan)
        gs, ns = taylor_scores(model, train[:o.score_chunks])
        kept = plan.kept_layers
        tries = [("groups", remove_lowest(plan, kept, gs, "heads", max(1, round(step_share * o_groups)), False)),
                 ("neurons", remove_lowest(plan, kept, ns, "neurons", max(1, round(step_share * o_neurons)), False))]
        results = []
        for kind, p in tries:
            if p.sizes() == plan.sizes():
                continue  # nothing left of that kind to remove (each layer keeps one group)
            gate = paired_increase(base, token_nll(cut(copy.deepcopy(reference), p), val))
            results.append((gate["increase_upper_pct"], kind, p, gate))
        ok = sorted((r for r in results if r[0] <= o.max_perplexity_increase), key=lambda r: r[0])
        if not ok:
            step_share /= 2
            continue
        bound, kind, plan, gate = ok[0]
        trajectory.append(dict(step=len(trajectory) + 1, removed=kind, params_ratio=round(params(plan, config) / total, 4),
                               increase_pct=gate["increase_pct"], increase_upper_pct=bound))
        if progress:
            progress("search", 1 - trajectory[-1]["params_ratio"], None,
                     f"x{trajectory[-1]['params_ratio']:.2f} params, +{bound:.1f}% bound")
    return plan, trajectory


def distill(student, teacher, train: list[torch.Tensor], o: LMPruneOptions, progress: Progress | None = None) -> list[float]:
    """`o.distill_steps` AdamW steps on KL(teacher ‖ student) of the next-token distributions; the loss per step."""
    rng = random.Random(o.seed)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=o.lr, weight_decay=0.0)
    teacher.eval()
    student.train()
    losses = []
    for step in range(o.distill_steps):
        ids = train[rng.randrange(len(train))]
        with torch.no_grad():
            target = F.log_softmax(teacher(ids).logits.float(), -1)
        log_p = F.log_softmax(student(ids).logits.float(), -1)
        loss = F.kl_div(log_p, target, log_target=True, reduction="none").sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        losses.append(round(loss.item(), 4))
        if progress:
            progress("distill", step + 1, o.distill_steps, f"KL {loss:.3f}")
    student.eval()
    return losses


def prune_lm(model: str, data: str, out: str | Path, options: LMPruneOptions, progress: Progress | None = None) -> dict:
    """Prune causal LM `model` (bundled name, folder or .gguf) by ratio on `data` text; write it to `out`.

    Returns the report also written to `out/prune.json`.

    Example:
        >>> r = prune_lm("smollm2-135m", "janeausten:emma", "out/smollm2-pruned", LMPruneOptions(ffn=0.3))
        >>> r["params"]["ratio"], r["heldout"]["distilled_perplexity"]
    """
    import transformers as tf

    from edgeformer.data.janeausten import load_text
    from edgeformer.models.causal import architecture, load_reference, resolve_lm

    o = options
    if o.threads:
        torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    name, folder, gguf = resolve_lm(model)
    arch = architecture(folder, gguf)
    data_name, text = load_text(data)
    out = Path(out)
    t0 = time.perf_counter()
    if progress:
        progress("load", 0, None, name)
    reference = load_reference(folder, gguf)
    check_prunable(reference.config, name)
    tok = tf.AutoTokenizer.from_pretrained(folder, **({"gguf_file": gguf} if gguf else {}))
    train, val = text_chunks(tok(text)["input_ids"], o.seq_len, o.val_chunks)
    plan = full_plan(reference.config)
    if progress:
        progress("choose", 0, None, "scoring layers, groups and neurons")
    base_nll = token_nll(reference, val)  # the unpruned model's, for the search's gate and the report
    trajectory = None
    if o.mode == "ratio":
        plan = by_ratio(reference, plan, train, val, o)
    else:
        plan, trajectory = by_budget(reference, plan, train, val, base_nll, o, progress)
        if not trajectory:
            raise UserError(f"--max-perplexity-increase {o.max_perplexity_increase}: removing even "
                            f"{SEARCH_STEP / 2:.1%} of the groups or neurons raises the held-out perplexity bound past it; "
                            f"allow more, or prune by ratio")
    student = cut(copy.deepcopy(reference), plan)
    base, cut_nll = sum(base_nll) / len(base_nll), heldout_nll(student, val)
    losses = distill(student, reference, train, o, progress) if o.distill_steps else []
    final = heldout_nll(student, val)
    total = dict(before=sum(p.numel() for p in reference.parameters()), after=sum(p.numel() for p in student.parameters()))
    layers = dict(before=params(full_plan(reference.config), reference.config), after=params(plan, reference.config))
    report = dict(
        model=name, architecture=arch, data=data_name, mode=o.mode, options=asdict(o), plan=plan.summary(),
        kept=plan.to_dict(), unit="kv_group",
        params=dict(**total, ratio=round(total["after"] / total["before"], 4),
                    layer_ratio=round(layers["after"] / layers["before"], 4)),
        heldout=dict(tokens=sum(c.shape[1] - 1 for c in val), perplexity=round(math.exp(base), 4),
                     cut_perplexity=round(math.exp(cut_nll), 4), distilled_perplexity=round(math.exp(final), 4),
                     increase_pct=round((math.exp(final - base) - 1) * 100, 2)),
        distill=dict(steps=o.distill_steps, tokens=o.distill_steps * o.seq_len, first_kl=losses[:1], last_kl=losses[-5:]),
        seconds=round(time.perf_counter() - t0, 1),
        **({} if trajectory is None else dict(search_trajectory=trajectory)),
    )
    if getattr(student, "hf_quantizer", None) is not None:  # a GGUF, dequantized to fp32 at load: saved as fp32
        student.hf_quantizer = None
        if hasattr(student.config, "quantization_config"):
            del student.config.quantization_config
    with staging(out, marker="config.json") as tmp:
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' "Writing model shards" bar
            student.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        (tmp / "prune.json").write_text(json.dumps(report, indent=1))
        commit(tmp, out)
    return report


def options_from_spec(spec: str, max_increase: float = 5.0) -> LMPruneOptions:
    """`build --prune heads=R,ffn=R,layers=N[,steps=S]` -> the options (S: distillation steps);
    `auto`: the search within `max_increase` percent of held-out perplexity."""
    from edgeformer.train.prune_run import parse_spec

    if spec == "auto":
        return LMPruneOptions(max_perplexity_increase=max_increase)
    parts = spec.split(",")
    steps = [p.partition("=")[2] for p in parts if p.startswith("steps=")]
    kwargs = parse_spec(",".join(p for p in parts if not p.startswith("steps=")) or "auto")
    if steps:
        if not steps[-1].isdigit():
            raise UserError(f"--prune {spec!r}: steps={steps[-1]} is not a whole number of distillation steps; e.g. steps=300")
        kwargs["distill_steps"] = int(steps[-1])
    return LMPruneOptions(**kwargs)


def prune_for_build(model: str, spec: str, data: str, out: Path, max_increase: float) -> tuple[str, dict]:
    """Prune causal LM `model` into `<out>.pruned/` for `edgeformer build --prune SPEC` (`auto`: within
    `max_increase` percent); (that folder, the report)."""
    folder = out.parent / f"{out.name}.pruned"
    return str(folder), prune_lm(model, data, folder, options_from_spec(spec, max_increase))
