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

A config flag the Decoder has no implementation for is refused by name (`check_config`).
"""

from __future__ import annotations

import torch

from edgeformer.errors import UserError
from edgeformer.models.decoder import Decoder, DecoderShape

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "phi3")
ACTIVATIONS = ("silu",)


def check_config(c) -> None:
    """UserError naming the first config field whose value the Decoder does not implement."""
    act = getattr(c, "hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise UserError(f"config hidden_act={act!r} is not supported for causal LMs; supported: {', '.join(ACTIVATIONS)}")
    for field in ("rope_scaling", "rope_parameters"):
        kind = (getattr(c, field, None) or {}).get("rope_type", "default")
        if kind not in ("default", None):
            raise UserError(f"config {field} rope_type={kind!r} is not supported; supported: default (plain RoPE)")
    if getattr(c, "attention_bias", False) and c.model_type != "qwen2":
        raise UserError(f"config attention_bias=True ({c.model_type}) is not supported: biases are read on Qwen2's q/k/v only")
    if getattr(c, "mlp_bias", False):
        raise UserError("config mlp_bias=True is not supported: the MLP's linears have no biases")
    config_window(c)


def config_window(c) -> int | None:
    """The sliding window every layer's attention has by the config, or None (full attention).
    UserError when only some layers slide (Qwen's max_window_layers, Gemma's interleaving)."""
    types = getattr(c, "layer_types", None)
    if types:
        sliding = [t == "sliding_attention" for t in types]
        if any(sliding) and not all(sliding):
            raise UserError(f"config layer_types mixes sliding and full attention ({sum(sliding)} of {len(types)} layers "
                            f"slide); edgeformer's decoder gives every layer the same cache")
        return int(c.sliding_window) if all(sliding) and getattr(c, "sliding_window", None) else None
    if c.model_type in ("mistral", "phi3") and getattr(c, "sliding_window", None):
        return int(c.sliding_window)
    return None


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


def from_hf(model, max_context: int, window: int | None = None, sinks: int = 0, chunk: int = 128,
            portable: bool = False) -> Decoder:
    """A `Decoder` with the weights of a Hugging Face causal LM of a `SUPPORTED` family.

    `window` makes the cache a ring (see `decoder`'s docstring); `max_context` is then unused."""
    c = model.config
    check_config(c)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    params = getattr(c, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    partial = params.get("partial_rotary_factor", getattr(c, "partial_rotary_factor", 1.0)) or 1.0
    first = model.model.layers[0]
    shape = DecoderShape(
        vocab_size=c.vocab_size, hidden=c.hidden_size, num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads, head_dim=head_dim, ffn=c.intermediate_size, max_context=max_context,
        rope_theta=float(theta), eps=c.rms_norm_eps, tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        qkv_bias=_projections(first, c)["q"][1] is not None, qk_norm=hasattr(first.self_attn, "q_norm"),
        rotary_dim=int(head_dim * partial) if partial != 1.0 else None,
        window=window, sinks=sinks, chunk=chunk, portable=portable,
    )
    dec = Decoder(shape)
    src = model.model
    with torch.no_grad():
        dec.embed.weight.copy_(src.embed_tokens.weight)
        dec.norm.weight.copy_(src.norm.weight)
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
            dst.norm1.weight.copy_(lyr.input_layernorm.weight)
            dst.norm2.weight.copy_(lyr.post_attention_layernorm.weight)
            if shape.qk_norm:
                dst.q_norm.weight.copy_(lyr.self_attn.q_norm.weight)
                dst.k_norm.weight.copy_(lyr.self_attn.k_norm.weight)
    return dec.eval()
