"""A causal LM for an on-device target: the list of stages, then the stages only LMs have.

    prune      optional: key-value groups, FFN neurons, layers by ratio + distillation on --data
               text (`edgeformer prune`) into OUT.pruned/, which the build then loads
    load       bundled name, Hugging Face folder or GGUF -> fp32 reference + Decoder with its
               KV cache (full, or a sliding-window ring with sinks); tokenizer staged
    quantize   torchao linears and embedding table (the last token's logits only); with
               --quant-method gptq, 4-bit codes by GPTQ on the --data text
    export     one method, forward(tokens [1, T], input_pos [1]), T dynamic
    lower      XNNPACK; the cache ops and custom SDPA run as ExecuTorch kernels
    validate   next-token logits of a prefill and decode steps: .pte vs quantized eager and fp32
    measure    prefill/decode speed and memory where the target is
    evaluate   optional: perplexity of the .pte beside fp32 (with --eval-data)
    budgets    every budget, measured where it counts
    publish    manifest + report, renamed into place (or nothing, when a budget fails)
"""

from __future__ import annotations

import copy

from edgeformer.pipeline import stages as st
from edgeformer.pipeline.stages import BuildState, Stage


def prune(s: BuildState) -> None:
    from edgeformer.train.prune_lm import prune_for_build

    s.source, r = prune_for_build(s.spec.model, s.spec.prune, s.spec.data, s.spec.out,
                                  s.budgets.max_perplexity_increase_pct or 5.0)
    s.extra["pruning"] = dict(unpruned=s.spec.model, mode=r["mode"], unit=r["unit"], plan=r["plan"], data=r["data"],
                              params_ratio=r["params"]["ratio"], heldout=r["heldout"], distill_steps=r["distill"]["steps"])


def load(s: BuildState) -> None:
    from tokenizers import Tokenizer

    from edgeformer import artifact as art
    from edgeformer.lm.numerics import NUMERICS_PROMPT
    from edgeformer.models.causal import load_lm

    window, sinks = s.spec.attention_plan().cache()
    s.loaded = lm = load_lm(s.source, s.recipe.max_context, window, sinks, chunk=s.recipe.seq_len,
                            portable=s.recipe.lm_ops == "portable", kv_cache=s.recipe.kv_cache)
    if s.spec.eval_data is not None:
        from edgeformer.data.janeausten import load_text

        s.extra["eval_text"] = load_text(s.spec.eval_data)[1]
    s.reference = copy.deepcopy(lm.decoder)
    s.extra["tok"] = tok = Tokenizer.from_str(lm.tokenizer_json)
    s.extra["prompt"] = tok.encode(NUMERICS_PROMPT).ids
    (s.staged / art.TOKENIZER).write_text(lm.tokenizer_json, encoding="utf-8")
    s.module = lm.decoder


def quantize(s: BuildState) -> None:
    from edgeformer.transforms import smooth
    from edgeformer.transforms.quantize import quantize_model

    gguf = None
    if s.recipe.quant == "gguf":
        from edgeformer.models.gguf import GGUFWeights

        gguf = GGUFWeights(s.loaded.source["path"])
    calibrate = calibration(s) if s.recipe.quant_method == "gptq" else None
    head = grid = None
    # inputs quantized per token with one scale: flatten them first, from one calibration on the fp32 model
    sites = {"lm_head": s.module.lm_head} if int8_head(s, gguf) else {}
    if gguf is not None:  # applied on the grid
        sites |= smooth.grid_sites(s.module)
    if sites:
        ids, amax = smooth.calibrate(s.module, s.extra["tok"].encode(smooth.CALIBRATION_PROMPT).ids, sites)
        if "lm_head" in amax:
            head = smooth.smooth_head(s.module, amax.pop("lm_head"), len(ids))
        grid = (len(ids), amax) if gguf is not None else None
    # XNNPACK's lowering stores the head and the embedding's equal tables once (transforms/tied_table.py)
    s.module = quantize_model(s.module, s.recipe, s.backend, gguf, calibrate=calibrate,
                              share_tied=s.backend.name == "xnnpack", grid_inputs=grid)
    if head is not None:
        s.module.quantization_record = {**getattr(s.module, "quantization_record", {}), "head_smoothing": head}
    s.module.full_logits = s.reference.full_logits = False  # prefill need not project every position
    if calibrate is not None:
        s.module.quantization_record["calibration"] = s.extra["calibration"]


def export(s: BuildState) -> None:
    from edgeformer.models.decoder import export_decoder

    s.exported = export_decoder(copy.deepcopy(s.module))


