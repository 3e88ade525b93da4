"""Linear inputs smoothed before int8 dynamic quantization (transforms/smooth.py): the output
head's, and on a GGUF's grid every layer's."""

import copy

import pytest
import torch
from torchao.quantization import quantize_

from edgeformer.models.causal import load_lm
from edgeformer.targets.backend import config_for
from edgeformer.targets.xnnpack import XNNPACK
from edgeformer.transforms.smooth import GRID_ALPHA, calibrate, grid_sites, smooth_grid, smooth_head
from edgeformer.validate.numerics import sqnr_db

PROMPT = [2, 5, 9, 11, 17]
TEXT = torch.tensor([[2, 7, 8, 9, 30, 31, 40, 12, 5, 6]])


def _logits(dec, tokens=TEXT):
    dec.reset()
    full, dec.full_logits = dec.full_logits, True
    with torch.no_grad():
        out = dec(tokens, torch.tensor([0]))
    dec.full_logits = full
    dec.reset()
    return out


def _with_outlier(dec, channel=3, factor=40.0):
    """The same fp32 function with one channel of the head's input `factor` times larger (as
    small LMs' final hidden states have): the norm's weight up, the head's column down."""
    with torch.no_grad():
        dec.norm.weight[channel] *= factor
        dec.lm_head.weight[:, channel] /= factor
    return dec


def _smooth_head(dec, prompt=PROMPT):
    ids, amax = calibrate(dec, prompt, {"lm_head": dec.lm_head})
    return smooth_head(dec, amax["lm_head"], len(ids))


@pytest.fixture(scope="module")
def tiny(tiny_llama_folder):
    return load_lm(str(tiny_llama_folder), 64).decoder


@pytest.mark.parametrize("window", [None, 16])
def test_smoothing_leaves_the_fp32_model_unchanged(tiny_llama_folder, window):
    dec = load_lm(str(tiny_llama_folder), 64, window=window, chunk=8).decoder
    before = _logits(dec)
    record = _smooth_head(dec)
    torch.testing.assert_close(_logits(dec), before, atol=1e-5, rtol=1e-5)
    assert record["alpha"] == 0.5 and record["calibration_tokens"] > len(PROMPT)
    assert all(not layer.cache.k_cache.any() for layer in dec.layers)  # the caches are left empty


def test_an_outlier_channel_costs_the_int8_head_and_smoothing_wins_it_back(tiny):
    dec = _with_outlier(copy.deepcopy(tiny))
    reference = _logits(dec)
    int8 = config_for(XNNPACK, "linear", "int8", 32)
    plain, smoothed = copy.deepcopy(dec), copy.deepcopy(dec)
    record = _smooth_head(smoothed)
    for d in (plain, smoothed):
        quantize_(d, int8, filter_fn=lambda m, fqn: fqn == "lm_head")
    before, after = sqnr_db(reference, _logits(plain)), sqnr_db(reference, _logits(smoothed))
    assert after > before + 6, (before, after)
    peak, flat = record["input_peak_to_median"]
    assert peak > 10 and flat < peak / 3, record


def test_calibration_stays_inside_a_full_cache(tiny):
    ids, amax = calibrate(tiny, list(range(2, 60)), {"lm_head": tiny.lm_head, "down": tiny.layers[0].down})
    assert len(ids) == tiny.shape.max_context == 64  # 58 prompt tokens, 6 written
    assert amax["lm_head"].shape == (tiny.lm_head.in_features,) and bool((amax["lm_head"] > 0).all())
    assert amax["down"].shape == (tiny.layers[0].down.in_features,)


def test_a_channel_the_calibration_hardly_uses_is_not_blown_up(tiny):
    dec = copy.deepcopy(tiny)
    with torch.no_grad():
        dec.norm.weight[7] = 1e-6  # all but silent on any text
    before = dec.norm.weight.detach().clone()
    _smooth_head(dec)
    s = before / dec.norm.weight.detach()  # what each channel's input was divided by
    assert s[7] > 0.1 * s.median(), (s[7], s.median())  # unclamped: ~1e-3 of the median


# --- every layer's inputs on a GGUF's grid (smooth_grid) -------------------------------------

def _weight_only(dec):
    for m in dec.modules():
        if hasattr(getattr(m, "weight", None), "activation_quantization"):
            m.weight.activation_quantization = None
    return dec


