"""`edgeformer search`: build the candidates of a space, measure each where the target is, gate
on accuracy, and publish the best one that meets every budget.

    filter   a size estimate from the parameter counts drops what cannot fit (no build)
    prune    one pruned model per pruning level (tasks; cached by content hash)
    build    every other candidate's artifact (tasks; cached by content hash)
    measure  one at a time, in this process: latency/memory on the target (host: side by
             side with the unpruned fp32 eager model), size from the file, and every
             validation example's prediction (cached)
    gate     budgets from the target, accuracy by the paired bootstrap bound (gate.py)
    publish  the winner, copied into -o with `manifest.search`; the front in the report

Everything lands in the work folder (`<out>.search/` by default) as it finishes, under keys
that hash what decides it (model content, recipe, toolchain): an interrupted search resumes,
and a widened one reuses every candidate already measured.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch

from edgeformer import artifact as art
from edgeformer.errors import BudgetError, UserError
from edgeformer.pipeline.spec import BuildSpec
from edgeformer.search import front, gate, tasks
from edgeformer.search.space import Candidate, parse_space
from edgeformer.targets import Budgets
from edgeformer.validate.budgets import BudgetCheck, check_budgets

SIZE_FILTER_MARGIN = 1.15  # the estimate is within ~5% of the file; filter only what is clearly over
PROGRAM_BYTES = 32 * 1024  # what a .pte holds besides weights (program, XNNPACK graphs): 22-34 KiB on tiny models


@dataclass(frozen=True)
class SearchSpec:
    """One search. `data` is labelled task data: pruning trains on its train split and every
    candidate is gated on its validation split.

    Example:
        >>> s = SearchSpec("out/minilm-foods", "host", data="fine-foods", space="quant=int8,8da4w prune=0,0.5")
    """

    model: str
    target: str = "host"
    data: str | None = None
    out: str | Path = "out"
    space: str | list[str] | None = None
    max_accuracy_drop: float | None = None  # None: the target's budget
    max_pte_mb: float | None = None  # None: the target's budget
    confidence: float = gate.DEFAULT_CONFIDENCE
    objective: str = "latency"
    device: str | None = None
    executor: str = "local"
    jobs: int = 1
    bench_iters: int = 20
    rounds: int = 3  # of the side-by-side timing on host
    work: str | Path | None = None  # None: <out>.search beside out

    def work_dir(self) -> Path:
        """Absolute: tasks may run in other processes (Ray workers) with another working directory."""
        out = Path(self.out).resolve()
        return Path(self.work).resolve() if self.work else out.parent / f"{out.name}.search"

    def target_info(self):
        return BuildSpec(self.model, target=self.target).target_info()

    def candidates(self) -> list[Candidate]:
        return parse_space(self.space).candidates()

    def build_spec(self, c: Candidate, source: str) -> BuildSpec:
        hard_auto = c.attention is not None and "layers=auto" in c.attention
        return BuildSpec(source, target=self.target, out=self.work_dir() / "staging", **c.build_fields(),
                         data=self.data if hard_auto else None, bench_iters=0, enforce=False)

    def budgets(self) -> Budgets:
        b = BuildSpec(self.model, target=self.target).budgets()
        given = dict(max_accuracy_drop=self.max_accuracy_drop, max_pte_mb=self.max_pte_mb)
        return replace(b, **{k: v for k, v in given.items() if v is not None})

    def validate(self) -> SearchSpec:
        """Every check that needs no model weights; UserError (one line) on the first problem."""
        from edgeformer.data import parse_spec

        if self.objective not in front.OBJECTIVES:
            raise UserError(f"--objective {self.objective!r}: use one of {', '.join(front.OBJECTIVES)}")
        if not 0.5 <= self.confidence < 1:
            raise UserError(f"--confidence {self.confidence}: the gate's one-sided confidence, in [0.5, 1); e.g. 0.9")
        if min(self.jobs, self.bench_iters, self.rounds) < 1:
            raise UserError(f"--jobs {self.jobs}, --bench-iters {self.bench_iters}, --rounds {self.rounds}: each must be "
                            "at least 1")
        if self.max_pte_mb is not None and self.max_pte_mb <= 0:
            raise UserError(f"--max-pte-mb {self.max_pte_mb}: the largest .pte to accept, in MiB; must be > 0")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise UserError(f"--max-accuracy-drop {self.max_accuracy_drop}: accuracy points a candidate may lose; must be >= 0")
        tasks.check_executor(self.executor)  # and that a ray:// address answers
        if self.data is None:
            raise UserError("search gates every candidate on task accuracy: pass --data (fine-foods, or a labelled .csv/.jsonl)")
        if parse_spec(self.data)[1] is not None:
            raise UserError(f"--data {self.data}: give the data set without a split; search prunes on train and gates "
                            "on validation (test stays unseen)")
        art.check_out(Path(self.out))
        probe = BuildSpec(self.model, target=self.target)
        if probe.kind() != "encoder" or probe.target_info().backend != "xnnpack":
            raise UserError(f"search takes encoder classifiers for the XNNPACK targets (host, rpi5, android), whose "
                            f"programs run here; {self.model!r} for {self.target} is a {probe.kind()} build on "
                            f"{probe.target_info().backend}")
        if self.budgets().max_accuracy_drop is None and any(c.prune == "auto" for c in self.candidates()):
            raise UserError("--space prune=auto prunes within the accuracy budget, and there is none: pass "
                            "--max-accuracy-drop")
        if self.device is not None:
            from edgeformer.devices import parse_device

            parse_device(self.device)
        for c in self.candidates():  # a bad combination stops before any work
            try:
                self.build_spec(c, self.model).validate()
            except UserError as e:
                raise UserError(f"candidate {c.describe()}: {e}") from None
        return self


@dataclass
class SearchResult:
    path: Path | None  # the published winner, None when no candidate met every budget
    winner: dict | None
    results: list[dict]
    front: list[dict]
    report: Path  # the work folder's search.md


def search(spec: SearchSpec, say=print) -> SearchResult:
    """Run the search; raises BudgetError (exit 3, naming the closest candidate) when nothing passes."""
    from edgeformer.models import load_model
    from edgeformer.pipeline.encoder import check_seq_len

    spec.validate()
    loaded = load_model(spec.model)
    if loaded.hf.task != "classifier":
        raise UserError(f"{spec.model!r} is an embedder: search gates on a classifier's accuracy; fine-tune one first "
                        f"(edgeformer finetune {spec.model} --data {spec.data} -o DIR)")
    model_sha = loaded.source["sha256"]
    budgets = spec.budgets()
    cands = spec.candidates()
    for c in cands:  # what every build would refuse at load, refused once before any work
        b = spec.build_spec(c, spec.model)
        check_seq_len(loaded, b.recipe().seq_len, b.attention_plan().copy_positions)
    work = spec.work_dir()
    work.mkdir(parents=True, exist_ok=True)
    say(f"search: {len(cands)} candidates ({parse_space(spec.space).describe()}), work folder {work}")
    sources = _prune_levels(spec, cands, model_sha, work, say)
    results = [_plan(spec, c, sources.get(c.prune), model_sha, loaded, budgets) for c in cands]
    _build_all(spec, results, say)
    built = [r for r in results if r["status"] == "built"]
    if not built and not any(r["status"] == "filtered" for r in results):
        raise UserError(f"no candidate could be built: {results[0]['describe']}: {results[0]['reason'].splitlines()[0]}")
    # the fp32 reference at each candidate's own length (the build's accuracy budget compares the same way)
    refs = {n: _reference(spec, loaded, work, n) for n in sorted({r["seq_len"] for r in built})}
    _measure_all(spec, built, refs, say)
    for r in built:
        _gate(spec, r, refs[r["seq_len"]], budgets)
    return _finish(spec, results, work, say)


# ---- the steps ----

def _reference(spec: SearchSpec, loaded, work: Path, seq_len: int) -> dict:
    """The unpruned fp32 model's correctness on every validation example, inputs cut at
    `seq_len` tokens (cached; `key` names the model, the examples and the length)."""
    from edgeformer.data import load_data
    from edgeformer.validate.accuracy import Runner

    val = load_data(f"{spec.data}:validation")
    key = _key(dict(model=loaded.source["sha256"], texts=_digest(val.texts + val.labels), seq_len=seq_len))
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


def _prune_levels(spec: SearchSpec, cands: list[Candidate], model_sha: str, work: Path, say) -> dict[str, str]:
    """{prune value: pruned folder} for every pruning level of the space, pruned once each."""
    from edgeformer.data import BUILTIN, load_data

    levels = {c.prune: c for c in cands if c.pruned}
    budget = spec.budgets().max_accuracy_drop
    todo, out = [], {}
    train = spec.data  # a built-in set is fixed by its name; a file by its content (edited: a new prune)
    if levels and spec.data not in BUILTIN:
        tr, val = load_data(f"{spec.data}:train"), load_data(f"{spec.data}:validation")
        train = _digest(tr.texts + tr.labels + val.texts + val.labels)
    for level, c in sorted(levels.items()):
        opts = c.prune_options(budget)
        folder = work / "pruned" / _key(dict(model=model_sha, data=train, options=opts))
        out[level] = str(folder)
        if not (folder / "config.json").is_file():
            todo.append((level, ("prune", (spec.model, spec.data, str(folder), opts))))
    if todo:
        say(f"prune: {len(todo)} level(s) ({', '.join(lv for lv, _ in todo)}) on {spec.data}:train")
    for i, res in tasks.run_tasks(spec.executor, spec.jobs, [call for _, call in todo]):
        if "error" in res:
            raise UserError(f"prune={todo[i][0]} failed: {res['error']}")
        say(f"  pruned {todo[i][0]}")
    return out


def _plan(spec: SearchSpec, c: Candidate, pruned: str | None, model_sha: str, loaded, budgets: Budgets) -> dict:
    """The candidate's record: its cache key, or why it is filtered out before any build."""
    from edgeformer.models import folder_sha256

    source = pruned or spec.model
    bspec = spec.build_spec(c, source)
    sha = folder_sha256(Path(pruned)) if pruned else model_sha
    d = bspec.to_dict()
    d.pop("model")
    key = _key(dict(source=sha, spec=d, toolchain=_toolchain()))
    r = dict(key=key, candidate=c.to_dict(), describe=c.describe(), source=source, spec=bspec.to_dict(),
             seq_len=bspec.recipe().seq_len, artifact=str(spec.work_dir() / "artifacts" / key), status="planned")
    estimate = estimate_mb(source, bspec)
    r["size_estimate_mb"] = round(estimate, 2)
    if budgets.max_pte_mb is not None and estimate > budgets.max_pte_mb * SIZE_FILTER_MARGIN:
        r.update(status="filtered", reason=f"estimated {estimate:.1f} MiB > max_pte_mb {budgets.max_pte_mb}")
    elif (Path(r["artifact"]) / art.MANIFEST).is_file():
        r["status"] = "built"
    return r


