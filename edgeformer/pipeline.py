"""The build pipeline, readable in one place (causal LMs branch off to `lm/build.py`).

    Phase 0  compress   optional: structured pruning + distillation (`edgeformer prune`)
    Phase 1  load       bundled name or Hugging Face folder -> reference model + Encoder
    Phase 2  transform  eager rewrites before export: the attention kernels (edge rewrite,
                        sliding window, hard top-k), then torchao quantization
    Phase 3  export     torch.export at the recipe's static shape
    Phase 4  lower      the target's backend -> .pte bytes + what was delegated
    Phase 5  validate   .pte vs exported program and vs fp32 reference; size; latency and
                        memory where the target is this machine; budgets
    Phase 6  write      tokenizer + manifest beside the .pte, published atomically

`dump=DIR` writes the graph after export and after lowering.
"""

from __future__ import annotations

import copy
import importlib
import os
import platform
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch
from torch.export import ExportedProgram

from edgeformer import artifact as art
from edgeformer.data import load_data
from edgeformer.data import parse_spec as parse_data_spec
from edgeformer.errors import BudgetError, UserError
from edgeformer.manifest import Manifest
from edgeformer.models import LoadedModel, load_model
from edgeformer.models.causal import is_causal_lm
from edgeformer.models.hf import reference_forward
from edgeformer.recipe import Recipe
from edgeformer.report_md import write_report
from edgeformer.runtime import Program
from edgeformer.targets import Target, get_target
from edgeformer.tokenize import TextEncoder
from edgeformer.transforms.attention import apply_attention, layer_kinds, parse_attention
from edgeformer.transforms.quantize import quantize_model
from edgeformer.validate.bench import measure
from edgeformer.validate.budgets import check_budgets
from edgeformer.validate.numerics import SAMPLE_TEXTS, check_numerics
from edgeformer.validate.size import size_breakdown

# Backends by name; each module has `lower(exported_program, recipe) -> Lowered`.
BACKENDS = {"xnnpack": "edgeformer.targets.xnnpack", "vulkan": "edgeformer.targets.vulkan", "cuda": "edgeformer.targets.cuda"}

Stage = Callable[[str], AbstractContextManager]


@dataclass
class BuildResult:
    path: Path | None  # None when a budget failed and the artifact was not kept
    manifest: Manifest
    exported: ExportedProgram
    lowered: ExportedProgram

    @property
    def passed(self) -> bool:
        return self.manifest.passed


