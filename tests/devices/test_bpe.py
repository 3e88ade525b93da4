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


# Llama 3's and Qwen2's Split patterns (as their tokenizer.json files hold them)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
SPLIT_EDGES = [
    "\r\n\r\n", "  \n  foo", "!!\n\nfoo bar!!\r\n", "(hello [world] {x}", "\thello\u00a0there\u3000x", "x \n", " \n \n ",
    "1234567 12 1 ٣٤٥٦ ½²", "'S 'RE 'Ll 'VE 'M 'D 'T 'ſ 'ſa 'K 'İs 'Ｓ", "don'T WON'T you'Re", "'ſa", "it'ſa it'ſ", "a\n\n\n", "end  ",
    "mixed 中文123abc!? 日本語。", "\u200b\u200d\ufeff x", " ?!  ?? .", "\n!\n", "'\n's",
]


# characters NFC composes, decomposes, reorders or leaves: bases, marks of many combining classes,
# Hangul jamo and syllables, singletons (Å, Ω), excluded composites (U+0344, U+0F73), ǖ ṩ ấ
COMPOSABLE = list("aeouAEOUsſωιᾳ") + ["\u0301", "\u0308", "\u0304", "\u0323", "\u0327", "\u0345", "\u0334", "\u031b", "\u05b0",
                                     "\u05bc", "\u0f71", "\u0f72", "\u0f74", "\u093c", "\u3099", "\u302a", "\u1dce", "\u0344", "\u0f73",
                                     "\u1100", "\u1161", "\u11a8", "\uac00", "\uac01", "\u212b", "\u2126", "\u01d6", "\u1e69", "\u1ea5",
                                     "\u304b", "\u309a", "\u0915", "\u1e9b", "\u0307", "\U0001d15e", "\U0001d165", "\u0300"]


def split_bpe(path, pattern: str, nfc: bool = False):
    """A 1000-token BPE trained with a Split pre-tokenizer (Llama 3's or Qwen2's pattern), ignore_merges,
    and a template that puts <|begin_of_text|> before the text, as Llama 3's tokenizer.json is laid out;
    with `nfc`, Qwen2's NFC normalizer too."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = [*HARD, *EDGES[1:], *SPLIT_EDGES, "The quick brown fox jumps over the lazy dog.\n" * 20, "12345 67890 " * 20,
              "naïve café résumé 日本語 中文 한국어 " * 10, "great coffee, would buy again!!!\r\n" * 30,
              "ſa\n" * 40, *COMPOSABLE * 20]  # ſa merged before 'ſ: an unfolded 'ſa would come out as ' ſa
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])])
    tok.save(str(path))
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
    llama3 = split_bpe(tmp_path / "llama3.json", LLAMA3_SPLIT)
    (tmp_path / "llama3").mkdir()
    assert arg_ids(cmd, lm_artifact(tmp_path / "llama3", llama3), SPLIT_EDGES) == python_ids(llama3, SPLIT_EDGES)


def test_the_contractions_fold_one_letter_outside_ascii():
    """bpe.h's `fold` holds what the patterns' case-insensitive 's 't 're 've 'm 'll 'd match besides
    ASCII: only ſ (U+017F, long s), probed on every letter of Unicode with the library's own Split."""
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated")
    probes = [("'{}a", 2), ("'{}ea", 3), ("'{}la", 3), ("'l{}a", 3), ("'r{}a", 3)]  # a first piece of n chars: c folded
    folded = {c for c in map(chr, range(0x80, 0x110000)) if c.isalpha()
              for probe, n in probes if len(split.pre_tokenize_str(probe.format(c))[0][0]) == n}
    assert folded == {"ſ"}


@pytest.mark.parametrize("pattern", [LLAMA3_SPLIT, QWEN2_SPLIT], ids=["llama3", "qwen2"])
def test_split_pre_tokenizers_id_for_id(pattern, host_runner, tmp_path):
    tokenizer = split_bpe(tmp_path / "tokenizer.json", pattern)
    texts = [*HARD, *EDGES, *SPLIT_EDGES, "", b"caf\xe9 \xff\xfe \xc3"]
    art = lm_artifact(tmp_path, tokenizer)
    got, want = arg_ids([str(host_runner)], art, texts), python_ids(tokenizer, texts)
    assert want[0]["ids"][0] == 0 and want[-2]["ids"] == [0]  # the template's <|begin_of_text|>, on the empty text too
    for t, g, w in zip(texts, got, want, strict=True):
        assert g == w, f"{t[:60]!r}"
    assert arg_ids([sys.executable, str(WORKER)], art, texts) == got


def every_code_point(per_text: int = 4000) -> list[str]:
    """Each code point after an "x" (a letter it may compose with), 4000 to a text; no line breaks."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and c not in (0x0A, 0x0D)]
    return [" ".join(f"x{chr(c)}" for c in cps[i:i + per_text]) for i in range(0, len(cps), per_text)]


def test_nfc_id_for_id(host_runner, tmp_path):
    """Qwen2's tokenizer.json layout: NFC, then its Split. Every code point, the hard cases, and
    3000 seeded strings of bases, marks of many combining classes, Hangul jamo and composites
    (reordering, blocking, excluded composites), id for id with tokenizers."""
    import random

    tokenizer = split_bpe(tmp_path / "tokenizer.json", QWEN2_SPLIT, nfc=True)
    art = lm_artifact(tmp_path, tokenizer)
    rng = random.Random(0)
    mixes = ["".join(rng.choices(COMPOSABLE, k=rng.randint(1, 8))) for _ in range(3000)]
    texts = [*HARD, *EDGES, *SPLIT_EDGES, *mixes, "<|end_of_text|>\u0338 >\u0338"]  # ≯ composes; after an added token it does not
    got, want = arg_ids([str(host_runner)], art, texts), python_ids(tokenizer, texts)
    points = every_code_point()  # one line each (no line breaks in them), through --texts
    got, want = got + cpp_ids([str(host_runner)], art, points, tmp_path), want + python_ids(tokenizer, points)
    bad = [t[:40] for t, g, w in zip(texts + points, got, want, strict=True) if g != w]
    assert not bad, f"{len(bad)} differ, first {bad[:5]!r}"
    assert arg_ids([sys.executable, str(WORKER)], art, texts) == got[:len(texts)]


@pytest.mark.parametrize("change,needle", [
    (lambda t: t.update(pre_tokenizer={"type": "Sequence", "pretokenizers": []}),
     "pre_tokenizer Sequence is not read; this runner splits as GPT-2's ByteLevel (use_regex) or Llama 3 / Qwen2's Split"),
    (lambda t: t.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}),
     r"Split pattern \s+ is not one this runner matches (Llama 3's or Qwen2's)"),
    (lambda t: t.update(post_processor={"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]}),
     "post_processor RobertaProcessing adds tokens, which this runner does not"),
    (lambda t: t.update(normalizer={"type": "NFKC"}), "normalizer NFKC is not read by this runner (NFC is)"),
    (lambda t: (t.update(normalizer={"type": "NFC"}), t["added_tokens"][0].update(normalized=True)),
     "added token <|im_start|> is normalized, which this runner does not match after NFC"),
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
