"""The output head's input smoothed before int8 dynamic quantization (transforms/smooth.py)."""

import copy

import pytest
import torch
from torchao.quantization import quantize_

from edgeformer.models.causal import load_lm
from edgeformer.targets.backend import config_for
from edgeformer.targets.xnnpack import XNNPACK
from edgeformer.transforms.smooth import calibrate, smooth_head
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


@pytest.fixture(scope="module")
def tiny(tiny_llama_folder):
    return load_lm(str(tiny_llama_folder), 64).decoder


@pytest.mark.parametrize("window", [None, 16])
def test_smoothing_leaves_the_fp32_model_unchanged(tiny_llama_folder, window):
    dec = load_lm(str(tiny_llama_folder), 64, window=window, chunk=8).decoder
    before = _logits(dec)
    record = smooth_head(dec, PROMPT)
    torch.testing.assert_close(_logits(dec), before, atol=1e-5, rtol=1e-5)
    assert record["alpha"] == 0.5 and record["calibration_tokens"] > len(PROMPT)
    assert all(not layer.cache.k_cache.any() for layer in dec.layers)  # the caches are left empty


def test_an_outlier_channel_costs_the_int8_head_and_smoothing_wins_it_back(tiny):
    dec = _with_outlier(copy.deepcopy(tiny))
    reference = _logits(dec)
    int8 = config_for(XNNPACK, "linear", "int8", 32)
    plain, smoothed = copy.deepcopy(dec), copy.deepcopy(dec)
    record = smooth_head(smoothed, PROMPT)
    for d in (plain, smoothed):
        quantize_(d, int8, filter_fn=lambda m, fqn: fqn == "lm_head")
    before, after = sqnr_db(reference, _logits(plain)), sqnr_db(reference, _logits(smoothed))
    assert after > before + 6, (before, after)
    peak, flat = record["input_peak_to_median"]
    assert peak > 10 and flat < peak / 3, record


def test_calibration_stays_inside_a_full_cache(tiny):
    ids, amax = calibrate(tiny, list(range(2, 60)))
    assert len(ids) == tiny.shape.max_context == 64  # 58 prompt tokens, 6 written
    assert amax.shape == (tiny.lm_head.in_features,) and bool((amax > 0).all())


def test_a_channel_the_calibration_hardly_uses_is_not_blown_up(tiny):
    dec = copy.deepcopy(tiny)
    with torch.no_grad():
        dec.norm.weight[7] = 1e-6  # all but silent on any text
    before = dec.norm.weight.detach().clone()
    smooth_head(dec, PROMPT)
    s = before / dec.norm.weight.detach()  # what each channel's input was divided by
    assert s[7] > 0.1 * s.median(), (s[7], s.median())  # unclamped: ~1e-3 of the median
