"""The Android wrapper (runtimes/android) on the JVM: EdgeformerModel.kt compiled against
stand-ins with the AAR's signatures, and its WordPiece tokenizer run id for id against
`tokenizers`, as the C++ runner's is (test_wordpiece.py)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_wordpiece import HARD, python_ids

ANDROID = Path(__file__).resolve().parents[2] / "runtimes" / "android"
HERE = Path(__file__).resolve().parent / "kotlin"
ORG_JSON = Path("/usr/share/java/com.android.json.jar")  # Debian's libandroid-json-java: Android's own org.json


@pytest.fixture(scope="module")
def kotlin_jar(tmp_path_factory):
    """runtimes/android/*.kt and the test driver compiled into one jar (with Kotlin's runtime)."""
    if not (shutil.which("kotlinc") and shutil.which("javac") and shutil.which("java") and ORG_JSON.is_file()):
        pytest.skip("needs kotlinc, a JDK and libandroid-json-java (tools/setup.sh installs them)")
    out = tmp_path_factory.mktemp("kotlin")
    stubs = out / "stubs"
    subprocess.run(["javac", "-d", str(stubs), *map(str, sorted((HERE / "stubs").rglob("*.java")))], check=True,
                   capture_output=True)
    p = subprocess.run(["kotlinc", *map(str, sorted(ANDROID.glob("*.kt"))), str(HERE / "Main.kt"), "-cp", f"{stubs}:{ORG_JSON}",
                        "-include-runtime", "-d", str(out / "edgeformer.jar")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out / "edgeformer.jar"


def kotlin_ids(jar, tokenizer_file, texts, seq_len, tmp_path):
    f = tmp_path / "texts.txt"
    f.write_text("\n".join(texts) + "\n", encoding="utf-8")
    p = subprocess.run(["java", "-cp", f"{jar}:{ORG_JSON}", "MainKt", str(tokenizer_file), str(seq_len), str(f)],
                       capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return [json.loads(line) for line in p.stdout.splitlines()]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from edgeformer.models import load_model

    return load_model("minilm").hf.tokenizer_file


def test_the_wrapper_compiles_against_the_aar_signatures(kotlin_jar):
    import zipfile

    names = zipfile.ZipFile(kotlin_jar).namelist()
    assert {"ai/edgeformer/EdgeformerModel.class", "ai/edgeformer/WordPiece.class"} <= set(names)


@pytest.mark.parametrize("seq_len", [128, 12])
def test_wordpiece_id_for_id(kotlin_jar, minilm_tokenizer, seq_len, tmp_path):
    """The hard cases (accents and NFD, CJK, Hangul, emoji, controls, zero-width, a 10,000-character
    word, full-width), and a cut at 12 tokens: ids, token counts and the cut as tokenizers gives them."""
    texts = [*HARD, "[CLS] and [SEP] and [MASK] as typed", " ".join(["coffee"] * 40)]
    assert kotlin_ids(kotlin_jar, minilm_tokenizer, texts, seq_len, tmp_path) == python_ids(minilm_tokenizer, texts, seq_len)


def test_a_tokenizer_it_does_not_read_is_named(kotlin_jar, tmp_path):
    from tokenizers import Tokenizer, models

    f = tmp_path / "bpe.json"
    Tokenizer(models.BPE()).save(str(f))
    p = subprocess.run(["java", "-cp", f"{kotlin_jar}:{ORG_JSON}", "MainKt", str(f), "16", str(f)], capture_output=True, text=True)
    assert p.returncode != 0 and "the tokenizer's model is BPE; WordPiece reads the BERT family only" in p.stderr


@pytest.mark.slow
def test_wordpiece_on_real_text_id_for_id(kotlin_jar, minilm_tokenizer, tmp_path):
    """Every fine-foods review and every line of Emma, as the C++ runner's slow test."""
    from edgeformer.data import load_data
    from edgeformer.data.janeausten import load_text

    novel = [ln for ln in load_text("janeausten:emma")[1].splitlines() if ln.strip()]
    texts = load_data("fine-foods").texts + load_data("fine-foods:test").texts + novel
    got, want = kotlin_ids(kotlin_jar, minilm_tokenizer, texts, 128, tmp_path), python_ids(minilm_tokenizer, texts)
    bad = [t[:80] for t, g, w in zip(texts, got, want, strict=True) if g != w]
    assert not bad and len(got) == len(texts) > 15000
