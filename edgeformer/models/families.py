"""The Hugging Face encoder families edgeformer reads: where each keeps its embeddings, layers,
classifier head and config fields, registered in `FAMILIES` (model_type -> Family).

A leaf: `models.hf` (loading) and `transforms.prune` (cutting heads and layers) both read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

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
    # The linear from a factorised embedding to the hidden size (ALBERT, ELECTRA-small), if any.
    projection: Callable[[nn.Module], nn.Linear | None] = lambda base: None
    # Why `prune` cannot cut this family, when it cannot.
    no_pruning: str | None = None


def _bert_like_embeddings(offset: Callable[[object], int]):
    def read(base: nn.Module):
        emb = base.embeddings
        start = offset(base.config)
        pos = emb.position_embeddings.weight[start:]
        if getattr(emb, "token_type_embeddings", None) is not None:
            pos = pos + emb.token_type_embeddings.weight[0]
        return emb.word_embeddings, pos, emb.LayerNorm

    return read


# Where each family keeps a layer's parts, as attribute paths inside one layer module.
BERT_PARTS = dict(q="attention.self.query", k="attention.self.key", v="attention.self.value", o="attention.output.dense",
                  ln1="attention.output.LayerNorm", ffn_in="intermediate.dense", ffn_out="output.dense", ln2="output.LayerNorm")
DISTILBERT_PARTS = dict(q="attention.q_lin", k="attention.k_lin", v="attention.v_lin", o="attention.out_lin",
                        ln1="sa_layer_norm", ffn_in="ffn.lin1", ffn_out="ffn.lin2", ln2="output_layer_norm")
ALBERT_PARTS = dict(q="attention.query", k="attention.key", v="attention.value", o="attention.dense", ln1="attention.LayerNorm",
                    ffn_in="ffn", ffn_out="ffn_output", ln2="full_layer_layer_norm")


def _parts(layers, parts: dict[str, str]) -> list[dict[str, nn.Module]]:
    return [{key: attrgetter(path)(lyr) for key, path in parts.items()} for lyr in layers]


def _albert_order(base: nn.Module) -> list[nn.Module]:
    """The layers in the order ALBERT runs them: depth i runs every layer of group
    int(i / (num_hidden_layers / num_hidden_groups)), so one group's modules repeat."""
    c, groups = base.config, base.encoder.albert_layer_groups
    return [lyr for i in range(c.num_hidden_layers)
            for lyr in groups[int(i / (c.num_hidden_layers / c.num_hidden_groups))].albert_layers]


def _bert_config(c) -> dict:
    return dict(heads=c.num_attention_heads, hidden=c.hidden_size, act=c.hidden_act, eps=c.layer_norm_eps)


def _distilbert_config(c) -> dict:
    return dict(heads=c.n_heads, hidden=c.dim, act=c.activation, eps=1e-12)


FAMILIES: dict[str, Family] = {
    "bert": Family(
        embeddings=_bert_like_embeddings(lambda c: 0),
        layers=lambda base: _parts(base.encoder.layer, BERT_PARTS),
        head=lambda m: [m.bert.pooler.dense, Activation("tanh"), m.classifier],
        config_get=_bert_config,
        stack=lambda base: base.encoder.layer,
        layers_key="num_hidden_layers",
    ),
    "roberta": Family(
        # RoBERTa numbers positions from padding_idx + 1 (fairseq's make_positions).
        embeddings=_bert_like_embeddings(lambda c: c.pad_token_id + 1),
        layers=lambda base: _parts(base.encoder.layer, BERT_PARTS),
        head=lambda m: [m.classifier.dense, Activation("tanh"), m.classifier.out_proj],
        config_get=_bert_config,
        stack=lambda base: base.encoder.layer,
        layers_key="num_hidden_layers",
    ),
    "distilbert": Family(
        embeddings=_bert_like_embeddings(lambda c: 0),
        layers=lambda base: _parts(base.transformer.layer, DISTILBERT_PARTS),
        head=lambda m: [m.pre_classifier, Activation("relu"), m.classifier],
        config_get=_distilbert_config,
        stack=lambda base: base.transformer.layer,
        layers_key="n_layers",
    ),
    "electra": Family(  # the discriminator (ElectraModel) and ElectraForSequenceClassification
        embeddings=_bert_like_embeddings(lambda c: 0),
        layers=lambda base: _parts(base.encoder.layer, BERT_PARTS),
        head=lambda m: [m.classifier.dense, Activation("gelu"), m.classifier.out_proj],  # gelu, not BERT's tanh
        config_get=_bert_config,
        stack=lambda base: base.encoder.layer,
        layers_key="num_hidden_layers",
        projection=lambda base: getattr(base, "embeddings_project", None),  # when embedding_size != hidden_size
    ),
    "albert": Family(
        embeddings=_bert_like_embeddings(lambda c: 0),
        layers=lambda base: _parts(_albert_order(base), ALBERT_PARTS),
        head=lambda m: [m.albert.pooler, Activation("tanh"), m.classifier],
        config_get=_bert_config,
        stack=lambda base: base.encoder.albert_layer_groups,
        layers_key="num_hidden_layers",
        projection=lambda base: base.encoder.embedding_hidden_mapping_in,
        no_pruning="ALBERT runs one shared layer at every depth, so a head or neuron cut in one layer is cut in all; "
                   "prune a model with per-layer weights (BERT, RoBERTa, DistilBERT, ELECTRA)",
    ),
}
FAMILIES["xlm-roberta"] = FAMILIES["roberta"]
FAMILIES["camembert"] = FAMILIES["roberta"]
