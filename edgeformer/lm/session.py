"""A causal-LM artifact ready to generate: the `.pte`, its tokenizer, chat template and cache.

    lm = LMSession(edgeformer.load_artifact("out/smol"))
    for piece in lm.stream("Write a haiku about rain", max_new_tokens=64):
        print(piece, end="", flush=True)

The chat template (Jinja, as Hugging Face renders it: sandboxed, trim_blocks, lstrip_blocks)
wraps the prompt when the model has one; text streams out through the tokenizer's
incremental decoder, so multi-byte characters split across tokens arrive whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from edgeformer.artifact import Artifact
from edgeformer.errors import UserError
from edgeformer.lm.generate import Sampling, fit_prompt, generate


@dataclass
class Stats:
    prompt_tokens: int = 0
    cut_tokens: int = 0
    new_tokens: int = 0
    stopped: str = ""  # "stop token", "max tokens", or "interrupted"
    timings: dict = field(default_factory=dict)


class LMSession:
    def __init__(self, artifact: Artifact, threads: int | None = None):
        from tokenizers import Tokenizer

        from edgeformer.program import open_program

        m = artifact.manifest
        if m.model.get("task") != "causal-lm" or not m.generation:
            raise UserError(f"{artifact.path} holds a {m.model.get('task')} model, not a causal LM; "
                            f"use `edgeformer run` with texts for it")
        self.gen = m.generation
        self.rows = m.model.get("vocab_size")  # the token table's rows: an id past them aborts the gather kernel
        self.tok = Tokenizer.from_file(str(artifact.tokenizer_file))
        self.program = open_program(artifact, threads or m.recipe["threads"])

    @property
    def chunk(self) -> int:
        return self.gen["max_tokens_per_call"]

    def prompt_ids(self, text: str, chat: bool = True) -> list[int]:
        """Token ids of `text`, wrapped in the chat template when there is one and `chat`."""
        template = self.gen.get("chat_template")
        if chat and template:
            text = render_chat(template, text, self.gen.get("special_tokens", {}))
            ids = self.tok.encode(text, add_special_tokens=False).ids
        else:
            ids = self.tok.encode(text).ids
        past = [i for i in ids if self.rows is not None and i >= self.rows]
        if past:
            raise UserError(f"the prompt holds {self.tok.id_to_token(past[0])!r} (token id {past[0]}), which the model's "
                            f"{self.rows}-row token table has no row for (its tokenizer adds tokens past the table); "
                            f"leave it out of the prompt")
        return ids

    def stream(self, text: str, max_new_tokens: int, sampling: Sampling = Sampling(), chat: bool = True,
               notice: Callable[[str], None] = lambda msg: None, stats: Stats | None = None) -> Iterator[str]:
        """Yield decoded text as tokens are generated. `notice` hears about a cut prompt."""
        from tokenizers.decoders import DecodeStream

        stats = stats if stats is not None else Stats()
        if not text.strip():
            raise UserError("the prompt is empty; pass some text with --prompt (or pipe it in)")
        ids, cut = fit_prompt(self.prompt_ids(text, chat), self.gen.get("max_context"), max_new_tokens)
        if cut:
            notice(f"the prompt is {len(ids) + cut} tokens; its first {cut} were dropped to leave room for "
                   f"{max_new_tokens} new tokens in the {self.gen['max_context']}-token context")
        stats.prompt_tokens, stats.cut_tokens, stats.stopped = len(ids), cut, "max tokens"
        decoder = DecodeStream(skip_special_tokens=True)
        for tok in generate(self.program, ids, max_new_tokens, set(self.gen["stop_ids"]), sampling, self.chunk):
            stats.new_tokens += 1
            piece = decoder.step(self.tok, tok)
            if piece:
                yield piece
        if stats.new_tokens < max_new_tokens:
            stats.stopped = "stop token"


def render_chat(template: str, text: str, special_tokens: dict) -> str:
    """One user turn through a Hugging Face chat template, ready for the assistant's reply."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=[{"role": "user", "content": text}], add_generation_prompt=True,
                                                **special_tokens)
    except TemplateError as e:
        raise UserError(f"the model's chat template failed ({e}); pass --no-chat to send the prompt as is") from None
