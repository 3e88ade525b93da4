"""XNNPACK's 4-bit GEMM against its int8 one, by group size: the linears of a model's layers
alone, at prefill (M tokens at once) and decode (M = 1), batch 1, 2 threads.

Why: 4-bit MiniLM ran 0.78x int8's speed at 128 tokens (bench_mixed.py), while at decode 4-bit
SmolLM2 beats int8. Each contender is a `.pte` of nothing but a model's linears (random seeded
weights, their real shapes, every layer) wired as its layers wire them, all delegated;
timed in its own fresh process, contenders interleaved in rounds; speed is the median
per-round ratio to int8. Group "row" is `--group-size 0`: one group of all a row's inputs.

    python benchmarks/bench_int4_kernels.py [--shapes minilm,smollm2] [--tokens 1,128] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, THREADS, cpu_line, measure_rounds, round_ratio, write_results

# (in, out) of one layer's linears, and the layers of the model
LAYERS = {
    "minilm": ([(384, 384)] * 4 + [(384, 1536), (1536, 384)], 6),  # q, k, v, o, ffn_in, ffn_out
    "smollm2": ([(576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576)], 30),  # q k v o gate up down
}
CONTENDERS = {"int8": ("int8", 32), "8da4w g32": ("8da4w", 32), "8da4w g64": ("8da4w", 64), "8da4w row": ("8da4w", 0)}  # 64: divides 576


def build(shapes: str, tokens: int, scheme: str, group: int, out: Path) -> Path:
    """A `.pte` of the linears of `shapes`' layers wired as the layer wires them (attention
    and norms left out, adds and a product in their place), on a [1, tokens, hidden] input,
    at `scheme` with 4-bit groups of `group` (0: a row)."""
    if out.is_file():
        return out
    import torch
    from torchao.quantization import quantize_
    from torchao.utils import unwrap_tensor_subclass

    from edgeformer.recipe import Recipe
    from edgeformer.targets.xnnpack import XNNPACK, linear_config

    shape, layers = LAYERS[shapes]

    class Linears(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lins = torch.nn.ModuleList(torch.nn.Linear(i, o, bias=False) for i, o in shape * layers)
            for lin in self.lins:  # unit gain: activations keep their scale through the chain
                torch.nn.init.normal_(lin.weight, std=lin.in_features ** -0.5)

        def forward(self, h):
            side = 0.0
            for i in range(0, len(self.lins), len(shape)):
                lin = self.lins[i:i + len(shape)]
                if shapes == "minilm":
                    q, k, v, o, up, down = lin
                    h = down(up(o(q(h) + k(h) + v(h))))
                else:
                    q, k, v, o, gate, up, down = lin
                    side = side + k(h) + v(h)
                    a = o(q(h))
                    h = down(gate(a) * up(a))
            return (h, side) if shapes == "smollm2" else (h,)

    torch.manual_seed(0)
    model = Linears().eval()
    quantize_(model, linear_config(scheme, group))
    unwrap_tensor_subclass(model)
    ep = torch.export.export(model, (torch.randn(1, tokens, shape[0][0]),), strict=False)
    lowered = XNNPACK.lower(ep, Recipe(quant=scheme, group_size=group))
    if lowered.delegation.non_delegated_ops:
        raise SystemExit(f"{out.name}: not all delegated: {lowered.delegation.non_delegated_ops}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(lowered.pte)
    tmp.rename(out)
    return out


def time_pte(pte: Path, shapes: str, tokens: int, iters: int) -> None:
    """The worker: p50 of `iters` calls after 10 warm-up calls, one JSON line."""
    import json

    import torch
    from executorch.runtime import Runtime

    from edgeformer.program import set_threads

    set_threads(THREADS)
    method = Runtime.get().load_program(str(pte)).load_method("forward")
    xs = [torch.randn(1, tokens, LAYERS[shapes][0][0][0])]
    times = []
    for i in range(10 + iters):
        t0 = time.perf_counter()
        method.execute(xs)
        if i >= 10:
            times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps(dict(latency_ms_p50=statistics.median(times))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="minilm,smollm2")
    ap.add_argument("--tokens", default="1,128", help="comma-separated M (tokens per call)")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "int4-kernels")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--time", type=Path, default=None, help=argparse.SUPPRESS)  # worker: time this .pte
    ap.add_argument("--worker-shapes", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-tokens", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.time is not None:
        return time_pte(a.time, a.worker_shapes, a.worker_tokens, a.iters)

    lines = [f"XNNPACK linears alone (random weights, their real shapes), batch 1, {THREADS} threads; median of "
             f"{a.rounds} rounds x {a.iters} calls, each contender in its own process; speed is the median "
             f"per-round ratio to int8 (>1: faster). {cpu_line()}", "",
             "| linears | tokens | " + " | ".join(f"{k} ms" for k in CONTENDERS) + " | "
             + " | ".join(f"{k} vs int8" for k in list(CONTENDERS)[1:]) + " |",
             "|---|---:|" + "---:|" * (2 * len(CONTENDERS) - 1)]
    data = {}
    for shapes in a.shapes.split(","):
        for tokens in map(int, a.tokens.split(",")):
            rows = {}
            for name, (scheme, group) in CONTENDERS.items():
                pte = build(shapes, tokens, scheme, group, a.work / f"{shapes}-m{tokens}-{name.replace(' ', '-')}.pte")
                rows[name] = dict(cmd=[str(Path(__file__)), "--time", str(pte), "--worker-shapes", shapes,
                                       "--worker-tokens", str(tokens), "--iters", str(a.iters)])
            samples = measure_rounds(rows, a.rounds)
            data[f"{shapes} m{tokens}"] = samples
            label = f"{shapes} ({LAYERS[shapes][1]} layers x {len(LAYERS[shapes][0])})"
            lines.append(f"| {label} | {tokens} | " + " | ".join(f"{statistics.median(samples[k]):.2f}" for k in CONTENDERS)
                         + " | " + " | ".join(f"{round_ratio(samples, 'int8', k):.2f}x" for k in list(CONTENDERS)[1:]) + " |")
    write_results(a.out, "int4-kernels", "\n".join(lines) + "\n", data)


if __name__ == "__main__":
    sys.exit(main())
