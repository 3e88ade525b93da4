"""Perplexity of a causal LM's `.pte` on held-out text, beside its fp32 model's.

The text is tokenized once and cut into segments of `segment` tokens; each segment starts
over at position 0. The `.pte` returns the next-token logits of its last input, so it is
fed one token per call (the decode path generation uses); the fp32 Hugging Face model
scores each segment in one forward. Both average the negative log-likelihood of the same
tokens (every token of a segment but its first).
"""

from __future__ import annotations

import math
import time

import torch

from edgeformer.errors import UserError

DEFAULT_TOKENS = 2048
DEFAULT_SEGMENT = 512


def default_segment(max_context: int | None) -> int:
    """DEFAULT_SEGMENT, or the context when a full cache is smaller (a ring takes any length)."""
    return DEFAULT_SEGMENT if max_context is None else min(DEFAULT_SEGMENT, max_context)


def segments(ids: list[int], tokens: int, segment: int) -> list[list[int]]:
    if tokens < 2 or segment < 2:
        raise UserError(f"perplexity needs at least 2 tokens per segment (got tokens={tokens}, segment={segment})")
    ids = ids[:tokens]
    if len(ids) < 2:
        raise UserError(f"the text has {len(ids)} token(s); perplexity needs at least 2")
    return [s for s in (ids[p:p + segment] for p in range(0, len(ids), segment)) if len(s) >= 2]


def nll_stepwise(step, seg: list[int]) -> list[float]:
    """-log p(seg[t+1] | seg[..t]) from a program fed one token per call."""
    out = []
    for t in range(len(seg) - 1):
        logits = step(torch.tensor([[seg[t]]]), torch.tensor([t]))[0, -1].float()
        out.append(float(torch.logsumexp(logits, 0) - logits[seg[t + 1]]))
    return out


def nll_full(hf, seg: list[int]) -> list[float]:
    """The same from one forward of a Hugging Face causal LM."""
    with torch.no_grad():
        logits = hf(torch.tensor([seg])).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, torch.tensor(seg[1:]), reduction="none").tolist()


def perplexity(nll: list[float]) -> float:
    return math.exp(sum(nll) / len(nll))


def evaluate_perplexity(step, ids: list[int], tokens: int, segment: int, reference=None) -> dict:
    """{perplexity, tokens, ...} of `step`; with a Hugging Face `reference`, also its
    perplexity and the increase in percent."""
    segs = segments(ids, tokens, segment)
    t0 = time.perf_counter()
    nll = [x for s in segs for x in nll_stepwise(step, s)]
    seconds = time.perf_counter() - t0
    r = dict(perplexity=round(perplexity(nll), 4), scored_tokens=len(nll), segments=len(segs), segment=segment,
             tokens_per_s=round(len(nll) / seconds, 1))
    if reference is not None:
        ref = perplexity([x for s in segs for x in nll_full(reference, s)])
        r.update(reference_perplexity=round(ref, 4), increase_pct=round((r["perplexity"] / ref - 1) * 100, 3))
    return r


def evaluate_artifact(artifact, data: str, tokens: int = DEFAULT_TOKENS, segment: int | None = None,
                      threads: int | None = None) -> dict:
    """Perplexity of a causal-LM artifact's `.pte` on `data` (janeausten[:BOOK] or a .txt), beside
    the fp32 model it was built from when that is still where the manifest says."""
    from pathlib import Path

    from tokenizers import Tokenizer

    from edgeformer.data.janeausten import load_text
    from edgeformer.program import open_program

    m = artifact.manifest
    limit = m.generation["max_context"]
    name, text = load_text(data)
    segment = segment or default_segment(limit)
    if limit is not None and segment > limit:
        raise UserError(f"--segment {segment} exceeds the artifact's {limit}-token context; use at most that")
    ids = Tokenizer.from_file(str(artifact.tokenizer_file)).encode(text).ids
    reference = None
    source = Path(m.model["path"])
    if source.exists():
        from edgeformer.models.causal import load_reference

        reference = load_reference(*((source.parent, source.name) if source.suffix == ".gguf" else (source,)))
    r = evaluate_perplexity(open_program(artifact, threads or m.recipe["threads"]), ids, tokens, segment, reference)
    return dict(target=str(artifact.path), data=name, **r,
                reference=None if reference is None else f"fp32 {m.model['name']} (full attention)")
