"""Lowering to XNNPACK: .pte vs the exported program, and what stays outside the delegate."""

import pytest
import torch

from edgeformer.models import load_model
from edgeformer.program import Program
from edgeformer.recipe import Recipe
from edgeformer.targets import xnnpack
from edgeformer.transforms.quantize import quantize_model
from edgeformer.validate.numerics import sqnr_db


def _lower(folder, recipe):
    enc = quantize_model(load_model(str(folder)).encoder, recipe)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, enc.shape.vocab_size, (1, 16), generator=g)
    mask = torch.ones(1, 16, dtype=torch.long)
    mask[0, 11:] = 0
    ep = torch.export.export(enc, (ids, mask))
    lowered = xnnpack.lower(ep, recipe)
    return ep, lowered, (ids, mask)


@pytest.mark.parametrize("quant,emb,group,outside_gather", [
    ("fp32", "fp32", 32, "aten_embedding_default"),
    ("int8", "int8", 32, "quantized_decomposed_embedding_byte_default"),
    ("8da4w", "int4", 32, "quantized_decomposed_embedding_4bit_default"),
    ("8da4w", "int4", 0, "quantized_decomposed_embedding_4bit_default"),  # one group per row
])
def test_everything_but_gather_and_mask_cast_is_delegated(tiny_bert, quant, emb, group, outside_gather):
    _, lowered, _ = _lower(tiny_bert, Recipe(quant=quant, embedding_quant=emb, group_size=group))
    d = lowered.delegation
    assert d.backend == "XnnpackBackend"
    assert d.delegated_subgraphs == 1
    # Exactly two ops run outside XNNPACK: the embedding gather and the int64 -> float mask cast.
    assert d.non_delegated_ops == {outside_gather: 1, "dim_order_ops__to_dim_order_copy_default": 1}


@pytest.mark.parametrize("quant,emb,group,tol", [("fp32", "fp32", 32, 1e-5), ("int8", "int8", 32, 5e-3), ("8da4w", "int4", 32, 5e-3),
                                                 ("8da4w", "int4", 0, 5e-3)])
def test_pte_matches_exported_program(tiny_bert, quant, emb, group, tol):
    ep, lowered, inputs = _lower(tiny_bert, Recipe(quant=quant, embedding_quant=emb, group_size=group))
    expected = ep.module()(*inputs)
    actual = Program(lowered.pte, threads=1, data=lowered.data)(*inputs)
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)
    if quant != "fp32":
        assert sqnr_db(expected, actual) > 40  # lowering adds little on top of quantization


def test_lowering_without_the_ir_check_gives_the_same_program(tiny_bert, monkeypatch):
    """Builds lower with ExecuTorch's edge verifier off (targets/backend.py): the program must
    pass it, and skipping it must not change a byte."""
    from edgeformer.targets import backend

    recipe = Recipe(quant="int8", embedding_quant="int8")
    monkeypatch.setattr(backend, "CHECK_IR_VALIDITY", True)
    _, checked, _ = _lower(tiny_bert, recipe)
    monkeypatch.setattr(backend, "CHECK_IR_VALIDITY", False)
    _, unchecked, _ = _lower(tiny_bert, recipe)
    assert checked.pte == unchecked.pte


def test_classifier_lowers_and_matches(tiny_bert_cls):
    ep, lowered, inputs = _lower(tiny_bert_cls, Recipe(quant="fp32", embedding_quant="fp32"))
    torch.testing.assert_close(Program(lowered.pte, 1, data=lowered.data)(*inputs), ep.module()(*inputs), atol=1e-5, rtol=1e-5)
    assert lowered.delegation.delegated_subgraphs == 1


def test_4bit_weights_lower_correctly_on_skewed_rows():
    """Regression: asymmetric 4-bit groups lowered to 2 dB vs the exported program in
    ExecuTorch 1.5.1's XNNPACK. The 8da4w config must be one XNNPACK gets right."""
    from edgeformer.targets.xnnpack import LINEAR_CONFIGS

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(128, 64))
    with torch.no_grad():
        m[0].weight.add_(torch.rand(64, 1) * 0.2)  # skewed rows: asymmetric zero points far from 0
    x = torch.randn(1, 8, 128)
    from torchao.quantization import quantize_
    from torchao.utils import unwrap_tensor_subclass

    quantize_(m, LINEAR_CONFIGS["8da4w"](32))
    unwrap_tensor_subclass(m)
    ep = torch.export.export(m, (x,))
    lowered = xnnpack.lower(ep, Recipe(quant="8da4w"))
    assert lowered.delegation.non_delegated_ops == {}
    assert sqnr_db(ep.module()(x), Program(lowered.pte, 1, data=lowered.data)(x)) > 40
