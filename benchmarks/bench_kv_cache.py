"""SmolLM2-135M with an fp32 and an int8 KV cache (`--kv-cache`), this machine, 2 threads.

  custom · Python runtime   `edgeformer build smollm2-135m --quant int8 --kv-cache fp32|int8` (ExecuTorch's
                            LLM custom ops; int8 reads the cache with custom_quantized_sdpa)
  portable · C++ runner     `... --lm-ops portable --kv-cache fp32|int8` (core ops; the runner
                            built from the executorch wheel, runtimes/cpp)
  llama.cpp-Q4_1            llama-cpp-python on the shipped GGUF, f16 cache (when installed:
                            the `bench` extra, or --llama-python)

Every build has int8 linears and embedding and the default 1024-token cache, and is built with
`--eval-data janeausten` (Persuasion, 2048 tokens in segments of 512, fed one token per call):
the perplexity column is the `.pte`'s, beside the fp32 Hugging Face model's. Speed and memory:
128 prompt ids prefilled, 128 tokens decoded greedily, each contender in its own fresh process,
contenders interleaved within each outer round; medians over rounds, ratios of rounds measured
back to back.

    python benchmarks/bench_kv_cache.py --work out/kv-bench [--rounds 3] [--llama-python PY | --skip-llama]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, THREADS, cli_build, log, round_ratio, run_json, write_results

PROMPT, NEW = 128, 128
DTYPES = ("fp32", "int8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "kv-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--llama-python", default=sys.executable)
    ap.add_argument("--skip-llama", action="store_true", help="no llama.cpp row")
    a = ap.parse_args()
    a.work = a.work.resolve()  # the builds and workers run from the repository root
    from bench_llm import VOCAB, gguf_path

    from edgeformer.devices.runner_build import BINARY, ensure_runner
    from edgeformer.lm.speed import LM_OMP_THREADS

    runner = str(ensure_runner("x86_64") / BINARY)
    a.work.mkdir(parents=True, exist_ok=True)
    ids = np.random.default_rng(0).integers(0, VOCAB, PROMPT).tolist()
    ids_file = a.work / "prompt_ids.json"
    ids_file.write_text(json.dumps(ids))
    (a.work / "prompt.json").write_text(json.dumps({"prompt_ids": ids}))
    (a.work / "gguf_path.txt").write_text(str(gguf_path()))  # what bench_llm's llama.cpp worker reads
    py = [sys.executable, "-m", "edgeformer.lm.speed", "--threads", str(THREADS), "--prompt-tokens", str(PROMPT),
          "--new-tokens", str(NEW), "--rounds", "2", "--prompt-ids", str(ids_file)]
    cc = ["--inputs", str(a.work / "prompt.json"), "--threads", str(THREADS), "--max-new-tokens", str(NEW),
          "--ignore-eos", "--warmup", "1", "--no-outputs"]
    arts, rows = {}, {}
    for ops in ("custom", "portable"):
        for dtype in DTYPES:
            name = f"{ops} {dtype} cache"
            arts[name] = cli_build(a.work / f"{ops}-{dtype}", ["smollm2-135m", "--target", "host", "--quant", "int8", "--lm-ops", ops,
                                                                "--kv-cache", dtype, "--eval-data", "janeausten"],
                                   stdout=sys.stderr, cwd=ROOT)
            art = str(arts[name])
            rows[name] = ([*py[:3], art, *py[3:]], LM_OMP_THREADS) if ops == "custom" else ([runner, art, *cc], THREADS)
    if not a.skip_llama and _has_llama_cpp(a.llama_python):
        rows["llama.cpp-Q4_1"] = ([a.llama_python, str(Path(__file__).with_name("bench_llm.py")), "--worker", "llama",
                                   "--ids", str(ids_file), "--inner", "2", "--work", str(a.work)], THREADS)
    runs: dict[str, list[dict]] = {k: [] for k in rows}
    for rnd in range(a.rounds):
        for name, (cmd, omp) in rows.items():
            got = run_json(cmd, timeout=None, cwd=ROOT, omp_threads=omp)
            runs[name].append(dict(decode=got.get("decode_tokens_per_s", got.get("decode_tok_s")), rss=got["peak_rss_mb"]))
            log(f"round {rnd + 1}: {name} decode {runs[name][-1]['decode']:.1f} tok/s, peak RSS {runs[name][-1]['rss']:.0f} MiB")
    write_results(RESULTS, "kv-cache", table(rows, runs, arts, a.rounds), dict(runs=runs), indent=1)  # prints it too


def table(rows: dict, runs: dict, arts: dict, rounds: int) -> str:
    lines = [f"SmolLM2-135M, int8 linears and embedding, 1024-token cache, {THREADS} threads, {PROMPT}-token prompt, "
             f"{NEW} greedy tokens; medians of {rounds} rounds (fresh process each)", "",
             "| contender | cache MiB | decode tok/s | peak RSS MiB | perplexity (fp32 model) | next-token SQNR dB | top-1 agreement |",
             "|---|---|---|---|---|---|---|"]
    for name in rows:
        dec = statistics.median(x["decode"] for x in runs[name])
        rss = statistics.median(x["rss"] for x in runs[name])
        if name in arts:
            m = json.loads((arts[name] / "manifest.json").read_text())
            acc, num = m["accuracy"], m["numerics"]
            lines.append(f"| {name} | {m['generation']['cache_mb']} | {dec:.1f} | {rss:.0f} | {acc['perplexity']:.2f} "
                         f"({acc['reference_perplexity']:.2f}) | {num['sqnr_db']:.1f} | {num['top1_agreement']:.2f} |")
        else:
            lines.append(f"| {name} | f16 | {dec:.1f} | {rss:.0f} | - | - | - |")
    lines.append("")
    for ops in ("custom", "portable"):
        a, b = f"{ops} int8 cache", f"{ops} fp32 cache"
        rss = {k: [x["rss"] for x in runs[k]] for k in (a, b)}
        dec = {k: [x["decode"] for x in runs[k]] for k in (a, b)}
        lines.append(f"- {ops}: int8 cache over fp32 cache per round, decode tok/s {round_ratio(dec, a, b):.2f}x, "
                     f"peak RSS {round_ratio(rss, a, b):.2f}x")
    if "llama.cpp-Q4_1" in runs:
        rss = {k: [x["rss"] for x in v] for k, v in runs.items()}
        lines.append(f"- peak RSS over llama.cpp's per round: portable int8 cache in the C++ runner "
                     f"{round_ratio(rss, 'portable int8 cache', 'llama.cpp-Q4_1'):.2f}x")
    return "\n".join(lines) + "\n"


def _has_llama_cpp(python: str) -> bool:
    if python == sys.executable:
        return importlib.util.find_spec("llama_cpp") is not None
    return True  # another interpreter: the user says it has it


if __name__ == "__main__":
    main()
