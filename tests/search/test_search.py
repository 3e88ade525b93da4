"""`edgeformer search` end to end on a tiny classifier: build, measure beside eager, gate,
publish; resume and widen from the cache; refusals. (Ray: test_ray.py.)"""

import json
from pathlib import Path

import pytest
from conftest import run_cli

from edgeformer.artifact import load_artifact
from edgeformer.search import SearchSpec, search

SPACE = "quant=fp32,int8 prune=0,0.5 seq_len=16 lengths=static batch=1"  # static, no batch method: half the lowering


@pytest.fixture(scope="module")
def searched(tiny_bert_cls, data_csv, tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    said = []
    spec = SearchSpec(str(tiny_bert_cls), "host", data=str(data_csv), out=root / "best", space=SPACE, bench_iters=3,
                      rounds=1, max_accuracy_drop=100)
    return spec, search(spec, say=said.append), said


def test_every_candidate_is_measured_and_the_fastest_passing_one_is_published(searched, capsys):
    spec, r, said = searched
    assert [x["status"] for x in r.results] == ["measured"] * 4
    assert any(line.startswith("prune: 1 level") for line in said) and any(line.startswith("build: 4") for line in said)
    passing = [x for x in r.results if x["passed"]]
    assert r.winner in passing and r.winner["speedup_vs_eager"] == max(x["speedup_vs_eager"] for x in passing)
    assert r.winner["key"] in {x["key"] for x in r.front}
    a = load_artifact(r.path)
    m = a.manifest
    assert m.search["chosen"] == r.winner["key"] and len(m.search["candidates"]) == 4
    assert m.recipe["quant"] == r.winner["candidate"]["quant"] and m.pte["bytes"] == r.winner["bytes"]
    gate = next(b for b in m.budgets if b["name"] == "max_accuracy_drop")
    assert "paired-bootstrap" in gate["where"] and gate["measured"] == r.winner["drop_upper_points"]
    assert m.accuracy["examples"] == 5 and m.measurements["speedup_vs_eager"] == r.winner["speedup_vs_eager"]
    # what `build --from` rebuilds: the unpruned model, this candidate's prune, budgets enforced
    assert m.spec["model"] == str(Path(spec.model).resolve()) and m.spec["enforce"] is True and m.spec["bench_iters"] == 50
    assert m.spec["prune"] == (None if r.winner["candidate"]["prune"] == "0" else "heads=0.5,ffn=0.5")
    assert "## Search" in (r.path / "report.md").read_text() and (r.path / "search.png").stat().st_size > 0
    code, out, err = run_cli(["inspect", str(r.path)], capsys)
    assert code == 0 and "chose " in out + err, err
    # pruning is real: the pruned candidates are smaller than their unpruned twins
    size = {(x["candidate"]["quant"], x["candidate"]["prune"]): x["size_mb"] for x in r.results}
    assert size[("int8", "0.5")] < size[("int8", "0")] and size[("fp32", "0.5")] < size[("fp32", "0")]
    assert all(abs(x["size_estimate_mb"] - x["size_mb"]) / x["size_mb"] < 0.3 for x in r.results)


def test_a_rerun_resumes_and_a_widened_space_measures_only_what_is_new(searched, capsys):
    spec, first, _ = searched
    code, out, err = run_cli(["search", spec.model, "--data", spec.data, "-o", str(spec.out), "--space",
                              SPACE.replace("0.5", "0.5,0.25"), "--bench-iters", "3", "--rounds", "1",
                              "--max-accuracy-drop", "100", "--json"], capsys)
    assert code == 0, err
    assert "prune: 1 level(s) (0.25)" in err and "build: 2 candidate(s)" in err and "measure: 2 candidate(s)" in err
    got = {c["key"]: c for c in json.loads(out)["candidates"]}
    assert len(got) == 6
    for old in first.results:  # read back as measured, not measured again
        assert got[old["key"]]["speedup_vs_eager"] == old["speedup_vs_eager"]


def test_budgets_nothing_meets_exit_3_naming_the_closest(searched, capsys, tmp_path):
    spec, _, _ = searched
    out = tmp_path / "none"
    code, _, err = run_cli(["search", spec.model, "--data", spec.data, "-o", str(out), "--work", str(spec.work_dir()),
                            "--space", SPACE, "--max-pte-mb", "0.001"], capsys)
    assert code == 3 and not out.exists()
    line = err.strip().splitlines()[-1]  # after the progress lines and the table: the error, one line
    assert line.startswith("error:") and "closest:" in line and "max_pte_mb" in line and "search.md" in line


@pytest.mark.parametrize("args, named", [
    (["--space", "bits=4"], "unknown axis 'bits'"),
    (["--space", "quant=int8 attention=window=4:sinks=2"], "candidate quant=int8"),  # each build checked before work
    (["--objective", "speed"], "--objective 'speed'"),
    (["--executor", "dask"], "--executor 'dask'"),
    (["--confidence", "1.5"], "--confidence 1.5"),
    (["--target", "android-vulkan"], "XNNPACK targets"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_bert_cls, data_csv, capsys, tmp_path, args, named):
    out = tmp_path / "o"
    code, _, err = run_cli(["search", str(tiny_bert_cls), "--data", str(data_csv), "-o", str(out), *args], capsys)
    assert code == 2 and named in err and err.strip().count("\n") == 0, err
    assert not out.exists() and not (tmp_path / "o.search").exists()


def test_an_embedder_or_a_split_is_refused(tiny_bert, tiny_bert_cls, data_csv, capsys, tmp_path):
    code, _, err = run_cli(["search", str(tiny_bert), "--data", str(data_csv), "-o", str(tmp_path / "o"),
                            "--space", "quant=int8 prune=0 seq_len=16"], capsys)
    assert code == 2 and "embedder" in err and "finetune" in err
    code, _, err = run_cli(["search", str(tiny_bert_cls), "--data", f"{data_csv}:validation", "-o", str(tmp_path / "p")], capsys)
    assert code == 2 and "without a split" in err


def test_a_search_for_rpi5_under_qemu_records_emulated_timings_and_checks_none(arm_runner, tiny_bert_cls, data_csv, tmp_path):
    spec = SearchSpec(str(tiny_bert_cls), "rpi5", data=str(data_csv), out=tmp_path / "pi",
                      space="quant=int8 prune=0 seq_len=16 lengths=static batch=1",
                      device="qemu-aarch64", bench_iters=2, max_accuracy_drop=100)
    r = search(spec, say=lambda line: None)
    w = r.winner
    assert w["where"] == "emulated: not checked" and w["emulated"]["latency_ms_p50"] > 0 and w["latency_ms_p50"] is None
    checks = {c["name"]: c for c in w["checks"]}
    assert checks["max_latency_ms_p50"]["passed"] is None and checks["max_accuracy_drop"]["passed"] is True
    assert load_artifact(r.path).manifest.search["device"] == "qemu-aarch64"
