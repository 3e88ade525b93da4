"""Physical pruning equals masking; pruned models save, reload and export with non-uniform sizes."""

from __future__ import annotations

import copy

import pytest
import torch

from edgeformer.models import load_model
from edgeformer.models.hf import to_encoder
from edgeformer.transforms.prune import Plan, apply_plan, encoder_flops, mask_encoder

IDS = torch.tensor([[2, 5, 9, 11, 7, 3, 0, 0], [2, 14, 6, 3, 0, 0, 0, 0]])
MASK = (IDS != 0).long()


def _plan(loaded) -> Plan:
    shape = loaded.encoder.shape
    return Plan.full(list(shape.num_heads), list(shape.ffn), shape.head_dim, shape.hidden)


def _pruned_encoder(loaded, plan):
    hf = copy.copy(loaded.hf)
    hf.reference = apply_plan(copy.deepcopy(loaded.hf.reference), loaded.hf.model_type, plan)
    return hf, to_encoder(hf)


def _hidden(enc) -> torch.Tensor:
    x, _, mask_add = enc.embed(IDS, MASK)
    for layer in enc.layers:
        x = layer(x, mask_add)
    return x


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "electra"])
def test_removing_heads_and_neurons_equals_masking_them(tmp_path, arch):
    from tests.conftest import make_tiny

    loaded = load_model(str(make_tiny(tmp_path, arch, "classifier", seed=3)))
    plan = _plan(loaded).without(0, heads=[1, 3], neurons=[0, 5, 63]).without(1, heads=[0], neurons=list(range(10, 40)))
    hf, pruned = _pruned_encoder(loaded, plan)
    masked = copy.deepcopy(loaded.encoder)
    mask_encoder(masked, heads={0: [1, 3], 1: [0]}, neurons={0: [0, 5, 63], 1: list(range(10, 40))})
    assert pruned.shape.num_heads == (2, 3) and pruned.shape.ffn == (61, 34)
    with torch.no_grad():
        torch.testing.assert_close(pruned(IDS, MASK), masked(IDS, MASK), atol=1e-5, rtol=1e-5)
        # and the pruned Hugging Face model itself runs and agrees
        torch.testing.assert_close(hf.reference(input_ids=IDS, attention_mask=MASK).logits, pruned(IDS, MASK), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(_hidden(pruned), _hidden(masked), atol=1e-5, rtol=1e-5)
        assert (_hidden(pruned) - _hidden(loaded.encoder)).abs().max() > 1e-3  # 100x the tolerance: the cut did change the model


def test_removing_a_layer_equals_skipping_it(tiny_bert_cls):
    loaded = load_model(str(tiny_bert_cls))
    _, pruned = _pruned_encoder(loaded, _plan(loaded).without(0, whole=True))
    enc = loaded.encoder
    with torch.no_grad():
        x, mask, mask_add = enc.embed(IDS, MASK)
        skipped = enc.pool(enc.layers[1](x, mask_add), mask)
        torch.testing.assert_close(pruned(IDS, MASK), skipped, atol=1e-6, rtol=1e-6)
    assert pruned.shape.num_layers == 1


def test_pruned_folder_saves_reloads_and_builds_with_nonuniform_sizes(tiny_bert_cls, tmp_path):
    import shutil

    import edgeformer

    loaded = load_model(str(tiny_bert_cls))
    plan = _plan(loaded).without(0, heads=[0, 1, 2], neurons=list(range(20))).without(1, heads=[2], neurons=list(range(50)))
    hf, pruned = _pruned_encoder(loaded, plan)
    out = tmp_path / "pruned"
    hf.reference.save_pretrained(out, safe_serialization=True)
    shutil.copy(tiny_bert_cls / "tokenizer.json", out / "tokenizer.json")
    back = load_model(str(out))
    assert back.encoder.shape.num_heads == (1, 3) and back.encoder.shape.ffn == (44, 14)
    with torch.no_grad():
        torch.testing.assert_close(back.encoder(IDS, MASK), pruned(IDS, MASK))
    r = edgeformer.build(str(out), "host", tmp_path / "art", quant="int8", seq_len=16, batch=1, bench_iters=0,
                         min_sqnr_db=0)
    d = r.manifest.delegation
    # one XNNPACK subgraph; outside it only what the unpruned model has there: the embedding gather,
    # the mask cast, and for any length its read and the slices of the position and first-token rows
    assert d["delegated_subgraphs"] == 1
    assert d["non_delegated_ops"] == {"quantized_decomposed_embedding_byte_default": 1, "dim_order_ops__to_dim_order_copy_default": 1,
                                      "aten_slice_copy_tensor": 2, "sym_size": 1}
    assert r.manifest.numerics["sqnr_db_vs_exported"] > 30


def test_plan_flops_and_summary():
    plan = Plan.full([4, 4], [64, 64], head_dim=8, hidden=32)
    full = plan.flops(16)
    assert full == encoder_flops([4, 4], [64, 64], 8, 32, 16) == plan.original_flops(16)
    half = plan.without(1, whole=True)
    assert half.flops(16) * 2 == full
    assert half.summary()[1]["removed"] and half.summary()[0]["heads"] == "4/4"
    assert Plan.from_dict(half.to_dict()) == half
