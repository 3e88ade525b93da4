"""--quant gguf: GGUF blocks read as shipped, kept on their grid, lowered exactly to XNNPACK."""

import copy

import gguf
import numpy as np
import pytest
import torch
from torch.export import Dim

from edgeformer.errors import UserError
from edgeformer.models.causal import load_lm
from edgeformer.models.gguf import GGUFWeights, decode
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import lower
from edgeformer.transforms.gguf_grid import GroupSumCorrected, keep_grid, on_grid_linear
from edgeformer.transforms.gguf_offsets import FoldedOffsets, Widen, fold_offsets, offset_digits
from edgeformer.transforms.quantize import quantize_model
from edgeformer.validate.numerics import sqnr_db


def _skewed(rows=64, cols=256, seed=0):
    rng = np.random.default_rng(seed)
    offset = np.repeat(rng.normal(0, 0.05, (rows, cols // 32)), 32, axis=1)  # groups not centred on 0
    return (rng.normal(0, 0.02, (rows, cols)) + offset).astype(np.float32)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_blocks_decode_as_ggml_dequantizes(kind):
    w = _skewed()
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    raw = gguf.quants.quantize(w, qtype)
    blocks = decode(kind, raw, w.shape[0])
    assert blocks.codes.shape == w.shape and blocks.scale.shape == (64, 8)
    np.testing.assert_array_equal(blocks.dequantize(), gguf.quants.dequantize(raw, qtype))  # the gguf package's own decoder


def test_unread_block_types_are_named():
    with pytest.raises(UserError, match=r"GGUF block type Q6_K is not read by edgeformer; read: Q4_0, Q4_1, Q8_0.*K-quants"):
        decode("Q6_K", np.zeros((1, 210), np.uint8), 1)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_an_on_grid_linear_lowers_to_what_the_gguf_file_says(kind):
    w = _skewed()
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    blocks = decode(kind, gguf.quants.quantize(w, qtype), 64)
    dequantized = torch.from_numpy(blocks.dequantize())
    lin = on_grid_linear(blocks, None).eval()
    assert isinstance(lin, GroupSumCorrected) == (kind == "Q4_1" or bool((blocks.scale < 0).any()))
    x = torch.randn(1, 5, 256)
    exact = x @ dequantized.T
    main = lin.main if isinstance(lin, GroupSumCorrected) else lin
    main.weight.activation_quantization = None  # weight-only: the module's weights are the file's, exactly
    torch.testing.assert_close(lin(x), exact, atol=1e-5, rtol=1e-5)
    main.weight.activation_quantization = "int8_asym_per_token"  # as lowered: int8 dynamic activations
    from torchao.utils import unwrap_tensor_subclass

    unwrap_tensor_subclass(lin)
    ep = torch.export.export(lin, (x,), dynamic_shapes=({1: Dim("T", min=1, max=64)},), strict=False)
    low = lower(ep, Recipe())
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(low.pte).load_method("forward")
    for t in (1, 5, 64):
        xt = torch.randn(1, t, 256)
        got = method.execute([xt])[0]
        assert sqnr_db(ep.module()(xt), got) > 40  # lowering changed nothing (asymmetric 8da4w: ~3 dB)
        assert sqnr_db(xt @ dequantized.T, got) > 30  # only the int8 activations differ from the fp32 file
    assert low.delegation.non_delegated_ops == {} and low.delegation.delegated_subgraphs == 1


def test_asymmetric_weights_are_refused_before_lowering():
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, MappingType, PerGroup, quantize_
    from torchao.utils import unwrap_tensor_subclass

    lin = torch.nn.Linear(64, 16)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(_skewed(16, 64)))
    quantize_(lin, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32),
                                                         weight_mapping_type=MappingType.ASYMMETRIC))
    unwrap_tensor_subclass(lin)
    ep = torch.export.export(lin, (torch.randn(1, 64),))
    with pytest.raises(UserError, match=r"nonzero zero points .* would lower wrongly on XNNPACK"):
        lower(ep, Recipe())


@pytest.fixture(scope="module")
def tiny_lm(tiny_gguf):
    return load_lm(str(tiny_gguf), 64)


