"""Mistral, Qwen3, Phi-3 and Gemma 3 through the Decoder: eager and .pte equal to Hugging Face at prefill
and every decode step, greedy generation token for token, GGUF files of Qwen3 and Gemma 3, config
flags refused by name."""

import copy

import pytest
import torch
from conftest import write_tokenizer
from test_decoder import steps

import edgeformer
from edgeformer.errors import UserError
from edgeformer.lm.generate import generate
from edgeformer.models.causal import load_lm
from edgeformer.models.decoder import export_decoder
from edgeformer.models.lm_families import check_config, default_cache, from_hf
from edgeformer.program import Program
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import lower

CTX = 32
ARCHS = ["mistral", "qwen3", "phi3", "gemma3_text"]


def tiny(arch: str, seed: int = 0, **overrides):
    """A tiny random model of `arch`, norms randomised so a dropped or misplaced norm shows."""
    import transformers as tf

    torch.manual_seed(seed)
    kw = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=2, eos_token_id=3,
              pad_token_id=0)
    if arch == "mistral":
        kw.update(sliding_window=6)  # 6 < the sequences below: the band matters
    elif arch == "qwen3":
        kw.update(head_dim=24)  # not hidden / heads: read from the config
    elif arch == "phi3":
        kw.update(partial_rotary_factor=0.5, original_max_position_embeddings=64, tie_word_embeddings=False)
    elif arch == "gemma3_text":  # sliding, full, sliding; each kind its own RoPE base; capped logits
        kw.update(head_dim=24, query_pre_attn_scalar=32, num_hidden_layers=3, sliding_window=6,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                  rope_parameters=dict(full_attention=dict(rope_type="default", rope_theta=1e6),
                                       sliding_attention=dict(rope_type="default", rope_theta=1e4)),
                  final_logit_softcapping=3.0)
    kw.update(overrides)
    cfg = tf.AutoConfig.for_model(arch, **kw)
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def decoder(hf, **kw):
    window, sliding = default_cache(hf.config, CTX)
    return from_hf(hf, CTX, window=window, sliding=sliding, chunk=8, **kw)


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_eager_decoder_equals_hugging_face(arch, portable):
    hf = tiny(arch, seed=1)
    ids = torch.randint(0, 96, (1, 14))
    dec = decoder(hf, portable=portable)
    assert (dec.shape.window, dec.shape.sliding, dec.shape.qk_norm, dec.shape.rotary_dim) == {
        "mistral": (6, None, False, None), "qwen3": (None, None, True, None), "phi3": (None, None, False, 8),
        "gemma3_text": (6, (True, False, True), True, None)}[arch]
    with torch.no_grad():
        torch.testing.assert_close(steps(dec, ids, prefill=7), hf(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_pte_equals_eager_and_generates_what_hugging_face_does(arch):
    hf = tiny(arch, seed=2)
    dec = decoder(hf)
    lowered = lower(export_decoder(copy.deepcopy(dec)), Recipe(quant="fp32"))
    outside = set(lowered.delegation.non_delegated_ops)  # norms (Qwen3's per-head ones too), RoPE, MLP in XNNPACK
    assert not [op for op in outside if any(w in op for w in ("linear", "mm", "mean", "rsqrt", "sigmoid", "cos"))], outside
    prog = Program.of(lowered, 2, causal_lm=True)
    ids = torch.randint(0, 96, (1, 13))
    with torch.no_grad():
        assert (steps(prog, ids, 6) - steps(dec, ids, 6)).abs().max() < 1e-5
        prompt = [5, 17, 42, 8]
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)[0, 4:].tolist()
    assert list(generate(prog, prompt, 12)) == want


def test_portable_qwen3_pte_equals_eager():
    dec = decoder(tiny("qwen3", seed=3), portable=True)
    prog = Program.of(lower(export_decoder(copy.deepcopy(dec)), Recipe(quant="fp32")), 2, causal_lm=True)
    ids = torch.randint(0, 96, (1, 10))
    with torch.no_grad():
        assert (steps(prog, ids, 5) - steps(dec, ids, 5)).abs().max() < 1e-5


def test_qwen3_with_some_layers_sliding_gives_each_layer_its_own_cache():
    """Qwen's max_window_layers: sliding layers get the ring, the rest a full cache (as Gemma 3)."""
    hf = tiny("qwen3", seed=5, use_sliding_window=True, sliding_window=4, max_window_layers=1,
              layer_types=["full_attention", "sliding_attention"])
    dec = decoder(hf)
    assert dec.shape.mixed and [ly.cache.k_cache.shape[1] for ly in dec.layers] == [CTX, 4 + 8 - 1]
    ids = torch.randint(0, 96, (1, 14))
    with torch.no_grad():
        torch.testing.assert_close(steps(dec, ids, prefill=7), hf(ids).logits, atol=1e-5, rtol=0)


def test_gemma3_sliding_layers_keep_their_rope_base_under_a_full_cache():
    """A window no shorter than the context: every layer a full cache, the sliding ones still
    rotate with the local base (1e4, the full layers 1e6), as Hugging Face's do."""
    hf = tiny("gemma3_text", seed=6, sliding_window=CTX)
    dec = decoder(hf)
    assert dec.shape.window is None and dec.shape.local_layers == (True, False, True)
    ids = torch.randint(0, 96, (1, 14))
    with torch.no_grad():
        torch.testing.assert_close(steps(dec, ids, prefill=7), hf(ids).logits, atol=1e-5, rtol=0)


def test_default_cache_follows_the_trained_window():
    """A window shorter than the context becomes the ring; one at least as long is a full cache."""
    cfg = tiny("mistral").config
    assert default_cache(cfg, 32) == (6, None) and default_cache(cfg, 6) == (None, None)
    assert default_cache(tiny("gemma3_text").config, 32) == (6, (True, False, True))
    assert default_cache(tiny("qwen3").config, 32) == (None, None)


@pytest.mark.parametrize("arch, overrides, message", [
    ("gemma3_text", dict(attn_logit_softcapping=50.0), r"config attn_logit_softcapping=50.0 is not supported"),
    ("gemma3_text", dict(rope_parameters=dict(full_attention=dict(rope_type="linear", factor=8.0, rope_theta=1e6),
                                              sliding_attention=dict(rope_type="default", rope_theta=1e4))),
     r"config rope_parameters\['full_attention'\] rope_type='linear' is not supported"),
    ("llama", dict(rope_parameters=dict(rope_type="llama3", rope_theta=5e5, factor=8.0, low_freq_factor=1.0,
                                        high_freq_factor=4.0, original_max_position_embeddings=32)),
     r"rope_type='llama3' is not supported; supported: default"),
    ("llama", dict(hidden_act="gelu"), r"config hidden_act='gelu' is not supported for causal LMs; supported: silu"),
    ("mistral", dict(mlp_bias=True), r"config mlp_bias=True is not supported"),
])
def test_config_flags_without_an_implementation_are_named(arch, overrides, message):
    import transformers as tf

    cfg = tf.AutoConfig.for_model(arch, vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **overrides)
    with pytest.raises(UserError, match=message):
        check_config(cfg)


def test_gemma3_folder_builds_with_a_ring_on_its_sliding_layers(tmp_path):
    """Sliding window 6 under a 32-token context: the sliding layers ring, the full one keeps 32 slots."""
    folder = tmp_path / "gemma3"
    tiny("gemma3_text", seed=4).save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder)  # a WordPiece file, read as itself (not rebuilt as Gemma's SentencePiece)
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    r = edgeformer.build(str(folder), "host", tmp_path / "a", quant="fp32", embedding_quant="fp32", max_context=CTX,
                         seq_len=8, bench_iters=0)
    m = r.manifest
    assert m.model["architecture"] == "gemma3_text" and m.model["sliding_window"] == 6
    g = m.generation
    ring = 6 + 8 - 1
    assert (g["cache"], g["window"], g["max_context"], g["layer_slots"], g["max_tokens_per_call"]) == \
        ("mixed", 6, CTX, [ring, CTX, ring], 8)
    assert m.numerics["sqnr_db_vs_exported"] > 80 and m.numerics["top1_agreement"] == 1.0
    with pytest.raises(UserError, match=r"--attention window=4: gemma3 already interleaves sliding layers"):
        edgeformer.build(str(folder), "host", tmp_path / "b", quant="fp32", max_context=CTX, attention="window=4",
                         bench_iters=0)
    assert not (tmp_path / "b").exists()


