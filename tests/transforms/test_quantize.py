"""torchao quantization: quantized vs float by SQNR, and bad group sizes."""

import pytest
import torch

from edgeformer.errors import UserError
from edgeformer.models import load_model
from edgeformer.recipe import Recipe
from edgeformer.transforms.quantize import quantize_model
from edgeformer.validate.numerics import sqnr_db


def _run(folder, recipe):
    loaded = load_model(str(folder))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, loaded.encoder.shape.vocab_size, (4, 16), generator=g)
    mask = torch.ones(4, 16, dtype=torch.long)
    with torch.no_grad():
        ref = loaded.encoder(ids, mask)
        q = quantize_model(loaded.encoder, recipe)(ids, mask)
    return ref, q, loaded.encoder


def test_int8_is_close_to_float(tiny_bert):
    ref, q, _ = _run(tiny_bert, Recipe(quant="int8", embedding_quant="int8"))
    assert sqnr_db(ref, q) >= 25  # tiny model; MiniLM measures ~25 dB (slow test)


def test_fp32_recipe_is_exact(tiny_bert):
    ref, q, _ = _run(tiny_bert, Recipe(quant="fp32", embedding_quant="fp32"))
    assert torch.equal(ref, q)


def test_8da4w_quantizes_and_loses_more_than_int8(tiny_bert):
    ref, q4, _ = _run(tiny_bert, Recipe(quant="8da4w", group_size=32, embedding_quant="fp32"))
    _, q8, _ = _run(tiny_bert, Recipe(quant="int8", embedding_quant="fp32"))
    assert 5 < sqnr_db(ref, q4) < sqnr_db(ref, q8)


def test_group_size_must_divide_features(tiny_bert):
    with pytest.raises(UserError, match=r"--group-size 64 must divide in_features=32 .*try one of \[0, 32\]"):
        _run(tiny_bert, Recipe(quant="8da4w", group_size=64))


def test_a_width_no_group_size_divides_says_so():
    from edgeformer.targets import backend_for, get_target
    from edgeformer.transforms.quantize import quantize_model

    model = torch.nn.Sequential(torch.nn.Linear(825, 8))  # e.g. a pruned FFN's width
    with pytest.raises(UserError, match=r"in_features=825 .*no group size XNNPACK takes \(0, 32, 64, 128, 256\) fits 825"):
        quantize_model(model, Recipe(quant="8da4w", group_size=32, embedding_quant="fp32"), backend_for(get_target("host")))


def test_one_group_per_row_needs_rows_of_32s_and_xnnpack(tiny_bert):
    from edgeformer.targets import backend_for, get_target

    model = torch.nn.Sequential(torch.nn.Linear(80, 8))
    with pytest.raises(UserError, match=r"--group-size 0 \(one group per row\) needs in_features=80 of 0 to be a multiple of 32 "
                                        r"\(XNNPACK\); no group size XNNPACK takes \(0, 32, 64, 128, 256\) fits 80"):
        quantize_model(model, Recipe(quant="8da4w", group_size=0, embedding_quant="fp32"), backend_for(get_target("host")))
    with pytest.raises(UserError, match=r"--group-size 0 \(one group per row\) is XNNPACK's; the cuda backend takes 32, 64, 128, 256"):
        quantize_model(load_model(str(tiny_bert)).encoder, Recipe(quant="8da4w", group_size=0),
                       backend_for(get_target("server-cuda"), fallback="cpu"))


def test_one_group_per_row_is_one_scale_per_row_and_between_int8_and_groups_of_32(tiny_bert):
    ref, q0, enc = _run(tiny_bert, Recipe(quant="8da4w", group_size=0, embedding_quant="int4"))
    w = enc.layers[0].ffn_in.weight
    assert w.block_size == (1, w.shape[1])  # one group: all of a row's inputs
    _, q8, _ = _run(tiny_bert, Recipe(quant="int8", embedding_quant="int4"))
    assert 5 < sqnr_db(ref, q0) < sqnr_db(ref, q8)