def _codes(dec) -> dict[str, torch.Tensor]:
    return {n: m.weight.qdata.clone() for n, m in dec.named_modules()
            if type(getattr(m, "weight", None)).__name__ == "IntxUnpackedToInt8Tensor"}


@pytest.fixture(scope="module")
def grid(tiny_gguf):
    from edgeformer.models.gguf import GGUFWeights
    from edgeformer.transforms.gguf_grid import keep_grid

    lm = load_lm(str(tiny_gguf), 64)
    dec = copy.deepcopy(lm.decoder)
    keep_grid(dec, GGUFWeights(tiny_gguf))
    return lm.decoder, dec


def _smoothed(fp32, dec):
    ids, amax = calibrate(fp32, PROMPT, grid_sites(fp32))
    return smooth_grid(dec, amax, len(ids))


def test_grid_smoothing_keeps_the_codes_and_the_fp32_model(grid):
    fp32, dec = grid
    dec = copy.deepcopy(dec)
    codes, before = _codes(dec), _logits(_weight_only(copy.deepcopy(dec)))
    record = _smoothed(fp32, dec)
    after = _codes(dec)
    assert after.keys() == codes.keys() and len(codes) == 2 * 7 + 1  # and the Q8_0 table
    assert all(torch.equal(after[n], codes[n]) for n in codes)  # still the file's grid
    torch.testing.assert_close(_logits(_weight_only(copy.deepcopy(dec))), before, atol=1e-5, rtol=1e-5)
    assert record["alpha"] == GRID_ALPHA and record["calibration_tokens"] > len(PROMPT)
    assert dec.layers[0].norm1.weight.detach().ne(fp32.layers[0].norm1.weight.detach()).any()  # it did something


def test_an_outlier_group_costs_the_grid_and_smoothing_wins_it_back(grid):
    from edgeformer.transforms.gguf_grid import scale_columns

    fp32, dec = grid
    dec = copy.deepcopy(dec)
    for layer in dec.layers:  # the same function, with one 32-group of qkv's input 30x larger
        factor = torch.tensor([1.0, 1 / 30])
        with torch.no_grad():
            layer.norm1.weight[32:] *= 30
        for lin in (layer.q, layer.k, layer.v):
            scale_columns(lin, factor)
    reference = _logits(_weight_only(copy.deepcopy(dec)))
    plain, smoothed = copy.deepcopy(dec), copy.deepcopy(dec)
    fp32 = _weight_only(copy.deepcopy(dec))
    ids, amax = calibrate(fp32, PROMPT, grid_sites(fp32))
    smooth_grid(smoothed, amax, len(ids))
    before, after = sqnr_db(reference, _logits(plain)), sqnr_db(reference, _logits(smoothed))
    assert after > before + 3, (before, after)


@pytest.mark.parametrize("heads, kv, d", [(9, 3, 64), (4, 2, 16), (6, 2, 48), (8, 8, 32)])
def test_o_and_v_share_one_factor_per_group_of_o(heads, kv, d):
    from edgeformer.transforms.smooth import attention_factors

    amax = torch.rand(heads * d) + 0.1
    s_v, s_o = attention_factors(amax, heads, kv, d, 0.5)
    assert s_o.shape == (heads * d // 32,) and bool((s_o > 0).all()) and bool((s_v > 0).all())
    per_column = s_o.repeat_interleave(32).view(kv, heads // kv, d)
    # every query head reads its kv head's rows at the factor those rows were divided by
    torch.testing.assert_close(per_column, s_v.view(kv, 1, d).expand(kv, heads // kv, d))


def test_a_layer_without_32_groups_is_left_alone(grid):
    fp32, dec = grid
    dec = copy.deepcopy(dec)
    ids, amax = calibrate(fp32, PROMPT, grid_sites(fp32))
    amax = {k: (v[:40] if k.startswith("layers.0.") else v) for k, v in amax.items()}  # as if 40 wide
    before = dec.layers[0].norm1.weight.detach().clone()
    smooth_grid(dec, amax, len(ids))
    assert torch.equal(dec.layers[0].norm1.weight.detach(), before)
    assert not torch.equal(dec.layers[1].norm1.weight.detach(), fp32.layers[1].norm1.weight.detach())
