"""build() end to end on tiny models: artifact contents, manifest, budgets, atomic output."""

import json

import pytest

import edgeformer
from edgeformer.artifact import load_artifact
from edgeformer.errors import BudgetError, UserError
from edgeformer.manifest import SCHEMA_VERSION, Manifest


def test_artifact_folder_and_manifest(built_fp32):
    r = built_fp32
    assert sorted(p.name for p in r.path.iterdir()) == ["budgets.png", "manifest.json", "model.pte", "report.md", "tokenizer.json"]
    m = Manifest.from_json((r.path / "manifest.json").read_text())
    assert m.schema_version == SCHEMA_VERSION
    assert m.target["name"] == "host-x86_64-xnnpack" and m.recipe["quant"] == "fp32" and m.recipe["seq_len"] == 16
    assert m.pte["bytes"] == (r.path / "model.pte").stat().st_size
    assert set(m.toolchain) == {"edgeformer", "torch", "executorch", "torchao", "transformers", "tokenizers"}
    # full attention on XNNPACK: any length from 1 to --seq-len (see tests/test_lengths.py)
    assert m.inputs == [dict(name="input_ids", dtype="int64", shape=[1, 16], min_shape=[1, 1]),
                        dict(name="attention_mask", dtype="int64", shape=[1, 16], min_shape=[1, 1])]
    assert m.outputs[0]["shape"] == [1, 32] and m.model["task"] == "embedder"
    assert len(m.model["sha256"]) == 64
    # fp32: the .pte equals the fp32 reference up to float rounding
    assert m.numerics["sqnr_db"] > 80 and m.numerics["max_abs_err_vs_exported"] < 1e-5
    assert m.delegation["coverage"] > 0.95
    assert sum(m.size.values()) == m.pte["bytes"]
    names = [b["name"] for b in m.budgets]
    assert names == ["max_pte_mb", "max_latency_ms_p50", "min_speedup_vs_eager", "max_peak_memory_mb", "min_sqnr_db",
                     "min_lowering_sqnr_db", "max_accuracy_drop"]
    assert m.budgets[-1]["passed"] is None and m.budgets[-1]["where"] == "no eval data"
    assert m.measurements["measured_on"] is None  # bench_iters=0


def test_manifest_round_trip(built_fp32):
    m = built_fp32.manifest
    assert Manifest.from_json(m.to_json()) == m


def test_host_build_measures_latency_and_memory(built_int8_cls):
    m = built_int8_cls.manifest
    meas = m.measurements
    assert meas["measured_on"]["kind"] == "host" and meas["iters"] == 3
    assert 0 < meas["latency_ms_p50"] <= meas["latency_ms_p90"]
    assert meas["peak_rss_mb"] > meas["model_memory_mb"] > 0
    # A tiny model adds little to the runtime: the peak is the worker's own, not its parent's
    # (ru_maxrss survives execve; pytest here is a >500 MiB parent).
    assert meas["model_memory_mb"] < 50
    by = {b["name"]: b for b in m.budgets}
    # host is whatever machine this is: its latency budget is a ratio to the fp32 eager model, timed side by side
    assert by["max_latency_ms_p50"]["limit"] is None and by["max_latency_ms_p50"]["measured"] == pytest.approx(meas["latency_ms_p50"])
    assert by["min_speedup_vs_eager"]["where"] == "host" and by["min_speedup_vs_eager"]["passed"] is True
    assert meas["speedup_vs_eager"] == pytest.approx(by["min_speedup_vs_eager"]["measured"], abs=0.01) and len(meas["speedup_rounds"]) == 3
    assert meas["eager_latency_ms_p50"] > meas["latency_ms_p50"]
    # memory as an app runs the model: the C++ runner where it can be built here
    if meas["memory_measured_by"].startswith("C++ runner"):
        assert meas["peak_rss_mb"] < meas["python_peak_rss_mb"]
    else:
        assert meas["memory_measured_by"].startswith("python runtime (")
    assert m.model["labels"] == ["negative", "positive"] and m.numerics["label_agreement"] >= 0.5


def test_other_targets_record_not_measured_on_device(tiny_bert, tmp_path):
    r = edgeformer.build(str(tiny_bert), "rpi5", tmp_path / "pi", lengths="static", batch=1, seq_len=16)
    by = {b["name"]: b for b in r.manifest.budgets}
    assert by["max_latency_ms_p50"]["passed"] is None
    assert by["max_latency_ms_p50"]["where"] == "not measured on device"
    assert by["max_pte_mb"]["passed"] is True
    assert r.manifest.recipe["threads"] == 4


def test_failed_budget_writes_nothing_and_names_it(tiny_bert, tmp_path):
    out = tmp_path / "x"
    with pytest.raises(BudgetError, match=r"1 budget\(s\) failed, artifact not written .*min_sqnr_db: measured [\d.]+ dB, budget >= 500"):
        edgeformer.build(str(tiny_bert), "host", out, lengths="static", batch=1, quant="int8", seq_len=16, bench_iters=0, min_sqnr_db=500)
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary left behind


def test_no_enforce_keeps_the_artifact(tiny_bert, tmp_path):
    r = edgeformer.build(str(tiny_bert), "host", tmp_path / "x", lengths="static", batch=1, seq_len=16, bench_iters=0, min_sqnr_db=500,
                         enforce=False)
    assert not r.passed and r.path.is_dir()
    assert [b["name"] for b in r.manifest.failed_budgets()] == ["min_sqnr_db"]


