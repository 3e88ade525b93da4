"""The C++ runner's WordPiece tokenizer (runtimes/cpp/wordpiece.h) against Hugging Face
`tokenizers`, id for id, and the runner on text against the Python runtime."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeformer.artifact import load_artifact
from edgeformer.devices.local import ARM_SYSROOT, QEMU_CPU
from edgeformer.predict import Predictor
from edgeformer.tokenize import TextEncoder, decode_utf8

WORKER = Path(__file__).resolve().parents[2] / "runtimes" / "python" / "edgeformer_worker.py"
HARD = [
    "Café au lait", "Cafe\u0301 au lait (NFD)", "naïve coöperation", "ÅNGSTRÖM İstanbul straße ΣΑΣ",
    "日本語のテキスト、中文字符。", "한국어 텍스트", "مرحبا بالعالم", "ภาษาไทย", "Ελληνικά κείμενα",
    "👍🏽 great 🥰 coffee 👨‍👩‍👧", "zero\u200bwidth\u200djoiner\ufeffbom", "tab\tsep\x0bvt\x0cff", "bell\x07 and nul",
    "don't stop: U.S.A., e-mail & 3.14%!", "[MASK] and [CLS] as text", "x" * 10000, "ｆｕｌｌｗｉｄｔｈ ＡＢＣ",
    "\u00a0non-breaking\u2028line\u3000ideographic", "ǅungla ﬁne ﬀ", "a" + "\u0301" * 5, "\U0001f9a9 flamingo, new emoji",
]


def fake_artifact(tmp_path, tokenizer_file, seq_len=128):
    """A folder the runner accepts for --tokenize-only: a manifest, a tokenizer, a stand-in .pte."""
    d = tmp_path / "tok-art"
    d.mkdir()
    (d / "model.pte").write_bytes(b"not a program")
    (d / "tokenizer.json").write_bytes(tokenizer_file.read_bytes())
    mf = dict(schema_version=1, pte=dict(file="model.pte", sha256=hashlib.sha256(b"not a program").hexdigest()),
              tokenizer=dict(file="tokenizer.json", pad_id=0), inputs=[dict(name="input_ids", shape=[1, seq_len])])
    (d / "manifest.json").write_text(json.dumps(mf))
    return d


def cpp_ids(cmd, art, texts, tmp_path):
    f = tmp_path / "texts.txt"
    f.write_bytes(b"\n\n".join(t if isinstance(t, bytes) else t.encode() for t in texts) + b"\n")  # empty lines between
    p = subprocess.run([*cmd, str(art), "--texts", str(f), "--tokenize-only"], capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    return json.loads(p.stdout)["results"]


def python_ids(tokenizer_file, texts, seq_len=128):
    te = TextEncoder(tokenizer_file, seq_len, 0, pad=False)
    out = []
    for t in texts:
        e = te.encode(decode_utf8(t, "test") if isinstance(t, bytes) else t)
        out.append(dict(ids=e.input_ids[0].tolist(), tokens=e.num_tokens, truncated=e.truncated))
    return out


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from edgeformer.models import load_model

    return load_model("minilm").hf.tokenizer_file


def test_hard_cases_id_for_id(minilm_tokenizer, host_runner, tmp_path):
    texts = [*HARD, b"caf\xe9 in Latin-1", b"\xff\xfe stray bytes \xc3"]
    art = fake_artifact(tmp_path, minilm_tokenizer)
    got, want = cpp_ids([str(host_runner)], art, texts, tmp_path), python_ids(minilm_tokenizer, texts)
    for t, g, w in zip(texts, got, want, strict=True):
        assert g == w, f"{t[:60]!r}"
    assert cpp_ids([sys.executable, str(WORKER)], art, texts, tmp_path) == got  # the Python twin, the same


def test_hard_cases_under_qemu_aarch64(minilm_tokenizer, arm_runner, tmp_path):
    art = fake_artifact(tmp_path, minilm_tokenizer)
    cmd = ["qemu-aarch64", "-cpu", QEMU_CPU, "-L", ARM_SYSROOT, str(arm_runner)]
    assert cpp_ids(cmd, art, HARD, tmp_path) == python_ids(minilm_tokenizer, HARD)


@pytest.mark.slow
def test_real_text_id_for_id(minilm_tokenizer, host_runner, tmp_path):
    """Every fine-foods review (train and test) and a whole Jane Austen novel, line by line."""
    from edgeformer.data import load_data
    from edgeformer.data.janeausten import load_text

    novel = [ln for ln in load_text("janeausten:emma")[1].splitlines() if ln.strip()]
    texts = load_data("fine-foods").texts + load_data("fine-foods:test").texts + novel
    art = fake_artifact(tmp_path, minilm_tokenizer)
    got, want = cpp_ids([str(host_runner)], art, texts, tmp_path), python_ids(minilm_tokenizer, texts)
    bad = [t[:80] for t, g, w in zip(texts, got, want, strict=True) if g != w]
    assert not bad and len(got) == len(texts) > 15000  # 4000 + 1000 reviews, 10,000+ lines of Emma


@pytest.mark.parametrize("which", ["built_fp32", "built_int8_cls"])
def test_runner_on_text_matches_predictor(which, host_runner, tmp_path, request):
    a = load_artifact(request.getfixturevalue(which).path)
    texts = ["great tea", "love the granola nuts and would buy again", " ".join(["coffee"] * 40)]
    f = tmp_path / "in.txt"
    f.write_text("\n".join(texts) + "\n")
    p = subprocess.run([str(host_runner), str(a.path), "--texts", str(f), "--warmup", "1"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["kind"] == "encoder" and r["texts"] == 3 and 0 < r["latency_ms_p50"] <= r["latency_ms_p90"]
    twin = json.loads(subprocess.run([sys.executable, str(WORKER), str(a.path), "--texts", str(f), "--warmup", "0"],
                                     capture_output=True, text=True, check=True).stdout)
    assert set(r) - set(twin) == set() and twin["texts"] == 3
    pred = Predictor(a)
    for text, got, py in zip(texts, r["results"], twin["results"], strict=True):
        assert (py["tokens"], py["truncated"], py.get("label")) == (got["tokens"], got["truncated"], got.get("label"))
        want = pred(text)
        assert (got["tokens"], got["truncated"]) == (want["tokens"], want["truncated"])
        if "label" in want:
            assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-5)
        else:
            np.testing.assert_allclose(got["embedding"], want["embedding"], atol=1e-5)


@pytest.mark.parametrize("which", ["built_fp32", "built_int8_cls"])
def test_runner_batch_matches_predictor_batch(which, host_runner, tmp_path, request):
    """--batch: the C++ runner and the Python worker run the texts through the batch method as
    Predictor.batch does (sorted by length, padded per call), results in input order."""
    a = load_artifact(request.getfixturevalue(which).path)
    texts = [" ".join(["tea"] * (1 + 3 * k % 11)) + f" {k}" for k in range(13)]  # 13 = one full batch of 8 + 5 (> 8/2)
    f = tmp_path / "in.txt"
    f.write_text("\n".join(texts) + "\n")
    cc = json.loads(subprocess.run([str(host_runner), str(a.path), "--texts", str(f), "--batch", "--warmup", "0"],
                                   capture_output=True, text=True, check=True).stdout)
    py = json.loads(subprocess.run([sys.executable, str(WORKER), str(a.path), "--texts", str(f), "--batch", "--warmup", "0"],
                                   capture_output=True, text=True, check=True).stdout)
    assert cc["batch"] == py["batch"] == 8 and cc["texts"] == 13 and cc["texts_per_s"] > 0 and set(cc) - set(py) == set()
    for got, twin, want in zip(cc["results"], py["results"], Predictor(a).batch(texts), strict=True):
        assert (got["tokens"], got.get("label")) == (twin["tokens"], twin.get("label")) == (want["tokens"], want.get("label"))
        key = "embedding" if "embedding" in want else "score"
        np.testing.assert_allclose(got[key], want[key], atol=1e-5)
        np.testing.assert_allclose(twin[key], want[key], atol=1e-5)


def test_runner_text_bad_input(built_fp32, host_runner, tmp_path):
    def err(*args):
        p = subprocess.run([str(host_runner), str(built_fp32.path), *args], capture_output=True, text=True)
        assert p.returncode == 2 and p.stdout == ""
        return p.stderr

    assert "--tokenize-only needs --text or --texts" in err("--tokenize-only")
    assert "--batch runs texts: give --text or --texts" in err("--batch")
    assert "cannot read /nope.txt" in err("--texts", "/nope.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    assert "has no non-empty lines" in err("--texts", str(tmp_path / "blank.txt"))
    tj = json.loads((built_fp32.path / "tokenizer.json").read_text())
    tj["model"]["type"] = "BPE"
    bpe = tmp_path / "bpe"
    import shutil

    shutil.copytree(built_fp32.path, bpe)
    (bpe / "tokenizer.json").write_text(json.dumps(tj))
    p = subprocess.run([str(host_runner), str(bpe), "--text", "hi", "--tokenize-only"], capture_output=True, text=True)
    assert p.returncode == 2 and "model is BPE; this runner tokenizes WordPiece (the BERT family) only" in p.stderr
    tj["model"]["type"] = "WordPiece"
    tj["added_tokens"].append(dict(id=5, content="<new>", single_word=False, lstrip=False, rstrip=False, normalized=True,
                                   special=False))
    (bpe / "tokenizer.json").write_text(json.dumps(tj))
    p = subprocess.run([str(host_runner), str(bpe), "--text", "hi", "--tokenize-only"], capture_output=True, text=True)
    assert p.returncode == 2 and "added token <new> is normalized, which this runner does not match" in p.stderr