def validate(s: BuildState) -> None:
    from edgeformer.lm.numerics import lm_numerics
    from edgeformer.program import Program
    from edgeformer.transforms.quantize import quantization_record

    s.extra["program"] = program = Program.of(s.lowered, s.recipe.threads, causal_lm=True)  # numerics, then perplexity
    shape = s.loaded.decoder.shape
    numerics = lm_numerics(program, s.module, s.reference, s.extra["prompt"], shape.max_tokens_per_call,
                           shape.max_context if shape.window is None or shape.mixed else None)
    s.manifest = lm_manifest(s, dict(**numerics, reference="fp32 Decoder (Hugging Face weights)"))
    if "pruning" in s.extra:
        s.manifest.model["pruning"] = s.extra["pruning"]
    s.manifest.quantization = quantization_record(s.recipe, s.module)


def measure(s: BuildState) -> None:
    from edgeformer import artifact as art
    from edgeformer.lm.speed import default_lengths, measure_lm, measure_lm_eager

    (s.staged / art.MANIFEST).write_text(s.manifest.to_json())  # the worker loads the staged artifact
    prompt_len, new = default_lengths(s.manifest.generation, None, None)
    new = min(new, s.spec.bench_iters)
    st.measure(s, lambda: measure_lm(s.staged, s.recipe.threads, prompt_len, new),
               lambda: measure_lm_eager(s.source, s.recipe.threads, min(prompt_len, 32), max(8, min(new, 32))))


def evaluate(s: BuildState) -> None:
    from edgeformer.lm.perplexity import DEFAULT_TOKENS, default_segment, evaluate_perplexity

    segment = default_segment(s.manifest.generation["max_context"])
    ids = s.extra["tok"].encode(s.extra["eval_text"]).ids
    ppl = evaluate_perplexity(s.extra["program"], ids, DEFAULT_TOKENS, segment, reference=s.loaded.hf)
    s.accuracy = ppl  # the budget gates the .pte against its own fp32 model (pruned or not): what lowering lost
    s.manifest.accuracy = dict(data=s.spec.eval_data, metric="perplexity", **ppl)
    if "pruning" in s.extra:  # and, beside it, what pruning and lowering lost together
        s.manifest.accuracy.update(unpruned_vs(s.spec.model, ids, DEFAULT_TOKENS, segment, ppl["perplexity"]))


STAGES = [
    Stage("prune", prune, when=lambda s: s.spec.prune is not None, label=lambda s: f"prune ({s.spec.prune})"),
    Stage("load", load, label=lambda s: "load model"),
    Stage("quantize", quantize, label=lambda s: f"quantize ({s.recipe.quant}, embedding {s.recipe.embedding_quant})"),
    Stage("export", export),
    Stage("lower", st.lower, label=lambda s: f"lower ({s.backend.name})"),
    Stage("validate", validate, label=lambda s: "check numerics"),
    Stage("measure", measure, label=lambda s: "measure speed and memory"),
    Stage("evaluate", evaluate, when=lambda s: s.spec.eval_data is not None, label=lambda s: f"perplexity on {s.spec.eval_data}"),
    Stage("budgets", st.budgets),
    Stage("publish", st.publish),
]


# ---- helpers of the stages above ----

def int8_head(s: BuildState, gguf) -> bool:
    """Whether the output head becomes an int8 linear with int8 dynamic activations (XNNPACK's
    int8 scheme; gguf's fallback for a head not stored in 4-bit blocks)."""
    from edgeformer.transforms.gguf_grid import head_on_grid

    if s.backend.name != "xnnpack":
        return False
    return s.recipe.quant == "int8" or (s.recipe.quant == "gguf" and gguf is not None and not head_on_grid(gguf))


CALIBRATION_CHUNKS, CALIBRATION_TOKENS = 32, 256  # GPTQ's inputs: 8192 tokens of --data


def calibration(s: BuildState):
    """GPTQ's calibration forward for a causal LM: the first chunks of the --data text, each
    from position 0, every position projected (the head sees them all); the model's buffers
    (its KV cache) are put back as they were."""
    import torch

    from edgeformer.data.janeausten import load_text
    from edgeformer.errors import UserError

    name, text = load_text(s.spec.data)
    ids = s.extra["tok"].encode(text).ids
    shape = s.loaded.decoder.shape  # the eager model takes a full cache's whole context in one call
    size = min(CALIBRATION_TOKENS, shape.max_context if shape.window is None else shape.max_tokens_per_call)
    chunks = [torch.tensor([ids[p:p + size]]) for p in range(0, len(ids) - size + 1, size)][:CALIBRATION_CHUNKS]
    if not chunks:
        raise UserError(f"--data {s.spec.data}: {len(ids)} tokens, fewer than one calibration chunk of {size}; "
                        f"give a longer text")
    s.extra["calibration"] = dict(data=name, chunks=len(chunks), tokens=len(chunks) * size)

    def run(model):
        saved = {n: b.clone() for n, b in model.named_buffers()}
        full, model.full_logits = model.full_logits, True
        try:
            for c in chunks:
                model(c, torch.tensor([0]))
        finally:
            model.full_logits = full
            for n, b in model.named_buffers():
                b.copy_(saved[n])
    return run


