"""What XNNPACK's int8 activations alone cost SmolLM2's `--quant gguf` model, and what taking each
linear input's top-k channels out of that quantization would win back (LLM.int8-style).

ExecuTorch 1.5.1's XNNPACK has 4-bit linears only with dynamic int8 activations per token
(qd8/qp8 × qb4w), so this is the floor every 4-bit build of it stands on. Eager models on
Persuasion's first TOKENS tokens in 512-token segments, against the fp32 (dequantized GGUF)
model: the grid as built (every layer's inputs smoothed, bf16 scales) but with an **fp32 head**,
so only the linears' activations differ; then, for k > 0, each linear's k largest input
channels (by their maxima on the calibration text) taken out of the quantization and added
back in fp32 on the grid's exact columns. Not a build option: it measures whether one is worth
building (each site would cost ~4 more XNNPACK ops per decoded token).

    python benchmarks/bench_activation_floor.py [--tokens 8192] [--k 0,1,2,4]
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from bench_head_smoothing import bf16_scales, scores, segment_logits
from common import RESULTS, cpu_line, log, write_results
from tokenizers import Tokenizer
from torch import nn

from edgeformer.data.janeausten import load_text
from edgeformer.lm.perplexity import DEFAULT_SEGMENT, segments
from edgeformer.models.causal import load_lm
from edgeformer.models.gguf import BLOCK, GGUFWeights
from edgeformer.transforms.gguf_grid import GroupSumCorrected, keep_grid
from edgeformer.transforms.smooth import CALIBRATION_PROMPT, calibrate, grid_sites, smooth_grid

SITES = ("q", "k", "v", "o", "gate", "up", "down")


def dense(lin: nn.Module) -> torch.Tensor:
    """A grid linear's exact fp32 weight: its 4-bit groups plus the offsets' correction."""
    main = lin.main if isinstance(lin, GroupSumCorrected) else lin
    w = main.weight.dequantize() if hasattr(main.weight, "dequantize") else main.weight.detach()
    if isinstance(lin, GroupSumCorrected):
        w = w + (lin.correction.weight / BLOCK).repeat_interleave(BLOCK, dim=1)
    return w.float()


class OutliersApart(nn.Module):
    """lin(x with channels `idx` zeroed) + x[idx] · W[:, idx] in fp32: those channels no longer
    set the token's int8 scale. Exact in fp32."""

    def __init__(self, lin: nn.Module, idx: torch.Tensor):
        super().__init__()
        w = dense(lin)
        self.lin, self.idx, self.side = lin, idx, w[:, idx].clone()
        self.mask = torch.ones(w.shape[1])
        self.mask[idx] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x * self.mask) + F.linear(x[..., self.idx], self.side)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--k", default="0,1,2,4", help="channels taken apart per linear input")
    a = ap.parse_args()
    lm = load_lm("smollm2-135m")
    tok = Tokenizer.from_str(lm.tokenizer_json)
    name, text = load_text("janeausten")
    segs = segments(tok.encode(text).ids, a.tokens, DEFAULT_SEGMENT)
    targets = torch.tensor([t for s in segs for t in s[1:]])
    reference = segment_logits(copy.deepcopy(lm.decoder), segs)
    grid = copy.deepcopy(lm.decoder)
    keep_grid(grid, GGUFWeights(lm.source["path"]), "int8", "int8")
    calibrated = copy.deepcopy(lm.decoder)
    prompt = tok.encode(CALIBRATION_PROMPT).ids
    ids, amax = calibrate(calibrated, prompt, grid_sites(calibrated))
    smooth_grid(grid, amax, len(ids))
    bf16_scales(grid)
    _, seen = calibrate(grid, prompt, {f"layers.{i}.{s}": getattr(layer, s) for i, layer in enumerate(grid.layers) for s in SITES})
    fp32 = scores(reference, reference, targets)["perplexity"]
    rows = {}
    for k in (int(v) for v in a.k.split(",")):
        dec = copy.deepcopy(grid)
        for i, layer in enumerate(dec.layers if k else ()):
            for s in SITES:
                setattr(layer, s, OutliersApart(getattr(layer, s), torch.topk(seen[f"layers.{i}.{s}"], k).indices))
        log(f"k = {k}")
        r = scores(segment_logits(dec, segs), reference, targets)
        rows[k] = dict(r, increase_pct=(r["perplexity"] / fp32 - 1) * 100)
    lines = [f"SmolLM2-135M (Q4_1 GGUF) on {name}, first {a.tokens} tokens in {DEFAULT_SEGMENT}-token segments, eager: the "
             f"`--quant gguf` linears (inputs smoothed, bf16 scales) with an fp32 head, against the fp32 model (perplexity "
             f"{fp32:.4f}). {cpu_line()}", "",
             "| channels apart per linear input | perplexity | increase | KL | top-1 |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {k} | {r['perplexity']:.4f} | {r['increase_pct']:+.2f}% | {r['kl']:.4f} | {r['top1']:.3f} |" for k, r in rows.items()]
    write_results(RESULTS, "activation-floor", "\n".join(lines) + "\n", dict(rows=rows, tokens=a.tokens))


if __name__ == "__main__":
    main()
