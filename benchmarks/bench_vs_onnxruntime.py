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
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEQ, THREADS = 128, 2


def _inputs():
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(0, 30522, (1, SEQ), dtype=np.int64), np.ones((1, SEQ), dtype=np.int64)


def _time(fn, iters: int, warmup: int) -> float:
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def worker(kind: str, path: str, iters: int, warmup: int) -> dict:
    """Runs in its own process."""
    ids, mask = _inputs()
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


def export_onnx(model: str, work: Path) -> tuple[Path, Path]:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgeformer.models import load_model

    hf = load_model(model).hf.reference

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = hf

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).logits

    ids, mask = (torch.from_numpy(x) for x in _inputs())
    fp32 = work / "model.onnx"
    torch.onnx.export(Logits().eval(), (ids, mask), str(fp32), input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    int8 = work / "model.int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8


def ort_accuracy(path: Path, model: str) -> float:
    import numpy as np

    from edgeformer.data import load_data
    from edgeformer.models import load_model
    from edgeformer.tokenize import TextEncoder

    loaded = load_model(model)
    labels = loaded.hf.labels
    te = TextEncoder(loaded.hf.tokenizer_file, SEQ, loaded.pad_id)
    test = load_data("fine-foods:test")
    s = ort_session(path)
    right = 0
    for text, label in zip(test.texts, test.labels, strict=True):
        e = te.encode(text)
        logits = s.run(None, {"input_ids": e.input_ids.numpy(), "attention_mask": e.attention_mask.numpy()})[0]
        right += labels[int(np.argmax(logits))] == label
    return right / len(test)


def run_worker(args: list[str]) -> dict:
    from edgeformer.validate.bench import run_json_worker

    return run_json_worker(args, THREADS, f"worker {' '.join(args)}", cwd=ROOT)


def measure_rounds(rows: dict[str, dict], rounds: int, medians: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """Each contender's p50 per round, every run in its own fresh process, contenders
    interleaved within a round; sets rows[name]["p50"] (and each worker field named in
    `medians`, e.g. "peak_rss_mb") to the median over rounds."""
    runs: dict[str, list[dict]] = {k: [] for k in rows}
    for rnd in range(rounds):
        for name, r in rows.items():
            runs[name].append(run_worker(r["cmd"]))
            print(f"round {rnd + 1}: {name} {runs[name][-1]['latency_ms_p50']:.2f} ms", file=sys.stderr, flush=True)
    for name in rows:
        for field, key in (("latency_ms_p50", "p50"), *((m, m) for m in medians)):
            rows[name][key] = statistics.median(x[field] for x in runs[name])
    return {k: [x["latency_ms_p50"] for x in v] for k, v in runs.items()}


def round_ratio(samples: dict[str, list[float]], base: str, name: str) -> float:
    """Median over rounds of base/name, each round's pair measured back to back."""
    return statistics.median(b / x for b, x in zip(samples[base], samples[name], strict=True))


def save_results(out: Path, stem: str, table: str, rows: dict, samples: dict, plot_fn) -> None:
    """Print the table; write STEM.md, STEM.json (rows and raw samples) and STEM.png under `out`."""
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(table)
    (out / f"{stem}.json").write_text(json.dumps(
        {k: {kk: vv for kk, vv in v.items() if kk != "cmd"} | {"samples_ms": samples[k]} for k, v in rows.items()}, indent=2))
    plot_fn(rows, out / f"{stem}.png")


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
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

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
        rows[name] = dict(bytes=r.manifest.pte["bytes"], accuracy=evaluate(str(r.path), "fine-foods:test", threads=THREADS,
                                                                             reference=False)["accuracy"],
                          cmd=["-m", "edgeformer.validate.bench", str(r.path), "--threads", str(THREADS), *timing])

    samples = measure_rounds(rows, a.rounds)
    eager = rows["eager-fp32"]

    def ratio(base: str, name: str) -> float:
        return round_ratio(samples, base, name)

    from edgeformer.pipeline import _cpu_model

    lines = [
        f"Fine-tuned MiniLM ({a.model}), fine-foods test (1000 reviews); latency at batch 1, seq {SEQ}, {THREADS} threads, "
        f"median of {a.rounds} rounds x {a.iters} runs ({a.warmup} warm-up), each contender in its own process; "
        f"speed-ups are medians of per-round ratios. "
        f"CPU: {_cpu_model()}, {os.cpu_count()} cores.",
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
