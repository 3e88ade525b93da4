"""The CLI as a user runs it: tables or --json, one-line errors, non-zero exits, no traceback."""

import json

import pytest
from conftest import SEQ, run_cli


def test_targets_json(capsys):
    code, out, _ = run_cli(["targets", "--json"], capsys)
    assert code == 0
    t = json.loads(out)
    assert set(t) == {"host", "rpi5", "android", "android-vulkan", "server-cuda"}
    assert t["rpi5"]["budgets"]["max_latency_ms_p50"] == 50 and t["host"]["recipe"]["quant"] == "int8"


def test_targets_table(capsys):
    code, out, _ = run_cli(["targets"], capsys)
    assert code == 0 and "rpi5-arm64-xnnpack" in out and "SQNR >= 20.0 dB" in out


def test_build_inspect_run_bench(tiny_bert_cls, tmp_path, capsys, monkeypatch):
    out_dir = str(tmp_path / "a")
    code, out, err = run_cli(["build", str(tiny_bert_cls), "--target", "host", "-o", out_dir, "--seq-len", str(SEQ),
                              "--quant", "fp32", "--bench-iters", "3", "--json"], capsys)
    assert code == 0, err
    built = json.loads(out)
    assert built["passed"] and built["manifest"]["recipe"]["quant"] == "fp32"
    assert "✓ lower (xnnpack)" in err

    code, out, _ = run_cli(["inspect", out_dir, "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["manifest"]["delegation"]["delegated_subgraphs"] == 1
    assert sum(info["size"].values()) == info["manifest"]["pte"]["bytes"]
    code, out, _ = run_cli(["inspect", out_dir], capsys)
    assert code == 0 and "what ran where" in out and "size of model.pte" in out

    code, out, _ = run_cli(["run", out_dir, "love this product", "bad box", "--json"], capsys)
    res = json.loads(out)["results"]
    assert code == 0 and [r["text"] for r in res] == ["love this product", "bad box"]
    assert all(r["label"] in ("negative", "positive") and abs(sum(r["probs"].values()) - 1) < 1e-5 for r in res)

    code, out, _ = run_cli(["run", out_dir], capsys, stdin="great tea\n\nnot good\n", monkeypatch=monkeypatch)
    assert code == 0 and len(out.strip().splitlines()) == 2

    code, out, _ = run_cli(["bench", out_dir, "--iters", "5", "--warmup", "1", "--json"], capsys)
    b = json.loads(out)
    assert code == 0 and b["iters"] == 5 and b["latency_ms_p50"] > 0 and b["peak_rss_mb"] > 0


def test_run_truncates_or_refuses(built_fp32, capsys):
    long = " ".join(["coffee"] * 40)
    code, out, err = run_cli(["run", str(built_fp32.path), long], capsys)
    assert code == 0 and "truncated to 16" in err and "(32 dims)" in out
    code, _, err = run_cli(["run", str(built_fp32.path), long, "--no-truncate"], capsys)
    assert code == 2 and "more than the exported sequence length 16" in err


def test_run_reads_text_that_is_not_utf8(built_fp32, capsys, monkeypatch):
    """`printf 'caf\\xe9\\n' | edgeformer run ART -` used to end in a TypeError traceback."""
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9 au lait\ngreat tea\n")))
    code, out, err = run_cli(["run", str(built_fp32.path), "-", "--json"], capsys)
    assert code == 0, err
    assert [r["text"] for r in json.loads(out)["results"]] == ["caf\ufffd au lait", "great tea"]
    assert "stdin is not valid UTF-8 (line 1, byte offset 3: 0xe9; 1 line(s) in all)" in err and "Traceback" not in err


@pytest.mark.parametrize("args,code,msg", [
    (["build", "minilm", "--target", "pi", "-o", "x"], 2, "unknown target 'pi'; use one of: host"),
    (["build", "minilm", "--quant", "int3", "-o", "x"], 2, "--quant 'int3' is not a known scheme; use one of: fp32, int8, 8da4w"),
    (["build", "./does-not-exist", "-o", "x"], 2, "neither a folder nor a bundled name"),
    (["build", "minilm", "--gguf-offsets", "folded", "-o", "x"], 2, "--gguf-offsets folded places a GGUF's Q4_1 offsets"),
    (["build", "minilm", "--quant", "gguf", "--gguf-offsets", "int4", "-o", "x"], 2,
     "--gguf-offsets 'int4' is not a known scheme; use one of: fp32, folded"),
    (["run", "./does-not-exist", "hi"], 2, "is not a folder"),
    (["inspect", "."], 2, "has no manifest.json"),
])
def test_bad_input_is_one_line_and_nonzero(args, code, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got, out, err = run_cli(args, capsys)
    assert got == code and msg in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args,named", [(["profil", "x"], "profil"), (["build", "minilm", "--nosuch"], "--nosuch"),
                                         (["build", "minilm", "--seq-len", "many"], "--seq-len")])
def test_usage_errors_name_the_mistake_without_a_traceback(args, named, capsys):
    """Unknown commands and options, and values of the wrong type, are click's usage errors (typer
    vendors its own copy of click: both must be caught)."""
    code, out, err = run_cli(args, capsys)
    assert code == 2 and named in err and "Traceback" not in err + out


def test_empty_text_is_refused(built_fp32, capsys):
    code, _, err = run_cli(["run", str(built_fp32.path), "  "], capsys)
    assert code == 2 and "input text is empty" in err


def test_budget_failure_exits_3_and_names_the_budget(tiny_bert, tmp_path, capsys):
    code, out, err = run_cli(["build", str(tiny_bert), "-o", str(tmp_path / "x"), "--lengths", "static", "--batch", "1",
                              "--seq-len", str(SEQ), "--bench-iters", "0", "--min-sqnr", "500"], capsys)
    assert code == 3 and "min_sqnr_db: measured" in err and "artifact not written" in err
    assert "FAIL" in out and not (tmp_path / "x").exists()


def test_budget_failure_with_json_still_reports_every_budget(tiny_bert, tmp_path, capsys):
    code, out, err = run_cli(["build", str(tiny_bert), "-o", str(tmp_path / "x"), "--lengths", "static", "--batch", "1",
                              "--seq-len", str(SEQ), "--bench-iters", "0", "--min-sqnr", "500", "--json"], capsys)
    got = json.loads(out)
    assert code == 3 and got["passed"] is False and got["path"] is None
    assert [b["name"] for b in got["manifest"]["budgets"] if b["passed"] is False] == ["min_sqnr_db"]


def test_python_api_mirrors_the_cli(built_fp32):
    import edgeformer

    art = edgeformer.load_artifact(built_fp32.path)
    r = edgeformer.Predictor(art)("great tea")
    assert len(r["embedding"]) == 32 and not r["truncated"]
    assert sorted(edgeformer.__all__) == edgeformer.__all__ and "build" in edgeformer.__all__


def test_eval_json_on_an_artifact(built_int8_cls, tmp_path, capsys):
    f = tmp_path / "e.csv"
    f.write_text("text,label\ngreat tea,positive\nbad box,negative\nlove this product,positive\n")
    code, out, err = run_cli(["eval", str(built_int8_cls.path), "--data", str(f), "--json"], capsys)
    r = json.loads(out)
    assert code == 0, err
    assert r["runtime"] == "executorch" and r["examples"] == 3 and 0 <= r["accuracy"] <= 1 and "agreement" in r
    code, out, _ = run_cli(["eval", str(built_int8_cls.path), "--data", str(f)], capsys)
    assert code == 0 and "macro-F1" in out


def test_finetune_bad_data_is_one_line(tiny_bert, tmp_path, capsys):
    code, _, err = run_cli(["finetune", str(tiny_bert), "--data", "nope.csv", "-o", str(tmp_path / "m")], capsys)
    assert code == 2 and "neither a file nor a built-in data set" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