def build(
    model: str,
    target: str = "host",
    out: str | Path = "out",
    *,
    quant: str | None = None,
    group_size: int | None = None,
    embedding_quant: str | None = None,
    seq_len: int | None = None,
    threads: int | None = None,
    min_sqnr_db: float | None = None,
    enforce: bool = True,
    eval_data: str | None = None,
    max_accuracy_drop: float | None = None,
    bench_iters: int = 50,
    prune: str | None = None,
    attention: str | list[str] | None = None,
    data: str | None = None,
    max_context: int | None = None,
    device: str | None = None,
    lm_ops: str = "custom",
    fallback: str | None = None,
    dump: str | Path | None = None,
    stage: Stage | None = None,
) -> BuildResult:
    """Compile `model` for `target` into an artifact folder `out`.

    Recipe fields left as None take the target's defaults. `eval_data` (a data spec, e.g.
    "fine-foods:validation") measures task accuracy of the `.pte` vs the fp32 model and checks
    the accuracy-drop budget. With `enforce`, a missed budget
    raises `BudgetError` (carrying the result) and nothing is written.

    `prune` ("auto", or ratios like "heads=0.5,ffn=0.5,layers=1") first runs `edgeformer
    prune` on `data` (task data; default: the data set of `eval_data`) into `<out>.pruned/`
    and builds that; the accuracy drop is then measured against the unpruned model.

    `attention` (e.g. "window=64", "hard=top8:layers=3-5"; see `transforms.attention`) sets
    the attention kernels; hard attention with `layers=auto` picks layers on `data`'s
    validation split. When it changes what the model computes, numerics compare the `.pte`
    with the transformed fp32 model, and accuracy (with `eval_data`) with full attention.

    A causal LM (`smollm2-135m`, a .gguf file, a *ForCausalLM folder) is built by
    `lm.build.build_lm`: `max_context` sets its cache, `attention="window=W[:sinks=S]"` makes
    the cache a sliding-window ring, and `eval_data` ("janeausten") measures perplexity.
    `lm_ops="portable"` writes the cache and attention in core ops only (no LLM custom ops),
    which the C++ runner built from the wheel can run.

    `server-cuda` builds an AOTInductor package for a GPU server (`server.py`); on a machine
    without CUDA it stops, or with `fallback="cpu"` compiles it for the CPU.

    `device` ("ssh://pi@raspberrypi.local", "qemu-aarch64", "native"; see `native.device`)
    measures latency and memory there with the C++ runner, and the budgets are checked
    against those numbers (emulated timings are recorded, never checked).

    Example:
        >>> r = edgeformer.build("minilm", target="host", out="out/minilm-host")
        >>> r.manifest.budgets[0]["passed"]
        True
    """
    tgt = get_target(target)
    recipe = tgt.recipe.with_overrides(
        quant=quant, group_size=group_size, embedding_quant=embedding_quant, seq_len=seq_len, threads=threads
    )
    budgets = tgt.budgets if min_sqnr_db is None else replace(tgt.budgets, min_sqnr_db=min_sqnr_db)
    if max_accuracy_drop is not None:
        budgets = replace(budgets, max_accuracy_drop=max_accuracy_drop)
    backend = importlib.import_module(BACKENDS[tgt.backend])
    stage = stage or (lambda name: nullcontext())
    out = Path(out)
    if is_causal_lm(model):
        if tgt.lm_budgets is None:
            raise UserError(f"target {tgt.alias} does not take causal LMs yet; use host, rpi5 or android")
        from edgeformer.lm.build import build_lm, check_lm_options

        check_lm_options(prune, data, max_context, lm_ops)
        return build_lm(model, tgt, recipe, out, backend, max_context=max_context, attention=attention, eval_data=eval_data,
                        min_sqnr_db=min_sqnr_db, enforce=enforce, bench_iters=bench_iters, device=device, lm_ops=lm_ops,
                        dump=dump, stage=stage)
    if tgt.backend == "cuda":
        from edgeformer.server import build_server

        if prune or attention or eval_data or device or data:
            raise UserError("target server-cuda takes a model as it is: --prune, --attention, --eval-data, --data and "
                            "--device are for the on-device targets (host, rpi5, android)")
        return build_server(model, tgt, recipe, out, budgets, fallback=fallback, enforce=enforce, bench_iters=bench_iters,
                            stage=stage)
    if fallback is not None:
        raise UserError(f"--fallback {fallback} applies to --target server-cuda")
    if lm_ops != "custom":
        raise UserError(f"--lm-ops {lm_ops} applies to causal LMs; {model} is an encoder (its ops are all core ops)")
    if max_context is not None:
        raise UserError(f"--max-context {max_context} applies to causal LMs; {model} is an encoder (use --seq-len)")
    attention_plan = parse_attention(attention)
    cannot_run = getattr(backend, "CANNOT_RUN_HERE", None)  # Vulkan: validated structurally only
    if cannot_run and (eval_data or prune or device):
        raise UserError(f"target {tgt.alias}: --eval-data/--prune/--device need to run the .pte, and {cannot_run}")
    data = data or (parse_data_spec(eval_data)[0] if eval_data else None)

    # Phase 0: compress (structured pruning, with distillation)
    unpruned = None
    if prune is not None:
        from edgeformer.train.prune import prune_for_build

        with stage(f"prune ({prune})"):
            unpruned = model
            model, pruning = prune_for_build(model, prune, data, out, budgets.max_accuracy_drop)

    # Phase 1: load
    with stage("load model"):
        loaded = load_model(model)
        _check_seq_len(loaded, recipe, attention_plan.copy_positions)
        text = TextEncoder(loaded.hf.tokenizer_file, recipe.seq_len, loaded.pad_id)
        samples = [(e.input_ids, e.attention_mask) for e in map(text.encode, SAMPLE_TEXTS)]
        if eval_data is not None:
            load_data(eval_data)  # a bad spec fails now, not after minutes of lowering

    # Phase 2: eager transforms
    with stage(f"attention ({attention_plan.describe()})"):
        attention_info = apply_attention(loaded.encoder, attention_plan, recipe.seq_len,
                                         _hard_layer_chooser(loaded, attention_plan, data, recipe.seq_len))
        reference = lambda i, m: reference_forward(loaded.hf, i, m)  # noqa: E731
        if attention_plan.changes_outputs:  # the .pte should match the transformed model
            reference = copy.deepcopy(loaded.encoder).eval()
    with stage(f"quantize ({recipe.quant}, embedding {recipe.embedding_quant})"):
        module = quantize_model(loaded.encoder, recipe)

    # Phase 3: export
    with stage("export"):
        exported = torch.export.export(module, samples[0])

    # Phase 4: lower
    lowered = lower_stage(backend, exported, recipe, tgt, dump, stage)

    # Phase 5 + 6: validate inside a staging folder, publish only what passes (or --no-enforce)
    with art.staging(out) as tmp:
        (tmp / art.PTE).write_bytes(lowered.pte)
        (tmp / art.TOKENIZER).write_bytes(loaded.hf.tokenizer_file.read_bytes())
        if cannot_run:  # structural validation only: delegation and size
            numerics = dict(samples=0, sqnr_db=None, sqnr_db_vs_exported=None, reason=cannot_run)
        else:
            with stage("check numerics"):
                program = Program(lowered.pte, recipe.threads)
                with torch.no_grad():
                    numerics = check_numerics(program, exported, reference, samples, is_logits=loaded.hf.task == "classifier")
                numerics["reference"] = "fp32 with the attention transform" if attention_plan.changes_outputs else "fp32 Hugging Face"
        manifest = _manifest(loaded, tgt, recipe, lowered.pte, lowered.delegation.to_dict(), size_breakdown(lowered.pte),
                             text, numerics)
        manifest.model["attention"] = dict(**attention_info, layers=layer_kinds(loaded.encoder))
        if unpruned is not None:
            manifest.model["pruning"] = dict(unpruned=unpruned, mode=pruning["mode"], plan=pruning["plan"],
                                             flops_ratio=pruning["flops_per_sequence"]["ratio"],
                                             validation_accuracy=pruning["validation_accuracy"])
        (tmp / art.MANIFEST).write_text(manifest.to_json())  # bench and eval load the staged artifact
        bench, where = measure_stage(manifest, tgt, bench_iters, stage, "measure latency and memory",
                                     lambda: measure(tmp, recipe.threads, iters=bench_iters), device, tmp)
        accuracy = None
        if eval_data is not None:
            from edgeformer.validate.accuracy import evaluate

            with stage(f"evaluate on {eval_data}"):
                accuracy = evaluate(str(tmp), eval_data, threads=recipe.threads)
                if unpruned is not None:  # the drop that counts is against the model before pruning
                    base = evaluate(unpruned, eval_data, threads=recipe.threads)["accuracy"]
                    accuracy.update(unpruned_accuracy=base, accuracy_drop_vs_pruned_fp32=accuracy["accuracy_drop_points"],
                                    accuracy_drop_points=round((base - accuracy["accuracy"]) * 100, 2))
            manifest.accuracy = accuracy
        checks = check_budgets(budgets, len(lowered.pte), numerics, bench, where, accuracy)
        manifest.budgets = [c.to_dict() for c in checks]
        return publish(tmp, out, tgt, BuildResult(None, manifest, exported, lowered.program), checks, enforce)


