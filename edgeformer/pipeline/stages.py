"""The stages every build shares, the state they pass along, and the loop that runs a list.

A flavour (encoder.py, lm.py, server.py) is a list of `Stage`s; each stage is a function of
one `BuildState` that reads what earlier stages left there and adds its own part. `run`
walks the list inside a staging folder (published only by the `publish` stage), reports each
stage's time, and with `spec.dump` writes the state after every stage.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from edgeformer import artifact as art
from edgeformer.errors import BudgetError, UserError
from edgeformer.manifest import Manifest
from edgeformer.pipeline.spec import BuildSpec
from edgeformer.recipe import Recipe
from edgeformer.report_md import write_report
from edgeformer.targets import Budgets, Target, backend_for
from edgeformer.targets.backend import Backend, Lowered
from edgeformer.validate.budgets import BudgetCheck
from edgeformer.validate.latency import host_fingerprint

Report = Callable[[str, float], None]  # (stage label, seconds) when a stage ends


@dataclass
class BuildState:
    """What the stages know so far. Flavour-specific parts live in `extra`."""

    spec: BuildSpec
    target: Target
    recipe: Recipe
    budgets: Budgets
    backend: Backend
    staged: Path  # the staging folder; `publish` renames it to spec.out
    source: str = ""  # the model the build loads (spec.model, or the pruned folder)
    loaded: Any = None  # models.LoadedModel | models.causal.LoadedLM
    module: Any = None  # the eager nn.Module being transformed, then exported
    reference: Any = None  # what the .pte's numerics are compared with
    example: tuple = ()  # export's example inputs
    exported: Any = None  # torch.export.ExportedProgram
    methods: dict = field(default_factory=dict)  # more entry points: name -> ExportedProgram
    lowered: Lowered | None = None
    manifest: Manifest | None = None
    measured: dict | None = None  # the numbers latency/memory budgets are checked against
    where: str = "host"
    accuracy: dict | None = None
    checks: list[BudgetCheck] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    path: Path | None = None  # where it was published


@dataclass
class BuildResult:
    path: Path | None  # None when a budget failed and the artifact was not kept
    manifest: Manifest
    exported: Any  # the exported (transformed) program
    lowered: Any  # the final program

    @property
    def passed(self) -> bool:
        return self.manifest.passed


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[BuildState], None]
    when: Callable[[BuildState], bool] | None = None  # skipped when this says False
    label: Callable[[BuildState], str] | None = None  # what the progress line says (default: name)


def run(stages: list[Stage], spec: BuildSpec, report: Report | None = None) -> BuildState:
    """Run `stages` for `spec` in a staging folder beside `spec.out`; returns the final state."""
    tgt = spec.target_info()
    with art.staging(Path(spec.out)) as tmp:
        state = BuildState(spec=spec, target=tgt, recipe=spec.recipe(), budgets=spec.budgets(),
                           backend=backend_for(tgt, spec.fallback), staged=tmp, source=spec.model)
        for i, stage in enumerate(stages, 1):
            if stage.when is not None and not stage.when(state):
                continue
            t0 = time.perf_counter()
            label = stage.label(state) if stage.label else stage.name
            stage.run(state)
            if report is not None:
                report(label, time.perf_counter() - t0)
            if spec.dump is not None:
                dump_state(state, Path(spec.dump) / f"{i:02d}-{stage.name}.txt")
    return state


# ---- shared stages ----

def export(state: BuildState) -> None:
    """torch.export of the transformed module at the example inputs (with the flavour's
    `dynamic_shapes`, when it set them), and at each extra method's example (`methods`:
    name -> example inputs, e.g. an encoder's batch method) with the same dynamic dims."""
    import torch

    shapes = state.extra.get("dynamic_shapes")
    with torch.no_grad():
        state.exported = torch.export.export(state.module, state.example, dynamic_shapes=shapes)
        state.methods = {name: torch.export.export(state.module, example, dynamic_shapes=shapes)
                         for name, example in state.extra.get("methods", {}).items()}


