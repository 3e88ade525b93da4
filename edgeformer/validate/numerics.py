"""Numerics checks: SQNR as torchao and ExecuTorch's tests use it."""

from __future__ import annotations

import math

import torch


def sqnr_db(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB; inf when equal."""
    reference, actual = reference.float(), actual.float()
    noise = (reference - actual).pow(2).mean().item()
    signal = reference.pow(2).mean().item()
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


# Sample texts for the numerics check: varied lengths, so padding and masking are exercised.
SAMPLE_TEXTS = (
    "the coffee was stale and bitter",
    "I love this product and would buy it again!",
    "Shipping took forever and the box arrived crushed; two of the jars were broken.",
    "These dog treats are my puppy's favourite, she goes crazy for them every single time.",
    "Not as sweet as I expected, but still a decent granola with lots of nuts and dried fruit.",
    "ok",
)


def check_numerics(program, exported, reference, samples, is_logits: bool) -> dict:
    """Compare the `.pte` with the exported program and with the fp32 reference.

    Args:
        program: callable(ids, mask) running the `.pte` (edgeformer.program.Program).
        exported: the exported program (already transformed: quantized if the recipe says so).
        reference: callable(ids, mask) -> the fp32 Hugging Face model's output.
        samples: list of (input_ids, attention_mask) pairs.
        is_logits: outputs are class logits (adds label_agreement).

    Returns:
        sqnr_db: `.pte` vs fp32 reference; sqnr_db_vs_exported and max_abs_err_vs_exported:
        `.pte` vs what was exported (lowering error only); label_agreement for logits.
    """
    pte_out, exp_out, ref_out = [], [], []
    with torch.no_grad():
        for ids, mask in samples:
            pte_out.append(program(ids, mask))
            exp_out.append(exported.module()(ids, mask))
            ref_out.append(reference(ids, mask))
    pte, exp, ref = (torch.cat(x) for x in (pte_out, exp_out, ref_out))
    result = dict(
        samples=len(samples),
        sqnr_db=round(sqnr_db(ref, pte), 2),
        sqnr_db_vs_exported=round(sqnr_db(exp, pte), 2),
        max_abs_err_vs_exported=float((exp - pte).abs().max()),
        cosine_min=round(float(torch.nn.functional.cosine_similarity(ref, pte).min()), 5),
    )
    if is_logits:
        result["label_agreement"] = float((ref.argmax(-1) == pte.argmax(-1)).float().mean())
    return result
