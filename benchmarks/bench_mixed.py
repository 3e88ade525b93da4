"""`--quant mixed` on a fine-tuned classifier: size, test accuracy and speed beside the
uniform schemes it chooses between (fine-foods, 2 threads, batch 1, seq 128).

Contenders: int8; 8da4w with an int8 table; 8da4w with an int4 table (everything 4-bit);
`--quant mixed --max-pte-mb B` for each budget B. Each is built once (reused from --work),
evaluated on the 1000 fine-foods test reviews by the build, and timed in its own fresh
process, interleaved in rounds; speed is the median per-round ratio to int8.

    python benchmarks/bench_mixed.py out/minilm-foods [--budgets 14,16] [--work out/mixed] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import RESULTS, THREADS, cli_build, cpu_line, measure_rounds, round_ratio, write_results

DATA = "fine-foods"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a fine-tuned classifier folder (edgeformer finetune minilm --data fine-foods)")
    ap.add_argument("--budgets", default="14", help="comma-separated --max-pte-mb values for --quant mixed")
    ap.add_argument("--work", type=Path, default=Path("out/bench-mixed"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()

    common = [a.model, "--target", "host", "--data", DATA, "--eval-data", f"{DATA}:test", "--no-enforce", "--min-sqnr", "0"]
    builds = {"int8": ["--quant", "int8"], "8da4w": ["--quant", "8da4w"],
              "8da4w + int4 table": ["--quant", "8da4w", "--embedding-quant", "int4"]}
    for b in a.budgets.split(","):
        builds[f"mixed <= {b} MiB"] = ["--quant", "mixed", "--max-pte-mb", b]
    rows = {}
    for name, args in builds.items():
        path = cli_build(a.work / name.replace(" ", "").replace("<=", "-").replace("+", "-"), common + args)
        m = json.loads((path / "manifest.json").read_text())
        acc = m["accuracy"]
        rows[name] = dict(mb=m["pte"]["bytes"] / 2**20, accuracy=acc["accuracy"], drop=acc["accuracy_drop_points"],
                          reference=acc["reference_accuracy"], sqnr_db=m["numerics"]["sqnr_db"],
                          summary=(m.get("quantization") or {}).get("summary"),
                          cmd=["-m", "edgeformer.validate.latency", str(path), "--iters", str(a.iters), "--threads", str(THREADS)])
    samples = measure_rounds({k: dict(cmd=v["cmd"]) for k, v in rows.items()}, a.rounds)
    ref = next(iter(rows.values()))["reference"]
    lines = [f"{a.model} on {DATA} (fp32: {ref:.3f} on test), batch 1, seq 128, {THREADS} threads; median of "
             f"{a.rounds} rounds x {a.iters} runs, each contender in its own process; speed is the median per-round "
             f"ratio to int8. {cpu_line()}", "",
             "| contender | .pte MiB | test accuracy | drop (pts) | SQNR vs fp32 dB | p50 ms | speed vs int8 | modules |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        mods = ", ".join(f"{n} {k}" for k, n in r["summary"].items()) if r["summary"] else "-"
        lines.append(f"| {name} | {r['mb']:.2f} | {r['accuracy']:.3f} | {r['drop']:+.1f} | {r['sqnr_db']:.1f} | "
                     f"{statistics.median(samples[name]):.2f} | {round_ratio(samples, 'int8', name):.2f}x | {mods} |")
    write_results(a.out, "mixed", "\n".join(lines) + "\n",
                  dict(samples_ms=samples, rows={k: {kk: vv for kk, vv in v.items() if kk != "cmd"} for k, v in rows.items()}))


if __name__ == "__main__":
    main()