def lower(state: BuildState) -> None:
    """The target's backend: the serialized program, written into the staging folder."""
    state.lowered = state.backend.lower(state.exported, state.recipe, state.methods or None)
    (state.staged / pte_name(state)).write_bytes(state.lowered.pte)
    if state.lowered.data is not None:
        (state.staged / art.DATA).write_bytes(state.lowered.data)


def budgets(state: BuildState) -> None:
    from edgeformer.validate.budgets import check_budgets

    m = state.manifest
    state.checks = check_budgets(state.budgets, state.lowered.size, m.numerics, state.measured, state.where,
                                 state.accuracy, lm=bool(m.generation))
    m.budgets = [c.to_dict() for c in state.checks]


def publish(state: BuildState) -> None:
    """Write the manifest and report, then rename the staging folder into place; with
    `enforce` and a missed budget raise BudgetError and keep nothing."""
    from edgeformer.resources import runtime_dir

    tmp, m = state.staged, state.manifest
    (tmp / art.MANIFEST).write_text(m.to_json())
    write_report(tmp, m)
    if state.target.alias.startswith("android"):  # the app's side of the bundle
        shutil.copytree(runtime_dir("android"), tmp / "android")
    result = BuildResult(None, m, state.exported, state.lowered.program)
    if state.spec.enforce and not m.passed:
        failed = [c.describe() for c in state.checks if c.passed is False]
        raise BudgetError(f"target {state.target.alias}: {len(failed)} budget(s) failed, artifact not written "
                          f"(--no-enforce keeps it): " + "; ".join(failed), result)
    art.commit(tmp, Path(state.spec.out))
    result.path = state.path = Path(state.spec.out).resolve()
    state.extra["result"] = result


# ---- measuring where the target is ----

def measure(state: BuildState, here: Callable[[], dict], eager: Callable[[], dict] | None = None) -> None:
    """Latency and memory for the budgets: on `spec.device` with the C++ runner when one is
    given, else `here()` (the .pte in a fresh process) when the target is this machine. With
    `eager` (host's relative budget), the fp32 eager model is timed in alternating processes
    beside the .pte and the median per-round speed-up is recorded. Recorded in
    `manifest.measurements` with where it ran, or why it was not."""
    spec, m = state.spec, state.manifest
    if spec.device is not None and spec.bench_iters > 0:
        from edgeformer.devices import parse_device, run_on_device, runner_args

        dev = parse_device(spec.device)
        a = art.load_artifact(state.staged)
        r = run_on_device(dev, a, runner_args(a, state.recipe.threads, None, spec.bench_iters))
        m.measurements, m.devices = r, [r]
        state.measured, state.where = (None, "emulated: not checked") if dev.kind == "emulated" else (r, dev.kind)
        return
    if not (state.target.measure_here and spec.bench_iters > 0):
        why = "measurement skipped (bench_iters=0)" if spec.bench_iters <= 0 else \
            f"{state.target.alias} is not this machine: latency and memory are not measured on device yet"
        m.measurements, state.measured, state.where = dict(measured_on=None, reason=why), None, "host"
        return
    if eager is None or state.budgets.min_speedup_vs_eager is None:
        bench = here()
    else:
        bench = side_by_side(here, eager)
    bench.update(runner_memory(state.staged, state.recipe.threads, bench))
    m.measurements = dict(measured_on=host_fingerprint(), **bench)
    state.measured, state.where = bench, "host"


SIDE_BY_SIDE_ROUNDS = 3


