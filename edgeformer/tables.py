"""Human-readable tables for the CLI (rich). The same data goes out as JSON with --json."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from edgeformer.manifest import Manifest
from edgeformer.targets import TARGETS


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def _status(passed: bool | None) -> str:
    return {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[dim]not checked[/]"}[passed]


def targets_table() -> Table:
    t = Table(title="targets", show_lines=True)
    for col in ("target", "backend", "default recipe", "budgets"):
        t.add_column(col)
    for tg in TARGETS.values():
        r, b = tg.recipe, tg.budgets
        t.add_row(
            f"[bold]{tg.alias}[/]\n{tg.name}\n[dim]{tg.description}[/]",
            f"{tg.backend}\n{tg.arch}",
            f"quant {r.quant}\nembedding {r.embedding_quant}\nseq {r.seq_len}, {r.threads} threads",
            "\n".join(f"{label} {op} {v} {unit}" if v is not None else f"{label}: not checked here"
                      for label, op, v, unit in ((".pte", "<=", b.max_pte_mb, "MiB"), ("p50", "<=", b.max_latency_ms_p50, "ms"),
                                                 ("memory", "<=", b.max_peak_memory_mb, "MiB"), ("SQNR", ">=", b.min_sqnr_db, "dB"),
                                                 ("lowering SQNR", ">=", b.min_lowering_sqnr_db, "dB"))),
        )
    return t


def budgets_table(manifest: Manifest) -> Table:
    t = Table(title=f"budgets of {manifest.target['alias']}")
    for col in ("budget", "limit", "measured", "where", "status"):
        t.add_column(col)
    for b in manifest.budgets:
        measured = "-" if b["measured"] is None else f"{b['measured']:.2f} {b['unit']}"
        limit = "-" if b["limit"] is None else f"{b['limit']} {b['unit']}"
        t.add_row(b["name"], limit, measured, b["where"], _status(b["passed"]))
    return t


def inspect_tables(manifest: Manifest, size: dict[str, int], timing: dict | None = None) -> list[Table]:
    m, d, n = manifest.model, manifest.delegation, manifest.numerics
    info = Table(title="artifact", show_header=False)
    info.add_row("model", f"{m['name']} ({m['architecture']}, {m['task']}, {m['params'] / 1e6:.1f} M params)")
    info.add_row("target", f"{manifest.target['alias']} ({manifest.target['name']})")
    info.add_row("recipe", ", ".join(f"{k}={v}" for k, v in manifest.recipe.items()))
    info.add_row("inputs", ", ".join(f"{i['name']} {i['dtype']}{_shape(i)}" for i in manifest.inputs))
    info.add_row("outputs", ", ".join(f"{o['name']} {o['dtype']}{o['shape']}" for o in manifest.outputs))
    if manifest.batch:
        b = manifest.batch
        shapes = ", ".join(f"{i['name']}{_shape(i)}" for i in b["inputs"])
        info.add_row("batch method", f"{b['method']}: {shapes} ({b['delegation']['delegated_subgraphs']} delegate)")
    if m.get("attention"):
        info.add_row("attention", ", ".join(f"{i}: {k}" for i, k in enumerate(m["attention"]["layers"])))
    q = manifest.quantization or {}
    if q.get("summary"):  # --quant gguf: what each kind of module became
        info.add_row("quantization", "; ".join(f"{count} × {what}" for what, count in q["summary"].items()))
    if manifest.search:
        from edgeformer.search.front import chosen as chosen_of

        srch = manifest.search
        chosen = chosen_of(srch["candidates"], srch["chosen"])
        info.add_row("search", f"chose {chosen['describe']} of {len(srch['candidates'])} candidates "
                               f"({srch['space']}; objective {srch['objective']}); table in report.md")
    if n.get("sqnr_db") is None:
        info.add_row("numerics", f"not run: {n.get('reason', 'no numerics')}")
    else:
        info.add_row("numerics", f"SQNR {n['sqnr_db']} dB vs fp32 reference; max |err| {n['max_abs_err_vs_exported']:.2e} vs exported")
    if manifest.accuracy:
        a = manifest.accuracy
        if a.get("metric") == "perplexity":  # a causal LM's
            info.add_row("perplexity", f"{a['perplexity']} on {a['data']} ({a['scored_tokens']} tokens); fp32 "
                                       f"{a.get('reference_perplexity', '-')}, increase {a.get('increase_pct', '-')}%")
        else:
            info.add_row("accuracy", f"{a['accuracy']:.4f} on {a['data']} ({a['examples']} examples); "
                                     f"drop {a.get('accuracy_drop_points', '-')} points, agreement {a.get('agreement', '-')}")
    info.add_row("toolchain", ", ".join(f"{k} {v}" for k, v in manifest.toolchain.items()))

    where = Table(title=f"what ran where ({d['backend']})" + (f", median of {timing['runs']} runs on this host" if timing else ""))
    where.add_column("part")
    where.add_column("nodes", justify="right")
    if timing:
        where.add_column("ms", justify="right")
        where.add_column("time share", justify="right")
    delegate = [f"{timing['delegate_ms']:.3f}", f"{timing['delegate_share']:.1%}"] if timing else []
    where.add_row(f"delegated ({d['delegated_subgraphs']} subgraphs)", str(d["delegated_nodes"]), *delegate)
    for op, count in d["non_delegated_ops"].items():
        where.add_row(f"[yellow]outside: {op}[/]", str(count), *_outside_time(op, timing))
    if timing:
        where.add_row("total (Method::execute)", "", f"{timing['total_ms']:.3f}", "100%")
    where.add_row("coverage", f"{d['coverage']:.1%}")
    tables = [info, where]
    if timing and timing["inside"]:
        inside = Table(title="inside the delegate: time by operator kind (top 8)")
        for col in ("operator", "count", "ms", "time share"):
            inside.add_column(col, justify="left" if col == "operator" else "right")
        for k in timing["inside"][:8]:
            inside.add_row(k["kind"], str(k["count"]), f"{k['ms']:.3f}", f"{k['share']:.1%}")
        tables.append(inside)

    sizes = Table(title="size of model.pte")
    sizes.add_column("part")
    sizes.add_column("bytes", justify="right")
    sizes.add_column("share", justify="right")
    total = sum(size.values())
    for part, nbytes in sorted(size.items(), key=lambda kv: -kv[1]):
        sizes.add_row(part, _mb(nbytes), f"{nbytes / total:.1%}")
    sizes.add_row("total", _mb(total), "100%")
    return [*tables, sizes, budgets_table(manifest)]


def _outside_time(op: str, timing: dict | None) -> list[str]:
    """[ms, share] of a non-delegated op from the profile (ETDump names kernels by their out variant)."""
    if not timing:
        return []
    # delegation names aten_embedding_byte_default / dim_order_ops__to_dim_order_copy_default;
    # ETDump names the kernel: embedding_byte.out / _to_dim_order_copy.out
    hits = [o for o in timing["outside"] if o["op"].removesuffix(".out") in op]
    if not hits:
        return ["-", "-"]
    return [f"{sum(o['ms'] for o in hits):.3f}", f"{sum(o['share'] for o in hits):.1%}"]


def eval_table(r: dict) -> Table:
    t = Table(title=f"eval {r['target']} on {r['data']} ({r['examples']} examples, {r['runtime']})")
    for col in ("accuracy", "macro-F1", "fp32 accuracy", "drop (points)", "agreement", "examples/s"):
        t.add_column(col, justify="right")
    t.add_row(f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", str(r.get("reference_accuracy", "-")),
              str(r.get("accuracy_drop_points", "-")), str(r.get("agreement", "-")), f"{r['throughput_per_s']:.0f}")
    return t


def bench_table(path: str, r: dict) -> Table:
    batch = f", batch method: {r['batch']} texts per call" if "batch" in r else ""
    t = Table(title=f"bench {path} ({r['threads']} threads, {r['iters']} runs after {r['warmup']} warm-up{batch})")
    cols = ("p50", "p90", "min", *(("p50 per text",) if batch else ()), "peak RSS", "model memory")
    for col in cols:
        t.add_column(col, justify="right")
    t.add_row(f"{r['latency_ms_p50']:.2f} ms", f"{r['latency_ms_p90']:.2f} ms", f"{r['latency_ms_min']:.2f} ms",
              *((f"{r['ms_per_text']:.2f} ms",) if batch else ()), f"{r['peak_rss_mb']:.0f} MiB", f"{r['model_memory_mb']:.0f} MiB")
    return t


def device_bench_table(path: str, r: dict) -> Table:
    on = r["measured_on"]
    where = {"host": "this host", "emulated": "EMULATED (not device latency)", "device": "on the device"}[on["kind"]]
    t = Table(title=f"bench {path} with the C++ runner: {on['spec']}, {where}\n"
                    f"[dim]{on['machine']}, {on['processor']}, {on['cores']} cores, {on['system']}[/]")
    if r["kind"] == "causal_lm":
        cols = ("prefill tok/s", "decode tok/s", "p50/token", "p90/token", "peak RSS")
        row = (f"{r['prefill_tok_s']:.0f}", f"{r['decode_tok_s']:.1f}", f"{r['latency_ms_p50']:.2f} ms",
               f"{r['latency_ms_p90']:.2f} ms", f"{r['peak_rss_mb']:.0f} MiB")
    else:
        cols = ("p50", "p90", "min", "peak RSS", "model memory")
        row = (f"{r['latency_ms_p50']:.2f} ms", f"{r['latency_ms_p90']:.2f} ms", f"{r['latency_ms_min']:.2f} ms",
               f"{r['peak_rss_mb']:.0f} MiB", f"{r['model_memory_mb']:.0f} MiB")
    for col in cols:
        t.add_column(col, justify="right")
    t.add_row(*row)
    return t


def print_tables(tables: list[Table]) -> None:
    console = Console()
    for t in tables:
        console.print(t)


def prune_tables(r: dict) -> list[Table]:
    plan = Table(title=f"what prune removed ({r['mode']} mode)")
    unit = "key-value groups" if r.get("unit") == "kv_group" else "heads"
    for col in ("layer", f"{unit} kept", "FFN kept", f"removed {unit}"):
        plan.add_column(col)
    for row in r["plan"]:
        if row["removed"]:
            plan.add_row(str(row["layer"]), "[red]layer removed[/]", "", "")
        else:
            plan.add_row(str(row["layer"]), row["heads"], row["ffn"], ", ".join(map(str, row["removed_heads"])) or "-")
    if "search_trajectory" in r:  # a causal LM's search: parameters against the held-out perplexity bound
        traj = Table(title="search trajectory (held-out text, before distillation)")
        for col in ("step", "removed", "params", "increase %", "bound %"):
            traj.add_column(col, justify="right" if col != "removed" else "left")
        for p in r["search_trajectory"]:
            traj.add_row(str(p["step"]), p["removed"], f"x{p['params_ratio']:.3f}", f"{p['increase_pct']:+.2f}",
                         f"{p['increase_upper_pct']:.2f}")
        return [plan, traj]
    if "trajectory" not in r:  # ratio mode of a causal LM: no search
        return [plan]
    traj = Table(title="search trajectory (validation)")
    for col in ("step", "removed", "FLOPs", "accuracy", "loss"):
        traj.add_column(col, justify="right" if col != "removed" else "left")
    for p in r["trajectory"]:
        traj.add_row(str(p["step"]), p["removed"], f"x{p['flops_ratio']:.3f}", f"{p['val_accuracy']:.4f}", f"{p['val_loss']:.4f}")
    return [plan, traj]


@contextmanager
def stage_progress(console: Console):
    """A progress bar per stage with an estimate of the time left; yields `progress(stage, done, total, info)`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: float, total: float | None, info: str) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, info="")
            bar.update(tasks[stage], completed=done, total=total, info=info)

        yield progress


