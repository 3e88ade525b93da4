"""4-bit encoders by group size: what XNNPACK's blockwise 4-bit kernel costs at 128 tokens, and
what GPTQ wins back in quality (batch 1, seq 128, 2 threads).

At prefill-sized inputs the qb4w GEMM slows down as its groups shrink: 8da4w at --group-size 32
ran 0.78x int8's speed on MiniLM (bench_mixed.py). Larger groups cost quality, which GPTQ
(`--quant-method gptq`, calibrated on `--data`) recovers. Contenders: int8, then 8da4w at each
group size (0: one group per row, all its inputs) with affine (min/max) and gptq scales, all
with the token table at int4 (the 14 MiB size of issue 15). Each is built once (reused from
--work), timed in its own fresh process, interleaved in rounds; speed is the median per-round
ratio to int8. With a fine-tuned classifier and `--eval-data`, the builds also measure test
accuracy, and the fp32 model's on the same examples.

    python benchmarks/bench_int4_groups.py minilm [--groups 32,128,0] [--work out/int4-groups] [--rounds 5]
    python benchmarks/bench_int4_groups.py out/minilm-foods --eval-data fine-foods:test
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import RESULTS, THREADS, cli_build, cpu_line, measure_rounds, round_ratio, write_results

DATA = "fine-foods"


def contenders(groups: list[str]) -> dict[str, list[str]]:
    """name -> build arguments: int8, then 8da4w (int4 table) at each group size and method."""
    builds = {"int8": ["--quant", "int8"]}
    for g in groups:
        for method in ("affine", "gptq"):
            label = "per row" if g == "0" else f"g{g}"
            builds[f"8da4w {label} {method}"] = ["--quant", "8da4w", "--group-size", g, "--quant-method", method,
                                              "--embedding-quant", "int4"]
    return builds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="minilm", help="bundled name or a model folder")
    ap.add_argument("--groups", default="32,128,0", help="comma-separated --group-size values (0: one group per row)")
    ap.add_argument("--eval-data", default=None, help="measure test accuracy too (a classifier's data spec)")
    ap.add_argument("--work", type=Path, default=Path("out/int4-groups"))
    ap.add_argument("--rounds", type=int, default=5, help="0: build and report quality only")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()

    common = [a.model, "--target", "host", "--data", DATA, "--no-enforce", "--min-sqnr", "0"]
    common += ["--eval-data", a.eval_data] if a.eval_data else []
    rows = {}
    for name, args in contenders(a.groups.split(",")).items():
        path = cli_build(a.work / name.replace(" ", "-"), common + args)
        m = json.loads((path / "manifest.json").read_text())
        acc = m.get("accuracy") or {}
        rows[name] = dict(mb=m["pte"]["bytes"] / 2**20, sqnr_db=m["numerics"]["sqnr_db"], accuracy=acc.get("accuracy"),
                          drop=acc.get("accuracy_drop_points"), reference=acc.get("reference_accuracy"),
                          cmd=["-m", "edgeformer.validate.latency", str(path), "--iters", str(a.iters), "--threads", str(THREADS)])
    fp32 = next(iter(rows.values()))["reference"]  # each build evaluates the fp32 model beside its .pte
    samples = measure_rounds({k: dict(cmd=v["cmd"]) for k, v in rows.items()}, a.rounds) if a.rounds else {}
    lines = [f"{a.model}, calibrated on {DATA}, batch 1, seq 128, {THREADS} threads; median of {a.rounds} rounds x "
             f"{a.iters} runs, each contender in its own process; speed is the median per-round ratio to int8. "
             f"SQNR of the .pte against the fp32 model. "
             + (f"fp32 test accuracy {fp32:.3f} (eager). " if fp32 is not None else "") + cpu_line(), "",
             "| contender | .pte MiB | SQNR vs fp32 dB | test accuracy | drop (pts) | p50 ms | speed vs int8 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        acc = f"{r['accuracy']:.3f}" if r["accuracy"] is not None else "-"
        acc += f" | {r['drop']:+.1f}" if r["drop"] is not None else " | -"
        speed = (f"{statistics.median(samples[name]):.2f} | {round_ratio(samples, 'int8', name):.2f}x"
                 if samples else "- | -")
        lines.append(f"| {name} | {r['mb']:.2f} | {r['sqnr_db']:.1f} | {acc} | {speed} |")
    write_results(a.out, "int4-groups", "\n".join(lines) + "\n",
                  dict(samples_ms=samples, fp32_accuracy=fp32,
                       rows={k: {kk: vv for kk, vv in v.items() if kk != "cmd"} for k, v in rows.items()}))


if __name__ == "__main__":
    main()