def measure_stage(manifest: Manifest, tgt: Target, bench_iters: int, stage: Stage, name: str,
                  run: Callable[[], dict], device: str | None = None, staged: Path | None = None) -> tuple[dict | None, str]:
    """Phase 5's timing (shared with lm/build.py): on `device` with the C++ runner when one is
    given (the staged artifact is copied there), else `run()` where the target is this machine.
    Recorded in `manifest.measurements` with where it ran, or why it was not run. Returns the
    numbers the latency/memory budgets are checked against (None: not checked) and where."""
    if device is not None and bench_iters > 0:
        from edgeformer.native.device import parse_device, run_on_device, runner_args

        dev = parse_device(device)
        a = art.load_artifact(staged)
        with stage(f"{name} on {device}"):
            r = run_on_device(dev, a, runner_args(a, manifest.recipe["threads"], None, bench_iters))
        manifest.measurements = r
        manifest.devices = [r]
        if dev.kind == "emulated":  # correctness only: emulated timings are not the device's
            return None, "emulated: not checked"
        return r, dev.kind
    if not (tgt.measure_here and bench_iters > 0):
        manifest.measurements = dict(measured_on=None, reason=_why_not_measured(tgt, bench_iters))
        return None, "host"
    with stage(name):
        bench = run()
    manifest.measurements = dict(measured_on=_host_fingerprint(), **bench)
    return bench, "host"


def lower_stage(backend, exported: ExportedProgram, recipe: Recipe, tgt: Target, dump, stage: Stage):
    """Phase 4 (shared with lm/build.py): the target's backend, with graph dumps on request."""
    _dump(dump, "1-exported", exported)
    with stage(f"lower ({tgt.backend})"):
        lowered = backend.lower(exported, recipe)
    _dump(dump, "2-lowered", lowered.program)
    return lowered


