"""`--gguf-offsets fp32` against `folded`: what putting SmolLM2's Q4_1 offsets into the 4-bit
kernel wins in speed and size, and what it costs in fidelity.

  fp32     `edgeformer build smollm2-135m --quant gguf`: each linear a symmetric 4-bit
           kernel plus an fp32 linear over its input's group means and an add (exact)
  folded   `... --gguf-offsets folded`: the offsets as extra 4-bit groups of the same kernel
           over the group means (x16), q/k/v and gate/up widening their shared input once

Both prefill the same 128 token ids and decode 128 tokens greedily (`edgeformer.lm.speed`),
each in its own fresh process, the two interleaved in every round, 2 threads; ratios are
medians of per-round ratios. Perplexity and logit SQNR are the builds' own (`--eval-data
janeausten`: Persuasion's first 2048 tokens; the numerics prompt against the fp32 model).
With --runner, the same two `.pte` files are timed in the C++ runner as well.
With --eager, first the fidelity of the folded form by the means' gain, on eager models as
bench_head_smoothing.py builds them (mean KL from fp32 on Persuasion's first 2048 tokens):
the choice of gguf_offsets.GAIN.

    python benchmarks/bench_gguf_offsets.py --work out/gguf-offsets [--rounds 5] [--runner] [--eager]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from bench_llm import NEW, PROMPT, VOCAB, build, run, runner_row
from common import RESULTS, ROOT, THREADS, cpu_line, log, round_ratio, write_results

FORMS = ("fp32", "folded")
GAINS = (1.0, 4.0, 8.0, 16.0, 32.0)


def eager_rows() -> dict[str, dict]:
    """Mean KL from fp32 of the GGUF build's eager model (grid, smoothed inputs, bf16 scales,
    smoothed int8 head, one table) with exact offsets, and folded at each gain."""
    import copy

    import torch
    from bench_head_smoothing import bf16_scales, int8_head, scores, segment_logits
    from tokenizers import Tokenizer

    from edgeformer.data.janeausten import load_text
    from edgeformer.lm.perplexity import DEFAULT_SEGMENT, DEFAULT_TOKENS, segments
    from edgeformer.models.causal import load_lm
    from edgeformer.models.gguf import GGUFWeights
    from edgeformer.transforms.gguf_grid import keep_grid
    from edgeformer.transforms.gguf_offsets import fold_offsets
    from edgeformer.transforms.smooth import CALIBRATION_PROMPT, calibrate, grid_sites, smooth_grid, smooth_head
    from edgeformer.transforms.tied_table import share_table

    torch.set_num_threads(THREADS)
    lm = load_lm("smollm2-135m")
    tok = Tokenizer.from_str(lm.tokenizer_json)
    segs = segments(tok.encode(load_text("janeausten")[1]).ids, DEFAULT_TOKENS, DEFAULT_SEGMENT)
    targets = torch.tensor([t for s in segs for t in s[1:]])
    reference = segment_logits(copy.deepcopy(lm.decoder), segs)
    grid = copy.deepcopy(lm.decoder)
    keep_grid(grid, GGUFWeights(lm.source["path"]), "int8", "int8")
    cal = copy.deepcopy(lm.decoder)
    ids, amax = calibrate(cal, tok.encode(CALIBRATION_PROMPT).ids, {"lm_head": cal.lm_head, **grid_sites(cal)})
    head = amax.pop("lm_head")
    smooth_grid(grid, amax, len(ids))
    bf16_scales(grid)
    smooth_head(grid, head, len(ids))
    grid = int8_head(grid)
    share_table(grid)
    rows = {"fp32 correction (exact)": scores(segment_logits(grid, segs), reference, targets)}
    for gain in GAINS:
        dec = copy.deepcopy(grid)
        fold_offsets(dec, gain=gain)
        rows[f"folded, gain {gain:g}"] = scores(segment_logits(dec, segs), reference, targets)
        log(f"gain {gain:g}: KL {rows[f'folded, gain {gain:g}']['kl']:.4f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "gguf-offsets")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--inner", type=int, default=2, help="timed rounds inside each process")
    ap.add_argument("--runner", action="store_true", help="also the two builds in the C++ runner")
    ap.add_argument("--eager", action="store_true", help="first the folded form's fidelity by gain, on eager models")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    eager = eager_rows() if a.eager else {}

    from edgeformer.lm.speed import LM_OMP_THREADS

    a.work.mkdir(parents=True, exist_ok=True)
    ids = np.random.default_rng(0).integers(0, VOCAB, PROMPT).tolist()
    ids_file, runner_ids = a.work / "prompt_ids.json", a.work / "runner_inputs.json"
    ids_file.write_text(json.dumps(ids))
    runner_ids.write_text(json.dumps({"prompt_ids": ids}))
    rows, arts = {}, {}
    for form in FORMS:
        arts[form] = build(a.work / f"gguf-{form}", "--quant", "gguf", "--gguf-offsets", form, "--eval-data", "janeausten")
        rows[form] = dict(cmd=["-m", "edgeformer.lm.speed", str(arts[form]), "--threads", str(THREADS), "--prompt-tokens",
                               str(PROMPT), "--new-tokens", str(NEW), "--rounds", str(a.inner), "--prompt-ids", str(ids_file)],
                          python=sys.executable, omp_threads=LM_OMP_THREADS)
    if a.runner:
        from edgeformer.devices.runner_build import BINARY, ensure_runner

        runner = str(ensure_runner("x86_64") / BINARY)
        for form in FORMS:
            name = f"{form}, C++ runner"
            arts[name] = arts[form]
            rows[name] = runner_row(runner, arts[name], runner_ids)
    runs: dict[str, list[dict]] = {k: [] for k in rows}
    for rnd in range(a.rounds):
        for name, r in rows.items():
            runs[name].append(run(r["cmd"], r["python"], r.get("omp_threads", THREADS)))
            log(f"round {rnd + 1}: {name} decode {runs[name][-1]['decode_tokens_per_s']:.1f} tok/s")
    decode = {k: [x["decode_tokens_per_s"] for x in v] for k, v in runs.items()}
    prefill = {k: [x["prefill_tokens_per_s"] for x in v] for k, v in runs.items()}
    lines = [f"SmolLM2-135M `--quant gguf`, {THREADS} threads, {PROMPT}-token prompt, {NEW} greedy tokens; medians of "
             f"{a.rounds} rounds (fresh process each, {a.inner} timed rounds inside), the forms interleaved; perplexity on "
             f"Persuasion's first 2048 tokens and logit SQNR from each build's manifest. {cpu_line()}", "",
             "| `--gguf-offsets` | decode tok/s | decode vs fp32 | prefill tok/s | .pte MiB | perplexity + | logit SQNR dB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    data = {}
    for name in rows:
        m = json.loads((arts[name] / "manifest.json").read_text())
        base = "fp32, C++ runner" if "runner" in name else "fp32"
        acc = m.get("accuracy") or {}
        data[name] = dict(decode_tokens_per_s=statistics.median(decode[name]), prefill_tokens_per_s=statistics.median(prefill[name]),
                          decode_vs_fp32=round_ratio(decode, name, base), pte_mib=m["pte"]["bytes"] / 2**20,
                          perplexity_increase_pct=acc.get("increase_pct"), sqnr_db=m["numerics"]["sqnr_db"], runs=runs[name])
        d = data[name]
        ppl = f"{d['perplexity_increase_pct']:+.2f}%" if d["perplexity_increase_pct"] is not None else "-"
        lines.append(f"| {name} | {d['decode_tokens_per_s']:.1f} | {d['decode_vs_fp32']:.2f}x | {d['prefill_tokens_per_s']:.0f} | "
                     f"{d['pte_mib']:.1f} | {ppl} | {d['sqnr_db']:.2f} |")
    if eager:
        lines += ["", "Eager, the build's model (int8 activations, bf16 scales, smoothed int8 head), against fp32 on the "
                  "same 2048 tokens; KL: mean KL(fp32 || model) per token, top-1: agreement with fp32", "",
                  "| offsets | perplexity | KL | top-1 |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {r['perplexity']:.3f} | {r['kl']:.4f} | {r['top1']:.3f} |" for k, r in eager.items()]
    write_results(a.out, "gguf-offsets", "\n".join(lines) + "\n", dict(pte=data, eager=eager))


if __name__ == "__main__":
    sys.exit(main())
