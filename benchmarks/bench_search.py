"""`edgeformer search` on fine-tuned MiniLM / fine-foods for host: does the chosen candidate's
*test* drop stay within the budget it was searched for, and how fast is it beside ONNX Runtime?

For each budget the search runs with the same space and work folder (the first does the
builds and measurements, the others only re-gate them). Then the chosen `.pte` of each
budget, ONNX Runtime int8 of the unpruned model (dynamic quantization, as users export it)
and the fp32 eager model are timed in interleaved rounds, each run in its own process, batch
1, seq 128, 2 threads; speed-ups are medians of per-round ratios. Test accuracy is over all
1000 fine-foods test reviews, which no step of the search saw.

    edgeformer finetune minilm --data fine-foods -o out/minilm-foods
    python benchmarks/bench_search.py out/minilm-foods --budgets 0,1.0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    RESULTS,
    SEQ,
    THREADS,
    cpu_line,
    export_onnx,
    log,
    measure_rounds,
    ort_accuracy,
    round_ratio,
    write_results,
)

SPACE = "quant=int8,8da4w prune=0,0.25,0.5 attention=full,window=32"


def run_search(model: str, budget: float, space: str, work: Path, jobs: int) -> tuple[dict, float]:
    """The search's --json output for one budget (or {"none": reason} when no candidate met
    every budget, exit 3), and its wall time."""
    out = work / f"best-{budget:g}"
    cmd = [sys.executable, "-m", "edgeformer.cli", "search", model, "--target", "host", "--data", "fine-foods",
           "--space", space, "--max-accuracy-drop", str(budget), "-o", str(out), "--work", str(work / "search"),
           "--jobs", str(jobs), "--json"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode == 3:
        return dict(none=p.stderr.strip().splitlines()[-1].removeprefix("error: ")), time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"search at budget {budget} failed: {(p.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(p.stdout), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--budgets", default="0,1.0")
    ap.add_argument("--space", default=SPACE)
    ap.add_argument("--work", type=Path, default=None, help="The search's work folder's parent (reused when given).")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()

    from edgeformer.validate.accuracy import evaluate

    work = a.work or Path(tempfile.mkdtemp(prefix="edgeformer-search-"))
    budgets = [float(b) for b in a.budgets.split(",")]
    chosen, walls = {}, {}
    for b in budgets:
        log(f"search at budget {b} …")
        chosen[b], walls[b] = run_search(a.model, b, a.space, work, a.jobs)
        log(f"  {chosen[b].get('chosen') or chosen[b].get('none')} ({walls[b]:.0f} s)")
    none = {b: chosen.pop(b)["none"] for b in list(chosen) if "none" in chosen[b]}
    budgets = [b for b in budgets if b in chosen]
    log("test accuracy …")
    eager_test = evaluate(a.model, "fine-foods:test", threads=THREADS)["accuracy"]
    timing = ["--iters", str(a.iters), "--warmup", str(a.warmup)]
    me = str(Path(__file__).resolve().parent / "bench_vs_onnxruntime.py")
    fp32_onnx, int8_onnx = export_onnx(a.model, work)
    rows = {"eager-fp32": dict(cmd=[me, "--worker", "eager", "--path", a.model, *timing], accuracy=eager_test, bytes=None),
            "ort-int8": dict(cmd=[me, "--worker", "ort", "--path", str(int8_onnx), *timing],
                             accuracy=ort_accuracy(int8_onnx, a.model), bytes=int8_onnx.stat().st_size)}
    for b in budgets:
        path = chosen[b]["path"]
        rows[f"budget {b:g}"] = dict(cmd=["-m", "edgeformer.validate.latency", path, "--threads", str(THREADS), *timing],
                                     accuracy=evaluate(path, "fine-foods:test", threads=THREADS, reference=False)["accuracy"],
                                     bytes=Path(path, "model.pte").stat().st_size)
    samples = measure_rounds(rows, a.rounds)
    lines = [
        f"`edgeformer search` of {a.model} for host on fine-foods, space `{a.space}`; test = all 1000 fine-foods test "
        f"reviews (unseen by the search); latency at batch 1, seq {SEQ}, {THREADS} threads, median of {a.rounds} rounds "
        f"x {a.iters} runs, each contender in its own process, speed-ups the medians of per-round ratios. {cpu_line()}",
        "",
        "| budget (pts) | chosen | validation drop (90% bound) | test accuracy | test drop (pts) | within budget on test "
        "| .pte MiB | p50 ms | vs ORT int8 | vs eager |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for b in budgets:
        name = f"budget {b:g}"
        c = next(x for x in chosen[b]["candidates"] if x["describe"] == chosen[b]["chosen"])
        drop = (eager_test - rows[name]["accuracy"]) * 100
        lines.append(f"| {b:g} | `{c['describe']}` | {c['drop_points']:.2f} ({c['drop_upper_points']:.2f}) | "
                     f"{rows[name]['accuracy']:.3f} | {drop:+.1f} | {'yes' if drop <= b + 1e-9 else '**no**'} | "
                     f"{rows[name]['bytes'] / 2**20:.1f} | {rows[name]['p50']:.2f} | "
                     f"{round_ratio(samples, 'ort-int8', name):.2f}x | {round_ratio(samples, 'eager-fp32', name):.2f}x |")
    lines += [f"| {b:g} | none met every budget: {why} | | | | | | | | |" for b, why in none.items()]
    ort = rows["ort-int8"]
    lines += ["", f"ONNX Runtime int8 of the unpruned model: {ort['p50']:.2f} ms, test accuracy {ort['accuracy']:.3f}; "
              f"fp32 eager: {rows['eager-fp32']['p50']:.2f} ms, test accuracy {eager_test:.3f}. "
              f"Search wall time: " + ", ".join(f"budget {b:g} {walls[b] / 60:.1f} min" for b in budgets)
              + " (later budgets re-gate the first one's cache)."]
    table = "\n".join(lines) + "\n"
    data = dict(rows={k: {kk: vv for kk, vv in v.items() if kk != "cmd"} | {"samples_ms": samples[k]} for k, v in rows.items()},
                searches={f"{b:g}": chosen[b] for b in budgets}, wall_s={f"{b:g}": walls[b] for b in budgets})
    write_results(a.out, "search", table, data)


if __name__ == "__main__":
    main()
