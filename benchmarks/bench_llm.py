"""SmolLM2-135M on this machine's 2 threads: edgeformer's .pte beside llama.cpp on the very
same GGUF file, and transformers eager fp32.

  edgeformer-int8   `edgeformer build smollm2-135m --target host --quant int8` (int8 linears and
                    embedding, full KV cache of 1024 tokens)
  edgeformer-gguf   `... --quant gguf`: the GGUF's own Q4_1 codes and scales in XNNPACK's
                    4-bit kernels plus the group-sum correction, its Q8_0 table as the
                    embedding, the tied head at int8
  edgeformer-gguf-runner   the same .pte run by the C++ runner (runtimes/cpp, with its own
                    LLM custom ops): no Python in the process, as on a phone or a Pi
  edgeformer-gguf-folded-runner   `... --quant gguf --gguf-offsets folded` in the runner: the
                    offsets as 4-bit digit groups inside the kernel (docs/int4-on-xnnpack.md)
  llama.cpp-Q4_1    llama-cpp-python on the shipped SmolLM2-135M-Instruct.Q4_1.gguf,
                    n_threads=2, n_threads_batch=2
  hf-eager-fp32     transformers LlamaForCausalLM from the same GGUF, dequantized, with its
                    dynamic KV cache

Every contender prefills the same 128 token ids and decodes 128 tokens greedily, one call
per token, in its own fresh process (one warm-up round inside each process, then timed
rounds), contenders interleaved within each outer round; the table gives medians over
rounds and ratios over rounds measured back to back. The bandwidth floor divides the
memory bandwidth measured here (edgeformer's copy probe) by the bytes each must read per
decoded token: edgeformer its weights but the embedding table plus the KV cache;
llama.cpp the whole GGUF (the tied embedding is the output projection) plus its f16 cache;
eager fp32 every parameter. Then memory over a long generation: the sliding-window build
(`--attention window=256:sinks=4`) decodes 2048 tokens, resident memory sampled every 256.

    python benchmarks/bench_llm.py --work out/llm-bench [--llama-python /path/to/python] [--skip-eager] [--skip-ring]

`--skip-ring` leaves out the long generation and writes results/llm-4bit.{md,json} instead
of results/llm.{md,json}.

llama-cpp-python is in the `bench` extra (it compiles llama.cpp from source, ~4 minutes);
`--llama-python` points at another interpreter that has it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, THREADS, cli_build, log, round_ratio, run_json, without, write_results

PROMPT, NEW, VOCAB = 128, 128, 49152
FIELDS = ("prefill_tokens_per_s", "time_to_first_token_ms", "decode_tokens_per_s", "peak_rss_mb", "model_memory_mb")


def gguf_path() -> Path:
    from edgeformer.models.causal import BUNDLED_LMS

    return BUNDLED_LMS["smollm2-135m"].locate("smollm2-135m")


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed_rounds(prefill, decode, ids: list[int], new: int, rounds: int) -> dict:
    """prefill(ids) -> first token; decode(tok, pos) -> next token. Round 0 warms up."""
    pre, ttft, steps, curve = [], [], [], []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        tok = prefill(ids)
        t1 = time.perf_counter()
        times = []
        for i in range(new if r else 16):
            s0 = time.perf_counter()
            tok = decode(tok, len(ids) + i)
            times.append((time.perf_counter() - s0) * 1e3)
            if r == rounds and (i + 1) % 256 == 0:
                curve.append([i + 1, round(_rss_mb(), 1)])
        if r:
            pre.append(t1 - t0)
            ttft.append(t1 - t0)
            steps += times
    return dict(prefill_tokens_per_s=len(ids) / statistics.median(pre), time_to_first_token_ms=statistics.median(ttft) * 1e3,
                decode_tokens_per_s=1e3 / statistics.median(steps), latency_ms_p50=statistics.median(steps),
                peak_rss_mb=_rss_mb("VmHWM"), rss_mb_by_tokens=curve)


def llama_worker(gguf: str, ids: list[int], new: int, rounds: int) -> dict:
    """Runs under an interpreter with llama_cpp (and numpy)."""
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    base = _rss_mb()
    llm = Llama(model_path=gguf, n_ctx=len(ids) + new + 16, n_threads=THREADS, n_threads_batch=THREADS, n_batch=512,
                verbose=False)
    vocab = llm.n_vocab()

    def last():  # the last evaluated token's logits (Llama.scores is not written unless logits_all)
        return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(vocab,))))

    def prefill(x):
        llm.reset()
        llm.eval(x)
        return last()

    def decode(tok, pos):
        llm.eval([tok])
        return last()

    r = _timed_rounds(prefill, decode, ids, new, rounds)
    return dict(r, model_memory_mb=r["peak_rss_mb"] - base, runtime_baseline_rss_mb=base)


def hf_worker(gguf: str, ids: list[int], new: int, rounds: int) -> dict:
    import torch
    import transformers as tf

    torch.set_num_threads(THREADS)
    base = _rss_mb()
    p = Path(gguf)
    model = tf.AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32).eval()
    state = {}

    @torch.no_grad()
    def prefill(x):
        state["cache"] = tf.DynamicCache(config=model.config)
        out = model(torch.tensor([x]), past_key_values=state["cache"], use_cache=True)
        return int(out.logits[0, -1].argmax())

    @torch.no_grad()
    def decode(tok, pos):
        out = model(torch.tensor([[tok]]), past_key_values=state["cache"], use_cache=True)
        return int(out.logits[0, -1].argmax())

    r = _timed_rounds(prefill, decode, ids, new, rounds)
    return dict(r, model_memory_mb=r["peak_rss_mb"] - base, runtime_baseline_rss_mb=base)


def run(cmd: list[str], python: str | None = sys.executable, omp_threads: int = THREADS) -> dict:
    """A contender's fields; python=None: `cmd` is the C++ runner, its fields renamed to these."""
    if python is not None:
        return run_json([python, *cmd], timeout=None, cwd=ROOT, omp_threads=omp_threads)
    r = run_json(cmd, timeout=None, cwd=ROOT, omp_threads=omp_threads)
    return dict(r, prefill_tokens_per_s=r["prefill_tok_s"], decode_tokens_per_s=1e3 / r["latency_ms_p50"])


