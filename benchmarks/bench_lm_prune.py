"""SmolLM2-135M pruned (`edgeformer prune`) against itself unpruned: parameters, perplexity on a
novel it was not distilled on, decode speed; this machine, 2 threads.

Each pruned model is `edgeformer prune smollm2-135m --data janeausten:emma --heads H --ffn F
--distill-steps S` (key-value groups and FFN neurons by Taylor score, distilled on Emma's
first nine tenths), then every contender, the unpruned model too, is
`edgeformer build MODEL --target host --quant int8 --eval-data janeausten` (int8 linears and embedding,
fp32 1024-token cache): the perplexity is the `.pte`'s on Persuasion (2048 tokens in segments
of 512, one token per call). Decode: 128 prompt ids prefilled, 128 tokens decoded greedily,
each contender in its own fresh process, contenders interleaved within each round; medians
over rounds, ratios of rounds measured back to back.

    python benchmarks/bench_lm_prune.py --work out/lm-prune [--prune heads=0.33,ffn=0.4 ...] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, THREADS, cli_build, log, round_ratio, run_json, write_results

PROMPT, NEW = 128, 128
UNPRUNED = "unpruned"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "lm-prune")
    ap.add_argument("--prune", nargs="+", default=["ffn=0.2", "heads=0.33,ffn=0.4"],
                    help="pruning ratios, heads=H,ffn=F,layers=N, one contender each")
    ap.add_argument("--steps", type=int, default=300, help="distillation steps of each pruning")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    a.work = a.work.resolve()
    from bench_llm import VOCAB

    from edgeformer.lm.speed import LM_OMP_THREADS

    a.work.mkdir(parents=True, exist_ok=True)
    models = {UNPRUNED: "smollm2-135m"}
    for spec in a.prune:
        models[spec] = str(prune(a.work / f"pruned-{spec.replace(',', '-').replace('=', '')}", spec, a.steps))
    arts = {name: cli_build(a.work / f"build-{i}", [m, "--target", "host", "--quant", "int8", "--eval-data", "janeausten"],
                            stdout=sys.stderr, cwd=ROOT) for i, (name, m) in enumerate(models.items())}
    ids_file = a.work / "prompt_ids.json"
    ids_file.write_text(json.dumps(np.random.default_rng(0).integers(0, VOCAB, PROMPT).tolist()))
    runs: dict[str, list[float]] = {k: [] for k in arts}
    for rnd in range(a.rounds):
        for name, art in arts.items():
            got = run_json([sys.executable, "-m", "edgeformer.lm.speed", str(art), "--threads", str(THREADS),
                            "--prompt-tokens", str(PROMPT), "--new-tokens", str(NEW), "--rounds", "2",
                            "--prompt-ids", str(ids_file)], timeout=None, cwd=ROOT, omp_threads=LM_OMP_THREADS)
            runs[name].append(got["decode_tokens_per_s"])
            log(f"round {rnd + 1}: {name} decode {runs[name][-1]:.1f} tok/s")
    rows = {name: row(art, runs[name]) for name, art in arts.items()}
    for name in rows:
        rows[name]["decode_vs_unpruned"] = round(round_ratio(runs, UNPRUNED, name) ** -1, 3)
    write_results(RESULTS, "lm-prune", table(rows, a), dict(rows=rows, runs=runs), indent=1)
    plot(rows, RESULTS / "lm-prune.png")


def prune(out: Path, spec: str, steps: int) -> Path:
    """`edgeformer prune` with `spec`'s ratios into `out`, skipped when `out` is already there."""
    if not (out / "prune.json").is_file():
        args = [f"--{k}={v}" for k, _, v in (p.partition("=") for p in spec.split(","))]
        log(f"pruning {out.name}: edgeformer prune smollm2-135m --data janeausten:emma {' '.join(args)}")
        subprocess.run([sys.executable, "-m", "edgeformer.cli", "prune", "smollm2-135m", "--data", "janeausten:emma",
                        *args, "--distill-steps", str(steps), "-o", str(out), "--threads", str(THREADS), "--json"],
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return out


def row(art: Path, decode: list[float]) -> dict:
    m = json.loads((art / "manifest.json").read_text())
    acc, pruning = m["accuracy"], m["model"].get("pruning")
    return dict(params_m=round(m["model"]["params"] / 1e6, 2), pte_mib=round(m["pte"]["bytes"] / 2**20, 2),
                perplexity=acc["perplexity"], fp32_perplexity=acc.get("unpruned_perplexity", acc["reference_perplexity"]),
                decode_tok_s=round(statistics.median(decode), 1),
                heldout_emma=None if pruning is None else pruning["heldout"])


def table(rows: dict, a) -> str:
    base = rows[UNPRUNED]
    lines = [f"SmolLM2-135M-Instruct pruned by ratio and distilled {a.steps} steps x 256 tokens on Emma; every contender "
             f"built for host (int8 linears and embedding, fp32 cache); perplexity of the .pte on 2048 tokens of "
             f"Persuasion; decode of {NEW} tokens after a {PROMPT}-token prompt, {THREADS} threads, medians of "
             f"{a.rounds} rounds (fresh process each)", "",
             "| contender | params M | x params | .pte MiB | perplexity (.pte) | vs unpruned int8 .pte | decode tok/s | "
             "x decode |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['params_m']} | {r['params_m'] / base['params_m']:.2f} | {r['pte_mib']} | "
                     f"{r['perplexity']:.2f} | {(r['perplexity'] / base['perplexity'] - 1) * 100:+.1f}% | "
                     f"{r['decode_tok_s']} | {r['decode_vs_unpruned']:.2f} |")
    lines.append("")
    lines.append(f"- the unpruned model's fp32 perplexity on the same tokens: {base['fp32_perplexity']:.2f}")
    return "\n".join(lines) + "\n"


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in rows.items():
        ax.scatter(r["params_m"], r["perplexity"], s=40)
        ax.annotate(f"{name}\n{r['decode_tok_s']} tok/s", (r["params_m"], r["perplexity"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("perplexity on Persuasion (.pte)")
    ax.set_title("SmolLM2-135M pruned: size, quality, decode speed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
