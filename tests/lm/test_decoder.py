"""The Llama-family decoder with its static cache: eager vs Hugging Face, .pte vs eager, generation."""

import copy

import pytest
import torch

from edgeformer.errors import UserError
from edgeformer.lm.generate import Sampling, fit_prompt, generate
from edgeformer.models.decoder import export_decoder
from edgeformer.models.lm_families import from_hf
from edgeformer.program import Program
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import lower
from edgeformer.transforms.quantize import quantize_model
from edgeformer.validate.numerics import sqnr_db

CTX = 32


def tiny_llama(tie: bool = True, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie, rope_theta=10000.0)
    return tf.LlamaForCausalLM(cfg).eval()


def steps(model, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits of a prefill of `prefill` tokens, then one decode call per remaining token."""
    out = [model(ids[:, :prefill], torch.tensor([0]))]
    out += [model(ids[:, p:p + 1], torch.tensor([p])) for p in range(prefill, ids.shape[1])]
    return torch.cat(out, dim=1)


@pytest.fixture(scope="module")
def hf():
    return tiny_llama()


@pytest.fixture(scope="module")
def lowered(hf):
    dec = from_hf(hf, CTX)
    return dec, Program.of(lower(export_decoder(copy.deepcopy(dec)), Recipe(quant="fp32")), 2, causal_lm=True)


@pytest.mark.parametrize("tie", [True, False])
def test_cached_decoder_equals_hugging_face(tie):
    model = tiny_llama(tie=tie, seed=1)
    ids = torch.randint(0, 96, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(steps(from_hf(model, CTX), ids, prefill=7), model(ids).logits, atol=1e-5, rtol=0)


def test_pte_prefill_and_each_decode_step_equal_eager(lowered):
    dec, prog = lowered
    ids = torch.randint(0, 96, (1, 11))
    with torch.no_grad():
        for prefill in (6, 3):  # the second sequence starts over at 0 over a stale cache
            ref = steps(dec, ids, prefill)
            got = steps(prog, ids, prefill)
            assert (got - ref).abs().max() < 1e-5


def test_greedy_generation_from_pte_equals_hugging_face(hf, lowered):
    _, prog = lowered
    prompt = [5, 17, 42, 8]
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)[0, 4:].tolist()
    assert list(generate(prog, prompt, 12)) == want


def test_stop_token_and_sampling_are_reproducible(lowered):
    _, prog = lowered
    first = list(generate(prog, [5, 17], 10, sampling=Sampling(temperature=0.8, top_p=0.9, seed=3)))
    assert first == list(generate(prog, [5, 17], 10, sampling=Sampling(temperature=0.8, top_p=0.9, seed=3)))
    greedy = list(generate(prog, [5, 17], 10))
    stopped = list(generate(prog, [5, 17], 10, stop_ids={greedy[3]}))
    assert stopped == greedy[: greedy.index(greedy[3])]


def test_8da4w_decoder_lowers_with_the_cache(hf):
    dec = from_hf(hf, CTX)
    ids = torch.randint(0, 96, (1, 9))
    with torch.no_grad():
        ref = steps(copy.deepcopy(dec), ids, 5)
        q = quantize_model(dec, Recipe(quant="8da4w", embedding_quant="int8"))
        prog = Program.of(lower(export_decoder(copy.deepcopy(q)), Recipe(quant="8da4w")), 2, causal_lm=True)
        eager_q = steps(q, ids, 5)
        got = steps(prog, ids, 5)
    assert sqnr_db(eager_q, got) > 30  # lowering adds little to the quantization error
    assert sqnr_db(ref, got) > 10


@pytest.mark.parametrize("ids,new,msg", [
    ([], 4, "the prompt is empty"),
    ([1, 2], 0, "generate at least 1 token"),
    ([1, 2], 32, "leaves no room for the prompt"),
])
def test_bad_generation_requests(ids, new, msg):
    with pytest.raises(UserError, match=msg):
        fit_prompt(ids, CTX, new)


def test_long_prompt_is_cut_from_the_left():
    assert fit_prompt(list(range(40)), CTX, 8) == (list(range(16, 40)), 16)
