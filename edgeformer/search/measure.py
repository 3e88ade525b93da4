"""What a search knows of each candidate: the size estimate before any build, the fp32
reference's predictions, and after the build its size, numerics, latency and memory where
the target is, and its prediction on every validation example (each cached by key).

`spec` below is the search's `SearchSpec` (run.py).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import torch

from edgeformer import artifact as art
from edgeformer.errors import UserError
from edgeformer.pipeline.spec import BuildSpec
from edgeformer.search import keys

# what a .pte holds besides weights, per method (program, XNNPACK graphs): 22-34 KiB on tiny models;
# MiniLM's 83 KiB (71 more for its batch method) is what transforms/mixed.PROGRAM_BYTES plans for
# (a ±30% filter here, a budget there)
PROGRAM_BYTES = 32 * 1024


def reference(spec, loaded, work: Path, seq_len: int) -> dict:
    """The unpruned fp32 model's correctness on every validation example, inputs cut at
    `seq_len` tokens (cached; `key` names the model, the examples and the length)."""
    from edgeformer.data import load_data
    from edgeformer.validate.accuracy import Runner

    val = load_data(f"{spec.data}:validation")
    key = keys.key(dict(model=loaded.source["sha256"], texts=keys.digest(val.texts + val.labels), seq_len=seq_len))
    f = work / "reference" / f"{key}.json"
    if f.is_file():
        return json.loads(f.read_text())
    run = Runner(spec.model, seq_len=seq_len)
    pred = run.outputs(val.texts).argmax(-1).tolist()
    gold = [run.labels.index(lab) if lab in run.labels else -1 for lab in val.labels]
    if -1 in gold:
        unknown = sorted(set(val.labels) - set(run.labels))
        raise UserError(f"--data {spec.data}: labels {unknown} are not in the model's head {run.labels}; "
                        "search with data of the model's label set")
    ref = dict(key=key, data=val.name, texts=val.texts, gold=gold, correct=[p == g for p, g in zip(pred, gold, strict=True)])
    f.parent.mkdir(parents=True, exist_ok=True)
    art.write_text_atomic(f, json.dumps(ref))
    return ref


def measure_all(spec, built: list[dict], refs: dict[int, dict], say) -> None:
    """Size, numerics, latency/memory and validation predictions of each built artifact; what
    an earlier run measured is read back, the rest measured now, timed together (`timings`)."""
    from edgeformer.artifact import load_artifact
    from edgeformer.pipeline.stages import runner_memory
    from edgeformer.validate.accuracy import Runner

    def file_of(r: dict) -> Path:
        key = keys.key(dict(artifact=r["key"], device=spec.device, iters=spec.bench_iters, rounds=spec.rounds,
                        reference=refs[r["seq_len"]]["key"]))
        return spec.work_dir() / "measured" / f"{key}.json"

    todo = [r for r in built if not file_of(r).is_file()]
    if todo:
        say(f"measure: {len(todo)} candidate(s), {spec.rounds} round(s)"
            + ("" if spec.device else " beside the unpruned fp32 eager model"))
    arts = [load_artifact(r["artifact"]) for r in todo]
    for r, a, (bench, where) in zip(todo, arts, timings(spec, arts), strict=True):
        ref = refs[r["seq_len"]]
        if bench is not None and where == "host":  # memory as an app runs it, as `build` measures it
            bench.update(runner_memory(a.path, a.manifest.recipe["threads"], bench))
        pred = Runner(r["artifact"]).outputs(ref["texts"]).argmax(-1).tolist()
        m = dict(bytes=a.manifest.stored_bytes, numerics=a.manifest.numerics, bench=bench, where=where,
                 correct=[p == g for p, g in zip(pred, ref["gold"], strict=True)])
        file_of(r).parent.mkdir(parents=True, exist_ok=True)
        art.write_text_atomic(file_of(r), json.dumps(m))
    for r in built:
        m = json.loads(file_of(r).read_text())
        emulated = m["where"].startswith("emulated")  # recorded, never checked nor ranked
        b = {} if emulated else m["bench"] or {}
        r.update(status="measured", bytes=m["bytes"], size_mb=round(m["bytes"] / 2**20, 3), bench=None if emulated else m["bench"],
                 emulated=m["bench"] if emulated else None, where=m["where"],
                 numerics=m["numerics"], latency_ms_p50=b.get("latency_ms_p50"), speedup_vs_eager=b.get("speedup_vs_eager"),
                 peak_rss_mb=b.get("peak_rss_mb"), correct=m["correct"],
                 accuracy=round(sum(m["correct"]) / len(m["correct"]), 4))


def timings(spec, arts: list, host=None) -> Iterator[tuple[dict | None, str]]:
    """(numbers for the budgets or None, where) of each artifact, in order. On --device: the C++
    runner there, one after another, each yielded as it ends (so a device lost mid-search
    keeps what it measured). On this machine when it is the target: `rounds` rounds, each the
    unpruned fp32 eager model, every candidate, the eager model again, each in a fresh
    process; a candidate's speed-up is the median over rounds of eager (mean of the round's
    two, at the candidate's length) over its time: every candidate has the same reference,
    timed in the same minutes. `host(spec, arts)` replaces that last way (causal LMs: lm.py)."""
    from edgeformer.devices import parse_device, run_on_device, runner_args
    from edgeformer.validate.latency import host_fingerprint, measure, measure_eager

    if not arts:
        return
    if spec.device is not None:
        dev = parse_device(spec.device)
        for i, a in enumerate(arts):
            try:
                r = run_on_device(dev, a, runner_args(a, a.manifest.recipe["threads"], None, spec.bench_iters))
            except UserError as e:
                raise UserError(f"{spec.device} stopped answering after {i} of {len(arts)} candidates were measured "
                                f"({e}); they are kept: run the same search again to resume") from None
            yield r, ("emulated: not checked" if dev.kind == "emulated" else dev.kind)
        return
    if not spec.target_info().measure_here:
        yield from [(None, "host")] * len(arts)
        return
    if host is not None:
        yield from host(spec, arts)
        return
    seqs = sorted({a.manifest.recipe["seq_len"] for a in arts})

    threads = arts[0].manifest.recipe["threads"]

    def eager() -> dict[int, float]:
        return {n: measure_eager(spec.model, n, threads, warmup=5, iters=max(10, spec.bench_iters // 2))["latency_ms_p50"]
                for n in seqs}

    runs: list[list[dict]] = [[] for _ in arts]
    ratios: list[list[float]] = [[] for _ in arts]
    for _ in range(spec.rounds):
        before = eager()
        times = [measure(x.path, x.manifest.recipe["threads"], iters=spec.bench_iters) for x in arts]
        after = eager()
        for i, (x, t) in enumerate(zip(arts, times, strict=True)):
            n = x.manifest.recipe["seq_len"]
            runs[i].append(t)
            ratios[i].append((before[n] + after[n]) / 2 / t["latency_ms_p50"])
    for rs, xs in zip(runs, ratios, strict=True):
        best = sorted(rs, key=lambda r: r["latency_ms_p50"])[len(rs) // 2]
        yield dict(measured_on=host_fingerprint(), **best, speedup_vs_eager=round(statistics.median(xs), 3),
                   speedup_rounds=[round(x, 3) for x in xs], eager_reference=f"fp32 eager {spec.model}"), "host"


def estimate_mb(model: str, bspec: BuildSpec) -> float:
    """The .pte's size from parameter counts and the recipe's bytes per weight (no build);
    `--quant mixed` fits its budget, so its estimate is the smallest it can reach."""
    from edgeformer.transforms.mixed import weight_bytes

    rec = bspec.recipe()
    g, quant, emb = rec.group_size, rec.quant, rec.embedding_quant
    if quant == "gguf":  # a GGUF's 4-bit blocks (scale + min per 32): about 8da4w's bytes, group scales included
        quant = "8da4w"
    if quant == "mixed":
        quant, emb = "8da4w", "int4" if emb == "int8" else emb
    linears, table, other = _param_counts(model)
    total = sum(weight_bytes(w, out, quant, g) for w, out in linears) + other * 4 + PROGRAM_BYTES * rec.programs
    if table:
        total += weight_bytes(table[0], table[1], emb, g)
    return total / 2**20


@lru_cache(maxsize=16)
def _param_counts(model: str) -> tuple[tuple[tuple[int, int], ...], tuple[int, int] | tuple[()], int]:
    """((weights, outputs) of each linear, (weights, rows) of the token table, every other parameter)."""
    from edgeformer.models import load_model
    from edgeformer.models.causal import is_causal_lm, load_lm

    linears, table, other = [], (), 0
    net = load_lm(model).decoder if is_causal_lm(model) else load_model(model).encoder
    for mod in net.modules():
        own = sum(p.numel() for p in mod.parameters(recurse=False))
        if isinstance(mod, torch.nn.Linear):
            linears.append((mod.weight.numel(), mod.out_features))
            other += own - mod.weight.numel()
        elif isinstance(mod, torch.nn.Embedding):  # the token table (positions are a plain parameter)
            table = (own, mod.num_embeddings)
        else:
            other += own
    return tuple(linears), table, other
