"""The C++ runner's byte-level BPE (runtimes/cpp/bpe.h) against Hugging Face `tokenizers`, id
for id, and a causal LM's prompt given as text to the runner and its Python twin."""

import json
import subprocess
import sys

import pytest
from test_runner import greedy_python, run_json
from test_wordpiece import HARD, WORKER, cpp_ids, fake_artifact

from edgeformer.devices.local import ARM_SYSROOT, QEMU_CPU
from edgeformer.tokenize import decode_utf8

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
EDGES = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|im_start|", "a  b   c    d", "trailing   ", "   leading", "\n\n\nlines\n\n", "a \n\n b\t\t c",
    "it's 'S 'll 're 've 'm 'd 't don't I'M", "'", "''s", "3.14159 1,000,000 ²³ ½ ٣", "café\u0301 e\u0301", "?!?!... ---",
    "x" * 10000, "a" + " " * 300 + "b",
]


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    """A byte-level BPE of 1000 tokens trained here (merges of many kinds: letters, digits,
    spaces, punctuation, multi-byte characters), with ChatML-style special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    corpus = [*HARD, *EDGES[1:], "The quick brown fox jumps over the lazy dog. " * 20, "12345 67890 " * 20,
              "naïve café résumé 日本語 中文 한국어 " * 10, "great coffee, would buy again!!! " * 30]
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    tok.save(str(path))
    assert len(json.loads(path.read_text())["model"]["merges"]) > 300
    return path


def lm_artifact(tmp_path, tokenizer_file):
    d = fake_artifact(tmp_path, tokenizer_file)
    mf = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**mf, "generation": {"max_context": 64}}))
    return d


def arg_ids(cmd, art, texts):
    """--tokenize-only with each text as a --text argument (a prompt may hold newlines)."""
    args = [x for t in texts for x in (b"--text", t if isinstance(t, bytes) else t.encode())]
    p = subprocess.run([*cmd, str(art), *args, "--tokenize-only"], capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    return json.loads(p.stdout)["results"]


def python_ids(tokenizer_file, texts):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    return [dict(ids=tok.encode(decode_utf8(t, "test") if isinstance(t, bytes) else t).ids) for t in texts]


def test_hard_cases_id_for_id(bpe_tokenizer, host_runner, tmp_path):
    texts = [*HARD, *EDGES, b"caf\xe9 in Latin-1", b"\xff\xfe stray bytes \xc3"]
    art = lm_artifact(tmp_path, bpe_tokenizer)
    got, want = arg_ids([str(host_runner)], art, texts), python_ids(bpe_tokenizer, texts)
    for t, g, w in zip(texts, got, want, strict=True):
        assert g == w, f"{t[:60]!r}"
    assert arg_ids([sys.executable, str(WORKER)], art, texts) == got  # the Python twin, the same
    assert cpp_ids([str(host_runner)], art, HARD, tmp_path) == got[:len(HARD)]  # --texts: a prompt per line


def test_hard_cases_under_qemu_aarch64(bpe_tokenizer, arm_runner, tmp_path):
    art = lm_artifact(tmp_path, bpe_tokenizer)
    cmd = ["qemu-aarch64", "-cpu", QEMU_CPU, "-L", ARM_SYSROOT, str(arm_runner)]
    assert arg_ids(cmd, art, [*HARD, *EDGES]) == python_ids(bpe_tokenizer, [*HARD, *EDGES])


@pytest.mark.parametrize("change,needle", [
    (lambda t: t.update(pre_tokenizer={"type": "Sequence", "pretokenizers": []}),
     "pre_tokenizer Sequence is not read; this runner splits as GPT-2's ByteLevel (use_regex) does"),
    (lambda t: t.update(normalizer={"type": "NFC"}), "a normalizer is not read by this runner"),
    (lambda t: t["pre_tokenizer"].update(add_prefix_space=True), "ByteLevel add_prefix_space is not read by this runner"),
    (lambda t: t["added_tokens"][0].update(lstrip=True), "added token <|im_start|> has lstrip"),
])
def test_what_it_does_not_read_is_named(bpe_tokenizer, host_runner, tmp_path, change, needle):
    tj = json.loads(bpe_tokenizer.read_text())
    change(tj)
    f = tmp_path / "tokenizer.json"
    f.write_text(json.dumps(tj))
    art = lm_artifact(tmp_path, f)
    p = subprocess.run([str(host_runner), str(art), "--text", "hi", "--tokenize-only"], capture_output=True, text=True)
    assert p.returncode == 2 and needle in p.stderr and p.stdout == "", p.stderr
    assert 'pass --inputs {"prompt_ids": [...]}' in p.stderr


@pytest.fixture(scope="module")
def portable_gguf_lm(tiny_gguf, tmp_path_factory):
    import edgeformer

    return edgeformer.build(str(tiny_gguf), "host", tmp_path_factory.mktemp("lm") / "gguf-portable", quant="fp32",
                            embedding_quant="fp32", max_context=64, lm_ops="portable", bench_iters=0).path


def test_a_prompt_as_text_generates_what_its_ids_do(portable_gguf_lm, host_runner, tmp_path):
    """--text on a causal LM: tokenized by bpe.h, generated as from the ids `tokenizers` gives,
    the new text decoded; the Python twin does the same."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(portable_gguf_lm / "tokenizer.json"))
    prompt = "Once upon a time, the coffee was great"
    args = ["--text", prompt, "--max-new-tokens", "12", "--ignore-eos", "--warmup", "0"]
    got = run_json([str(host_runner), str(portable_gguf_lm), *args])
    want = greedy_python(portable_gguf_lm, tok.encode(prompt).ids, 12)
    assert got["prompt_tokens"] == len(tok.encode(prompt).ids) and got["generated_ids"] == want
    assert got["text"] == tok.decode(want, skip_special_tokens=True)
    twin = json.loads(subprocess.run([sys.executable, str(WORKER), str(portable_gguf_lm), *args], capture_output=True,
                                     text=True, check=True).stdout)
    assert twin["generated_ids"] == want and twin["text"] == got["text"]
    p = subprocess.run([str(host_runner), str(portable_gguf_lm), "--text", "a", "--text", "b"], capture_output=True, text=True)
    assert p.returncode == 2 and "a causal LM takes one prompt" in p.stderr


@pytest.mark.slow
def test_smollm2_on_real_text_id_for_id(host_runner, tmp_path):
    """SmolLM2's own tokenizer: every fine-foods review and a whole Jane Austen novel, line by line."""
    from edgeformer.data import load_data
    from edgeformer.data.janeausten import load_text
    from edgeformer.models.causal import load_lm

    f = tmp_path / "smollm2-tokenizer.json"
    f.write_text(load_lm("smollm2-135m").tokenizer_json)
    novel = [ln for ln in load_text("janeausten:emma")[1].splitlines() if ln.strip()]
    texts = load_data("fine-foods").texts + load_data("fine-foods:test").texts + novel + HARD
    art = lm_artifact(tmp_path, f)
    got, want = cpp_ids([str(host_runner)], art, texts, tmp_path), python_ids(f, texts)
    assert arg_ids([str(host_runner)], art, EDGES) == python_ids(f, EDGES)
    bad = [t[:80] for t, g, w in zip(texts, got, want, strict=True) if g != w]
    assert not bad and len(got) == len(texts) > 15000
