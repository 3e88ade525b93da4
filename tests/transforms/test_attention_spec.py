"""--attention specs: parsing, bounds against the model and sequence, and the errors users see."""

import pytest
import torch

from edgeformer.errors import UserError
from edgeformer.models import load_model
from edgeformer.transforms.attention import AttentionPlan, apply_attention, layer_kinds, parse_attention


def test_parse_forms():
    assert parse_attention(None) == AttentionPlan()
    assert parse_attention(["sdpa"]).kind == "sdpa"
    p = parse_attention(["window=64:global=2:layers=0,3-5"])
    assert (p.window, p.global_tokens, p.window_layers) == (64, 2, (0, 3, 4, 5))
    p = parse_attention("window=64+hard=top8:layers=3-5")
    assert (p.window, p.top_k, p.hard_layers) == (64, 8, (3, 4, 5))
    assert parse_attention(["hard=top4"]).hard_layers == "auto"
    assert parse_attention(["window=64", "hard=top8:layers=3-5"]).describe() == "window=64+hard=top8:layers=3,4,5"


@pytest.mark.parametrize("spec,msg", [
    ("window=0", r"window must be >= 2, got 0"),
    ("window=1", r"window must be >= 2, got 1"),
    ("window=-4", r"window must be >= 2, got -4"),
    ("window=big", r"window 'big' is not an integer"),
    ("hard=8", r"hard=topK \(e.g. hard=top8\)"),
    ("hard=top0", r"top-k must be >= 1"),
    ("hard=top8:layers=5-3", r"layer range '5-3' is backwards; write 3-5"),
    ("hard=top8:layers=a", r"layers 'a' should look like 3-5"),
    ("window=8:stride=2", r"unknown option\(s\) stride"),
    ("window=8:global", r"option 'global' should be key=value"),
    ("local=8", r"'local=8' is not understood; use one of: full, sdpa, window="),
    ("sdpa+window=8", r"sdpa is the stock attention.*does not combine"),
    ("window=8:layers=0+window=16:layers=1", r"window= is given twice; one window= per build"),
    ("hard=top2+hard=top4", r"hard= is given twice"),
])
def test_bad_specs_are_named(spec, msg):
    with pytest.raises(UserError, match=msg):
        parse_attention(spec)


@pytest.fixture()
def encoder(tiny_bert_cls):
    return load_model(str(tiny_bert_cls)).encoder  # 2 layers, 4 heads, a classifier


@pytest.mark.parametrize("spec,seq,msg", [
    ("window=32", 16, r"window=32 is larger than the sequence \(16\); use a window of at most 16"),
    ("window=4:layers=0-2", 16, r"layer\(s\) \[2\] out of bounds; this model has layers 0-1"),
    ("hard=top8:layers=7", 16, r"layer\(s\) \[7\] out of bounds"),
    ("hard=top17:layers=0", 16, r"k is larger than the sequence \(16\); use k <= 16"),
    ("window=4+hard=top7:layers=0", 16, r"k is larger than the 6 keys a query sees in window=4; use k <= 6"),
    ("window=4:global=16", 16, r"global=16: at most 15 global tokens"),
    ("hard=top4", 16, r"layers=auto chooses layers by validation accuracy; pass task data"),
])
def test_bounds_against_model_and_sequence(encoder, spec, seq, msg):
    with pytest.raises(UserError, match=msg):
        apply_attention(encoder, parse_attention(spec), seq)


def test_apply_sets_each_layer(encoder):
    info = apply_attention(encoder, parse_attention("window=4+hard=top3:layers=1"), 16)
    assert layer_kinds(encoder) == ["window 4+1g", "window 4+1g top3"]  # classifiers keep [CLS] global
    assert info["window"] == dict(size=4, global_tokens=1, layers=[0, 1])
    assert info["hard"] == dict(top_k=3, layers=[1], chosen_by="user")
    ids = torch.randint(4, 60, (1, 16))
    with torch.no_grad():
        assert torch.isfinite(encoder(ids, torch.ones_like(ids))).all()


def test_sdpa_and_edge_kernels_compute_the_same(encoder):
    ids, mask = torch.randint(4, 60, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    with torch.no_grad():
        edge = encoder(ids, mask)
        apply_attention(encoder, parse_attention("sdpa"), 16)
        assert layer_kinds(encoder) == ["sdpa", "sdpa"] and not encoder.ln_emb.decomposed
        torch.testing.assert_close(encoder(ids, mask), edge, atol=1e-5, rtol=1e-5)


def test_unknown_architecture_is_named_unless_best_effort():
    model = torch.nn.TransformerEncoderLayer(32, 4)
    with pytest.raises(UserError, match=r"does not know the attention of TransformerEncoderLayer.*:best-effort"):
        apply_attention(model, parse_attention("window=8"), 16)
    info = apply_attention(model, parse_attention("window=8:best-effort"), 16)
    assert info["applied"] is False and "left untouched" in info["reason"]


def test_positions_copy_tiles_the_table(encoder):
    table = encoder.pos.detach().clone()  # 40 rows
    apply_attention(encoder, parse_attention("window=8+positions=copy"), 100)
    assert encoder.pos.shape[0] == 100 and encoder.shape.max_positions == 100
    assert torch.equal(encoder.pos[40:80], table) and torch.equal(encoder.pos[80:], table[:20])
    ids = torch.randint(4, 60, (1, 100))
    with torch.no_grad():
        assert torch.isfinite(encoder(ids, torch.ones_like(ids))).all()
