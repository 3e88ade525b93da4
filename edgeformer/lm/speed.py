"""Prefill and decode speed, time to first token and memory of a causal-LM artifact, measured
in a fresh process (as `validate/latency.py` does for encoders).

One round: prefill a `prompt`-token prompt (in the program's chunks), then decode `new`
tokens greedily, one call each. Rounds after the first (warm-up) are timed; the report is
the median over rounds of prefill tokens/s and time to first token, and the median and p90
of per-token decode latency. Resident memory is sampled every 256 decoded tokens, so a run
with `new=2048` shows whether the cache grows. The bandwidth floor: the bytes a decode step
must read (the `.pte`'s weights but the embedding table, of which one row is read, plus the
written part of the KV cache) over the memory bandwidth measured here, copy-based, on the
same threads.

Run directly: `python -m edgeformer.lm.speed ARTIFACT --threads 2 --prompt-tokens 128 --new-tokens 128`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from edgeformer.errors import UserError
from edgeformer.validate.latency import peak_rss_mb, percentile, rss_mb, run_json_worker, worker_main

# libtorch's OpenMP pool runs the LLM custom ops (update_cache, custom_sdpa) between XNNPACK's
# calls; at two threads beside XNNPACK's two it oversubscribes a 2-core machine. SmolLM2 gguf,
# 2 cores, 32 tokens, 4 processes each: OMP_NUM_THREADS=1 101-113 tok/s, =2 79-85 or 35 at
# random per process. (torch.set_num_threads(1) in the process does not do the same: 46-54.)
LM_OMP_THREADS = 1


def measure_bandwidth(threads: int, mib: int = 256, reps: int = 5) -> float:
    """Memory bandwidth in GB/s (bytes read + written by a large copy), best of `reps`."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * 4 / best / 1e9


def model_vocab(manifest) -> int:
    """Ids the model's table has rows for: a tokenizer may count more (added tokens past the
    table, as a GGUF's can), and an id past the table aborts the gather kernel."""
    return min(manifest.tokenizer["vocab_size"], manifest.model.get("vocab_size") or manifest.tokenizer["vocab_size"])


def bytes_per_token(manifest, position: int) -> int:
    """Bytes read by one decode step at `position` (weights + written cache)."""
    gen = manifest.generation
    embedding = gen["embedding_bytes"]
    # each layer reads its own: a full custom-op cache up to the position; a ring (custom_sdpa over
    # every slot) and any portable cache (bmm over every slot) all of it
    full = gen.get("max_context") if gen.get("ops", "custom") == "custom" else None
    layers = gen.get("layer_slots") or [gen["cache_slots"]]
    read = [min(position, n) if n == full else n for n in layers]
    cache_read = sum(read) * gen["cache_bytes_per_token"] // len(layers)
    if manifest.pte.get("data"):  # the table is the head's, read whole by every step
        embedding = 0
    return manifest.stored_bytes - embedding + cache_read