def build(out: Path, *args: str) -> Path:
    return cli_build(out, ["smollm2-135m", "--target", "host", *args], stdout=sys.stderr, cwd=ROOT)


def runner_row(runner: str, art: Path, inputs: Path) -> dict:
    """A contender row: the C++ runner prefilling the ids in `inputs` and decoding NEW tokens."""
    return dict(cmd=[runner, str(art), "--threads", str(THREADS), "--inputs", str(inputs), "--max-new-tokens", str(NEW),
                     "--ignore-eos", "--warmup", "1", "--no-outputs"], python=None)


def bytes_per_token(name: str, rows: dict, edge_manifest: dict, gguf: Path) -> float:
    pos = PROMPT + NEW // 2
    if name.startswith("edgeformer"):
        from edgeformer.lm.speed import bytes_per_token as bpt
        from edgeformer.manifest import Manifest

        return bpt(Manifest(**edge_manifest), pos)
    m = edge_manifest["model"]
    k_and_v = 2 * m["layers"] * m["kv_heads"] * m.get("head_dim", m["hidden"] // m["heads"])  # values per token
    if name.startswith("llama.cpp"):
        return gguf.stat().st_size + pos * k_and_v * 2  # f16 K/V
    return m["params"] * 4 + pos * k_and_v * 4  # transformers: fp32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "llm-bench")
    ap.add_argument("--rounds", type=int, default=3, help="outer rounds (fresh processes)")
    ap.add_argument("--inner", type=int, default=2, help="timed rounds inside each process")
    ap.add_argument("--llama-python", default=sys.executable)
    ap.add_argument("--skip-eager", action="store_true")
    ap.add_argument("--skip-ring", action="store_true", help="no long generation; results go to llm-4bit.*")
    ap.add_argument("--worker", choices=["llama", "hf"], help=argparse.SUPPRESS)
    ap.add_argument("--ids", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--new", type=int, default=NEW, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        fn = llama_worker if a.worker == "llama" else hf_worker
        print(json.dumps(fn(str(gguf_path_arg()), json.loads(a.ids.read_text()), a.new, a.inner)))
        return

    import numpy as np

    from edgeformer.lm.speed import LM_OMP_THREADS  # the parent has edgeformer; a llama.cpp worker may not

    a.work.mkdir(parents=True, exist_ok=True)
    ids_file = a.work / "prompt_ids.json"
    ids_file.write_text(json.dumps(np.random.default_rng(0).integers(0, VOCAB, PROMPT).tolist()))
    runner_ids = a.work / "runner_inputs.json"
    runner_ids.write_text(json.dumps({"prompt_ids": json.loads(ids_file.read_text())}))
    gguf = gguf_path()
    (a.work / "gguf_path.txt").write_text(str(gguf))
    full = build(a.work / "smol-int8", "--quant", "int8")
    grid = build(a.work / "smol-gguf", "--quant", "gguf")
    folded = build(a.work / "smol-gguf-folded", "--quant", "gguf", "--gguf-offsets", "folded")
    from edgeformer.devices.runner_build import BINARY, ensure_runner

    runner = str(ensure_runner("x86_64") / BINARY)
    me = Path(__file__).resolve()

    def edge(art: Path) -> dict:
        return dict(cmd=["-m", "edgeformer.lm.speed", str(art), "--threads", str(THREADS), "--prompt-tokens", str(PROMPT),
                         "--new-tokens", str(NEW), "--rounds", str(a.inner), "--prompt-ids", str(ids_file)],
                    omp_threads=LM_OMP_THREADS)

    rows = {
        "edgeformer-int8": edge(full),
        "edgeformer-gguf": edge(grid),
        "edgeformer-gguf-runner": runner_row(runner, grid, runner_ids),
        "edgeformer-gguf-folded-runner": runner_row(runner, folded, runner_ids),
        "llama.cpp-Q4_1": dict(cmd=[str(me), "--worker", "llama", "--ids", str(ids_file), "--inner", str(a.inner),
                                    "--work", str(a.work)], python=a.llama_python),
    }
    if not a.skip_eager:
        rows["hf-eager-fp32"] = dict(cmd=[str(me), "--worker", "hf", "--ids", str(ids_file), "--inner", str(a.inner),
                                          "--work", str(a.work)])
    runs = {k: [] for k in rows}
    for rnd in range(a.rounds):
        for name, r in rows.items():
            runs[name].append(run(r["cmd"], r.get("python", sys.executable), r.get("omp_threads", THREADS)))
            x = runs[name][-1]
            log(f"round {rnd + 1}: {name} prefill {x['prefill_tokens_per_s']:.0f} tok/s, decode {x['decode_tokens_per_s']:.1f} tok/s")
    bw = statistics.median(x["bandwidth_gb_s"] for x in runs["edgeformer-int8"])
    built = {"edgeformer-int8": full, "edgeformer-gguf": grid, "edgeformer-gguf-runner": grid, "edgeformer-gguf-folded-runner": folded}
    manifests = {name: json.loads((art / "manifest.json").read_text()) for name, art in built.items()}
    manifest = manifests["edgeformer-int8"]
    for name in rows:
        for f in FIELDS:
            rows[name][f] = statistics.median(x[f] for x in runs[name])
        rows[name]["bytes_per_token"] = bytes_per_token(name, rows, manifests.get(name, manifest), gguf)
        rows[name]["floor_tokens_per_s"] = bw * 1e9 / rows[name]["bytes_per_token"]
    decode = {k: [x["decode_tokens_per_s"] for x in v] for k, v in runs.items()}
    prefill_s = {k: [x["prefill_tokens_per_s"] for x in v] for k, v in runs.items()}
    lines = [f"SmolLM2-135M, {THREADS} threads, {PROMPT}-token prompt, {NEW} greedy tokens; medians of {a.rounds} rounds "
             f"(fresh process each, {a.inner} timed rounds inside); bandwidth {bw:.1f} GB/s measured", "",
             "| contender | prefill tok/s | first token ms | decode tok/s | MB read/token | floor tok/s | of floor "
             "| peak RSS MiB | model memory MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['prefill_tokens_per_s']:.0f} | {r['time_to_first_token_ms']:.0f} | {r['decode_tokens_per_s']:.1f} | "
                     f"{r['bytes_per_token'] / 1e6:.0f} | {r['floor_tokens_per_s']:.0f} | "
                     f"{r['decode_tokens_per_s'] / r['floor_tokens_per_s']:.0%} | {r['peak_rss_mb']:.0f} | {r['model_memory_mb']:.0f} |")
    lines.append("")
    for name in ("edgeformer-int8", "edgeformer-gguf", "edgeformer-gguf-runner", "edgeformer-gguf-folded-runner"):
        lines.append(f"{name} tokens/s over llama.cpp-Q4_1's, per round back to back: decode "
                     f"{round_ratio(decode, name, 'llama.cpp-Q4_1'):.2f}x, prefill "
                     f"{round_ratio(prefill_s, name, 'llama.cpp-Q4_1'):.2f}x; .pte {manifests[name]['pte']['bytes'] / 2**20:.1f} MiB; "
                     f"peak RSS {rows[name]['peak_rss_mb']:.0f} vs {rows['llama.cpp-Q4_1']['peak_rss_mb']:.0f} MiB")
    if a.skip_ring:
        write_results(RESULTS, "llm-4bit", "\n".join(lines) + "\n", dict(rows=without(rows, "cmd", "python", "omp_threads"), runs=runs))
        return
    ring = build(a.work / "smol-ring", "--attention", "window=256:sinks=4")
    log("long generation with the sliding-window cache …")
    long = run(["-m", "edgeformer.lm.speed", str(ring), "--threads", str(THREADS), "--prompt-tokens", str(PROMPT),
                "--new-tokens", "2048", "--rounds", "1", "--prompt-ids", str(ids_file)])
    curve = long["rss_mb_by_tokens"]
    lines += ["", f"sliding-window cache (window 256 + 4 sinks, {ring_slots(ring)} slots), 2048 generated tokens: resident MiB by "
              "tokens " + ", ".join(f"{t}: {m:.0f}" for t, m in curve) + f"; peak {long['peak_rss_mb']:.0f} MiB, "
              f"decode {long['decode_tokens_per_s']:.1f} tok/s"]
    write_results(RESULTS, "llm", "\n".join(lines) + "\n", dict(rows=without(rows, "cmd", "python", "omp_threads"), runs=runs, long=long))


def ring_slots(art: Path) -> int:
    return json.loads((art / "manifest.json").read_text())["generation"]["cache_slots"]


def gguf_path_arg() -> Path:
    """In a worker (which may lack edgeformer): the GGUF path the parent wrote."""
    i = sys.argv.index("--work")
    return Path(Path(sys.argv[i + 1], "gguf_path.txt").read_text())


if __name__ == "__main__":
    main()
