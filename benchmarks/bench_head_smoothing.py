"""Where SmolLM2's 4-bit GGUF build loses perplexity, one approximation at a time, and what
smoothing the linears' inputs wins back (transforms/smooth.py).

Eager models, perplexity on the first 2048 tokens of Persuasion in 512-token segments (as
`build --eval-data janeausten` scores a .pte), each row one more step towards what the .pte
computes:

  fp32                     the GGUF dequantized (the reference every build is scored against)
  grid                     --quant gguf's linears on the GGUF's own 4-bit codes, with the int8
                           dynamic activations XNNPACK's kernels take; the Q8_0 token table
  + inputs smoothed        every layer's linear inputs flattened, one factor per 32-group (the
                           grid kept exact: smooth_grid)
  + bf16 scales            the 4-bit groups' scales rounded to bf16, as ExecuTorch 1.5.1 stores
                           them for XNNPACK (fp16 in the file: 3 mantissa bits lost)
  + int8 head              the tied head (Q8_0 in the file) requantized per channel, int8
                           dynamic activations
  + int8 head, smoothed    the same after smoothing
  + one table              the embedding gathers the smoothed int8 head's rows instead of the
                           Q8_0 table (transforms/tied_table.py): what it builds now
  int8 / int8 smoothed     `--quant int8` (every linear int8) without and with smoothing, and
  / one table              with the embedding gathering the head's rows (what it builds now)

With --pte, also builds both schemes and reads each .pte's perplexity from its manifest.

    python benchmarks/bench_head_smoothing.py [--pte --work out/head-smoothing]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, ROOT, cli_build, cpu_line, log, write_results
from tokenizers import Tokenizer
from torchao.quantization import quantize_

from edgeformer.data.janeausten import load_text
from edgeformer.lm.perplexity import DEFAULT_SEGMENT, DEFAULT_TOKENS, perplexity, segments
from edgeformer.models.causal import load_lm
from edgeformer.models.gguf import GGUFWeights
from edgeformer.recipe import Recipe
from edgeformer.targets.backend import config_for
from edgeformer.targets.xnnpack import XNNPACK
from edgeformer.transforms.gguf_grid import keep_grid
from edgeformer.transforms.quantize import quantize_model
from edgeformer.transforms.smooth import CALIBRATION_PROMPT, calibrate, grid_sites, smooth_grid, smooth_head
from edgeformer.transforms.tied_table import share_table


def segment_logits(dec, segs) -> torch.Tensor:
    """Every position's next-token logits over the segments, each scored from position 0."""
    dec.full_logits, out = True, []
    with torch.no_grad():
        for s in segs:
            dec.reset()
            out.append(dec(torch.tensor([s]), torch.tensor([0]))[0, :-1].float())
    dec.reset()
    return torch.cat(out)


def scores(logits: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor) -> dict:
    """Perplexity, and the mean KL divergence from the fp32 model's next-token distribution
    with how often the top token agrees (finer than perplexity, which moves in noise)."""
    lp, lq = reference.log_softmax(-1), logits.log_softmax(-1)
    return dict(perplexity=perplexity(F.cross_entropy(logits, targets, reduction="none").tolist()),
                kl=float((lp.exp() * (lp - lq)).sum(-1).mean()), top1=float((logits.argmax(-1) == reference.argmax(-1)).float().mean()))


def bf16_scales(dec) -> None:
    """Round every 4-bit group scale to bf16 in place (what XNNPACK is given)."""
    for m in dec.modules():
        w = getattr(m, "weight", None)
        if type(w).__name__ == "IntxUnpackedToInt8Tensor" and w.target_dtype == torch.int4:
            w.scale.copy_(w.scale.to(torch.bfloat16).float())


def int8_head(dec):
    quantize_(dec, config_for(XNNPACK, "linear", "int8", 32), filter_fn=lambda m, fqn: fqn == "lm_head")
    return dec


