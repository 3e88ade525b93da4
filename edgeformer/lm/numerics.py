"""A causal LM's numerics: next-token logits of the `.pte` against the eager models."""

from __future__ import annotations

import copy

import torch

from edgeformer.lm.generate import prefill
from edgeformer.validate.numerics import sqnr_db

# The numerics prompt: prefilled in one call, then NUMERICS_STEPS greedy decode steps.
NUMERICS_PROMPT = "The quick brown fox jumps over the lazy dog. On the edge, a small model answers"
NUMERICS_STEPS = 16


def lm_numerics(program, quantized, reference, prompt: list[int], chunk: int, capacity: int | None = None) -> dict:
    """Next-token logits after a prefill of `prompt` and NUMERICS_STEPS decode steps (the
    `.pte`'s greedy tokens fed to all three): `.pte` vs the quantized eager model (what
    lowering changed) and vs fp32 (everything), with top-1 agreement. `capacity`: a full
    cache's tokens (prompt and steps are cut to fit; None for a ring cache)."""
    if capacity is not None:
        prompt = prompt[:max(1, min(len(prompt), capacity // 2, capacity - NUMERICS_STEPS))]
    from edgeformer._quiet import native_stderr_silenced

    quantized, reference = copy.deepcopy(quantized), copy.deepcopy(reference)
    outs = {"pte": [], "exported": [], "fp32": []}
    with torch.no_grad(), native_stderr_silenced():  # eager custom_sdpa logs on every call
        steps = {"pte": program, "exported": quantized, "fp32": reference}
        for k, step in steps.items():
            outs[k].append(prefill(step, prompt, chunk)[0, -1])
        steps_left = NUMERICS_STEPS if capacity is None else min(NUMERICS_STEPS, capacity - len(prompt))
        for i in range(steps_left):
            tok = torch.tensor([[int(outs["pte"][-1].argmax())]])
            for k, step in steps.items():
                outs[k].append(step(tok, torch.tensor([len(prompt) + i]))[0, -1])
    pte, exp, ref = (torch.stack(outs[k]) for k in ("pte", "exported", "fp32"))
    return dict(
        samples=len(pte), prompt_tokens=len(prompt),
        sqnr_db=round(sqnr_db(ref, pte), 2),
        sqnr_db_vs_exported=round(sqnr_db(exp, pte), 2),
        max_abs_err_vs_exported=float((exp - pte).abs().max()),
        top1_agreement=float((ref.argmax(-1) == pte.argmax(-1)).float().mean()),
        top1_agreement_vs_exported=float((exp.argmax(-1) == pte.argmax(-1)).float().mean()),
    )
