"""The Raspberry Pi demos (examples/rpi), driven as a user would: lines piped in."""

import json
import subprocess
import sys
from pathlib import Path

import edgeformer

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, args: list[str], stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "examples" / "rpi" / script), *args], input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_classify_lines_labels_each_piped_line(built_int8_cls):
    p = _run("classify_lines.py", [str(built_int8_cls.path), "--json"], "great coffee\n\nthe box arrived crushed\n")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(ln) for ln in p.stdout.splitlines()]
    labels = built_int8_cls.manifest.model["labels"]
    assert [r["text"] for r in rows] == ["great coffee", "the box arrived crushed"]  # the blank line is skipped
    assert all(r["label"] in labels and r["ms"] > 0 for r in rows)
    assert "2 lines, median" in p.stderr


def test_classify_lines_bad_artifact_is_one_line(tmp_path):
    p = _run("classify_lines.py", [str(tmp_path / "nope")], "x\n")
    assert p.returncode == 2 and p.stderr.startswith("error:") and "Traceback" not in p.stderr


def test_chat_streams_a_reply_per_line(tiny_llama_folder, tmp_path):
    out = edgeformer.build(str(tiny_llama_folder), "host", tmp_path / "lm", quant="fp32", max_context=64, bench_iters=0).path
    p = _run("chat.py", [str(out), "--max-new-tokens", "8"], "hello\nhow are you\n\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("model> ") == 2 and p.stderr.count("tokens,") == 2
