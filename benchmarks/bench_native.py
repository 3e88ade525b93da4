"""The C++ runner (runtimes/cpp, built from the executorch wheel) beside the Python runtime,
on the same artifacts, this machine, 2 threads.

  minilm int8     `edgeformer build minilm --target host`: latency p50 at seq 128, peak RSS
  smollm2 int8    `edgeformer build smollm2-135m --quant int8` with ExecuTorch's LLM custom ops (Python
                  runtime only) and with `--lm-ops portable` (Python runtime and C++ runner):
                  128 prompt ids prefilled, 128 tokens decoded greedily

Every contender runs in its own fresh process, contenders interleaved within each outer
round; the table gives medians over rounds and ratios of rounds measured back to back.

    python benchmarks/bench_native.py --work out/native-bench [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from common import RESULTS, ROOT, THREADS, cli_build, log, run_json, write_results


def build(work: Path, name: str, args: list[str]) -> Path:
    return cli_build(work / name, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "native-bench")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=100)
    a = ap.parse_args()
    from edgeformer.devices.runner_build import BINARY, ensure_runner

    runner = str(ensure_runner("x86_64") / BINARY)
    py = sys.executable
    minilm = build(a.work, "minilm", ["minilm", "--target", "host"])
    smol = build(a.work, "smollm2", ["smollm2-135m", "--quant", "int8"])
    portable = build(a.work, "smollm2-portable", ["smollm2-135m", "--quant", "int8", "--lm-ops", "portable"])
    lm_py = ["--threads", str(THREADS), "--prompt-tokens", "128", "--new-tokens", "128", "--rounds", "1"]
    lm_cc = ["--threads", str(THREADS), "--prompt-tokens", "128", "--max-new-tokens", "128", "--ignore-eos", "--warmup", "1",
             "--no-outputs"]
    contenders = {
        "minilm int8 · Python runtime": [py, "-m", "edgeformer.validate.latency", str(minilm), "--iters", str(a.iters)],
        "minilm int8 · C++ runner": [runner, str(minilm), "--iters", str(a.iters), "--no-outputs"],
        "smollm2 int8 custom ops · Python runtime": [py, "-m", "edgeformer.lm.speed", str(smol), *lm_py],
        "smollm2 int8 portable · Python runtime": [py, "-m", "edgeformer.lm.speed", str(portable), *lm_py],
        "smollm2 int8 portable · C++ runner": [runner, str(portable), *lm_cc],
    }
    samples: dict[str, list[dict]] = {k: [] for k in contenders}
    for r in range(a.rounds):
        for name, cmd in contenders.items():
            samples[name].append(run_json(cmd))
        log(f"round {r + 1}/{a.rounds} done")

    def med(name: str, *keys: str) -> float:
        return statistics.median(next(s[k] for k in keys if k in s) for s in samples[name])

    lines = [f"C++ runner vs Python runtime, same artifacts, {THREADS} threads, median of {a.rounds} rounds "
             "(each contender a fresh process)", "",
             "| contender | latency p50 (ms) / decode tok/s | prefill tok/s | peak RSS (MiB) |", "|---|---|---|---|"]
    for name in contenders:
        if name.startswith("minilm"):
            lines.append(f"| {name} | {med(name, 'latency_ms_p50'):.2f} ms | - | {med(name, 'peak_rss_mb'):.0f} |")
        else:
            lines.append(f"| {name} | {med(name, 'decode_tok_s', 'decode_tokens_per_s'):.1f} tok/s | "
                         f"{med(name, 'prefill_tok_s', 'prefill_tokens_per_s'):.0f} | {med(name, 'peak_rss_mb'):.0f} |")

    def ratio(a_: str, b_: str, *keys: str) -> float:
        return statistics.median(next(x[k] for k in keys if k in x) / next(y[k] for k in keys if k in y)
                                 for x, y in zip(samples[a_], samples[b_], strict=True))

    mp, mc = "minilm int8 · Python runtime", "minilm int8 · C++ runner"
    sc, sp, sr = ("smollm2 int8 custom ops · Python runtime", "smollm2 int8 portable · Python runtime",
                  "smollm2 int8 portable · C++ runner")
    lines += ["", f"- MiniLM latency, Python / C++ per round: {ratio(mp, mc, 'latency_ms_p50'):.2f}x; peak RSS "
                  f"{med(mp, 'peak_rss_mb'):.0f} vs {med(mc, 'peak_rss_mb'):.0f} MiB",
              f"- SmolLM2 decode, portable C++ / custom-op Python per round: "
              f"{ratio(sr, sc, 'decode_tok_s', 'decode_tokens_per_s'):.2f}x; portable Python / custom-op Python: "
              f"{ratio(sp, sc, 'decode_tok_s', 'decode_tokens_per_s'):.2f}x"]
    write_results(RESULTS, "native", "\n".join(lines) + "\n", samples, indent=1)


if __name__ == "__main__":
    main()