def _build_all(spec: SearchSpec, results: list[dict], say) -> None:
    todo = [r for r in results if r["status"] == "planned"]
    if todo:
        say(f"build: {len(todo)} candidate(s) through {spec.executor} ({spec.jobs} at a time)")
    calls = [("build", (r["spec"], r["artifact"])) for r in todo]
    for i, res in tasks.run_tasks(spec.executor, spec.jobs, calls):
        r = todo[i]
        if "error" in res:
            r.update(status="failed", reason=res["error"])
            say(f"  {r['describe']}: failed ({res['error'].splitlines()[0]})")
        else:
            r["status"] = "built"
            say(f"  built {r['describe']}")


def _measure_all(spec: SearchSpec, built: list[dict], refs: dict[int, dict], say) -> None:
    """Size, numerics, latency/memory and validation predictions of each built artifact; what
    an earlier run measured is read back, the rest measured now, timed together (`_bench`)."""
    from edgeformer.artifact import load_artifact
    from edgeformer.pipeline.stages import runner_memory
    from edgeformer.validate.accuracy import Runner

    def file_of(r: dict) -> Path:
        key = _key(dict(artifact=r["key"], device=spec.device, iters=spec.bench_iters, rounds=spec.rounds,
                        reference=refs[r["seq_len"]]["key"]))
        return spec.work_dir() / "measured" / f"{key}.json"

    todo = [r for r in built if not file_of(r).is_file()]
    if todo:
        say(f"measure: {len(todo)} candidate(s), {spec.rounds} round(s)"
            + ("" if spec.device else " beside the unpruned fp32 eager model"))
    for r, (bench, where) in zip(todo, _bench(spec, [load_artifact(r["artifact"]) for r in todo]), strict=True):
        a, ref = load_artifact(r["artifact"]), refs[r["seq_len"]]
        if bench is not None and where == "host":  # memory as an app runs it, as `build` measures it
            bench.update(runner_memory(a.path, a.manifest.recipe["threads"], bench))
        pred = Runner(r["artifact"]).outputs(ref["texts"]).argmax(-1).tolist()
        m = dict(bytes=a.manifest.pte["bytes"], numerics=a.manifest.numerics, bench=bench, where=where,
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


def _bench(spec: SearchSpec, arts: list) -> Iterator[tuple[dict | None, str]]:
    """(numbers for the budgets or None, where) of each artifact, in order. On --device: the C++
    runner there, one after another, each yielded as it ends (so a device lost mid-search
    keeps what it measured). On this machine when it is the target: `rounds` rounds, each the
    unpruned fp32 eager model, every candidate, the eager model again, each in a fresh
    process; a candidate's speed-up is the median over rounds of eager (mean of the round's
    two, at the candidate's length) over its time: every candidate has the same reference,
    timed in the same minutes."""
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


def _gate(spec: SearchSpec, r: dict, reference: dict, budgets: Budgets) -> None:
    """Every budget of the target, the accuracy one as the paired bootstrap bound."""
    g = gate.paired_drop(reference["correct"], r["correct"], spec.confidence)
    r.update(drop_points=g["drop_points"], drop_upper_points=g["drop_upper_points"], gate=g,
             reference_accuracy=round(sum(reference["correct"]) / len(reference["correct"]), 4))
    checks = check_budgets(budgets, r["bytes"], r["numerics"], r["bench"], r["where"])[:-1]
    limit = budgets.max_accuracy_drop
    checks.append(BudgetCheck("max_accuracy_drop", limit, g["drop_upper_points"], "points",
                              None if limit is None else g["drop_upper_points"] <= limit,
                              f"validation, {spec.confidence:.0%} paired-bootstrap bound"))
    r["checks"] = [c.to_dict() for c in checks]
    r["passed"] = all(c.passed is not False for c in checks)


def _finish(spec: SearchSpec, results: list[dict], work: Path, say) -> SearchResult:
    winner = front.choose(results, spec.objective)
    pareto = front.pareto(results)
    summary = dict(space=parse_space(spec.space).describe(), objective=spec.objective, confidence=spec.confidence,
                   budgets=spec.budgets().to_dict(), data=f"{spec.data}:validation", device=spec.device,
                   candidates=[_summary(r) for r in results], front=[r["key"] for r in pareto],
                   chosen=winner and winner["key"], why=_why(winner, spec, results))
    table = front.table(results, winner)
    report = work / "search.md"
    art.write_text_atomic(work / "search.json", json.dumps(summary, indent=2) + "\n")
    art.write_text_atomic(report, f"# Search\n\n{summary['why']}\n\n![the candidates and their front](search.png)\n\n{table}")
    front.plot(results, winner and winner["key"], work / "search.png")
    say(table)
    if winner is None:
        near = front.closest(results)
        if near is None:
            missed = "no candidate could be built"
        elif near["status"] == "filtered":
            missed = near["reason"]
        else:
            missed = "; ".join(BudgetCheck(**c).describe() for c in near["checks"] if c["passed"] is False)
        raise BudgetError(f"no candidate met every budget of {spec.target}; closest: {near['describe'] if near else '-'} "
                          f"({missed}); the front is in {report}")
    path = _publish(spec, winner, summary)
    say(f"chosen: {winner['describe']} -> {path}")
    return SearchResult(path, winner, results, pareto, report)


def _publish(spec: SearchSpec, winner: dict, summary: dict) -> Path:
    """The winner's artifact, copied into -o, its manifest completed with what the search measured."""
    from edgeformer.manifest import Manifest
    from edgeformer.report_md import write_report

    out = Path(spec.out)
    with art.staging(out) as tmp:
        shutil.copytree(winner["artifact"], tmp, dirs_exist_ok=True)
        m = Manifest.from_json((tmp / art.MANIFEST).read_text())
        measured = winner["bench"] or winner["emulated"]
        if measured is not None:
            m.measurements = measured
            m.devices = [measured] if spec.device else m.devices
        else:
            m.measurements = dict(measured_on=None, reason=f"{spec.target} is not this machine and the search had no "
                                                           "--device: latency and memory not measured on the device")
        # what `build --from` rebuilds: the unpruned model with this candidate's prune and recipe, budgets enforced
        c = Candidate(**winner["candidate"])
        m.spec = replace(spec.build_spec(c, spec.model), prune=c.build_prune(), data=spec.data if c.pruned else None,
                         max_accuracy_drop=spec.budgets().max_accuracy_drop, bench_iters=BuildSpec.bench_iters,
                         enforce=True).to_dict()
        m.budgets = winner["checks"]
        m.accuracy = dict(data=summary["data"], examples=len(winner["correct"]), accuracy=winner["accuracy"],
                          reference_accuracy=winner["reference_accuracy"], accuracy_drop_points=winner["drop_points"],
                          accuracy_drop_bound_points=winner["drop_upper_points"], gate=winner["gate"])
        if winner["candidate"]["prune"] != "0":
            m.model["pruning"] = dict(unpruned=spec.model, level=winner["candidate"]["prune"], folder=winner["source"])
        m.search = summary
        (tmp / art.MANIFEST).write_text(m.to_json())
        write_report(tmp, m)
        art.commit(tmp, out)
    return out.resolve()


def _why(winner: dict | None, spec: SearchSpec, results: list[dict]) -> str:
    n = sum(r["status"] == "measured" for r in results)
    if winner is None:
        return f"No candidate of {len(results)} ({n} measured) met every budget of {spec.target}."
    passed = sum(r.get("passed", False) for r in results)
    return (f"Chosen: {winner['describe']}, {front.OBJECTIVES[spec.objective]}; {passed} of {n} measured candidates "
            f"passed every budget of {spec.target} ({len(results)} in the space). Accuracy is gated on "
            f"{spec.data}:validation by the {spec.confidence:.0%} paired-bootstrap bound of the drop.")


def _summary(r: dict) -> dict:
    keep = ("key", "describe", "candidate", "status", "reason", "size_estimate_mb", "bytes", "size_mb", "latency_ms_p50", "emulated",
            "speedup_vs_eager", "peak_rss_mb", "where", "accuracy", "drop_points", "drop_upper_points", "passed", "checks")
    return {k: r[k] for k in keep if k in r}


# ---- helpers ----

def estimate_mb(model: str, bspec: BuildSpec) -> float:
    """The .pte's size from parameter counts and the recipe's bytes per weight (no build)."""
    rec = bspec.recipe()
    linears, table, other = _param_counts(model)
    per = {"fp32": 4.0, "int8": 1.0, "8da4w": 0.5 + 2.0 / rec.group_size}[rec.quant]
    scales = 0 if rec.quant == "fp32" else 4
    emb = {"fp32": 4.0, "int8": 1.0, "int4": 0.5 + 2.0 / rec.group_size}[rec.embedding_quant]
    total = sum(w * per + out * scales for w, out in linears) + table * emb + other * 4 + PROGRAM_BYTES
    return total / 2**20


@lru_cache(maxsize=16)
def _param_counts(model: str) -> tuple[tuple[tuple[int, int], ...], int, int]:
    """((weights, outputs) of each linear, token-table weights, every other parameter)."""
    from edgeformer.models import load_model

    linears, table, other = [], 0, 0
    for mod in load_model(model).encoder.modules():
        own = sum(p.numel() for p in mod.parameters(recurse=False))
        if isinstance(mod, torch.nn.Linear):
            linears.append((mod.weight.numel(), mod.out_features))
            other += own - mod.weight.numel()
        elif isinstance(mod, torch.nn.Embedding):  # the token table (positions are a plain parameter)
            table += own
        else:
            other += own
    return tuple(linears), table, other


def _key(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _digest(xs: list[str]) -> str:
    return hashlib.sha256("\0".join(xs).encode()).hexdigest()


def _toolchain() -> dict:
    from edgeformer.pipeline.stages import toolchain_versions

    return toolchain_versions()


def result_dicts(results: list[dict]) -> list[dict]:
    """The results without per-example data (for JSON output)."""
    return [_summary(r) for r in results]