def side_by_side(pte: Callable[[], dict], eager: Callable[[], dict], rounds: int = SIDE_BY_SIDE_ROUNDS) -> dict:
    """Alternate fresh processes of the .pte and the eager model; the .pte's median round, and
    `speedup_vs_eager`, the median of per-round ratios (both saw the same machine load)."""
    runs, ratios = [], []
    for _ in range(rounds):
        p, e = pte(), eager()
        runs.append(p)
        ratios.append(e["latency_ms_p50"] / p["latency_ms_p50"])
    best = sorted(runs, key=lambda r: r["latency_ms_p50"])[len(runs) // 2]
    return dict(best, speedup_vs_eager=round(statistics.median(ratios), 3), speedup_rounds=[round(x, 3) for x in ratios],
                eager_latency_ms_p50=round(e["latency_ms_p50"], 3), eager_reference=e.get("reference", "fp32 eager"))


def runner_memory(path: Path, threads: int, python: dict) -> dict:
    """Peak memory as an app runs the artifact at `path`: the C++ runner on this machine when
    it can be built (cmake, g++) and can load the program; else the Python runtime's
    (`python`, the worker's numbers), saying so."""
    from edgeformer.devices import parse_device, run_on_device, runner_args

    a = art.load_artifact(path)
    if a.manifest.pte.get("format") == "aoti":
        return dict(memory_measured_by="python (AOTInductor package: the C++ runner loads .pte files only)")
    if not (shutil.which("cmake") and shutil.which("g++")):
        return dict(memory_measured_by="python runtime (no cmake/g++ to build the C++ runner)")
    try:
        r = run_on_device(parse_device("native"), a, runner_args(a, threads, 2, 5))
    except UserError as e:
        return dict(memory_measured_by=f"python runtime (the C++ runner failed: {e})")
    # every memory field from one place (the runner); the Python runtime's beside them, named so
    return dict(python_peak_rss_mb=python["peak_rss_mb"], python_model_memory_mb=python.get("model_memory_mb"),
                peak_rss_mb=r["peak_rss_mb"], runtime_baseline_rss_mb=r["runtime_baseline_rss_mb"],
                model_memory_mb=r["model_memory_mb"], memory_measured_by="C++ runner (runtimes/cpp)",
                runner_latency_ms_p50=r.get("latency_ms_p50"))


# ---- facts for the manifest ----

def toolchain_versions() -> dict:
    names = ("edgeformer", "torch", "executorch", "torchao", "transformers", "tokenizers")
    return {n: version(n) for n in names}


def pte_name(state: BuildState) -> str:
    return state.extra.get("program_file", art.PTE)


def new_manifest(state: BuildState, **sections) -> Manifest:
    """The sections every artifact has, from the state; `sections` are the flavour's own
    (model, tokenizer, inputs, outputs, numerics, and for causal LMs generation)."""
    from edgeformer.validate.size import size_breakdown

    low = state.lowered
    size = sections.pop("size", None) or size_breakdown(low.pte, len(low.data or b""))
    data = {} if low.data is None else dict(data=dict(file=art.DATA, sha256=art.sha256_bytes(low.data), bytes=len(low.data)))
    return Manifest(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        target=dict(name=state.target.name, alias=state.target.alias, arch=state.target.arch, backend=state.target.backend),
        recipe=state.recipe.to_dict(),
        spec=state.spec.to_dict(),
        toolchain=toolchain_versions(),
        pte=dict(file=pte_name(state), sha256=art.sha256_bytes(low.pte), bytes=len(low.pte), **data),
        delegation=low.delegation.to_dict(),
        size=size,
        measurements={},
        budgets=[],
        **sections,
    )


def dump_state(state: BuildState, path: Path) -> None:
    """The state after a stage, for a human: the small facts as JSON, then the program (the
    lowered graph, else the exported graph, else the eager module)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    facts = dict(source=state.source, recipe=state.recipe.to_dict(), extra={k: v for k, v in state.extra.items()
                                                                            if isinstance(v, (str, int, float, dict, list))})
    if state.manifest is not None:
        facts.update(numerics=state.manifest.numerics, measurements=state.manifest.measurements,
                     budgets=state.manifest.budgets)
    if state.lowered is not None:
        body = str(state.lowered.program.graph_module.graph)
    elif state.exported is not None:
        body = str(state.exported.graph_module.graph)
    else:
        body = repr(state.module) if state.module is not None else "(no model yet)"
    path.write_text(json.dumps(facts, indent=2, default=str) + "\n\n" + body + "\n")
