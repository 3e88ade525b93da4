"""The Hugging Face causal-LM families `Decoder` reads, and what each config may ask for.

All of them are the Llama layout (pre-norm RMSNorm, RoPE, grouped-query attention, a SiLU
gated MLP); they differ in a few places, each read here:

    llama    Llama, SmolLM2 (GGUF files of Mistral models are "llama" too)
    mistral  Llama with `sliding_window`: the cache becomes a ring of that window when the
             window is shorter than the context asked for (exact attention at the least memory)
    qwen2    q/k/v biases
    qwen3    RMSNorm over each query and key head before RoPE; an explicit head_dim
    phi3     fused qkv_proj and gate_up_proj (split into the Decoder's own linears: fused
             outputs would be sliced outside the delegate), partial rotary, `sliding_window`
    gemma3_text  Gemma 3's text models (270M, 1B): embeddings scaled by sqrt(hidden), (1 + w)
             RMSNorms (folded into the weights at load), norms after attention and around the
             MLP, a tanh-GELU MLP, q/k norms, attention scaled by query_pre_attn_scalar, and
             `layer_types` interleaving sliding layers (a ring cache, their own RoPE base) with
             full ones (a full cache): each layer gets its own cache kind

Any family's `layer_types` may mix sliding and full layers (Qwen's max_window_layers too).

A config flag the Decoder has no implementation for is refused by name (`check_config`).
"""

from __future__ import annotations

import torch

from edgeformer.errors import UserError
from edgeformer.models.decoder import Decoder, DecoderShape

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma3_text")
# llama.cpp's general.architecture -> the model_type transformers' GGUF loader builds (Mistral
# files are "llama"; a Gemma 3 GGUF holds the text model only)
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3", "gemma3": "gemma3_text"}
LM_ACTIVATIONS = ("silu", "gelu_pytorch_tanh")  # the config names the Decoder implements


def _activation(c) -> str:
    return getattr(c, "hidden_activation", None) or getattr(c, "hidden_act", "silu")


def _per_layer_type(params: dict | None) -> dict[str, dict]:
    """Layer type -> its RoPE parameters ("" for a model with one set for every layer)."""
    params = params or {}
    if params and all(isinstance(v, dict) for v in params.values()):  # Gemma 3: per layer type
        return params
    return {"": params}


def check_config(c) -> None:
    """UserError naming the first config field whose value the Decoder does not implement."""
    act = _activation(c)
    if act not in LM_ACTIVATIONS:
        field = "hidden_activation" if getattr(c, "hidden_activation", None) else "hidden_act"
        raise UserError(f"config {field}={act!r} is not supported for causal LMs; supported: {', '.join(LM_ACTIVATIONS)}")
    for field in ("rope_parameters", "rope_scaling"):
        for layer_type, params in _per_layer_type(getattr(c, field, None)).items():
            kind = params.get("rope_type", "default")
            if kind not in ("default", None):
                where = f"{field}[{layer_type!r}]" if layer_type else field
                raise UserError(f"config {where} rope_type={kind!r} is not supported; supported: default (plain RoPE)")
    if getattr(c, "attention_bias", False) and c.model_type != "qwen2":
        raise UserError(f"config attention_bias=True ({c.model_type}) is not supported: biases are read on Qwen2's q/k/v only")
    if getattr(c, "mlp_bias", False):
        raise UserError("config mlp_bias=True is not supported: the MLP's linears have no biases")
    for flag in ("attn_logit_softcapping", "use_bidirectional_attention"):  # Gemma 2's capping, EmbeddingGemma
        if getattr(c, flag, None):
            raise UserError(f"config {flag}={getattr(c, flag)!r} is not supported: the cached attention is causal "
                            f"and uncapped (custom_sdpa)")


def config_sliding(c) -> tuple[int, tuple[bool, ...]] | None:
    """(window, whether each layer slides) by the config, or None when no layer does."""
    window = getattr(c, "sliding_window", None)
    types = getattr(c, "layer_types", None)
    if types:
        sliding = tuple(t == "sliding_attention" for t in types)
        return (int(window), sliding) if any(sliding) and window else None
    if c.model_type in ("mistral", "phi3") and window:
        return int(window), (True,) * c.num_hidden_layers
    return None


def default_cache(c, max_context: int) -> tuple[int | None, tuple[bool, ...] | None]:
    """(window, sliding) for `from_hf` as the config trained the model: a ring of the config's
    window on the layers that slide, where that window is shorter than the context (exact
    attention at the least memory); (None, None), a full cache, otherwise."""
    trained = config_sliding(c)
    if trained is None or trained[0] >= max_context:
        return None, None
    return trained[0], None if all(trained[1]) else trained[1]