def lm_manifest(s: BuildState, numerics: dict):
    from edgeformer import artifact as art
    from edgeformer.models.kv_cache import vector_bytes
    from edgeformer.transforms.gguf_grid import EMBED_ON_GRID

    lm, tok, recipe = s.loaded, s.extra["tok"], s.recipe
    d = lm.decoder.shape
    per_token = 2 * d.kv_heads_total * vector_bytes(d.head_dim, d.kv_cache, d.portable)  # K and V, every layer
    cache = "mixed" if d.mixed else "ring" if d.window else "full"  # mixed: Gemma 3's sliding and full layers
    layer_slots = [d.layer_slots(i) for i in range(d.num_layers)]
    slots = max(layer_slots)
    emb_bits = {"fp32": 32, "int8": 8, "int4": 4}[recipe.embedding_quant]
    if getattr(s.module, "quantization_record", {}).get("modules", {}).get("embed") == EMBED_ON_GRID:
        emb_bits = 8 + 32 / 32  # int8 codes and an fp32 scale per 32
    special = {k: v for k, v in (("bos_token", token_text(tok, lm.hf.config.bos_token_id)),
                                 ("eos_token", token_text(tok, lm.hf.config.eos_token_id))) if v}
    return st.new_manifest(
        s,
        model=dict(**lm.source, labels=None, layers=d.num_layers, head_dim=d.head_dim, hidden=d.hidden,
                   vocab_size=d.vocab_size, **layer_sizes(d)),
        tokenizer=dict(file=art.TOKENIZER, sha256=art.sha256_bytes(lm.tokenizer_json.encode()), pad_id=None,
                       vocab_size=tok.get_vocab_size()),
        inputs=[dict(name="tokens", dtype="int64", shape=[1, f"1..{d.max_tokens_per_call}"]),
                dict(name="input_pos", dtype="int64", shape=[1], meaning="position of the first token")],
        outputs=[dict(name="logits", dtype="float32", shape=[1, 1, d.vocab_size], meaning="next-token logits of the last token")],
        numerics=numerics,
        generation=dict(
            cache=cache, max_context=None if cache == "ring" else d.max_context,
            cache_dtype=d.kv_cache, window=d.window, sinks=d.sinks, max_tokens_per_call=d.max_tokens_per_call, cache_slots=slots,
            **(dict(layer_slots=layer_slots) if cache == "mixed" else {}),
            cache_bytes_per_token=per_token, cache_mb=round(per_token * sum(layer_slots) / d.num_layers / 2**20, 1),
            embedding_bytes=int(d.vocab_size * d.hidden * emb_bits // 8), stop_ids=lm.stop_ids,
            chat_template=lm.chat_template, special_tokens=special, max_positions=lm.source["max_positions"],
            ops="portable" if d.portable else "custom",
        ),
    )


def layer_sizes(d) -> dict:
    """heads, kv_heads, ffn: one number each, or a list per layer for a pruned model."""
    if d.layer_sizes is None:
        return dict(heads=d.num_heads, kv_heads=d.num_kv_heads, ffn=d.ffn)
    heads, kv, ffn = (list(x) for x in zip(*d.layer_sizes, strict=True))
    return dict(heads=heads, kv_heads=kv, ffn=ffn)


def unpruned_vs(model: str, ids: list[int], tokens: int, segment: int, perplexity: float) -> dict:
    """The unpruned fp32 model's perplexity on the same tokens, and the .pte's increase over it."""
    from edgeformer.lm.perplexity import nll_full, segments
    from edgeformer.lm.perplexity import perplexity as ppl_of
    from edgeformer.models.causal import load_reference, resolve_lm

    _, folder, gguf = resolve_lm(model)
    unpruned = load_reference(folder, gguf)
    ref = ppl_of([x for seg in segments(ids, tokens, segment) for x in nll_full(unpruned, seg)])
    return dict(unpruned_perplexity=round(ref, 4), increase_vs_unpruned_pct=round((perplexity / ref - 1) * 100, 3))


def token_text(tok, i) -> str | None:
    return tok.id_to_token(i) if isinstance(i, int) else None
