"""The build pipeline of a causal LM, readable in one place (the encoder's is `pipeline.py`).

    Phase 1  load       bundled name, Hugging Face folder or GGUF -> fp32 reference + Decoder
                        with its KV cache (full, or a sliding-window ring with sinks)
    Phase 2  quantize   torchao linears (int8 / 8da4w) and the embedding table
    Phase 3  export     one method, forward(tokens [1, T], input_pos [1]), T dynamic
    Phase 4  lower      XNNPACK; the cache ops and custom SDPA run as ExecuTorch kernels
    Phase 5  validate   next-token logits of a prefill and decode steps: .pte vs the quantized
                        eager model and vs fp32; speed and memory where the target is this
                        machine; perplexity with eval data; budgets
    Phase 6  write      model.pte + tokenizer.json + manifest.json, published atomically
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from tokenizers import Tokenizer

from edgeformer import artifact as art
from edgeformer.errors import UserError
from edgeformer.lm.generate import prefill
from edgeformer.manifest import Manifest
from edgeformer.models.causal import LoadedLM, load_lm
from edgeformer.models.decoder import export_decoder
from edgeformer.recipe import Recipe
from edgeformer.runtime import Program
from edgeformer.targets import Target
from edgeformer.validate.budgets import check_lm_budgets
from edgeformer.validate.numerics import sqnr_db
from edgeformer.validate.size import size_breakdown

DEFAULT_SINKS = 4
# The numerics prompt: prefilled in one call, then NUMERICS_STEPS greedy decode steps.
NUMERICS_PROMPT = "The quick brown fox jumps over the lazy dog. On the edge, a small model answers"
NUMERICS_STEPS = 16


def parse_cache(attention: str | list[str] | None) -> tuple[int | None, int]:
    """(window, sinks) from `--attention` for a causal LM: `full` or `window=W[:sinks=S]`."""
    specs = [attention] if isinstance(attention, str) else list(attention or [])
    parts = [p for s in specs for p in s.split("+") if p]
    window, sinks = None, 0
    for part in parts:
        if part == "full":
            continue
        name, _, rest = part.partition("=")
        if name != "window" or not rest or window is not None:
            raise UserError(f"--attention {part!r} is not a causal-LM cache spec; use full or window=W[:sinks=S] (once)")
        fields = rest.split(":")
        window = _positive_int(fields[0], "window")
        sinks = DEFAULT_SINKS
        for f in fields[1:]:
            key, _, value = f.partition("=")
            if key != "sinks" or not value.isdigit():
                raise UserError(f"--attention {part!r}: unknown option {f!r}; the one option is sinks=S (default {DEFAULT_SINKS})")
            sinks = int(value)
    return window, sinks


def _positive_int(text: str, what: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"--attention {what}={text!r}: use a positive whole number of tokens, e.g. {what}=256")
    return int(text)


def build_lm(model: str, tgt: Target, recipe: Recipe, out: Path, backend, *, max_context: int | None,
             attention, eval_data: str | None, min_sqnr_db: float | None, enforce: bool, bench_iters: int,
             device: str | None, lm_ops: str, dump, stage):
    """`pipeline.build` for causal LMs (same arguments, same result and errors)."""
    from edgeformer.lm.bench import default_lengths, measure_lm
    from edgeformer.pipeline import BuildResult, _versions, lower_stage, measure_stage, publish

    budgets = tgt.lm_budgets if min_sqnr_db is None else replace(tgt.lm_budgets, min_sqnr_db=min_sqnr_db)
    window, sinks = parse_cache(attention)

    # Phase 1: load
    with stage("load model"):
        lm = load_lm(model, max_context, window, sinks, chunk=recipe.seq_len, portable=lm_ops == "portable")
        text = None
        if eval_data is not None:
            from edgeformer.data.janeausten import load_text

            text = load_text(eval_data)[1]  # a bad spec fails now, not after minutes of lowering
        reference = copy.deepcopy(lm.decoder)
        tok = Tokenizer.from_str(lm.tokenizer_json)
        prompt = tok.encode(NUMERICS_PROMPT).ids

    # Phase 2: quantize (the last token's logits only: prefill need not project every position)
    with stage(f"quantize ({recipe.quant}, embedding {recipe.embedding_quant})"):
        from edgeformer.transforms.quantize import quantize_model

        module = quantize_model(lm.decoder, recipe)
        module.full_logits = reference.full_logits = False

    # Phase 3: export
    with stage("export"):
        exported = export_decoder(copy.deepcopy(module))

    # Phase 4: lower
    lowered = lower_stage(backend, exported, recipe, tgt, dump, stage)

    # Phase 5 + 6
    with art.staging(out) as tmp:
        (tmp / art.PTE).write_bytes(lowered.pte)
        (tmp / art.TOKENIZER).write_text(lm.tokenizer_json, encoding="utf-8")
        program = Program(lowered.pte, recipe.threads, causal_lm=True)  # numerics, then perplexity
        with stage("check numerics"):
            numerics = lm_numerics(program, module, reference, prompt, lm.decoder.shape.max_tokens_per_call)
        manifest = _manifest(lm, tok, tgt, recipe, lowered, numerics, _versions())
        (tmp / art.MANIFEST).write_text(manifest.to_json())
        prompt_len, new = default_lengths(manifest.generation, None, None)
        bench, where = measure_stage(manifest, tgt, bench_iters, stage, "measure speed and memory",
                                     lambda: measure_lm(tmp, recipe.threads, prompt_len, min(new, bench_iters)), device, tmp)
        ppl = None
        if eval_data is not None:
            from edgeformer.lm.perplexity import DEFAULT_TOKENS, default_segment, evaluate_perplexity

            with stage(f"perplexity on {eval_data}"):
                segment = default_segment(manifest.generation["max_context"])
                ppl = evaluate_perplexity(program, tok.encode(text).ids, DEFAULT_TOKENS, segment, reference=lm.hf)
                manifest.accuracy = dict(data=eval_data, metric="perplexity", **ppl)
        checks = check_lm_budgets(budgets, len(lowered.pte), numerics, bench, where, ppl)
        manifest.budgets = [c.to_dict() for c in checks]
        return publish(tmp, out, tgt, BuildResult(None, manifest, exported, lowered.program), checks, enforce)


def lm_numerics(program, quantized, reference, prompt: list[int], chunk: int) -> dict:
    """Next-token logits after a prefill of `prompt` and NUMERICS_STEPS decode steps (the
    `.pte`'s greedy tokens fed to all three): `.pte` vs the quantized eager model (what
    lowering changed) and vs fp32 (everything), with top-1 agreement."""
    from edgeformer._quiet import native_stderr_silenced

    quantized, reference = copy.deepcopy(quantized), copy.deepcopy(reference)
    outs = {"pte": [], "exported": [], "fp32": []}
    with torch.no_grad(), native_stderr_silenced():  # eager custom_sdpa logs on every call
        steps = {"pte": program, "exported": quantized, "fp32": reference}
        for k, step in steps.items():
            outs[k].append(prefill(step, prompt, chunk)[0, -1])
        for i in range(NUMERICS_STEPS):
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


def _manifest(lm: LoadedLM, tok: Tokenizer, tgt: Target, recipe: Recipe, lowered, numerics: dict, versions: dict) -> Manifest:
    s = lm.decoder.shape
    per_token = 2 * s.num_layers * s.num_kv_heads * s.head_dim * 4  # fp32 K and V, every layer
    emb_bits = {"fp32": 32, "int8": 8, "int4": 4}[recipe.embedding_quant]
    special = {k: v for k, v in (("bos_token", _token(tok, lm.hf.config.bos_token_id)),
                                 ("eos_token", _token(tok, lm.hf.config.eos_token_id))) if v}
    return Manifest(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=dict(**lm.source, labels=None, layers=s.num_layers, heads=s.num_heads, kv_heads=s.num_kv_heads,
                   hidden=s.hidden, ffn=s.ffn, vocab_size=s.vocab_size),
        target=dict(name=tgt.name, alias=tgt.alias, arch=tgt.arch, backend=tgt.backend),
        recipe=recipe.to_dict(),
        toolchain=versions,
        pte=dict(file=art.PTE, sha256=art.sha256_bytes(lowered.pte), bytes=len(lowered.pte)),
        tokenizer=dict(file=art.TOKENIZER, sha256=art.sha256_bytes(lm.tokenizer_json.encode()), pad_id=None,
                       vocab_size=tok.get_vocab_size()),
        inputs=[dict(name="tokens", dtype="int64", shape=[1, f"1..{s.max_tokens_per_call}"]),
                dict(name="input_pos", dtype="int64", shape=[1], meaning="position of the first token")],
        outputs=[dict(name="logits", dtype="float32", shape=[1, 1, s.vocab_size], meaning="next-token logits of the last token")],
        numerics=dict(**numerics, reference="fp32 Decoder (Hugging Face weights)"),
        delegation=lowered.delegation.to_dict(),
        size=size_breakdown(lowered.pte),
        measurements={},
        budgets=[],
        generation=dict(
            cache="ring" if s.window else "full", max_context=None if s.window else s.max_context,
            window=s.window, sinks=s.sinks, max_tokens_per_call=s.max_tokens_per_call, cache_slots=s.cache_len,
            cache_bytes_per_token=per_token, cache_mb=round(per_token * s.cache_len / 2**20, 1),
            embedding_bytes=s.vocab_size * s.hidden * emb_bits // 8, stop_ids=lm.stop_ids,
            chat_template=lm.chat_template, special_tokens=special, max_positions=lm.source["max_positions"],
            ops="portable" if s.portable else "custom",
        ),
    )


def _token(tok, i) -> str | None:
    return tok.id_to_token(i) if isinstance(i, int) else None


LM_OPS = ("custom", "portable")


def check_lm_options(prune, data, max_context: int | None, lm_ops: str) -> None:
    if lm_ops not in LM_OPS:
        raise UserError(f"--lm-ops {lm_ops!r}: use custom (ExecuTorch's LLM kernels, the Python runtime and the Android "
                        "AAR) or portable (core ops only, for the C++ runner built from the wheel)")
    if prune is not None or data is not None:
        raise UserError("--prune/--data apply to encoder classifiers; causal LMs are not pruned yet")
    if max_context is not None and max_context < 2:
        raise UserError(f"--max-context {max_context}: use at least 2 tokens")