def write_gguf(path, hf, arch: str):
    """`hf` as llama.cpp's converter writes it, fp32: its tensor names, Gemma's norms stored as
    1 + w, no q/k permutation (only llama.cpp's `llama` architecture has one)."""
    import gguf
    import numpy as np

    c, n = hf.config, hf.config.vocab_size
    w = gguf.GGUFWriter(str(path), arch)
    rope = c.rope_parameters.get("full_attention", c.rope_parameters)
    for add, value in ((w.add_context_length, c.max_position_embeddings), (w.add_embedding_length, c.hidden_size),
                       (w.add_block_count, c.num_hidden_layers), (w.add_feed_forward_length, c.intermediate_size),
                       (w.add_head_count, c.num_attention_heads), (w.add_head_count_kv, c.num_key_value_heads),
                       (w.add_key_length, c.head_dim), (w.add_value_length, c.head_dim),
                       (w.add_rope_freq_base, float(rope["rope_theta"])), (w.add_layer_norm_rms_eps, c.rms_norm_eps),
                       (w.add_tokenizer_model, "gpt2"), (w.add_token_types, [3, 3] + [1] * (n - 2)),
                       (w.add_token_scores, [0.0] * n), (w.add_token_merges, []), (w.add_bos_token_id, 2),
                       (w.add_eos_token_id, 3)):
        add(value)
    if getattr(c, "sliding_window", None):
        w.add_sliding_window(c.sliding_window)
    w.add_token_list(["<pad>", "<unk>", "<s>", "</s>"] + [chr(0x100 + i) for i in range(4, n)])

    def put(name, t):
        a = t.detach().float().numpy()
        w.add_tensor(name, (a + 1 if arch == "gemma3" and name.endswith("norm.weight") else a).astype(np.float32))

    put("token_embd.weight", hf.model.embed_tokens.weight)
    put("output_norm.weight", hf.model.norm.weight)
    for i, ly in enumerate(hf.model.layers):
        a, f = ly.self_attn, ly.mlp
        norms = dict(attn_norm=ly.input_layernorm, attn_q_norm=a.q_norm, attn_k_norm=a.k_norm)
        norms.update(dict(post_attention_norm=ly.post_attention_layernorm, ffn_norm=ly.pre_feedforward_layernorm,
                          post_ffw_norm=ly.post_feedforward_layernorm) if arch == "gemma3" else
                     dict(ffn_norm=ly.post_attention_layernorm))
        mods = dict(attn_q=a.q_proj, attn_k=a.k_proj, attn_v=a.v_proj, attn_output=a.o_proj, ffn_gate=f.gate_proj,
                    ffn_up=f.up_proj, ffn_down=f.down_proj, **norms)
        for theirs, mod in mods.items():
            put(f"blk.{i}.{theirs}.weight", mod.weight)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("arch, hf_arch, overrides", [
    ("qwen3", "qwen3", dict(head_dim=128)),  # transformers' GGUF loader reads no head_dim: its default, 128
    # what a Gemma 3 GGUF cannot say takes transformers' defaults: 5 sliding layers to 1 global, scalar 256, no cap
    ("gemma3", "gemma3_text", dict(num_hidden_layers=6, layer_types=None, query_pre_attn_scalar=256,
                                   final_logit_softcapping=None)),
])
def test_gguf_of_the_family_loads_equal_to_the_model_written(arch, hf_arch, overrides, tmp_path):
    hf = tiny(hf_arch, seed=7, **overrides)
    lm = load_lm(str(write_gguf(tmp_path / f"tiny-{arch}.gguf", hf, arch)), max_context=CTX)
    assert lm.source["architecture"] == arch
    if arch == "gemma3":
        assert (lm.decoder.shape.window, lm.decoder.shape.sliding) == (6, (True,) * 5 + (False,))
    ids = torch.randint(0, 96, (1, 14))
    with torch.no_grad():
        torch.testing.assert_close(steps(lm.decoder, ids, prefill=7), hf(ids).logits, atol=1e-5, rtol=0)


def test_gguf_architecture_without_a_mapping_is_named(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    with pytest.raises(UserError, match=r"GGUF architecture 'mamba' is not supported for causal LMs; "
                                        r"supported: llama, qwen2, qwen3, phi3, gemma3"):
        load_lm(str(tmp_path / "m.gguf"))
