"""The Hugging Face encoder families edgeformer reads: where each keeps its embeddings, layers,
classifier head and config fields, registered in `FAMILIES` (model_type -> Family).

A leaf: `models.hf` (loading) and `transforms.prune` (cutting heads and layers) both read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgeformer.models.encoder import Activation


@dataclass
class Family:
    """How to read one architecture family."""

    embeddings: Callable[[nn.Module], tuple[nn.Embedding, torch.Tensor, nn.LayerNorm]]
    layers: Callable[[nn.Module], list[dict[str, nn.Module]]]
    head: Callable[[nn.Module], list[nn.Module]]  # classifier modules, first token in
    config_get: Callable[[object], dict]
    stack: Callable[[nn.Module], nn.ModuleList]  # the base model's list of layers
    layers_key: str  # the config field that counts layers


def _bert_like_embeddings(offset: Callable[[object], int]):
    def read(base: nn.Module):
        emb = base.embeddings
        start = offset(base.config)
        pos = emb.position_embeddings.weight[start:]
        if getattr(emb, "token_type_embeddings", None) is not None:
            pos = pos + emb.token_type_embeddings.weight[0]
        return emb.word_embeddings, pos, emb.LayerNorm

    return read


def _bert_layers(base: nn.Module) -> list[dict[str, nn.Module]]:
    return [
        dict(
            q=lyr.attention.self.query,
            k=lyr.attention.self.key,
            v=lyr.attention.self.value,
            o=lyr.attention.output.dense,
            ln1=lyr.attention.output.LayerNorm,
            ffn_in=lyr.intermediate.dense,
            ffn_out=lyr.output.dense,
            ln2=lyr.output.LayerNorm,
        )
        for lyr in base.encoder.layer
    ]


def _distilbert_layers(base: nn.Module) -> list[dict[str, nn.Module]]:
    return [
        dict(
            q=lyr.attention.q_lin,
            k=lyr.attention.k_lin,
            v=lyr.attention.v_lin,
            o=lyr.attention.out_lin,
            ln1=lyr.sa_layer_norm,
            ffn_in=lyr.ffn.lin1,
            ffn_out=lyr.ffn.lin2,
            ln2=lyr.output_layer_norm,
        )
        for lyr in base.transformer.layer
    ]


def _bert_config(c) -> dict:
    return dict(heads=c.num_attention_heads, hidden=c.hidden_size, act=c.hidden_act, eps=c.layer_norm_eps)


def _distilbert_config(c) -> dict:
    return dict(heads=c.n_heads, hidden=c.dim, act=c.activation, eps=1e-12)


FAMILIES: dict[str, Family] = {
    "bert": Family(
        embeddings=_bert_like_embeddings(lambda c: 0),
        layers=_bert_layers,
        head=lambda m: [m.bert.pooler.dense, Activation("tanh"), m.classifier],
        config_get=_bert_config,
        stack=lambda base: base.encoder.layer,
        layers_key="num_hidden_layers",
    ),
    "roberta": Family(
        # RoBERTa numbers positions from padding_idx + 1 (fairseq's make_positions).
        embeddings=_bert_like_embeddings(lambda c: c.pad_token_id + 1),
        layers=_bert_layers,
        head=lambda m: [m.classifier.dense, Activation("tanh"), m.classifier.out_proj],
        config_get=_bert_config,
        stack=lambda base: base.encoder.layer,
        layers_key="num_hidden_layers",
    ),
    "distilbert": Family(
        embeddings=_bert_like_embeddings(lambda c: 0),
        layers=_distilbert_layers,
        head=lambda m: [m.pre_classifier, Activation("relu"), m.classifier],
        config_get=_distilbert_config,
        stack=lambda base: base.transformer.layer,
        layers_key="n_layers",
    ),
}
FAMILIES["xlm-roberta"] = FAMILIES["roberta"]
FAMILIES["camembert"] = FAMILIES["roberta"]
