"""Tiny seeded BERT-family models saved as real Hugging Face folders (seconds to build)."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("the coffee was stale and bitter great tea love this product not good bad box arrived "
         "broken dog treats sweet granola nuts fruit ok shipping took forever would buy again").split()
SEQ = 16


def write_tokenizer(path: Path, pad_token: str = "[PAD]") -> None:
    """A real WordPiece tokenizer.json over a small vocabulary, BERT-style specials."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    specials = [pad_token, "[UNK]", "[CLS]", "[SEP]"]
    if pad_token != "[PAD]":  # RoBERTa-style configs put pad at id 1
        specials = ["[UNK]", pad_token, "[CLS]", "[SEP]"]
    vocab = {t: i for i, t in enumerate(specials + list(dict.fromkeys(WORDS)) + ["##s", "##ed", "##ing"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tok.save(str(path / "tokenizer.json"))


def make_tiny(path: Path, arch: str = "bert", task: str = "embedder", seed: int = 0) -> Path:
    """Save a tiny random `arch` model (embedder or 2-label classifier) with its tokenizer."""
    import transformers as tf

    torch.manual_seed(seed)
    vocab = 64
    common = dict(vocab_size=vocab, max_position_embeddings=40)
    if arch == "distilbert":
        cfg = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, pad_token_id=0, **common)
    else:
        cls = tf.RobertaConfig if arch == "roberta" else tf.BertConfig
        cfg = cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  pad_token_id=1 if arch == "roberta" else 0, **common)
    if task == "classifier":
        cfg.num_labels = 2
        cfg.id2label = {0: "negative", 1: "positive"}
        cfg.label2id = {"negative": 0, "positive": 1}
        model = tf.AutoModelForSequenceClassification.from_config(cfg)
    else:
        model = tf.AutoModel.from_config(cfg)
    with torch.no_grad():  # random LayerNorm affine, so tests notice a dropped or swapped LayerNorm
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    model.eval().save_pretrained(path, safe_serialization=True)
    write_tokenizer(path, pad_token="<pad>" if arch == "roberta" else "[PAD]")
    return path


POS = ["love this product", "great tea", "would buy again", "great coffee", "love the granola nuts"]
NEG = ["not good", "bad box arrived broken", "stale and bitter coffee", "shipping took forever", "bad tea"]


@pytest.fixture(scope="session")
def data_csv(tmp_path_factory) -> Path:
    """A separable toy review set: 40 rows, 2 labels (35 train + 5 validation once carved)."""
    f = tmp_path_factory.mktemp("data") / "reviews.csv"
    rows = [f"{t},positive" for t in POS] + [f"{t},negative" for t in NEG]
    f.write_text("text,label\n" + "\n".join(rows * 4) + "\n")
    return f


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny-bert"), "bert", "embedder")


@pytest.fixture(scope="session")
def tiny_bert_cls(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny-bert-cls"), "bert", "classifier")


@pytest.fixture(scope="session")
def built_fp32(tiny_bert, tmp_path_factory):
    """A tiny fp32 artifact (no latency measurement)."""
    import edgeformer

    out = tmp_path_factory.mktemp("art") / "fp32"
    return edgeformer.build(str(tiny_bert), "host", out, quant="fp32", embedding_quant="fp32", seq_len=SEQ, bench_iters=0)


@pytest.fixture(scope="session")
def built_int8_cls(tiny_bert_cls, tmp_path_factory):
    """A tiny int8 classifier artifact, latency and memory measured (a few runs)."""
    import edgeformer

    out = tmp_path_factory.mktemp("art") / "int8-cls"
    return edgeformer.build(str(tiny_bert_cls), "host", out, quant="int8", seq_len=SEQ, bench_iters=3, min_sqnr_db=0)


def run_cli(args: list[str], capsys, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """Run the real entry point in-process; returns (exit code, stdout, stderr)."""
    from edgeformer import cli

    if stdin is not None:
        import io

        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    old = sys.argv
    sys.argv = ["edgeformer", *args]
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


CHAT_TEMPLATE = ("{% for m in messages %}[CLS] {{ m['role'] }} {{ m['content'] }} [SEP]{% endfor %}"
                 "{% if add_generation_prompt %}[CLS] assistant{% endif %}")


def make_tiny_llama(path: Path, seed: int = 0, chat: bool = True) -> Path:
    """Save a tiny random Llama causal LM (eos = [SEP]) with the WordPiece tokenizer and a chat template."""
    import json

    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, eos_token_id=3, bos_token_id=2)
    tf.LlamaForCausalLM(cfg).eval().save_pretrained(path, safe_serialization=True)
    write_tokenizer(path)
    if chat:
        (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    return path


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("llama"))


# The native runner (runtimes/cpp), built once per session into a throwaway cache.
@pytest.fixture(scope="session")
def runner_cache(tmp_path_factory):
    """A session cache for runners (built once per test session, never the user's cache)."""
    old = os.environ.get("EDGEFORMER_CACHE")
    os.environ["EDGEFORMER_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield os.environ["EDGEFORMER_CACHE"]
    if old is None:
        del os.environ["EDGEFORMER_CACHE"]
    else:
        os.environ["EDGEFORMER_CACHE"] = old


@pytest.fixture(scope="session")
def host_runner(runner_cache):
    from edgeformer.devices.runner_build import BINARY, build_runner

    if not (shutil.which("cmake") and shutil.which("g++")):
        pytest.skip("cmake and g++ are needed to build the runner")
    return build_runner(platform.machine()) / BINARY


@pytest.fixture(scope="session")
def arm_runner(runner_cache):
    from edgeformer.devices.runner_build import BINARY, build_runner

    if platform.machine() != "x86_64" or not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")):
        pytest.skip("needs g++-aarch64-linux-gnu and qemu-user (tools/setup.sh installs them)")
    return build_runner("aarch64") / BINARY
