"""Loading causal LMs: Hugging Face folders, GGUF files, bundled names, and what is refused."""

import pytest
import torch

from edgeformer.errors import UserError
from edgeformer.models.causal import load_lm


@pytest.fixture(scope="module")
def llama_folder(tiny_llama_folder):
    return tiny_llama_folder


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
    with pytest.raises(UserError, match=r"--max-context 300: use 2 to 256"):
        load_lm(str(llama_folder), 300)


@pytest.mark.slow
def test_bundled_smollm2_from_its_gguf():
    lm = load_lm("smollm2-135m", 64)
    assert lm.source["params"] > 130e6 and lm.chat_template and lm.stop_ids
    from tokenizers import Tokenizer

    ids = torch.tensor([Tokenizer.from_str(lm.tokenizer_json).encode("Write a haiku about rain").ids])
    with torch.no_grad():
        torch.testing.assert_close(lm.decoder(ids, torch.tensor([0])), lm.hf(ids).logits, atol=1e-3, rtol=0)
