"""Bad model input: each is a one-line UserError naming the value and the fix."""

import json
import shutil

import pytest

from edgeformer.errors import UserError
from edgeformer.models import load_model, resolve


def test_unknown_name_lists_bundled():
    with pytest.raises(UserError, match=r"'nope' is neither a folder nor a bundled name; bundled: minilm"):
        resolve("nope")


def test_folder_without_config(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_model(str(tmp_path))


def test_file_is_not_a_folder(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(UserError, match="is not a folder"):
        load_model(str(f))


def test_unsupported_architecture_is_named(tmp_path, tiny_bert):
    d = tmp_path / "m"
    shutil.copytree(tiny_bert, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (d / "config.json").write_text(json.dumps(cfg))
    supported = "albert, bert, camembert, distilbert, electra, modernbert, roberta"
    with pytest.raises(UserError, match=rf"architecture 'gpt2' .* not supported; supported: {supported}"):
        load_model(str(d))
    cfg["model_type"] = "deberta-v2"  # refused with what blocks it
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"'deberta-v2' .* not supported \(DeBERTa-v2/v3's relative-position buckets and "
                                        r"c2p/p2c gathers run outside XNNPACK"):
        load_model(str(d))


def test_pickle_weights_are_refused(tmp_path, tiny_bert):
    d = tmp_path / "m"
    shutil.copytree(tiny_bert, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(UserError, match="no model.safetensors .*pickle"):
        load_model(str(d))


def test_missing_tokenizer(tmp_path, tiny_bert):
    d = tmp_path / "m"
    shutil.copytree(tiny_bert, d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="no tokenizer.json"):
        load_model(str(d))


def test_broken_config_json(tmp_path, tiny_bert):
    d = tmp_path / "m"
    shutil.copytree(tiny_bert, d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_model(str(d))