def perplexity_table(r: dict) -> Table:
    t = Table(title=f"perplexity of {r['target']} on {r['data']} ({r['scored_tokens']} tokens in {r['segments']} "
                    f"segments of {r['segment']})")
    for col in ("perplexity (.pte)", "fp32 perplexity", "increase", "tokens/s (.pte)"):
        t.add_column(col, justify="right")
    inc = r.get("increase_pct")
    t.add_row(f"{r['perplexity']:.3f}", str(r.get("reference_perplexity", "-")), "-" if inc is None else f"{inc:+.2f} %",
              f"{r['tokens_per_s']:.0f}")
    return t


def lm_bench_table(path: str, r: dict) -> Table:
    t = Table(title=f"bench {path} ({r['threads']} threads, {r['prompt_tokens']}-token prompt, {r['new_tokens']} new tokens, "
                    f"{r['rounds']} rounds after warm-up)",
              caption=f"floor: {r['bytes_per_token'] / 1e6:.1f} MB read per decoded token at {r['bandwidth_gb_s']:.0f} GB/s measured")
    for col in ("prefill tok/s", "first token", "decode tok/s", "p50 / p90", "floor tok/s", "of floor", "peak RSS"):
        t.add_column(col, justify="right")
    t.add_row(f"{r['prefill_tokens_per_s']:.0f}", f"{r['time_to_first_token_ms']:.0f} ms", f"{r['decode_tokens_per_s']:.1f}",
              f"{r['latency_ms_p50']:.2f} / {r['latency_ms_p90']:.2f} ms", f"{r['bandwidth_floor_tokens_per_s']:.0f}",
              f"{r['share_of_floor']:.0%}", f"{r['peak_rss_mb']:.0f} MiB")
    return t


def _shape(spec: dict) -> str:
    """[1, 128], or [1, 1..128] for an input that takes any length in between."""
    if "min_shape" not in spec:
        return str(spec["shape"])
    return "[" + ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in zip(spec["min_shape"], spec["shape"], strict=True)) + "]"
