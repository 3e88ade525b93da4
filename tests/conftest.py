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
    elif arch == "electra":  # factorised like ELECTRA-small: embedded at 16, projected to 32
        cfg = tf.ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, pad_token_id=0, **common)
    elif arch == "albert":  # 4 layers from 2 shared groups (0, 0, 1, 1), embedded at 16
        cfg = tf.AlbertConfig(embedding_size=16, hidden_size=32, num_hidden_layers=4, num_hidden_groups=2,
                              num_attention_heads=4, intermediate_size=64, pad_token_id=0, **common)
    elif arch == "modernbert":  # global, local (window 8: 4 tokens each side), global; two RoPE bases
        cfg = tf.ModernBertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                                  global_attn_every_n_layers=2, local_attention=8, global_rope_theta=160000.0,
                                  local_rope_theta=10000.0, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                  cls_token_id=2, sep_token_id=3, **common)
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
                if m.bias is not None:  # (ModernBERT's have none)
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


def make_tiny_llama(path: Path, seed: int = 0, chat: bool = True, initializer_range: float = 0.02, positions: int = 256) -> Path:
    """Save a tiny random Llama causal LM (eos = [SEP]) with the WordPiece tokenizer and a chat template.
    A larger `initializer_range` gives a model whose greedy text varies (at 0.02 it repeats a token)."""
    import json

    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=positions, eos_token_id=3, bos_token_id=2,
                         initializer_range=initializer_range)
    tf.LlamaForCausalLM(cfg).eval().save_pretrained(path, safe_serialization=True)
    write_tokenizer(path)
    if chat:
        (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    return path


def make_tiny_gguf(path: Path, kind: str = "Q4_1", seed: int = 0, tie: bool = True) -> Path:
    """Save a tiny random Llama as a GGUF file the way llama.cpp writes one: q/k rows permuted
    for its RoPE layout, linears as `kind` (Q4_0 or Q4_1) with skewed groups (a per-group
    offset, as real models have), the token table as Q8_0, a 256-token byte-level vocab."""
    import gguf
    import numpy as np
    import transformers as tf
    from gguf import GGMLQuantizationType as Q

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, eos_token_id=1, bos_token_id=0,
                         tie_word_embeddings=tie)
    m = tf.LlamaForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((w.add_context_length, 256), (w.add_embedding_length, 64), (w.add_block_count, 2),
                       (w.add_feed_forward_length, 128), (w.add_head_count, 4), (w.add_head_count_kv, 2),
                       (w.add_rope_freq_base, 10000.0), (w.add_layer_norm_rms_eps, 1e-6), (w.add_rope_dimension_count, 16),
                       (w.add_tokenizer_model, "gpt2"), (w.add_token_types, [3, 3] + [1] * 254),
                       (w.add_token_scores, [0.0] * 256), (w.add_token_merges, []), (w.add_bos_token_id, 0),
                       (w.add_eos_token_id, 1)):
        add(value)
    w.add_token_list(["<s>", "</s>"] + [chr(i) if 33 <= i < 127 else chr(0x100 + i) for i in range(2, 256)])
    linear = getattr(Q, kind)

    def put(name, t, qtype=None, heads=None):
        a = t.detach().float().numpy()
        if heads:  # llama.cpp's convert-time q/k permutation
            a = a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
        if qtype is None:
            w.add_tensor(name, a.astype(np.float32))
            return
        if qtype != Q.Q8_0:
            a = a + np.repeat(rng.normal(0, 0.02, (a.shape[0], a.shape[1] // 32)), 32, axis=1).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    put("token_embd.weight", m.model.embed_tokens.weight, Q.Q8_0)
    put("output_norm.weight", m.model.norm.weight)
    if not tie:
        put("output.weight", m.lm_head.weight, linear)
    for i, layer in enumerate(m.model.layers):
        att, mlp = layer.self_attn, layer.mlp
        put(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight)
        put(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight)
        put(f"blk.{i}.attn_q.weight", att.q_proj.weight, linear, heads=4)
        put(f"blk.{i}.attn_k.weight", att.k_proj.weight, linear, heads=2)
        for theirs, mod in (("attn_v", att.v_proj), ("attn_output", att.o_proj), ("ffn_gate", mlp.gate_proj),
                            ("ffn_up", mlp.up_proj), ("ffn_down", mlp.down_proj)):
            put(f"blk.{i}.{theirs}.weight", mod.weight, linear)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-q4_1.gguf")


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("llama"))


# The native runner (runtimes/cpp), built once per test run into a throwaway cache. Under
# pytest-xdist (`tools/test.sh` runs two workers, a file each) the workers share that cache and
# a lock: the first to need a runner builds it, the other waits and finds it built.
@pytest.fixture(scope="session")
def runner_cache(tmp_path_factory):
    """A cache for runners shared by this run's workers (never the user's cache)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    cache = root / "runner-cache"
    cache.mkdir(exist_ok=True)
    old = os.environ.get("EDGEFORMER_CACHE")
    os.environ["EDGEFORMER_CACHE"] = str(cache)
    yield os.environ["EDGEFORMER_CACHE"]
    if old is None:
        del os.environ["EDGEFORMER_CACHE"]
    else:
        os.environ["EDGEFORMER_CACHE"] = old


@pytest.fixture(scope="session")
def host_runner(runner_cache):
    from edgeformer.devices.runner_build import BINARY

    if not (shutil.which("cmake") and shutil.which("g++")):
        pytest.skip("cmake and g++ are needed to build the runner")
    return _built_once(platform.machine(), runner_cache) / BINARY


@pytest.fixture(scope="session")
def arm_runner(runner_cache):
    from edgeformer.devices.runner_build import BINARY

    if platform.machine() != "x86_64" or not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")):
        pytest.skip("needs g++-aarch64-linux-gnu and qemu-user (tools/setup.sh installs them)")
    return _built_once("aarch64", runner_cache) / BINARY


def _built_once(arch: str, cache: str) -> Path:
    import fcntl

    from edgeformer.devices.runner_build import ensure_runner

    with open(Path(cache) / f"build-{arch}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return ensure_runner(arch)
