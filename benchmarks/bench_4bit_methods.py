"""4-bit weights by how their codes and scales are chosen (`build --quant 8da4w --quant-method M`):

  affine   torchao's default: each group's scale from its largest magnitude
  hqq      HQQ scale-only (what ExecuTorch's Llama export uses)
  gptq     GPTQ on calibration data (transforms/gptq.py)

Same kernels, same bytes: only the quality moves, so the table reads the build manifests.

  smollm2  SmolLM2-135M (the fp32 model is its Q4_1 GGUF dequantized), GPTQ calibrated on the
           first 8192 tokens of Emma; perplexity of the .pte on Persuasion (`--eval-data
           janeausten`) against the fp32 model. (`--quant gguf`, the file's own grid, is in
           bench_llm.py: +2.0%.)
  minilm   all-MiniLM-L6-v2 embedder, GPTQ on the first 32 fine-foods training reviews;
           SQNR of the .pte's embeddings against the fp32 model on the numerics samples

    python benchmarks/bench_4bit_methods.py --work out/4bit [--skip-lm]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from common import RESULTS, ROOT, cli_build, cpu_line, write_results

METHODS = ("affine", "hqq", "gptq")


def build(out: Path, args: list[str]) -> Path:
    """cli_build that takes a missed budget (exit 3, artifact kept by --no-enforce): the
    table is about the misses."""
    try:
        return cli_build(out, [*args, "--no-enforce"], cwd=ROOT)
    except subprocess.CalledProcessError as e:
        if e.returncode != 3 or not (out / "manifest.json").is_file():
            raise
        return out


def lm_rows(work: Path) -> list[dict]:
    rows = []
    for method in METHODS:
        quant = ["--quant", "8da4w", "--quant-method", method]
        calib = ["--data", "janeausten:emma"] if method == "gptq" else []
        art = build(work / f"smollm2-{method}", ["smollm2-135m", "--target", "host", *quant, *calib, "--eval-data", "janeausten"])
        m = json.loads((art / "manifest.json").read_text())
        a = m["accuracy"]
        rows.append(dict(model="smollm2-135m", method=method, pte_mib=m["pte"]["bytes"] / 2**20,
                         sqnr_db=m["numerics"]["sqnr_db"], perplexity=a["perplexity"],
                         fp32=a["reference_perplexity"], increase_pct=a["increase_pct"]))
    return rows


def minilm_rows(work: Path) -> list[dict]:
    rows = []
    for method in METHODS:
        calib = ["--data", "fine-foods"] if method == "gptq" else []
        art = build(work / f"minilm-{method}", ["minilm", "--target", "host", "--quant", "8da4w", "--quant-method", method,
                                                *calib])
        m = json.loads((art / "manifest.json").read_text())
        rows.append(dict(model="minilm", method=method, pte_mib=m["pte"]["bytes"] / 2**20, sqnr_db=m["numerics"]["sqnr_db"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "4bit")
    ap.add_argument("--skip-lm", action="store_true", help="MiniLM only (the SmolLM2 builds take ~10 minutes each)")
    a = ap.parse_args()
    rows = minilm_rows(a.work) + ([] if a.skip_lm else lm_rows(a.work))
    lines = [f"4-bit weights by --quant-method, int8 dynamic activations, group 32; {cpu_line()}", "",
             "| model | method | .pte MiB | SQNR dB vs fp32 | perplexity (fp32) | increase |", "|---|---|---:|---:|---|---:|"]
    for r in rows:
        ppl = f"{r['perplexity']:.2f} ({r['fp32']:.2f})" if "perplexity" in r else "-"
        inc = f"+{r['increase_pct']:.1f}%" if "increase_pct" in r else "-"
        lines.append(f"| {r['model']} | {r['method']} | {r['pte_mib']:.1f} | {r['sqnr_db']:.2f} | {ppl} | {inc} |")
    write_results(RESULTS, "4bit-methods", "\n".join(lines) + "\n", rows)


if __name__ == "__main__":
    main()
