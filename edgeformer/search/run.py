"""`edgeformer search`: build the candidates of a space, measure each where the target is, gate
on accuracy, and publish the best one that meets every budget. Encoder classifiers are gated on accuracy,
causal LMs on perplexity (lm.py measures and gates them; pruned on --prune-data text).

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

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from edgeformer import artifact as art
from edgeformer.errors import BudgetError, UserError
from edgeformer.pipeline.spec import BuildSpec
from edgeformer.search import front, gate, keys, lm, measure, tasks
from edgeformer.search.space import Candidate, Space, parse_space
from edgeformer.targets import Budgets
from edgeformer.validate.budgets import BudgetCheck, check_budgets

SIZE_FILTER_MARGIN = 1.15  # the estimate is within ~5% of the file; filter only what is clearly over


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
    max_perplexity_increase: float | None = None  # causal LMs, percent; None: the target's budget
    max_pte_mb: float | None = None  # None: the target's budget
    confidence: float = gate.DEFAULT_CONFIDENCE
    objective: str = "latency"
    device: str | None = None
    executor: str = "local"
    jobs: int = 1
    bench_iters: int = 20
    rounds: int = 3  # of the side-by-side timing on host
    work: str | Path | None = None  # None: <out>.search beside out
    prune_data: str | None = None  # causal LMs with prune in the space: the text pruning distills on (not `data`)

    def work_dir(self) -> Path:
        """Absolute: tasks may run in other processes (Ray workers) with another working directory."""
        out = Path(self.out).resolve()
        return Path(self.work).resolve() if self.work else out.parent / f"{out.name}.search"

    def target_info(self):
        return BuildSpec(self.model, target=self.target).target_info()

    def kind(self) -> str:
        """"encoder" or "causal-lm" (a search's model is one or the other; servers do not search)."""
        return BuildSpec(self.model, target=self.target).kind()

    def space_of(self) -> Space:
        probe = BuildSpec(self.model, target=self.target)
        return parse_space(self.space, probe.kind(), gguf=probe.gguf_source())

    def candidates(self) -> list[Candidate]:
        return self.space_of().candidates()

    def build_spec(self, c: Candidate, source: str) -> BuildSpec:
        hard_auto = c.attention is not None and "layers=auto" in c.attention
        mixed = c.build_fields().get("quant") == "mixed"  # calibrated on the task data, fit to the size budget
        return BuildSpec(source, target=self.target, out=self.work_dir() / "staging", **c.build_fields(),
                         data=self.data if hard_auto or mixed else None, max_pte_mb=self.max_pte_mb if mixed else None,
                         bench_iters=0, enforce=False)

    def budgets(self) -> Budgets:
        b = BuildSpec(self.model, target=self.target).budgets()
        given = dict(max_accuracy_drop=self.max_accuracy_drop, max_pte_mb=self.max_pte_mb,
                     max_perplexity_increase_pct=self.max_perplexity_increase)
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
        if self.max_perplexity_increase is not None and self.max_perplexity_increase < 0:
            raise UserError(f"--max-perplexity-increase {self.max_perplexity_increase}: percent of perplexity a "
                            "candidate may add; must be >= 0")
        tasks.check_executor(self.executor)  # and that a ray:// address answers
        if self.kind() == "causal-lm":
            return self._validate_lm()
        if self.max_perplexity_increase is not None:
            raise UserError(f"--max-perplexity-increase applies to causal LMs; {self.model!r} is an encoder: "
                            "use --max-accuracy-drop")
        if self.prune_data is not None:
            raise UserError(f"--prune-data {self.prune_data} is for causal LMs; an encoder is pruned on --data's train split")
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
        return self._validate_candidates()

    def _validate_lm(self) -> SearchSpec:
        from edgeformer.data.janeausten import load_text

        if self.max_accuracy_drop is not None:
            raise UserError(f"--max-accuracy-drop applies to classifiers; {self.model!r} is a causal LM, gated on "
                            "perplexity: use --max-perplexity-increase PERCENT")
        if self.data is None:
            raise UserError("search gates every candidate on perplexity: pass --data (janeausten[:BOOK] or a .txt)")
        load_text(self.data)  # a bad spec fails now, not after the builds
        if any(c.pruned for c in self.candidates()):
            if self.prune_data is None:
                raise UserError("--space prune=... on a causal LM distills each pruned model on text: pass --prune-data "
                                "(janeausten:BOOK or a .txt), another text than --data, which gates")
            if load_text(self.prune_data)[0] == load_text(self.data)[0]:
                raise UserError(f"--prune-data {self.prune_data} is also --data: the gate would score the text the "
                                f"pruned models were distilled on; distill on another (e.g. --prune-data janeausten:emma)")
        elif self.prune_data is not None:
            raise UserError(f"--prune-data {self.prune_data}: the space prunes nothing; add prune=R to --space, or drop it")
        art.check_out(Path(self.out))
        probe = BuildSpec(self.model, target=self.target)
        if probe.target_info().backend != "xnnpack" or probe.target_info().lm_budgets is None:
            raise UserError(f"search takes causal LMs for the XNNPACK targets (host, rpi5, android); {self.target} "
                            f"lowers to {probe.target_info().backend}")
        return self._validate_candidates()

    def _validate_candidates(self) -> SearchSpec:
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
    from edgeformer.models import folder_sha256, load_model
    from edgeformer.pipeline.encoder import check_seq_len

    spec.validate()
    if spec.kind() == "causal-lm":
        return _search_lm(spec, say)
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
    say(f"search: {len(cands)} candidates ({spec.space_of().describe()}), work folder {work}")
    sources = _prune_levels(spec, cands, model_sha, work, say)
    shas = {level: folder_sha256(Path(folder)) for level, folder in sources.items()}  # each pruned model hashed once
    results = [_plan(spec, c, sources.get(c.prune), shas.get(c.prune, model_sha), budgets) for c in cands]
    _build_all(spec, results, say)
    built = [r for r in results if r["status"] == "built"]
    if not built and not any(r["status"] == "filtered" for r in results):
        raise UserError(f"no candidate could be built: {results[0]['describe']}: {results[0]['reason'].splitlines()[0]}")
    # the fp32 reference at each candidate's own length (the build's accuracy budget compares the same way)
    refs = {n: measure.reference(spec, loaded, work, n) for n in sorted({r["seq_len"] for r in built})}
    measure.measure_all(spec, built, refs, say)
    for r in built:
        _gate(spec, r, refs[r["seq_len"]], budgets)
    return _finish(spec, results, work, say)


def _search_lm(spec: SearchSpec, say) -> SearchResult:
    """The same steps for a causal LM: pruned on `--prune-data` text, gated on perplexity on `--data`
    (against the unpruned fp32 model) instead of accuracy."""
    from edgeformer.models import folder_sha256

    budgets, cands, work = spec.budgets(), spec.candidates(), spec.work_dir()
    work.mkdir(parents=True, exist_ok=True)
    say(f"search: {len(cands)} candidates ({spec.space_of().describe()}), work folder {work}")
    sha = lm.source_sha(spec.model)
    sources = _prune_lm_levels(spec, cands, sha, work, say)
    shas = {level: folder_sha256(Path(folder)) for level, folder in sources.items()}
    results = [_plan(spec, c, sources.get(c.prune), shas.get(c.prune, sha), budgets) for c in cands]
    _build_all(spec, results, say)
    built = [r for r in results if r["status"] == "built"]
    if not built:
        if not any(r["status"] == "filtered" for r in results):
            raise UserError(f"no candidate could be built: {results[0]['describe']}: {results[0]['reason'].splitlines()[0]}")
        return _finish(spec, results, work, say)
    ref = lm.reference(spec, sha, Path(built[0]["artifact"]) / art.TOKENIZER, lm.segment_of(built), work)
    lm.measure_all(spec, built, ref, say)
    for r in built:
        lm.gate_checks(spec, r, ref, budgets)
    return _finish(spec, results, work, say, ref)


# ---- the steps ----

def _prune_levels(spec: SearchSpec, cands: list[Candidate], model_sha: str, work: Path, say) -> dict[str, str]:
    """{prune value: pruned folder} for every pruning level of the space, pruned once each."""
    from edgeformer.data import BUILTIN, load_data

    levels = {c.prune: c for c in cands if c.pruned}
    budget = spec.budgets().max_accuracy_drop
    todo, out = [], {}
    train = spec.data  # a built-in set is fixed by its name; a file by its content (edited: a new prune)
    if levels and spec.data not in BUILTIN:
        tr, val = load_data(f"{spec.data}:train"), load_data(f"{spec.data}:validation")
        train = keys.digest(tr.texts + tr.labels + val.texts + val.labels)
    for level, c in sorted(levels.items()):
        opts = c.prune_options(budget)
        folder = work / "pruned" / keys.key(dict(model=model_sha, data=train, options=opts))
        out[level] = str(folder)
        if not (folder / "config.json").is_file():
            todo.append((level, ("prune", (spec.model, spec.data, str(folder), opts))))
    _run_prunes(spec, todo, f"on {spec.data}:train", say)
    return out


def _prune_lm_levels(spec: SearchSpec, cands: list[Candidate], model_sha: str, work: Path, say) -> dict[str, str]:
    """{prune value: pruned folder} of a causal LM's pruning levels, each pruned once on --prune-data."""
    from edgeformer.data.janeausten import load_text

    levels = {c.prune: c for c in cands if c.pruned}
    if not levels:
        return {}
    name, text = load_text(spec.prune_data)
    budget = spec.budgets().max_perplexity_increase_pct
    todo, out, text_key = [], {}, keys.digest([text])
    for level, c in sorted(levels.items()):
        opts = c.lm_prune_options(budget)
        folder = work / "pruned" / keys.key(dict(model=model_sha, text=text_key, options=opts))
        out[level] = str(folder)
        if not (folder / "config.json").is_file():
            todo.append((level, ("prune_lm", (spec.model, spec.prune_data, str(folder), opts))))
    _run_prunes(spec, todo, f"distilled on {name}", say)
    return out


def _run_prunes(spec: SearchSpec, todo: list[tuple[str, tuple]], where: str, say) -> None:
    """Run the (level, task call) prunes through the executor; UserError naming the first level that fails."""
    if todo:
        say(f"prune: {len(todo)} level(s) ({', '.join(lv for lv, _ in todo)}) {where}")
    for i, res in tasks.run_tasks(spec.executor, spec.jobs, [call for _, call in todo]):
        if "error" in res:
            raise UserError(f"prune={todo[i][0]} failed: {res['error']}")
        say(f"  pruned {todo[i][0]}")


def _plan(spec: SearchSpec, c: Candidate, pruned: str | None, sha: str, budgets: Budgets) -> dict:
    """The candidate's record (`sha`: its source model's content hash): its cache key, or why it
    is filtered out before any build."""
    source = pruned or spec.model
    bspec = spec.build_spec(c, source)
    d = bspec.to_dict()
    d.pop("model")
    key = keys.key(dict(source=sha, spec=d, toolchain=keys.toolchain()))
    r = dict(key=key, candidate=c.to_dict(), describe=c.describe(), source=source, spec=bspec.to_dict(),
             seq_len=bspec.recipe().seq_len, artifact=str(spec.work_dir() / "artifacts" / key), status="planned")
    estimate = measure.estimate_mb(source, bspec)
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


def _finish(spec: SearchSpec, results: list[dict], work: Path, say, lm_reference: dict | None = None) -> SearchResult:
    """The front, the report and the published winner (`lm_reference`: a causal LM's scored text)."""
    winner = front.choose(results, spec.objective)
    pareto = front.pareto(results)
    data = f"{spec.data}:validation" if spec.kind() == "encoder" else (lm_reference or {}).get("data", spec.data)
    summary = dict(space=spec.space_of().describe(), objective=spec.objective, confidence=spec.confidence,
                   budgets=spec.budgets().to_dict(), data=data, device=spec.device,
                   candidates=[_summary(r) for r in results], front=[r["key"] for r in pareto],
                   chosen=winner and winner["key"], why=_why(winner, spec, results))
    report = work / "search.md"
    art.write_text_atomic(work / "search.json", json.dumps(summary, indent=2) + "\n")
    art.write_text_atomic(report, "# Search\n\n" + front.section(results, summary["chosen"], summary["why"]))
    front.plot(results, summary["chosen"], work / front.CHART)
    say(front.table(results, winner, lm=spec.kind() == "causal-lm"))  # an LM's columns even when none was measured
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
    path = _publish(spec, winner, summary, lm_reference)
    say(f"chosen: {winner['describe']} -> {path}")
    return SearchResult(path, winner, results, pareto, report)


def _publish(spec: SearchSpec, winner: dict, summary: dict, lm_reference: dict | None) -> Path:
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
            if spec.device:
                m.devices = [measured]
        else:
            m.measurements = dict(measured_on=None, reason=f"{spec.target} is not this machine and the search had no "
                                                           "--device: latency and memory not measured on the device")
        # what `build --from` rebuilds: the unpruned model with this candidate's prune and recipe, budgets enforced
        c = Candidate(**winner["candidate"])
        if lm_reference is not None:  # `build --from` scores the same text against the target's budget
            m.spec = replace(spec.build_spec(c, spec.model), eval_data=spec.data, bench_iters=BuildSpec.bench_iters,
                             prune=c.build_prune(), data=spec.prune_data if c.pruned else None,
                             max_perplexity_increase=spec.budgets().max_perplexity_increase_pct, enforce=True).to_dict()
            m.accuracy = lm.accuracy_record(winner, lm_reference)
        else:
            m.spec = replace(spec.build_spec(c, spec.model), prune=c.build_prune(), data=spec.data if c.pruned else None,
                             max_accuracy_drop=spec.budgets().max_accuracy_drop, bench_iters=BuildSpec.bench_iters,
                             enforce=True).to_dict()
            m.accuracy = dict(data=summary["data"], examples=len(winner["correct"]), accuracy=winner["accuracy"],
                              reference_accuracy=winner["reference_accuracy"], accuracy_drop_points=winner["drop_points"],
                              accuracy_drop_bound_points=winner["drop_upper_points"], gate=winner["gate"])
        m.budgets = winner["checks"]
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
    gated = f"Accuracy is gated on {spec.data}:validation by the {spec.confidence:.0%} paired-bootstrap bound of the drop." \
        if spec.kind() == "encoder" else (f"Perplexity is gated on {spec.data} by the {spec.confidence:.0%} paired "
                                          f"block-bootstrap bound of the increase over the fp32 model.")
    objective = front.OBJECTIVES[spec.objective]
    if spec.kind() != "encoder":  # a causal LM's quality is its perplexity
        objective = objective.replace("the most accurate", "the lowest-perplexity")
    return (f"Chosen: {winner['describe']}, {objective}; {passed} of {n} measured candidates "
            f"passed every budget of {spec.target} ({len(results)} in the space). {gated}")


def _summary(r: dict) -> dict:
    keep = ("key", "describe", "candidate", "status", "reason", "size_estimate_mb", "bytes", "size_mb", "latency_ms_p50", "emulated",
            "speedup_vs_eager", "peak_rss_mb", "where", "accuracy", "drop_points", "drop_upper_points", "perplexity",
            "increase_pct", "increase_upper_pct", "decode_tokens_per_s", "passed", "checks")
    return {k: r[k] for k in keep if k in r}


# ---- helpers ----

def result_dicts(results: list[dict]) -> list[dict]:
    """The results without per-example data (for JSON output)."""
    return [_summary(r) for r in results]

