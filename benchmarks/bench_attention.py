"""Edge attention: the delegated rewrite, sliding windows at long lengths, and accuracy.

Three tables (each contender in its own fresh process, 2 threads, interleaved rounds,
medians over rounds; warm-up runs excluded):

  rewrite   MiniLM at batch 1, seq 128: the stock attention (`--attention sdpa`: SDPA and
            LayerNorm as a plain export gets them) against edgeformer's rewrite, fp32 and int8.
  length    int8 MiniLM from 128 to 2048 tokens: full attention against window=128 (both
            with the position table tiled, `positions=copy`, past MiniLM's 512): latency
            and peak memory; plotted to results/attention-length.png.
  accuracy  the fine-tuned MiniLM (`edgeformer finetune minilm --data fine-foods`) on all
            1000 fine-foods test reviews: full attention, window=64 at seq 128, and hard
            top-8 attention in the layers chosen on validation; the int8 `.pte` against the
            fp32 Hugging Face model with full attention.

    python benchmarks/bench_attention.py --tuned out/minilm-foods --work out/attention
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import ROOT, THREADS, log, measure_rounds, round_ratio, without, write_results

LENGTHS = (128, 256, 512, 1024, 2048)
ACCURACY_SPECS = {"full": None, "window=64": "window=64", "hard=top8 (auto)": "hard=top8",
                  "window=64 + hard=top8 (auto)": "window=64+hard=top8"}


def build(model: str, out: Path, quant: str, seq_len: int, attention: str | None, **kw) -> dict:
    """Build (skipped when `out` already holds an artifact); returns its manifest."""
    import edgeformer

    if not (out / "manifest.json").is_file():
        log(f"building {out.name} …")
        edgeformer.build(model, "host", out, quant=quant, embedding_quant="fp32" if quant == "fp32" else "int8",
                         seq_len=seq_len, bench_iters=0, enforce=False, attention=attention, **kw)
    return json.loads((out / "manifest.json").read_text())


def bench_cmd(art: Path, iters: int) -> list[str]:
    return ["-m", "edgeformer.validate.latency", str(art), "--threads", str(THREADS), "--warmup", str(max(2, iters // 5)),
            "--iters", str(iters)]


def rewrite(model: str, work: Path, n_rounds: int) -> str:
    rows = {}
    for quant in ("fp32", "int8"):
        for kind in ("sdpa", "full"):
            art = work / f"rewrite-{kind}-{quant}"
            d = build(model, art, quant, 128, kind)["delegation"]
            rows[f"{kind} {quant}"] = dict(cmd=bench_cmd(art, 50), outside=d["non_delegated_nodes"], subgraphs=d["delegated_subgraphs"])
    samples = measure_rounds(rows, n_rounds)
    lines = ["| attention | quant | p50 ms | speed-up | delegated subgraphs | nodes outside |", "|---|---|---:|---:|---:|---:|"]
    for quant in ("fp32", "int8"):
        for kind in ("sdpa", "full"):
            r = rows[f"{kind} {quant}"]
            ratio = round_ratio(samples, f"sdpa {quant}", f"{kind} {quant}")
            label = "stock SDPA + LayerNorm" if kind == "sdpa" else "edgeformer rewrite"
            lines.append(f"| {label} | {quant} | {r['p50']:.2f} | {ratio:.2f}x | {r['subgraphs']} | {r['outside']} |")
    return "\n".join(lines) + "\n"


def length(model: str, work: Path, n_rounds: int, window: int) -> tuple[str, dict]:
    rows = {}
    for s in LENGTHS:
        for kind, spec in (("full", "positions=copy"), (f"window={window}", f"window={window}+positions=copy")):
            art = work / f"len-{kind.replace('=', '')}-{s}"
            build(model, art, "int8", s, spec)
            rows[f"{kind} s{s}"] = dict(cmd=bench_cmd(art, max(5, 50 * 128 // s)), kind=kind, seq=s)
    samples = measure_rounds(rows, n_rounds, medians=("peak_rss_mb", "model_memory_mb"))
    lines = ["| seq | full p50 ms | window p50 ms | full / window | full model MiB | window model MiB |",
             "|---:|---:|---:|---:|---:|---:|"]
    for s in LENGTHS:
        f, w = rows[f"full s{s}"], rows[f"window={window} s{s}"]
        lines.append(f"| {s} | {f['p50']:.1f} | {w['p50']:.1f} | {round_ratio(samples, f'full s{s}', f'window={window} s{s}'):.2f}x "
                     f"| {f['model_memory_mb']:.0f} | {w['model_memory_mb']:.0f} |")
    growth = {k: rows[f"{k} s{LENGTHS[-1]}"]["p50"] / rows[f"{k} s{LENGTHS[0]}"]["p50"] for k in ("full", f"window={window}")}
    lines.append("")
    lines.append(f"Growth {LENGTHS[0]} -> {LENGTHS[-1]} tokens ({LENGTHS[-1] // LENGTHS[0]}x longer): "
                 + ", ".join(f"{k} {g:.1f}x" for k, g in growth.items()))
    return "\n".join(lines) + "\n", rows


def plot_length(rows: dict, out: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, (lat, mem) = plt.subplots(1, 2, figsize=(10, 4.2))
    for kind, color in (("full", "tab:orange"), (f"window={window}", "tab:blue")):
        pts = sorted((r["seq"], r["p50"], r["model_memory_mb"]) for r in rows.values() if r["kind"] == kind)
        xs = [p[0] for p in pts]
        lat.plot(xs, [p[1] for p in pts], "o-", color=color, label=kind)
        mem.plot(xs, [p[2] for p in pts], "o-", color=color, label=kind)
    xs = list(LENGTHS)
    base = min(r["p50"] for r in rows.values() if r["seq"] == xs[0])
    lat.plot(xs, [base * s / xs[0] for s in xs], ":", color="gray", label="linear")
    lat.plot(xs, [base * (s / xs[0]) ** 2 for s in xs], "--", color="gray", alpha=0.5, label="quadratic")
    for ax, ylabel in ((lat, "latency p50, ms"), (mem, "model memory (peak RSS over runtime), MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lat.set_ylim(top=max(r["p50"] for r in rows.values()) * 3)
    fig.suptitle("MiniLM int8, batch 1, 2 threads: full vs sliding-window attention")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def accuracy(tuned: str, work: Path) -> str:
    lines = ["| attention | applied | int8 .pte test acc | drop vs fp32 full (points) | fp32 .pte test acc |", "|---|---|---:|---:|---:|"]
    for name, spec in ACCURACY_SPECS.items():
        accs = {}
        for quant in ("int8", "fp32"):
            slug = "".join(c if c.isalnum() else "-" for c in name)
            m = build(tuned, work / f"acc-{quant}-{slug}", quant, 128, spec, eval_data="fine-foods:test", data="fine-foods",
                      min_sqnr_db=0)
            accs[quant] = m["accuracy"]
        att, n = m["model"]["attention"], m["model"]["layers"]
        layers = "; ".join(filter(None, [
            att["window"] and f"window in {_span(att['window']['layers'], n)} (+{att['window']['global_tokens']} global)",
            att["hard"] and f"top-{att['hard']['top_k']} in {_span(att['hard']['layers'], n)}"])) or "-"
        lines.append(f"| {name} | {layers} | {accs['int8']['accuracy']:.3f} | {accs['int8']['accuracy_drop_points']:+.1f} "
                     f"| {accs['fp32']['accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def _span(layers: list[int], n: int) -> str:
    return "none" if not layers else "all" if layers == list(range(n)) else ",".join(map(str, layers))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="model for the speed tables (default: bundled minilm)")
    p.add_argument("--tuned", help="fine-tuned classifier folder for the accuracy table")
    p.add_argument("--work", type=Path, default=ROOT / "out" / "attention")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--only", default="rewrite,length,accuracy")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--replot", action="store_true", help="redraw attention-length.png from its JSON, measure nothing")
    a = p.parse_args()
    if a.replot:
        plot_length(json.loads((a.out / "attention-length.json").read_text()), a.out / "attention-length.png", a.window)
        return
    parts = a.only.split(",")
    a.out.mkdir(parents=True, exist_ok=True)
    if "rewrite" in parts:
        write_results(a.out, "attention-rewrite", rewrite(a.model, a.work, a.rounds))
    if "length" in parts:
        table, rows = length(a.model, a.work, max(3, a.rounds // 2), a.window)
        write_results(a.out, "attention-length", table, without(rows, "cmd"))
        plot_length(rows, a.out / "attention-length.png", a.window)
    if "accuracy" in parts:
        if not a.tuned:
            p.error("the accuracy table needs --tuned (a fine-tuned classifier folder)")
        write_results(a.out, "attention-accuracy", accuracy(a.tuned, a.work))


if __name__ == "__main__":
    main()