def publish(tmp: Path, out: Path, tgt: Target, result: BuildResult, checks, enforce: bool) -> BuildResult:
    """Phase 6 (shared with lm/build.py): write the manifest, then rename the staging folder
    into place, or with `enforce` and a missed budget raise BudgetError and keep nothing."""
    (tmp / art.MANIFEST).write_text(result.manifest.to_json())
    write_report(tmp, result.manifest)
    if tgt.alias.startswith("android"):  # the app's side of the bundle
        android = Path(__file__).resolve().parents[1] / "runtimes" / "android"
        if android.is_dir():
            shutil.copytree(android, tmp / "android")
    if enforce and not result.manifest.passed:
        failed = [c.describe() for c in checks if c.passed is False]
        raise BudgetError(f"target {tgt.alias}: {len(failed)} budget(s) failed, artifact not written "
                          f"(--no-enforce keeps it): " + "; ".join(failed), result)
    art.commit(tmp, out)
    result.path = out.resolve()
    return result


def _hard_layer_chooser(loaded: LoadedModel, plan, data: str | None, seq_len: int):
    """`choose()` for hard attention's `layers=auto`, or None without task data."""
    if plan.hard_layers != "auto" or data is None:
        return None

    def choose() -> list[int]:
        from edgeformer.train.hard_attention import choose_hard_layers

        layers, report = choose_hard_layers(loaded.encoder, plan.top_k, data, loaded.hf.tokenizer_file, loaded.pad_id,
                                            seq_len, loaded.hf.labels)
        loaded.source["hard_attention_selection"] = report
        return layers

    return choose


def _check_seq_len(loaded: LoadedModel, recipe: Recipe, copy_positions: bool) -> None:
    limit = loaded.encoder.shape.max_positions
    if recipe.seq_len > limit and not copy_positions:
        raise UserError(f"--seq-len {recipe.seq_len} exceeds the model's {limit} positions; use --seq-len {limit} or less, "
                        f"or tile the position table with --attention positions=copy (best with a window)")


def _dump(dump: str | Path | None, name: str, ep: ExportedProgram) -> None:
    if dump is None:
        return
    d = Path(dump)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.txt").write_text(str(ep.graph_module.graph))


def _versions() -> dict:
    names = ("edgeformer", "torch", "executorch", "torchao", "transformers", "tokenizers")
    return {n: version(n) for n in names}


def _host_fingerprint() -> dict:
    return dict(kind="host", machine=platform.machine(), processor=_cpu_model(), cores=os.cpu_count(),
                system=platform.platform())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _why_not_measured(tgt: Target, bench_iters: int) -> str:
    if bench_iters <= 0:
        return "measurement skipped (bench_iters=0)"
    return f"{tgt.alias} is not this machine: latency and memory are not measured on device yet"


def _manifest(loaded: LoadedModel, tgt: Target, recipe: Recipe, program: bytes, delegation: dict, size: dict,
              text: TextEncoder, numerics: dict) -> Manifest:
    """An encoder artifact's manifest (`program`: the bytes of the .pte or server package)."""
    s = recipe.seq_len
    shape = loaded.encoder.shape
    if loaded.hf.task == "classifier":
        outputs = [dict(name="logits", dtype="float32", shape=[1, len(loaded.hf.labels)], meaning="class logits")]
    else:
        outputs = [dict(name="embedding", dtype="float32", shape=[1, shape.hidden],
                        meaning="L2-normalised mean-pooled sentence embedding")]
    return Manifest(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=dict(**loaded.source, labels=loaded.hf.labels, layers=shape.num_layers,
                   heads=list(shape.num_heads), ffn=list(shape.ffn), hidden=shape.hidden),
        target=dict(name=tgt.name, alias=tgt.alias, arch=tgt.arch, backend=tgt.backend),
        recipe=recipe.to_dict(),
        toolchain=_versions(),
        pte=dict(file=art.PTE, sha256=art.sha256_bytes(program), bytes=len(program)),
        tokenizer=dict(file=art.TOKENIZER, sha256=art.sha256_bytes(loaded.hf.tokenizer_file.read_bytes()),
                       pad_id=text.pad_id, vocab_size=text.tok.get_vocab_size()),
        inputs=[dict(name="input_ids", dtype="int64", shape=[1, s]),
                dict(name="attention_mask", dtype="int64", shape=[1, s])],
        outputs=outputs,
        numerics=numerics,
        delegation=delegation,
        size=size,
        measurements={},
        budgets=[],
    )


def timed_stage(report: Callable[[str, float], None]) -> Stage:
    """A `stage` factory that reports each stage's name and seconds when it ends."""

    @contextmanager
    def _stage(name: str):
        t0 = time.perf_counter()
        yield
        report(name, time.perf_counter() - t0)

    return _stage
