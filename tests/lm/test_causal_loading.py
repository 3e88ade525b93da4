"""Loading causal LMs: Hugging Face folders, GGUF files, bundled names, and what is refused."""

import pytest
import torch

from edgeformer.errors import UserError
from edgeformer.models.causal import load_lm


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    import transformers as tf
    from conftest import write_tokenizer

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, eos_token_id=3)
    path = tmp_path_factory.mktemp("llama")
    tf.LlamaForCausalLM(cfg).eval().save_pretrained(path, safe_serialization=True)
    write_tokenizer(path)
    return path


def test_hf_folder_loads_into_an_equal_decoder(llama_folder):
    lm = load_lm(str(llama_folder), max_context=32)
    assert lm.source["architecture"] == "llama" and lm.source["task"] == "causal-lm"
    assert 3 in lm.stop_ids and '"WordPiece"' in lm.tokenizer_json
    ids = torch.randint(0, 64, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(lm.decoder(ids, torch.tensor([0])), lm.hf(ids).logits, atol=1e-5, rtol=0)


def test_unsupported_gguf_architecture_is_named(tmp_path):
    from gguf import GGUFWriter

    f = tmp_path / "tiny-gpt2.gguf"
    w = GGUFWriter(str(f), "gpt2")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError, match=r"architecture 'gpt2' is not supported for causal LMs; supported: llama"):
        load_lm(str(f), 32)


def test_unsupported_folder_and_bad_paths(tiny_bert, llama_folder, tmp_path):
    with pytest.raises(UserError, match=r"architecture 'bert' is not supported"):
        load_lm(str(tiny_bert), 32)
    with pytest.raises(UserError, match=r"neither a bundled name \(smollm2-135m\), a .gguf file"):
        load_lm(str(tmp_path / "nope"), 32)
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf")
    with pytest.raises(UserError, match=r"is not a readable GGUF file"):
        load_lm(str(tmp_path / "broken.gguf"), 32)
    with pytest.raises(UserError, match=r"--max-context 100: use 2 to 64"):
        load_lm(str(llama_folder), 100)


@pytest.mark.slow
def test_bundled_smollm2_from_its_gguf():
    lm = load_lm("smollm2-135m", 64)
    assert lm.source["params"] > 130e6 and lm.chat_template and lm.stop_ids
    from tokenizers import Tokenizer

    ids = torch.tensor([Tokenizer.from_str(lm.tokenizer_json).encode("Write a haiku about rain").ids])
    with torch.no_grad():
        torch.testing.assert_close(lm.decoder(ids, torch.tensor([0])), lm.hf(ids).logits, atol=1e-3, rtol=0)
