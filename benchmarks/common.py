"""What the benchmark scripts share: measuring in fresh processes, rounds and medians, the
ONNX Runtime contender, and writing the result tables.

Each script runs as `python benchmarks/bench_x.py`, which puts this folder on sys.path, so
`from common import ...` finds this file (a worker subprocess started by path alike).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEQ, THREADS = 128, 2  # batch 1, sequence 128, 2 threads: every encoder table


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_line() -> str:
    """`CPU: <model name>, <n> cores.` for a table's caption (the name the manifests record)."""
    from edgeformer.validate.latency import cpu_model

    return f"CPU: {cpu_model()}, {os.cpu_count()} cores."


# ---- measuring: every contender in its own fresh process ----

def run_worker(args: list[str]) -> dict:
    """`python ARGS` in a fresh process with THREADS threads (edgeformer's own worker path, as
    the build's latency budget uses); its last JSON line on stdout."""
    from edgeformer.validate.latency import run_json_worker

    return run_json_worker(args, THREADS, f"worker {' '.join(args)}", cwd=ROOT)


def run_json(cmd: list[str], timeout: float | None = 1800, cwd: Path | None = None, omp_threads: int = THREADS) -> dict:
    """Any command (the C++ runner, another interpreter) with OMP_NUM_THREADS=omp_threads (default
    THREADS); its last JSON line on stdout, or exit with the command's last stderr line."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       env={**os.environ, "OMP_NUM_THREADS": str(omp_threads)})
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"worker {cmd[:3]} failed: {(p.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(lines[-1])


def measure_rounds(rows: dict[str, dict], rounds: int, medians: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """Each contender's p50 per round, every run in its own fresh process, contenders
    interleaved within a round; sets rows[name]["p50"] (and each worker field named in
    `medians`, e.g. "peak_rss_mb") to the median over rounds."""
    runs: dict[str, list[dict]] = {k: [] for k in rows}
    for rnd in range(rounds):
        for name, r in rows.items():  # "cmd": python ARGS; "exe": any command, its "field" as the latency
            got = run_json(r["exe"]) if "exe" in r else run_worker(r["cmd"])
            runs[name].append(dict(got, latency_ms_p50=got[r.get("field", "latency_ms_p50")]))
            log(f"round {rnd + 1}: {name} {runs[name][-1]['latency_ms_p50']:.2f} ms")
    for name in rows:
        for field, key in (("latency_ms_p50", "p50"), *((m, m) for m in medians)):
            rows[name][key] = statistics.median(x[field] for x in runs[name])
    return {k: [x["latency_ms_p50"] for x in v] for k, v in runs.items()}


def round_ratio(samples: dict[str, list[float]], base: str, name: str) -> float:
    """Median over rounds of base/name, each round's pair measured back to back."""
    return statistics.median(b / x for b, x in zip(samples[base], samples[name], strict=True))


def cli_build(out: Path, args: list[str], stdout=subprocess.DEVNULL, cwd: Path | None = None) -> Path:
    """`edgeformer build ARGS -o OUT --bench-iters 0` in a subprocess, skipped when OUT already
    holds an artifact (benchmarks reuse their builds across runs)."""
    if not (out / "manifest.json").is_file():
        log(f"building {out.name}: edgeformer build {' '.join(args)}")
        subprocess.run([sys.executable, "-m", "edgeformer.cli", "build", *args, "-o", str(out), "--bench-iters", "0"],
                       check=True, stdout=stdout, cwd=cwd)
    return out


# ---- the ONNX Runtime contender (bench_vs_onnxruntime.py, bench_prune.py) ----

def inputs():
    """The timed input: random ids [1, SEQ] (seeded), all-ones mask."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(0, 30522, (1, SEQ), dtype=np.int64), np.ones((1, SEQ), dtype=np.int64)


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def export_onnx(model: str, work: Path) -> tuple[Path, Path]:
    """`torch.onnx.export` of the classifier's logits, and its dynamic int8 quantization."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgeformer.models import load_model

    hf = load_model(model).hf.reference

    class Logits(torch.nn.Module):  # keywords: positional args collide with use_cache in transformers 5
        def __init__(self):
            super().__init__()
            self.m = hf

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).logits

    ids, mask = (torch.from_numpy(x) for x in inputs())
    fp32 = work / "model.onnx"
    torch.onnx.export(Logits().eval(), (ids, mask), str(fp32), input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    int8 = work / "model.int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8


def ort_accuracy(path: Path, model: str) -> float:
    """Test accuracy of the ONNX model at `path` on all fine-foods test reviews."""
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


# ---- results ----

def without(rows: dict[str, dict], *keys: str) -> dict[str, dict]:
    """`rows` without the per-row fields `keys` (how to run a contender is not a result)."""
    return {k: {kk: vv for kk, vv in v.items() if kk not in keys} for k, v in rows.items()}


def write_results(out: Path, stem: str, table: str, data=None, indent: int = 2) -> None:
    """Print `table`; write STEM.md, and STEM.json of `data` when given, under `out`."""
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(table)
    if data is not None:
        (out / f"{stem}.json").write_text(json.dumps(data, indent=indent))


def save_results(out: Path, stem: str, table: str, rows: dict, samples: dict, plot_fn: Callable[[dict, Path], None]) -> None:
    """Print the table; write STEM.md, STEM.json (rows and raw samples) and STEM.png under `out`."""
    write_results(out, stem, table, {k: v | {"samples_ms": samples[k]} for k, v in without(rows, "cmd").items()})
    plot_fn(rows, out / f"{stem}.png")
