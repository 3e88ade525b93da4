"""SmolLM2-135M decode speed as the context grows: the C++ runner's attention over an fp32 and an
int8 KV cache beside llama.cpp on the same GGUF, 2 threads.

  runner fp32 cache    `edgeformer build smollm2-135m --quant gguf --gguf-offsets folded` in the
                       C++ runner (runtimes/cpp, its own custom_sdpa: llm_ops.cpp)
  runner int8 cache    the same with `--kv-cache int8` (custom_quantized_sdpa: the codes read as
                       they are, a scale and zero point per token and head)
  llama.cpp-Q4_1       llama-cpp-python on the shipped GGUF, f16 cache

Prompts of 128, 512 and 896 seeded ids (the builds' cache holds 1024), then 128 greedy tokens;
decode tok/s is 1000 / the median per-token latency. Each contender in its own fresh process,
contenders interleaved within each round; medians over rounds, ratios of rounds measured back
to back.

    python benchmarks/bench_context.py --work out/llm-bench [--rounds 3] [--llama-python PY]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from bench_llm import NEW, VOCAB, build, gguf_path, run, runner_row
from common import RESULTS, ROOT, cpu_line, log, round_ratio, write_results

CONTEXTS = (128, 512, 896)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "llm-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llama-python", default=sys.executable)
    a = ap.parse_args()
    a.work = a.work.resolve()
    from edgeformer.devices.runner_build import BINARY, ensure_runner

    runner = str(ensure_runner("x86_64") / BINARY)
    a.work.mkdir(parents=True, exist_ok=True)
    (a.work / "gguf_path.txt").write_text(str(gguf_path()))  # what bench_llm's llama.cpp worker reads
    arts = {"runner fp32 cache": build(a.work / "smol-gguf-folded", "--quant", "gguf", "--gguf-offsets", "folded"),
            "runner int8 cache": build(a.work / "smol-gguf-folded-kv8", "--quant", "gguf", "--gguf-offsets", "folded",
                                       "--kv-cache", "int8")}
    ids = np.random.default_rng(0).integers(0, VOCAB, max(CONTEXTS)).tolist()
    rows = {}
    for n in CONTEXTS:
        prompt = a.work / f"context-{n}.json"
        prompt.write_text(json.dumps({"prompt_ids": ids[:n]}))
        (a.work / f"context-{n}-ids.json").write_text(json.dumps(ids[:n]))
        for name, art in arts.items():
            rows[(name, n)] = dict(runner_row(runner, art, prompt), python=None)
        rows[("llama.cpp-Q4_1", n)] = dict(
            cmd=[str(Path(__file__).with_name("bench_llm.py")), "--worker", "llama", "--ids", str(a.work / f"context-{n}-ids.json"),
                 "--inner", "2", "--new", str(NEW), "--work", str(a.work)], python=a.llama_python)
    runs = {k: [] for k in rows}
    for rnd in range(a.rounds):
        for key, r in rows.items():
            runs[key].append(run(r["cmd"], r["python"]))
            log(f"round {rnd + 1}: {key[0]} at {key[1]} tokens: decode {runs[key][-1]['decode_tokens_per_s']:.1f} tok/s")
    names = [*arts, "llama.cpp-Q4_1"]
    decode = {f"{k[0]}@{k[1]}": [x["decode_tokens_per_s"] for x in v] for k, v in runs.items()}
    lines = [f"SmolLM2-135M, 2 threads, prompts of {', '.join(map(str, CONTEXTS))} seeded ids, {NEW} greedy tokens; medians of "
             f"{a.rounds} rounds (fresh process each); ratios: per round, back to back. {cpu_line()}", "",
             "| contender | " + " | ".join(f"decode tok/s @{n}" for n in CONTEXTS) + " | " +
             " | ".join(f"vs llama.cpp @{n}" for n in CONTEXTS) + " | peak RSS MiB @896 |",
             "|---|" + "---:|" * (2 * len(CONTEXTS) + 1)]
    for name in names:
        speeds = [statistics.median(decode[f"{name}@{n}"]) for n in CONTEXTS]
        ratios = [round_ratio(decode, f"{name}@{n}", f"llama.cpp-Q4_1@{n}") for n in CONTEXTS]
        rss = statistics.median(x["peak_rss_mb"] for x in runs[(name, CONTEXTS[-1])])
        lines.append(f"| {name} | " + " | ".join(f"{s:.1f}" for s in speeds) + " | " +
                     " | ".join(f"{r:.2f}x" for r in ratios) + f" | {rss:.0f} |")
    write_results(RESULTS, "context", "\n".join(lines) + "\n",
                  dict(runs={f"{k[0]}@{k[1]}": v for k, v in runs.items()}))


if __name__ == "__main__":
    main()