def eager_rows(lm, prompt: list[int], segs) -> dict[str, dict]:
    targets = torch.tensor([t for s in segs for t in s[1:]])
    reference = segment_logits(copy.deepcopy(lm.decoder), segs)
    models = {}
    grid = copy.deepcopy(lm.decoder)
    keep_grid(grid, GGUFWeights(lm.source["path"]), "int8", "int8")
    models["grid (head fp32)"] = copy.deepcopy(grid)
    calibrated = copy.deepcopy(lm.decoder)  # the fp32 model's inputs, as the build sees them
    ids, amax = calibrate(calibrated, prompt, {"lm_head": calibrated.lm_head, **grid_sites(calibrated)})
    head = amax.pop("lm_head")
    smooth_grid(grid, amax, len(ids))
    models["+ inputs smoothed"] = copy.deepcopy(grid)
    bf16_scales(grid)
    models["+ bf16 scales"] = copy.deepcopy(grid)
    models["+ int8 head"] = int8_head(copy.deepcopy(grid))
    smooth_head(grid, head, len(ids))
    models["+ int8 head, smoothed"] = int8_head(copy.deepcopy(grid))
    grid = int8_head(grid)
    share_table(grid)
    models["+ one table (now)"] = grid
    for label, smooth, one in (("int8", False, False), ("int8, smoothed", True, False), ("int8, smoothed, one table (now)", True, True)):
        dec = copy.deepcopy(lm.decoder)
        if smooth:
            smooth_head(dec, head, len(ids))
        models[label] = quantize_model(dec, Recipe(quant="int8"), share_tied=one)
    rows = {"fp32": scores(reference, reference, targets)}
    for label, dec in models.items():
        log(label)
        rows[label] = scores(segment_logits(dec, segs), reference, targets)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pte", action="store_true", help="also build --quant gguf and int8 and read their .pte perplexity")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "head-smoothing")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()

    lm = load_lm("smollm2-135m")
    tok = Tokenizer.from_str(lm.tokenizer_json)
    name, text = load_text("janeausten")
    segs = segments(tok.encode(text).ids, DEFAULT_TOKENS, DEFAULT_SEGMENT)
    rows = eager_rows(lm, tok.encode(CALIBRATION_PROMPT).ids, segs)
    reference = rows["fp32"]["perplexity"]
    for r in rows.values():
        r["increase_pct"] = (r["perplexity"] / reference - 1) * 100
    ptes = {}
    if a.pte:  # the manifests' numbers (SQNR: logits of the numerics prompt against the fp32 model)
        for scheme in ("gguf", "int8"):
            out = cli_build(a.work / scheme, ["smollm2-135m", "--target", "host", "--quant", scheme, "--eval-data", "janeausten"],
                            cwd=ROOT)
            m = json.loads((out / "manifest.json").read_text())
            ptes[f"--quant {scheme}"] = dict(perplexity=m["accuracy"]["perplexity"], increase_pct=m["accuracy"]["increase_pct"],
                                             sqnr_db=m["numerics"]["sqnr_db"])
    lines = [f"SmolLM2-135M (Q4_1 GGUF) on {name}, first {DEFAULT_TOKENS} tokens in {DEFAULT_SEGMENT}-token segments, "
             f"against the fp32 model (perplexity {reference:.4f}); eager rows add one approximation each; KL: mean "
             f"KL(fp32 || model) of the next-token distributions, top-1: agreement with fp32. {cpu_line()}", "",
             "| model | perplexity | increase | KL | top-1 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {r['perplexity']:.4f} | {r['increase_pct']:+.2f}% | {r['kl']:.4f} | {r['top1']:.3f} |" for k, r in rows.items()]
    if ptes:
        lines += ["", "| .pte (built now) | perplexity | increase | logit SQNR dB |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {r['perplexity']:.4f} | {r['increase_pct']:+.2f}% | {r['sqnr_db']:.2f} |" for k, r in ptes.items()]
    write_results(a.out, "head-smoothing", "\n".join(lines) + "\n", dict(eager=rows, pte=ptes))


if __name__ == "__main__":
    main()
