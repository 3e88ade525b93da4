"""The sliding-window ring cache: equal to full attention while it fits, to band attention after."""

import copy

import torch
from test_decoder import steps, tiny_llama

from edgeformer.lm.generate import generate
from edgeformer.models.decoder import export_decoder
from edgeformer.models.lm_families import from_hf
from edgeformer.program import Program
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import lower


def band_reference(hf, ids, window, sinks):
    """Hugging Face's model under an explicit [N, N] sliding-window + sinks mask."""
    n = ids.shape[1]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    seen = (j <= i) & ((j < sinks) | (i - j < window))
    return hf(ids, attention_mask=torch.where(seen, 0.0, float("-inf"))[None, None]).logits


def chunked(model, ids, prompt, chunk):
    """Prefill `prompt` tokens in calls of at most `chunk`, then decode one token per call."""
    out, p = [], 0
    while p < prompt:
        n = min(chunk, prompt - p)
        out.append(model(ids[:, p:p + n], torch.tensor([p])))
        p += n
    out += [model(ids[:, q:q + 1], torch.tensor([q])) for q in range(p, ids.shape[1])]
    return torch.cat(out, dim=1)


def test_ring_equals_full_attention_while_the_sequence_fits():
    hf = tiny_llama(seed=2)
    ids = torch.randint(0, 96, (1, 22))
    with torch.no_grad():
        ring = from_hf(hf, 64, window=20, sinks=2, chunk=8)
        torch.testing.assert_close(steps(ring, ids, prefill=8), hf(ids).logits, atol=1e-5, rtol=0)


def test_ring_wraps_many_times_and_equals_band_attention():
    hf = tiny_llama(seed=3)
    ids = torch.randint(0, 96, (1, 40))
    for sinks in (0, 2):
        ring = from_hf(hf, 64, window=6, sinks=sinks, chunk=4)
        assert ring.shape.cache_len == sinks + 6 + 3  # 40 tokens through 9-11 slots
        with torch.no_grad():
            got = chunked(ring, ids, prompt=11, chunk=4)
            want = band_reference(hf, ids, window=6, sinks=sinks)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_ring_pte_equals_eager_and_generates_past_its_slots():
    hf = tiny_llama(seed=4)
    dec = from_hf(hf, 64, window=8, sinks=2, chunk=4)
    low = lower(export_decoder(copy.deepcopy(dec)), Recipe(quant="fp32"))
    prog = Program(low.pte, 2, causal_lm=True, data=low.data)
    ids = torch.randint(0, 96, (1, 30))
    with torch.no_grad():
        assert (chunked(prog, ids, 10, 4) - chunked(dec, ids, 10, 4)).abs().max() < 1e-5
        prompt = ids[0, :9].tolist()
        eager = list(generate(dec, prompt, 40, chunk=4))  # 49 positions through 13 slots
        assert list(generate(prog, prompt, 40, chunk=4)) == eager
