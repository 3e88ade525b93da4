"""Fine-tuned MiniLM classifier on fine-foods: PyTorch eager, ONNX Runtime, edgeformer.

Batch 1, sequence 128, 2 threads; each contender's latency is measured in its own fresh
process (warm-up excluded, median of many runs), in interleaved rounds; the table gives
the median over rounds. Test accuracy is over all 1000 fine-foods test reviews, every
contender tokenized the same way (the model's tokenizer.json, truncated/padded to 128).

  eager-fp32     Hugging Face model, PyTorch eager
  ort-fp32       torch.onnx.export -> ONNX Runtime (all graph optimizations)
  ort-int8       onnxruntime.quantization.quantize_dynamic (QInt8 weights) of ort-fp32
  edgeformer-*   `edgeformer build MODEL --target host --quant fp32|int8|8da4w`

    edgeformer finetune minilm --data fine-foods -o out/minilm-foods
    python benchmarks/bench_vs_onnxruntime.py out/minilm-foods
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    SEQ,
    THREADS,
    cpu_line,
    export_onnx,
    inputs,
    log,
    measure_rounds,
    ort_accuracy,
    ort_session,
    round_ratio,
    save_results,
)


def _time(fn, iters: int, warmup: int) -> float:
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def worker(kind: str, path: str, iters: int, warmup: int) -> dict:
    """Runs in its own process."""
    ids, mask = inputs()
    if kind == "ort":
        s = ort_session(Path(path))
        return dict(latency_ms_p50=_time(lambda: s.run(None, {"input_ids": ids, "attention_mask": mask}), iters, warmup))
    import torch

    torch.set_num_threads(THREADS)
    from edgeformer.models import load_model

    hf = load_model(path).hf.reference
    t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        return dict(latency_ms_p50=_time(lambda: hf(input_ids=t_ids, attention_mask=t_mask), iters, warmup))


def plot(rows: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, r) in enumerate(sorted(rows.items(), key=lambda kv: kv[1]["p50"])):
        color = "tab:blue" if name.startswith("edgeformer") else "tab:orange" if name.startswith("ort") else "tab:gray"
        ax.scatter(r["p50"], r["accuracy"] * 100, s=60, color=color)
        # alternate labels above/below so neighbours at equal accuracy do not overlap
        ax.annotate(name, (r["p50"], r["accuracy"] * 100), textcoords="offset points",
                    xytext=(6, 6 if i % 2 == 0 else -12), fontsize=9)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("latency p50, ms (batch 1, seq 128, 2 threads; log scale)")
    ax.set_ylabel("fine-foods test accuracy, %")
    ax.set_title("Fine-tuned MiniLM: accuracy vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(ROOT / "out" / "minilm-foods"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--replot", action="store_true", help="Redraw the PNG from the saved JSON, no measuring.")
    ap.add_argument("--worker", choices=["ort", "eager"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.path, a.iters, a.warmup)))
        return
    if a.replot:
        plot(json.loads((a.out / "vs_onnxruntime.json").read_text()), a.out / "vs_onnxruntime.png")
        return

    import edgeformer
    from edgeformer.validate.accuracy import evaluate

    work = Path(tempfile.mkdtemp(prefix="edgeformer-vs-ort-"))
    me = str(Path(__file__).resolve())
    timing = ["--iters", str(a.iters), "--warmup", str(a.warmup)]
    rows: dict[str, dict] = {}

    log("eager accuracy …")
    rows["eager-fp32"] = dict(bytes=None, accuracy=evaluate(a.model, "fine-foods:test", threads=THREADS)["accuracy"],
                              cmd=[me, "--worker", "eager", "--path", a.model, *timing])
    log("exporting ONNX …")
    fp32_onnx, int8_onnx = export_onnx(a.model, work)
    for name, path in (("ort-fp32", fp32_onnx), ("ort-int8", int8_onnx)):
        log(f"{name} accuracy …")
        rows[name] = dict(bytes=path.stat().st_size, accuracy=ort_accuracy(path, a.model),
                          cmd=[me, "--worker", "ort", "--path", str(path), *timing])
    for quant in ("fp32", "int8", "8da4w"):
        name = f"edgeformer-{quant}"
        log(f"building {name} …")
        emb = "fp32" if quant == "fp32" else "int8"
        r = edgeformer.build(a.model, "host", work / name, quant=quant, embedding_quant=emb, enforce=False, bench_iters=0)
        rows[name] = dict(bytes=r.manifest.stored_bytes, accuracy=evaluate(str(r.path), "fine-foods:test", threads=THREADS,
                                                                             reference=False)["accuracy"],
                          cmd=["-m", "edgeformer.validate.latency", str(r.path), "--threads", str(THREADS), *timing])

    samples = measure_rounds(rows, a.rounds)
    eager = rows["eager-fp32"]

    def ratio(base: str, name: str) -> float:
        return round_ratio(samples, base, name)

    lines = [
        f"Fine-tuned MiniLM ({a.model}), fine-foods test (1000 reviews); latency at batch 1, seq {SEQ}, {THREADS} threads, "
        f"median of {a.rounds} rounds x {a.iters} runs ({a.warmup} warm-up), each contender in its own process; "
        f"speed-ups are medians of per-round ratios. "
        f"{cpu_line()}",
        "",
        "| contender | p50 ms | vs eager | vs ORT int8 | file MiB | test accuracy | vs eager (points) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        size = "-" if r["bytes"] is None else f"{r['bytes'] / 2**20:.1f}"
        lines.append(f"| {name} | {r['p50']:.2f} | {ratio('eager-fp32', name):.2f}x | {ratio('ort-int8', name):.2f}x | {size} | "
                     f"{r['accuracy']:.3f} | {(r['accuracy'] - eager['accuracy']) * 100:+.1f} |")
    save_results(a.out, "vs_onnxruntime", "\n".join(lines) + "\n", rows, samples, plot)


if __name__ == "__main__":
    main()
