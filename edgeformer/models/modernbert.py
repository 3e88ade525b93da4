"""ModernBERT mapped onto the Encoder.

What differs from BERT's layout, and where it goes:
- pre-norm layers with a final LayerNorm, and no LayerNorm before the first layer's attention
  (`PreNormLayer`, `Encoder.ln_final`);
- GeGLU: `Wi` holds the input and gate halves; they become `ffn_in` and `ffn_gate`;
- rotary positions, with one base for the global layers and another for the local ones
  (`RotaryTables`), and no position table;
- local layers see `local_attention // 2` tokens on each side: the window kernel's
  `window=local_attention` (Longformer's definition, the one Hugging Face's mask uses);
- no biases in linears and LayerNorms by default: zeros stand in for absent ones, so every
  family lowers through the same modules;
- the classifier pools the first token or the mean (`classifier_pooling`), then runs
  dense → activation → LayerNorm → classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeformer.errors import UserError
from edgeformer.models.encoder import (
    Activation,
    Encoder,
    EncoderShape,
    Head,
    LayerNorm,
    clone_linear,
    copy_params,
    fold_attention_scale,
)

# Why `prune` cannot cut ModernBERT yet.
NO_PRUNING = ("ModernBERT's fused Wqkv and gated Wi are not cut by the head and neuron pruner yet; "
              "prune a model with BERT-style layers (BERT, RoBERTa, DistilBERT, ELECTRA)")


def check_config(config) -> None:
    """UserError naming a ModernBERT config setting the mapping does not implement."""
    for kind, params in (config.rope_parameters or {}).items():
        rope_type = (params or {}).get("rope_type", "default")
        if rope_type != "default":
            raise UserError(f"ModernBERT config rope_parameters[{kind!r}].rope_type={rope_type!r} is not supported; "
                            f"edgeformer maps the default RoPE only (remove the rope scaling from config.json)")
    unknown = sorted(set(config.layer_types) - {"full_attention", "sliding_attention"})
    if unknown:
        raise UserError(f"ModernBERT config layer_types has {unknown[0]!r}; supported: full_attention, sliding_attention")


def to_encoder(model: nn.Module, task: str) -> Encoder:
    """An Encoder with the weights of a Hugging Face ModernBERT (ModernBertModel or
    ModernBertForSequenceClassification)."""
    c = model.config
    check_config(c)
    base = model.base_model
    layers = base.layers
    head_dim = c.hidden_size // c.num_attention_heads
    shape = EncoderShape(
        vocab_size=c.vocab_size,
        hidden=c.hidden_size,
        head_dim=head_dim,
        num_heads=(c.num_attention_heads,) * len(layers),
        ffn=tuple(ly.mlp.Wo.in_features for ly in layers),
        max_positions=c.max_position_embeddings,
        activation=c.hidden_activation,
        eps=c.norm_eps,
        pre_norm=True,
        rope_theta=tuple(float(c.rope_parameters[t]["rope_theta"]) for t in c.layer_types),
    )
    head = None
    if task == "classifier":
        norm = LayerNorm(c.hidden_size, eps=c.norm_eps)
        copy_params(norm, model.head.norm)
        head = Head(clone_linear(model.head.dense), Activation(c.classifier_activation), norm, clone_linear(model.classifier))
    enc = Encoder(shape, head=head, pooling="mean" if c.classifier_pooling == "mean" else "first")
    with torch.no_grad():
        enc.word.weight.copy_(base.embeddings.tok_embeddings.weight)
    copy_params(enc.ln_emb, base.embeddings.norm)
    copy_params(enc.ln_final, base.final_norm)
    for i, (dst, src) in enumerate(zip(enc.layers, layers, strict=True)):
        copy_params(dst.attn.qkv, src.attn.Wqkv)  # Wqkv's rows are q, k, v, heads in order: the fused layout
        fold_attention_scale(dst.attn)
        copy_params(dst.attn.out, src.attn.Wo)
        if i > 0:
            copy_params(dst.ln1, src.attn_norm)
        copy_params(dst.ln2, src.mlp_norm)
        f = dst.ffn_in.out_features
        with torch.no_grad():
            w, b = src.mlp.Wi.weight, src.mlp.Wi.bias
            b = b if b is not None else torch.zeros(2 * f)
            dst.ffn_in.weight.copy_(w[:f])
            dst.ffn_gate.weight.copy_(w[f:])
            dst.ffn_in.bias.copy_(b[:f])
            dst.ffn_gate.bias.copy_(b[f:])
        copy_params(dst.ffn_out, src.mlp.Wo)
        if c.layer_types[i] == "sliding_attention":
            dst.attn.set_window(2 * c.sliding_window)
    return enc.eval()
