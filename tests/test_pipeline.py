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
    assert m.inputs == [dict(name="input_ids", dtype="int64", shape=[1, 16]),
                        dict(name="attention_mask", dtype="int64", shape=[1, 16])]
    assert m.outputs[0]["shape"] == [1, 32] and m.model["task"] == "embedder"
    assert len(m.model["sha256"]) == 64
    # fp32: the .pte equals the fp32 reference up to float rounding
    assert m.numerics["sqnr_db"] > 80 and m.numerics["max_abs_err_vs_exported"] < 1e-5
    assert m.delegation["coverage"] > 0.95
    assert sum(m.size.values()) == m.pte["bytes"]
    names = [b["name"] for b in m.budgets]
    assert names == ["max_pte_mb", "max_latency_ms_p50", "max_peak_memory_mb", "min_sqnr_db", "min_lowering_sqnr_db",
                     "max_accuracy_drop"]
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
    assert by["max_latency_ms_p50"]["where"] == "host" and by["max_latency_ms_p50"]["passed"] is True
    assert m.model["labels"] == ["negative", "positive"] and m.numerics["label_agreement"] >= 0.5


def test_other_targets_record_not_measured_on_device(tiny_bert, tmp_path):
    r = edgeformer.build(str(tiny_bert), "rpi5", tmp_path / "pi", seq_len=16)
    by = {b["name"]: b for b in r.manifest.budgets}
    assert by["max_latency_ms_p50"]["passed"] is None
    assert by["max_latency_ms_p50"]["where"] == "not measured on device"
    assert by["max_pte_mb"]["passed"] is True
    assert r.manifest.recipe["threads"] == 4


def test_failed_budget_writes_nothing_and_names_it(tiny_bert, tmp_path):
    out = tmp_path / "x"
    with pytest.raises(BudgetError, match=r"1 budget\(s\) failed, artifact not written .*min_sqnr_db: measured [\d.]+ dB, budget >= 500"):
        edgeformer.build(str(tiny_bert), "host", out, quant="int8", seq_len=16, bench_iters=0, min_sqnr_db=500)
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary left behind


def test_no_enforce_keeps_the_artifact(tiny_bert, tmp_path):
    r = edgeformer.build(str(tiny_bert), "host", tmp_path / "x", seq_len=16, bench_iters=0, min_sqnr_db=500, enforce=False)
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
    edgeformer.build(str(tiny_bert), "host", tmp_path / "x", seq_len=16, bench_iters=0, dump=tmp_path / "dump")
    assert sorted(p.name for p in (tmp_path / "dump").iterdir()) == ["1-exported.txt", "2-lowered.txt"]
    assert "executorch_call_delegate" in (tmp_path / "dump" / "2-lowered.txt").read_text()


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