def test_the_grid_decoder_is_the_gguf_model(tiny_lm, tiny_gguf):
    dec = copy.deepcopy(tiny_lm.decoder)
    plan = keep_grid(dec, GGUFWeights(tiny_gguf))
    assert plan["layers.1.q"].startswith("Q4_1 -> 4-bit") and plan["embed"].startswith("Q8_0 -> int8 groups of 32")
    assert plan["lm_head"] == "Q8_0 -> fallback"  # tied to the Q8_0 table: no 8-bit groups in XNNPACK's linears
    _weight_only(dec)  # to compare the weights themselves
    ids = torch.tensor([[5, 60, 7, 200, 9]])
    with torch.no_grad():
        torch.testing.assert_close(dec(ids, torch.tensor([0])), tiny_lm.hf(ids).logits, atol=1e-5, rtol=1e-5)


def _weight_only(model):
    """fp32 activations in every 4-bit linear of `model`: what the weights alone compute."""
    for m in model.modules():
        if hasattr(getattr(m, "weight", None), "activation_quantization"):
            m.weight.activation_quantization = None


def test_quantize_model_records_what_each_module_became(tiny_lm, tiny_gguf):
    dec = quantize_model(copy.deepcopy(tiny_lm.decoder), Recipe(quant="gguf"), gguf=GGUFWeights(tiny_gguf))
    plan = dec.quantization_record["modules"]
    assert plan["lm_head"] == "Q8_0 -> int8" and len(plan) == 2 * 7 + 2
    with pytest.raises(UserError, match="--quant gguf needs a GGUF causal LM"):
        quantize_model(copy.deepcopy(tiny_lm.decoder), Recipe(quant="gguf"))


def test_offset_digits_add_up_to_the_offsets():
    offsets = torch.from_numpy(np.random.default_rng(0).normal(0, 3, (8, 48)).astype(np.float32))
    codes, scales = offset_digits(offsets, 2)
    assert codes.shape == (8, 2 * 64) and scales.shape == (8, 4)  # 48 groups padded to 64, two digits
    assert int(codes.min()) >= -8 and int(codes.max()) <= 7
    assert torch.equal(scales, scales.to(torch.bfloat16).float())  # what XNNPACK stores, unrounded
    value = (codes.view(8, -1, 32).double() * scales[..., None]).view(8, 2, 64).sum(1)[:, :48]
    bound = scales.view(8, 2, 2)[:, 1].repeat_interleave(32, 1)[:, :48].double() / 2  # half the last digit's step
    assert ((value - offsets.double()).abs() <= bound + 1e-9).all() and sqnr_db(offsets.double(), value) > 40
    assert not codes.view(8, 2, 64)[:, :, 48:].any()  # the padding's codes are 0


def test_folded_offsets_are_the_gguf_model_and_share_their_inputs(tiny_lm, tiny_gguf):
    exact = copy.deepcopy(tiny_lm.decoder)
    keep_grid(exact, GGUFWeights(tiny_gguf))
    dec = copy.deepcopy(exact)
    record = fold_offsets(dec)
    assert record["linears"] == 2 * 7 and record["shared_inputs"] == 2 * 2  # q/k/v and gate/up widen their input once
    assert isinstance(dec.layers[0].attn_in, Widen) and isinstance(dec.layers[0].o, FoldedOffsets)
    assert not any(isinstance(m, GroupSumCorrected) for m in dec.modules())
    ids = torch.tensor([[5, 60, 7, 200, 9]])
    _weight_only(exact), _weight_only(dec)
    with torch.no_grad():
        assert sqnr_db(exact(ids, torch.tensor([0])), dec(ids, torch.tensor([0]))) > 45  # the digits' rounding only


def test_a_folded_build_is_delegated_and_matches_its_program(tiny_gguf, tmp_path):
    import edgeformer

    m = edgeformer.build(str(tiny_gguf), "host", tmp_path / "folded", quant="gguf", gguf_offsets="folded", max_context=64,
                         bench_iters=0).manifest
    q = m.quantization
    assert m.recipe["gguf_offsets"] == "folded" and q["offsets"]["form"] == "folded" and q["offsets"]["linears"] == 14
    assert q["modules"]["layers.0.down"] == "Q4_1 -> 4-bit groups + offsets as 4-bit digit groups (folded)"
    outside = set(m.delegation["non_delegated_ops"])
    assert not any(k in op for op in outside for k in ("linear", "mm", "mean", "cat", "pad"))  # widening runs in XNNPACK too
    assert m.numerics["sqnr_db_vs_exported"] > 30 and m.numerics["sqnr_db"] > 25  # as the exact form's build
    with pytest.raises(UserError, match=r"--gguf-offsets folded .* --quant int8 keeps no GGUF grid"):
        Recipe(quant="int8", gguf_offsets="folded")
