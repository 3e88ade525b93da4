"""The int8 KV cache (`--kv-cache int8`): exact algebra, close to the fp32 cache, and the
`.pte` equal to the exported program, for the custom-op and portable decoders, full and ring."""

import copy

import pytest
import torch
from test_decoder import CTX, steps, tiny_llama

from edgeformer.models.decoder import export_decoder
from edgeformer.models.kv_cache import KVCache, quantize_per_head, vector_bytes
from edgeformer.models.lm_families import from_hf
from edgeformer.program import Program
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import lower
from edgeformer.validate.numerics import sqnr_db

CACHES = [(None, 0), (6, 2)]  # full, and a ring of window 6 with 2 sinks


def _dequantized(x):
    codes, scale, zero = quantize_per_head(x)
    return (codes.double() - zero.double()) * scale.double()


def test_portable_int8_attention_is_attention_over_the_dequantized_cache():
    """The portable path never dequantizes the cache (scores from the codes, then scale and
    zero-point terms per slot): it must equal plain attention over dequantized K and V."""
    torch.manual_seed(0)
    h, kv, d, slots, t = 4, 2, 16, 10, 3
    cache = KVCache(h, kv, d, slots, d**-0.5, portable=True, dtype="int8")
    q, k, v = torch.randn(1, t, h, d), torch.randn(1, t, kv, d) * 3 + 1, torch.randn(1, t, kv, d) - 2
    pos = torch.arange(t)
    mask = torch.where(torch.arange(slots)[None, :] <= pos[:, None], 0.0, float("-inf"))
    got = cache(q, k, v, 0, (pos[None, :], mask))
    kd, vd = (_dequantized(x).repeat_interleave(h // kv, dim=2) for x in (k, v))  # [1, T, h, d]
    scores = torch.einsum("thd,shd->hts", q[0].double(), kd[0]) * d**-0.5 + mask[:, :t].double()  # slots past T hold nothing
    want = torch.einsum("hts,shd->thd", torch.softmax(scores, -1), vd[0]).reshape(1, t, h * d)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("window,sinks", CACHES)
def test_int8_cache_is_close_to_fp32(window, sinks, portable):
    hf = tiny_llama(seed=2)
    ids = torch.randint(0, 96, (1, 24))
    with torch.no_grad():
        ref = steps(from_hf(hf, CTX, window, sinks, chunk=8, portable=portable), ids, prefill=8)
        got = steps(from_hf(hf, CTX, window, sinks, chunk=8, portable=portable, kv_cache="int8"), ids, prefill=8)
    assert sqnr_db(ref, got) > 35  # 52 dB measured
    assert not torch.equal(ref, got)  # it did store int8


def test_int8_cache_buffers_and_bytes():
    dec = from_hf(tiny_llama(), CTX, kv_cache="int8")
    cache = dec.layers[0].cache
    assert cache.k_cache.dtype == torch.int8 and cache.k_scales.shape == (1, CTX, 2, 1)
    got = sum(b.numel() * b.element_size() for b in cache.buffers())
    assert got == 2 * CTX * 2 * vector_bytes(16, "int8", portable=False)  # K and V, CTX slots, 2 heads of 16 dims
    assert vector_bytes(64, "int8", portable=True) / vector_bytes(64, "fp32", portable=True) < 0.3


@pytest.mark.parametrize("portable,window,sinks", [(False, None, 0), (False, 6, 2), (True, None, 0)])
def test_int8_cache_pte_equals_exported(portable, window, sinks):
    dec = from_hf(tiny_llama(seed=3), CTX, window, sinks, chunk=8, portable=portable, kv_cache="int8")
    lowered = lower(export_decoder(copy.deepcopy(dec)), Recipe(quant="fp32"))
    ops = lowered.delegation.to_dict()["non_delegated_ops"]
    assert ops.get("quantized_decomposed_quantize_per_token_default"), ops
    if portable:
        assert not [op for op in ops if op.startswith("llama")], ops
        assert not [op for op in ops if "dequantize" in op], ops  # the codes become fp32 inside XNNPACK
        caches = {tuple(b.shape) for n, b in dec.named_buffers() if n.endswith("_cache")}
        copies = [n.args[0].meta["val"].shape for n in lowered.program.graph.nodes if "to_dim_order_copy" in str(n.target)]
        static = [tuple(s) for s in copies if all(isinstance(d, int) for d in s)]
        assert copies and not caches & set(static), static  # the per-token qparams only, never a cache-wide copy
    else:
        assert ops.get("llama_custom_quantized_sdpa_default") == 2, ops  # one per layer
    prog = Program(lowered.pte, 2, causal_lm=not portable, data=lowered.data)
    ids = torch.randint(0, 96, (1, 13))
    with torch.no_grad():
        for prefill in (8, 4):  # the second sequence starts over a stale cache
            torch.testing.assert_close(steps(prog, ids, prefill), steps(dec, ids, prefill), atol=1e-4, rtol=0)
