"""Structured pruning of the fine-tuned MiniLM on fine-foods: accuracy against latency.

For each pruning level, `edgeformer prune` (skipped when the folder exists in --work), then
`edgeformer build --target host --quant int8`; test accuracy of the `.pte` on all 1000
fine-foods test reviews; latency at batch 1, seq 128, 2 threads, each contender in its own
fresh process, interleaved rounds, median over rounds. Beside them, the unpruned model in
PyTorch eager fp32 and in ONNX Runtime int8 (workers of bench_vs_onnxruntime.py).

    edgeformer finetune minilm --data fine-foods -o out/minilm-foods
    python benchmarks/bench_prune.py out/minilm-foods --work out/prune-levels
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import ROOT, THREADS, cpu_line, export_onnx, log, measure_rounds, ort_accuracy, round_ratio, save_results

# name -> `edgeformer prune` arguments (None: the unpruned model)
LEVELS: dict[str, list[str] | None] = {
    "unpruned": None,
    "auto (drop 0)": ["--max-accuracy-drop", "0"],
    "auto (drop 1)": ["--max-accuracy-drop", "1"],
    "heads/ffn 0.25": ["--heads", "0.25", "--ffn", "0.25"],
    "heads/ffn 0.5": ["--heads", "0.5", "--ffn", "0.5"],
    "heads/ffn 0.5 + 1 layer": ["--heads", "0.5", "--ffn", "0.5", "--layers", "1"],
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def prune_level(model: str, work: Path, name: str, args: list[str] | None) -> Path:
    if args is None:
        return Path(model)
    folder = work / slug(name)
    if not (folder / "prune.json").is_file():
        log(f"pruning {name} …")
        edgeformer_cli = str(Path(sys.executable).with_name("edgeformer"))
        subprocess.run([edgeformer_cli, "prune", model, "--data", "fine-foods", "-o", str(folder),
                        "--json", *args], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return folder


def plot(rows: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pts = sorted(((r["p50"], r["accuracy"] * 100, n) for n, r in rows.items() if n.startswith("int8")), key=lambda t: t[0])
    front, best = [], -1.0
    for x, y, _ in pts:  # Pareto front: nothing faster is as accurate
        if y > best:
            front.append((x, y))
            best = y
    ax.plot(*zip(*front, strict=True), color="tab:blue", alpha=0.4, zorder=1, label="Pareto front (edgeformer int8)")
    for i, (name, r) in enumerate(sorted(rows.items(), key=lambda kv: kv[1]["p50"])):
        color = "tab:blue" if name.startswith("int8") else "tab:orange" if name.startswith("ort") else "tab:gray"
        ax.scatter(r["p50"], r["accuracy"] * 100, s=50, color=color, zorder=2)
        ax.annotate(f"{name} (FLOPs x{r['flops_ratio']:.2f})", (r["p50"], r["accuracy"] * 100), textcoords="offset points",
                    xytext=(6, 6 if i % 2 == 0 else -12), fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlim(right=max(r["p50"] for r in rows.values()) * 2.2)  # room for the slowest point's label
    ax.set_xlabel("latency p50, ms (batch 1, seq 128, 2 threads; log scale)")
    ax.set_ylabel("fine-foods test accuracy, %")
    ax.set_title("Pruned fine-tuned MiniLM: accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(ROOT / "out" / "minilm-foods"))
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "prune-levels")
    ap.add_argument("--levels", nargs="*", default=list(LEVELS), help="Which levels (names in LEVELS).")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--replot", action="store_true", help="Redraw the PNG from the saved JSON, no measuring.")
    a = ap.parse_args()
    if a.replot:
        plot(json.loads((a.out / "prune.json").read_text()), a.out / "prune.png")
        return

    import edgeformer
    from edgeformer.validate.accuracy import evaluate

    a.work.mkdir(parents=True, exist_ok=True)
    timing = ["--iters", str(a.iters), "--warmup", str(a.warmup)]
    vs_ort = str(ROOT / "benchmarks" / "bench_vs_onnxruntime.py")
    rows: dict[str, dict] = {}
    log("eager accuracy …")
    rows["eager fp32 (unpruned)"] = dict(flops_ratio=1.0, bytes=None, cmd=[vs_ort, "--worker", "eager", "--path", a.model, *timing],
                                         accuracy=evaluate(a.model, "fine-foods:test", threads=THREADS)["accuracy"])
    log("ONNX Runtime int8 …")
    _, int8_onnx = export_onnx(a.model, a.work)
    rows["ort int8 (unpruned)"] = dict(flops_ratio=1.0, bytes=int8_onnx.stat().st_size, accuracy=ort_accuracy(int8_onnx, a.model),
                                       cmd=[vs_ort, "--worker", "ort", "--path", str(int8_onnx), *timing])
    for name in a.levels:
        folder = prune_level(a.model, a.work, name, LEVELS[name])
        log(f"building {name} …")
        r = edgeformer.build(str(folder), "host", a.work / f"art-{slug(name)}", quant="int8", enforce=False, bench_iters=0)
        report = json.loads((folder / "prune.json").read_text()) if LEVELS[name] else None
        rows[f"int8 {name}"] = dict(
            flops_ratio=report["flops_per_sequence"]["ratio"] if report else 1.0,
            heads=r.manifest.model["heads"], ffn=r.manifest.model["ffn"], bytes=r.manifest.stored_bytes,
            val_accuracy=report["validation_accuracy"] if report else None,
            search_s=report["search_seconds"] if report else None,
            distill_s=report["distill"]["seconds"] if report and report["distill"] else None,
            accuracy=evaluate(str(r.path), "fine-foods:test", threads=THREADS, reference=False)["accuracy"],
            cmd=["-m", "edgeformer.validate.latency", str(r.path), "--threads", str(THREADS), *timing])

    samples = measure_rounds(rows, a.rounds)

    def ratio(base: str, name: str) -> float:
        return round_ratio(samples, base, name)

    eager = rows["eager fp32 (unpruned)"]
    lines = [
        f"Fine-tuned MiniLM ({a.model}) pruned with `edgeformer prune` (distilled 2 epochs), built int8 for host; "
        f"fine-foods test (1000 reviews). Latency at batch 1, seq 128, {THREADS} threads, median of {a.rounds} rounds x "
        f"{a.iters} runs ({a.warmup} warm-up), each contender in its own process; speed-ups are medians of per-round ratios. "
        f"{cpu_line()}",
        "",
        "| contender | encoder FLOPs | heads per layer | FFN per layer | p50 ms | vs eager | vs ORT int8 | MiB "
        "| test acc | vs eager (points) |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        size = "-" if r["bytes"] is None else f"{r['bytes'] / 2**20:.1f}"
        heads = ",".join(map(str, r.get("heads", []))) or "-"
        ffn = ",".join(map(str, r.get("ffn", []))) or "-"
        lines.append(f"| {name} | x{r['flops_ratio']:.2f} | {heads} | {ffn} | {r['p50']:.2f} | "
                     f"{ratio('eager fp32 (unpruned)', name):.2f}x | {ratio('ort int8 (unpruned)', name):.2f}x | {size} | "
                     f"{r['accuracy']:.3f} | {(r['accuracy'] - eager['accuracy']) * 100:+.1f} |")
    save_results(a.out, "prune", "\n".join(lines) + "\n", rows, samples, plot)


if __name__ == "__main__":
    main()
