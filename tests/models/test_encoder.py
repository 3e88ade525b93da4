"""The export-friendly Encoder equals the Hugging Face model it was built from."""

import pytest
import torch
from conftest import make_tiny

from edgeformer.models import load_model
from edgeformer.models.encoder import Encoder, EncoderShape, mean_last
from edgeformer.models.hf import reference_forward


def _inputs(vocab: int, seq: int = 12, pad_from: int = 9):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, vocab, (2, seq), generator=g)
    mask = torch.ones(2, seq, dtype=torch.long)
    mask[1, pad_from:] = 0
    return ids, mask


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "electra", "albert", "modernbert"])
@pytest.mark.parametrize("task", ["embedder", "classifier"])
def test_encoder_matches_hugging_face(tmp_path, arch, task):
    loaded = load_model(str(make_tiny(tmp_path, arch, task)))
    ids, mask = _inputs(loaded.encoder.shape.vocab_size)
    with torch.no_grad():
        ours = loaded.encoder(ids, mask)
    ref = reference_forward(loaded.hf, ids, mask)
    assert ours.shape == ref.shape == ((2, 2) if task == "classifier" else (2, 32))
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)
    assert loaded.source["task"] == task and loaded.source["architecture"] == arch


def test_padding_does_not_change_the_embedding(tiny_bert):
    enc = load_model(str(tiny_bert)).encoder
    ids, _ = _inputs(enc.shape.vocab_size, seq=8)
    short = enc(ids[:1], torch.ones(1, 8, dtype=torch.long))
    padded_ids = torch.cat([ids[:1], torch.zeros(1, 4, dtype=torch.long)], dim=1)
    padded = enc(padded_ids, torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], dim=1).long())
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-4)


def test_mean_last_equals_mean():
    x = torch.randn(2, 5, 7)
    torch.testing.assert_close(mean_last(x), x.mean(-1, keepdim=True))


def test_per_layer_sizes_build():
    shape = EncoderShape(vocab_size=50, hidden=32, head_dim=8, num_heads=(4, 1), ffn=(64, 8),
                         max_positions=20, activation="gelu", eps=1e-12)
    enc = Encoder(shape)
    assert [ly.attn.qkv.out_features for ly in enc.layers] == [96, 24]
    assert enc(torch.ones(1, 6, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)).shape == (1, 32)


def test_shape_rejects_mismatched_layers():
    with pytest.raises(ValueError, match="num_heads has 2 layers, ffn has 1"):
        EncoderShape(50, 32, 8, (4, 4), (64,), 20, "gelu", 1e-12)