def _measure(path: Path, threads: int, prompt: int, new: int, rounds: int, prompt_ids: list[int] | None = None) -> dict:
    import torch

    from edgeformer.artifact import load_artifact
    from edgeformer.lm.generate import prefill
    from edgeformer.program import open_program

    art = load_artifact(path)
    gen = art.manifest.generation
    if not gen:
        raise UserError(f"{path} is not a causal-LM artifact; `edgeformer bench` measures it as an encoder")
    limit = gen.get("max_context")
    if limit is not None and prompt + new > limit:
        raise UserError(f"--prompt-tokens {prompt} + --new-tokens {new} exceed the {limit}-token context; use fewer tokens")
    ids = prompt_ids[:prompt] if prompt_ids else \
        torch.randint(0, model_vocab(art.manifest), (prompt,), generator=torch.Generator().manual_seed(0)).tolist()
    baseline = rss_mb()
    prog = open_program(art, threads)
    prefill_s, ttft_s, per_token_ms, rss_curve = [], [], [], []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        logits = prefill(prog, ids, gen["max_tokens_per_call"])
        t1 = time.perf_counter()
        tok = int(logits[0, -1].argmax())
        t2 = time.perf_counter()
        steps = []
        for i in range(new if r else min(new, 16)):
            s0 = time.perf_counter()
            tok = int(prog(torch.tensor([[tok]]), torch.tensor([prompt + i]))[0, -1].argmax())
            steps.append((time.perf_counter() - s0) * 1e3)
            if r == rounds and (i + 1) % 256 == 0:
                rss_curve.append([i + 1, round(rss_mb(), 1)])
        if r:  # round 0 warms up
            prefill_s.append(t1 - t0)
            ttft_s.append(t2 - t0)
            per_token_ms += steps
    peak = peak_rss_mb()  # before the bandwidth probe's two 256 MiB buffers
    bw = measure_bandwidth(threads)
    per_token = bytes_per_token(art.manifest, prompt + new // 2)
    decode = 1e3 / statistics.median(per_token_ms)
    return dict(
        prompt_tokens=prompt, new_tokens=new, rounds=rounds, threads=threads,
        prefill_tokens_per_s=round(prompt / statistics.median(prefill_s), 1),
        time_to_first_token_ms=round(statistics.median(ttft_s) * 1e3, 2),
        decode_tokens_per_s=round(decode, 1),
        latency_ms_p50=round(statistics.median(per_token_ms), 3),
        latency_ms_p90=round(percentile(per_token_ms, 90), 3),
        peak_rss_mb=round(peak, 1), runtime_baseline_rss_mb=round(baseline, 1),
        model_memory_mb=round(peak - baseline, 1), rss_mb_by_tokens=rss_curve,
        bandwidth_gb_s=round(bw, 1), bytes_per_token=per_token,
        bandwidth_floor_tokens_per_s=round(bw * 1e9 / per_token, 1),
        share_of_floor=round(decode / (bw * 1e9 / per_token), 3),
    )


def _measure_eager(model: str, threads: int, prompt: int, new: int) -> dict:
    """Runs inside the worker: the fp32 Hugging Face model decoding greedily with its own KV
    cache in eager PyTorch (the reference of host's relative latency budget)."""
    import torch

    from edgeformer.models.causal import load_reference, resolve_lm

    torch.set_num_threads(threads)
    _, folder, gguf = resolve_lm(model)
    hf = load_reference(folder, gguf)
    ids = torch.randint(0, hf.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
    steps = []
    with torch.no_grad():
        out = hf(input_ids=ids, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(new):
            t0 = time.perf_counter()
            out = hf(input_ids=tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            steps.append((time.perf_counter() - t0) * 1e3)
    steps = steps[min(4, len(steps) - 1):]  # the first steps warm up
    return dict(latency_ms_p50=round(statistics.median(steps), 3), decode_tokens_per_s=round(1e3 / statistics.median(steps), 1),
                prompt_tokens=prompt, new_tokens=new, threads=threads,
                reference="fp32 eager PyTorch (transformers, its KV cache), greedy decode")


def measure_lm_eager(model: str, threads: int, prompt: int = 32, new: int = 32, timeout: float = 1200) -> dict:
    """Decode speed of the fp32 eager model `model` (bundled name, folder or .gguf) in a fresh process."""
    args = ["-m", "edgeformer.lm.speed", "--eager", model, "--threads", str(threads), "--prompt-tokens", str(prompt),
            "--new-tokens", str(new)]
    return run_json_worker(args, threads, f"eager benchmark of {model}", timeout)


def default_lengths(generation: dict, prompt: int | None, new: int | None) -> tuple[int, int]:
    """128-token prompt and 128 new tokens, or what fits a smaller context (half each)."""
    limit = generation.get("max_context")
    prompt = prompt or (128 if limit is None else min(128, limit // 2))
    new = new or (128 if limit is None else min(128, limit - prompt))
    return prompt, new


def measure_lm(path: Path, threads: int, prompt: int = 128, new: int = 128, rounds: int = 3, timeout: float = 1200) -> dict:
    args = ["-m", "edgeformer.lm.speed", str(path), "--threads", str(threads), "--prompt-tokens", str(prompt),
            "--new-tokens", str(new), "--rounds", str(rounds)]
    return run_json_worker(args, threads, f"benchmark of {path}", timeout, omp_threads=LM_OMP_THREADS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("artifact", type=Path, nargs="?")
    p.add_argument("--eager", default=None, help="time this causal LM's fp32 eager decode instead (bundled name, folder, .gguf)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompt-ids", type=Path, default=None, help="a JSON list of token ids to use as the prompt (benchmarks)")
    a = p.parse_args(argv)

    def work() -> dict:
        if a.prompt_tokens < 1 or a.new_tokens < 1 or a.rounds < 1:
            raise UserError(f"--prompt-tokens {a.prompt_tokens}, --new-tokens {a.new_tokens}, --rounds {a.rounds}: each must be at least 1")
        if a.eager is not None:
            return _measure_eager(a.eager, a.threads, a.prompt_tokens, a.new_tokens)
        if a.artifact is None:
            raise UserError("give an artifact folder, or --eager MODEL")
        ids = json.loads(a.prompt_ids.read_text()) if a.prompt_ids else None
        return _measure(a.artifact, a.threads, a.prompt_tokens, a.new_tokens, a.rounds, ids)

    return worker_main(work)


if __name__ == "__main__":
    sys.exit(main())