def test_rebuild_replaces_an_artifact_but_not_other_folders(tiny_bert, built_fp32, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not an edgeformer artifact"):
        edgeformer.build(str(tiny_bert), "host", other, seq_len=16, bench_iters=0)
    assert (other / "notes.txt").read_text() == "keep me"


def test_seq_len_beyond_model_positions(tiny_bert, tmp_path):
    with pytest.raises(UserError, match=r"--seq-len 64 exceeds the model's 40 positions; use --seq-len 40 or less"):
        edgeformer.build(str(tiny_bert), "host", tmp_path / "x", seq_len=64, bench_iters=0)


def test_dump_writes_each_stage(tiny_bert, tmp_path):
    edgeformer.build(str(tiny_bert), "host", tmp_path / "x", lengths="static", batch=1, seq_len=16, bench_iters=0, dump=tmp_path / "dump")
    names = sorted(p.name for p in (tmp_path / "dump").iterdir())
    assert names == ["02-load.txt", "03-attention.txt", "04-quantize.txt", "05-export.txt", "06-lower.txt", "07-validate.txt",
                     "08-measure.txt", "10-budgets.txt", "11-publish.txt"]  # prune and evaluate did not run
    assert "Encoder(" in (tmp_path / "dump" / "02-load.txt").read_text()
    assert "torch.ops.aten" in (tmp_path / "dump" / "05-export.txt").read_text()
    assert "executorch_call_delegate" in (tmp_path / "dump" / "06-lower.txt").read_text()
    assert '"sqnr_db"' in (tmp_path / "dump" / "07-validate.txt").read_text()


def test_rebuild_from_manifest_is_byte_identical(tiny_bert_cls, tmp_path, capsys):
    from conftest import run_cli

    a = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "a", lengths="static", batch=1, quant="8da4w", embedding_quant="int4",
                         seq_len=16,
                         attention="window=8", bench_iters=0, min_sqnr_db=0)  # a random tiny model: 4-bit loses much
    spec = a.manifest.spec
    assert spec["quant"] == "8da4w" and spec["attention"] == "window=8" and spec["threads"] == 2 and "out" not in spec
    code, _, err = run_cli(["build", "--from", str(tmp_path / "a" / "manifest.json"), "-o", str(tmp_path / "b")], capsys)
    assert code == 0, err
    assert (tmp_path / "b" / "model.pte").read_bytes() == (tmp_path / "a" / "model.pte").read_bytes()
    b = load_artifact(tmp_path / "b").manifest
    assert b.spec == spec and b.recipe == a.manifest.recipe


def test_rebuild_from_manifest_takes_overrides_and_refuses_nonsense(built_fp32, tmp_path, capsys):
    from conftest import run_cli

    m = str(built_fp32.path / "manifest.json")
    code, _, err = run_cli(["build", "--from", m, "-o", str(tmp_path / "q"), "--quant", "int8", "--bench-iters", "0"], capsys)
    assert code == 0, err
    assert load_artifact(tmp_path / "q").manifest.recipe["quant"] == "int8"
    code, _, err = run_cli(["build", "minilm", "--from", m, "-o", str(tmp_path / "z")], capsys)
    assert code == 2 and "give MODEL or --from, not both" in err
    code, _, err = run_cli(["build", "--from", str(tmp_path / "nope.json"), "-o", str(tmp_path / "z")], capsys)
    assert code == 2 and "no such manifest" in err
    bad = tmp_path / "bad.json"
    head, _, tail = built_fp32.manifest.to_json().rpartition('"quant": "fp32"')  # the spec's, the manifest's last section
    bad.write_text(head + '"quant": "fp33"' + tail)
    code, _, err = run_cli(["build", "--from", str(bad), "-o", str(tmp_path / "z")], capsys)
    assert code == 2 and "--quant 'fp33' is not a known scheme" in err and not (tmp_path / "z").exists()


def test_tampered_pte_is_refused(built_fp32, tmp_path):
    import shutil

    d = tmp_path / "a"
    shutil.copytree(built_fp32.path, d)
    b = bytearray((d / "model.pte").read_bytes())
    b[-1] ^= 0xFF
    (d / "model.pte").write_bytes(bytes(b))
    with pytest.raises(UserError, match="sha256 .* does not match the manifest"):
        load_artifact(d)


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: (d / "manifest.json").unlink(), "has no manifest.json"),
    (lambda d: (d / "manifest.json").write_text("[]"), "is not a JSON object"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({"schema_version": 99})), "schema_version 99"),
    (lambda d: (d / "tokenizer.json").write_text("{}"), "tokenizer.json is missing or does not match"),
])
def test_broken_artifacts_are_refused(built_fp32, tmp_path, mutate, msg):
    import shutil

    d = tmp_path / "a"
    shutil.copytree(built_fp32.path, d)
    mutate(d)
    with pytest.raises(UserError, match=msg):
        load_artifact(d)


def test_report_md_says_which_budget_failed(built_int8_cls):
    from edgeformer.report_md import budget_ratios, render

    m = built_int8_cls.manifest
    text = (built_int8_cls.path / "report.md").read_text()
    assert text == render(m) and "all budgets met" in text and "| max_pte_mb |" in text
    assert "![each budget: measured over its limit](budgets.png)" in text
    assert (built_int8_cls.path / "budgets.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ratios = {name: r for name, r, _, _ in budget_ratios(m)}
    size = next(b for b in m.budgets if b["name"] == "max_pte_mb")
    assert ratios["max_pte_mb"] == size["measured"] / size["limit"] < 1
    failed = type(m)(**{**m.__dict__, "budgets": [dict(b, passed=False) if b["name"] == "max_pte_mb" else b for b in m.budgets]})
    assert "FAILED: max_pte_mb (measured" in render(failed)