def _projections(layer, c) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Decoder linear name -> (weight, bias) of one Hugging Face layer."""
    a, m = layer.self_attn, layer.mlp
    if hasattr(a, "qkv_proj"):  # Phi-3: rows [q; k; v], then [gate; up]
        d = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        q, k, v = a.qkv_proj.weight.split([c.num_attention_heads * d, c.num_key_value_heads * d,
                                           c.num_key_value_heads * d])
        gate, up = m.gate_up_proj.weight.chunk(2, dim=0)
        return dict(q=(q, None), k=(k, None), v=(v, None), o=(a.o_proj.weight, None), gate=(gate, None), up=(up, None),
                    down=(m.down_proj.weight, None))
    return {mine: (mod.weight, mod.bias) for mine, mod in (
        ("q", a.q_proj), ("k", a.k_proj), ("v", a.v_proj), ("o", a.o_proj),
        ("gate", m.gate_proj), ("up", m.up_proj), ("down", m.down_proj))}


def _sizes(proj: dict, head_dim: int) -> tuple[int, int, int]:
    """(query heads, key-value heads, FFN width) of one layer, read off its weights (a pruned
    model's differ from its config's)."""
    return proj["q"][0].shape[0] // head_dim, proj["k"][0].shape[0] // head_dim, proj["gate"][0].shape[0]


def from_hf(model, max_context: int, window: int | None = None, sinks: int = 0, chunk: int = 128,
            portable: bool = False, sliding: tuple[bool, ...] | None = None, kv_cache: str = "fp32") -> Decoder:
    """A `Decoder` with the weights of a Hugging Face causal LM of a `SUPPORTED` family.

    `window` makes the cache a ring (see `decoder`'s docstring), of the layers `sliding` names
    (None: every layer); `max_context` bounds the full caches; `kv_cache` is how the cache
    stores keys and values (fp32 | int8, `kv_cache.py`)."""
    c = model.config
    check_config(c)
    gemma = c.model_type == "gemma3_text"
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = _per_layer_type(getattr(c, "rope_parameters", None))
    params = rope.get("full_attention", rope.get("", {}))
    theta = params.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    local = rope.get("sliding_attention", {}).get("rope_theta")
    local = None if local == theta else local  # a second RoPE base only where the local layers have their own
    partial = params.get("partial_rotary_factor", getattr(c, "partial_rotary_factor", 1.0)) or 1.0
    first = model.model.layers[0]
    sizes = tuple(_sizes(_projections(lyr, c), head_dim) for lyr in model.model.layers)
    uniform = (c.num_attention_heads, c.num_key_value_heads, c.intermediate_size)
    shape = DecoderShape(
        vocab_size=c.vocab_size, hidden=c.hidden_size, num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads, head_dim=head_dim, ffn=c.intermediate_size, max_context=max_context,
        rope_theta=float(theta), eps=c.rms_norm_eps, tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        qkv_bias=_projections(first, c)["q"][1] is not None, qk_norm=hasattr(first.self_attn, "q_norm"),
        rotary_dim=int(head_dim * partial) if partial != 1.0 else None,
        window=window, sinks=sinks, chunk=chunk, portable=portable, sliding=sliding, kv_cache=kv_cache,
        local_rope_theta=None if local is None else float(local),
        local_layers=None if local is None else tuple(t == "sliding_attention" for t in c.layer_types),
        embed_scale=c.hidden_size**0.5 if gemma else 1.0, sandwich_norms=gemma, activation=_activation(c),
        attn_scale=c.query_pre_attn_scalar**-0.5 if gemma else None, final_softcap=getattr(c, "final_logit_softcapping", None),
        layer_sizes=None if all(x == uniform for x in sizes) else sizes,
    )
    dec = Decoder(shape)
    src = model.model
    norm = (lambda w: 1.0 + w) if gemma else (lambda w: w)  # Gemma's RMSNorm scales by (1 + weight), folded here
    with torch.no_grad():
        dec.embed.weight.copy_(src.embed_tokens.weight)
        dec.norm.weight.copy_(norm(src.norm.weight))
        dec.lm_head.weight.copy_(model.lm_head.weight)
        for dst, lyr in zip(dec.layers, src.layers, strict=True):
            for name, (w, b) in _projections(lyr, c).items():
                mine = getattr(dst, name)
                if (b is None) != (mine.bias is None):
                    raise UserError(f"{name}_proj bias: {b is not None}, expected {mine.bias is not None} "
                                    f"(biases are read on q/k/v only, Qwen2-style)")
                mine.weight.copy_(w)
                if b is not None:
                    mine.bias.copy_(b)
            norms = dict(norm1=lyr.input_layernorm, norm2=lyr.post_attention_layernorm)
            if gemma:  # post_attention_layernorm is the sandwich's, not the MLP's input norm
                norms = dict(norm1=lyr.input_layernorm, post_attn_norm=lyr.post_attention_layernorm,
                             norm2=lyr.pre_feedforward_layernorm, post_ffn_norm=lyr.post_feedforward_layernorm)
            if shape.qk_norm:
                norms.update(q_norm=lyr.self_attn.q_norm, k_norm=lyr.self_attn.k_norm)
            for mine, theirs in norms.items():
                getattr(dst, mine).weight.copy_(norm(theirs.weight))
    return dec.eval()
