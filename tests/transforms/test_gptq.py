"""GPTQ onto XNNPACK's symmetric 4-bit groups: better than rounding where the inputs are
correlated, on the grid, and lowered exactly."""

import pytest
import torch
from torch import nn
from torch.export import Dim
from torchao.quantization import quantize_
from torchao.utils import unwrap_tensor_subclass

import edgeformer
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import linear_config, lower
from edgeformer.transforms.gptq import gptq_, observe, quantize_weight
from edgeformer.validate.numerics import sqnr_db


def _correlated_inputs(n=512, cols=128, seed=0):
    """Inputs with a few dominant directions and an outlier channel, as activations have."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(8, cols, generator=g)
    x = torch.randn(n, 8, generator=g) @ basis + 0.1 * torch.randn(n, cols, generator=g)
    x[:, 3] *= 10
    return x


def _dequantized(w) -> torch.Tensor:
    """A torchao 4-bit group tensor as fp32 weights (weight only)."""
    return (w.qdata.float().view(w.shape[0], -1, w.block_size[1]) * w.scale.float()[..., None]).reshape(w.shape)


def test_gptq_beats_rounding_on_correlated_inputs():
    torch.manual_seed(0)
    x = _correlated_inputs()
    lin = nn.Linear(128, 64, bias=False)
    codes, scales = quantize_weight(lin.weight, x.double().T @ x.double(), 32)
    assert codes.dtype == torch.int8 and int(codes.min()) >= -8 and int(codes.max()) <= 7
    assert scales.shape == (64, 4) and bool((scales > 0).all())
    gptq_w = (codes.float().view(64, 4, 32) * scales[..., None]).reshape(64, 128)

    rounded = nn.Linear(128, 64, bias=False)
    rounded.weight = nn.Parameter(lin.weight.detach().clone())
    quantize_(rounded, linear_config("8da4w", 32))
    rtn_w = _dequantized(rounded.weight)
    exact = x @ lin.weight.detach().T
    gptq_db, rtn_db = sqnr_db(exact, x @ gptq_w.T), sqnr_db(exact, x @ rtn_w.T)
    assert gptq_db > rtn_db + 6, (gptq_db, rtn_db)  # measured: 39.0 dB against 24.6 dB


def test_unseen_inputs_round_and_bad_groups_are_refused():
    w = torch.randn(16, 64)
    codes, scales = quantize_weight(w, torch.zeros(64, 64), 32)  # nothing observed: plain rounding, no NaN
    assert torch.isfinite(scales).all() and codes.abs().max() <= 8
    with pytest.raises(ValueError, match="do not split into groups of 32"):
        quantize_weight(torch.randn(4, 48), torch.eye(48), 32)


def test_observe_sums_each_linears_inputs():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(10, 8)
    grams = observe(model, lambda m: m(x), {"0": model[0], "2": model[2]})
    torch.testing.assert_close(grams["0"], x.double().T @ x.double())
    h = torch.relu(model[0](x)).detach().double()
    torch.testing.assert_close(grams["2"], h.T @ h)
    assert not model[0]._forward_pre_hooks  # hooks removed


@pytest.mark.parametrize("group", [32, 0])  # 0: one group per row, 96 inputs (not a multiple of BLOCK)
def test_a_gptq_model_lowers_exactly_and_whole(group):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 64)).eval()
    calib = torch.randn(4, 16, 64)
    done = gptq_(model, lambda m: [m(c) for c in calib], group)
    assert done == ["0", "2"]
    assert model[2].weight.scale.shape == ((64, 1) if group == 0 else (64, 3))
    unwrap_tensor_subclass(model)
    ep = torch.export.export(model, (torch.randn(1, 5, 64),), dynamic_shapes=({1: Dim("T", min=1, max=32)},), strict=False)
    low = lower(ep, Recipe(quant="8da4w", group_size=group))
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(low.pte).load_method("forward")
    for t in (1, 7, 32):
        xt = torch.randn(1, t, 64)
        assert sqnr_db(ep.module()(xt), method.execute([xt])[0]) > 40
    assert low.delegation.non_delegated_ops == {} and low.delegation.delegated_subgraphs == 1


def test_an_encoder_builds_with_gptq_on_its_task_data(tiny_bert_cls, data_csv, tmp_path):
    r = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "g", quant="8da4w", quant_method="gptq", data=str(data_csv),
                         seq_len=16, batch=1,  # any length: a static encoder fuses q, k and v (10 linears, not 14)
                         bench_iters=0, min_sqnr_db=0)
    q = r.manifest.quantization
    assert q["scales"] == "gptq" and q["calibration"]["texts"] > 0 and r.manifest.recipe["quant_method"] == "gptq"
    assert set(q["summary"]) == {"8da4w (gptq)"} and len(q["modules"]) == 14  # 2 layers x 6 linears + the head's 2
    assert r.manifest.numerics["sqnr_db_vs_exported"] > 30


@pytest.mark.parametrize("fields,msg", [
    (dict(quant="int8", quant_method="gptq"), "--quant-method gptq chooses 4-bit scales, and --quant int8 has none"),
    (dict(quant="8da4w", quant_method="awq"), "--quant-method 'awq' is not a known scheme; use one of: affine, hqq, gptq"),
    (dict(quant="8da4w", quant_method="gptq"), "--quant-method gptq calibrates on task data: pass --data"),
])
def test_bad_quant_methods_are_one_line(tiny_bert_cls, tmp_path, fields, msg):
    with pytest.raises(edgeformer.UserError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "x", **fields)
    assert not (tmp_path / "x").exists()
