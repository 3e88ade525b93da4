"""Token-by-token generation over any `step(tokens [1, T], input_pos [1]) -> logits [1, T', V]`.

The same loop drives the `.pte` (edgeformer.program.Program) and the eager `Decoder`, so
tests can ask for token-for-token equality. The prompt is prefilled in one call; each new
token is one decode call at the next position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from edgeformer.errors import UserError

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Sampling:
    """temperature 0 is greedy; otherwise softmax(logits / temperature) cut to top_p."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise UserError(f"--temperature {self.temperature}: use 0 (greedy) or a positive value such as 0.7")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p {self.top_p}: use a value in (0, 1], such as 0.9")


def fit_prompt(ids: list[int], max_context: int | None, max_new_tokens: int) -> tuple[list[int], int]:
    """(prompt ids that fit, how many were cut from the left) so prompt + new tokens <= context.

    `max_context` None: a sliding-window cache, where any length fits."""
    if not ids:
        raise UserError("the prompt is empty; pass some text with --prompt")
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens}: generate at least 1 token")
    if max_context is None:
        return ids, 0
    if max_new_tokens >= max_context:
        raise UserError(f"--max-new-tokens {max_new_tokens} leaves no room for the prompt in the {max_context}-token "
                        f"context; use fewer than {max_context}")
    room = max_context - max_new_tokens
    cut = max(0, len(ids) - room)
    return ids[cut:], cut


def prefill(step: Step, prompt: list[int], chunk: int | None = None) -> torch.Tensor:
    """Write `prompt` at positions 0.. in calls of at most `chunk` tokens; the last call's logits."""
    chunk = chunk or len(prompt)
    for p in range(0, len(prompt), chunk):
        logits = step(torch.tensor([prompt[p:p + chunk]], dtype=torch.long), torch.tensor([p]))
    return logits


def generate(step: Step, prompt: list[int], max_new_tokens: int, stop_ids: set[int] = frozenset(),
             sampling: Sampling = Sampling(), chunk: int | None = None) -> Iterator[int]:
    """Yield new token ids one at a time (stops at a stop id, which is not yielded).

    `chunk`: the most tokens the program takes per call (a ring cache's prefill chunk)."""
    g = torch.Generator().manual_seed(sampling.seed)
    logits = prefill(step, prompt, chunk)
    pos = len(prompt)
    for i in range(max_new_tokens):
        tok = _pick(logits[0, -1], sampling, g)
        if tok in stop_ids:
            return
        yield tok
        if i + 1 < max_new_tokens:
            logits = step(torch.tensor([[tok]], dtype=torch.long), torch.tensor([pos]))
            pos += 1


def _pick(logits: torch.Tensor, s: Sampling, g: torch.Generator) -> int:
    if s.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / s.temperature, dim=-1)
    if s.top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < s.top_p  # the smallest prefix with mass >= top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=g))
