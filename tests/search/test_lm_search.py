"""`edgeformer search` on a tiny causal LM: candidates gated on perplexity beside the fp32
model, the winner published with what it measured; resume, refusals. (Encoders: test_search.py.)"""

import json
import random

import pytest
from conftest import run_cli

from edgeformer.artifact import load_artifact
from edgeformer.search import SearchSpec, search

WORDS = "the a cat dog sat on mat and ran far away home".split()


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    rng = random.Random(0)
    f = tmp_path_factory.mktemp("text") / "words.txt"
    f.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(80)))  # > 10 blocks of 64
    return f


@pytest.fixture(scope="module")
def lm_searched(tiny_llama_folder, words, tmp_path_factory):
    root = tmp_path_factory.mktemp("lmsearch")
    spec = SearchSpec(str(tiny_llama_folder), "android", data=str(words), out=root / "best",
                      space="quant=fp32,int8 kv_cache=fp32", max_perplexity_increase=50)
    said = []
    return spec, search(spec, say=said.append), said


def test_candidates_are_gated_on_perplexity_and_the_best_is_published(lm_searched, capsys):
    spec, r, said = lm_searched
    assert [x["status"] for x in r.results] == ["measured"] * 2
    fp32, int8 = r.results
    assert fp32["describe"] == "quant=fp32 kv_cache=fp32"
    # the fp32 .pte scores the text as the fp32 Hugging Face model does, token by token
    assert abs(fp32["increase_pct"]) < 0.05 and fp32["perplexity"] == pytest.approx(fp32["reference_perplexity"], rel=1e-3)
    assert int8["increase_pct"] != fp32["increase_pct"] and int8["size_mb"] < fp32["size_mb"]
    for x in r.results:
        assert x["increase_upper_pct"] >= x["increase_pct"] and x["gate"]["tokens"] == len(x["nll"])
    # android is not this machine: no speed, so the better perplexity wins, then the smaller
    assert all(x["speedup_vs_eager"] is None and x["latency_ms_p50"] is None for x in r.results)
    assert r.winner["perplexity"] == min(x["perplexity"] for x in r.results)
    m = load_artifact(r.path).manifest
    assert m.generation and m.recipe["quant"] == r.winner["candidate"]["quant"] and m.recipe["kv_cache"] == "fp32"
    assert m.accuracy["metric"] == "perplexity" and m.accuracy["increase_bound_pct"] == r.winner["increase_upper_pct"]
    gate = next(b for b in m.budgets if b["name"] == "max_perplexity_increase_pct")
    assert gate["limit"] == 50 and "block-bootstrap" in gate["where"] and gate["passed"] is True
    assert m.search["chosen"] == r.winner["key"] and "Perplexity is gated" in m.search["why"]
    assert m.spec["eval_data"] == spec.data and m.spec["enforce"] is True  # `build --from` scores the same text
    assert m.spec["max_perplexity_increase"] == 50  # against the same budget, not the target's 5%
    assert "| perplexity | increase (bound) % |" in (r.path / "report.md").read_text()
    code, out, err = run_cli(["inspect", str(r.path)], capsys)
    assert code == 0 and "chose quant=" in out + err, err


def test_a_widened_space_builds_and_measures_only_what_is_new(lm_searched, capsys):
    spec, first, _ = lm_searched
    code, out, err = run_cli(["search", spec.model, "--target", "android", "--data", spec.data, "-o", str(spec.out),
                              "--space", "quant=fp32,int8,8da4w kv_cache=fp32", "--max-perplexity-increase", "50",
                              "--json"], capsys)
    assert code == 0, err
    assert "build: 1 candidate(s)" in err and "measure: 1 candidate(s)" in err
    got = {c["key"]: c for c in json.loads(out)["candidates"]}
    assert [c["candidate"]["quant"] for c in got.values()] == ["fp32", "int8", "8da4w"]
    for old in first.results:
        assert got[old["key"]]["perplexity"] == old["perplexity"]


def test_a_perplexity_budget_nothing_meets_exits_3_naming_it(lm_searched, capsys, tmp_path):
    spec, _, _ = lm_searched
    out = tmp_path / "none"
    code, _, err = run_cli(["search", spec.model, "--target", "android", "--data", spec.data, "-o", str(out),
                            "--work", str(spec.work_dir()), "--space", "quant=int8 kv_cache=fp32",
                            "--max-perplexity-increase", "0"], capsys)
    assert code == 3 and not out.exists()
    line = err.strip().splitlines()[-1]
    assert line.startswith("error:") and "closest: quant=int8" in line and "max_perplexity_increase_pct" in line


def test_on_host_decode_is_timed_beside_the_fp32_eager_model(tiny_llama_folder, words, tmp_path):
    spec = SearchSpec(str(tiny_llama_folder), "host", data=str(words), out=tmp_path / "h", space="quant=int8 kv_cache=fp32",
                      bench_iters=8, rounds=1, max_perplexity_increase=50)
    w = search(spec, say=lambda line: None).winner
    assert w["speedup_vs_eager"] > 0 and w["decode_tokens_per_s"] > 0 and w["bench"]["eager_reference"]
    assert next(c for c in w["checks"] if c["name"] == "min_speedup_vs_eager")["passed"] is not None


def test_on_a_device_the_runner_times_each_candidate(tiny_llama_folder, words, tmp_path, host_runner):
    """--device: each LM candidate decodes in the C++ runner there (it has ExecuTorch's LLM ops),
    one after another, and the latency and memory budgets are checked against what it measured."""
    spec = SearchSpec(str(tiny_llama_folder), "rpi5", data=str(words), out=tmp_path / "d", space="quant=fp32,int8 kv_cache=fp32",
                      device="native", bench_iters=8, max_perplexity_increase=50)  # rpi5: absolute latency/memory budgets
    r = search(spec, say=lambda line: None)
    w = r.winner
    assert w["where"] == "host" and w["bench"]["runner"] == "edgeformer-runner"  # native: this machine, by the runner
    assert w["decode_tokens_per_s"] > 0 and w["latency_ms_p50"] > 0 and w["peak_rss_mb"] > 0
    checks = {c["name"]: c for c in w["checks"]}
    assert checks["max_latency_ms_p50"]["passed"] is not None and checks["max_peak_memory_mb"]["passed"] is not None
    assert load_artifact(r.path).manifest.search["device"] == "native"


@pytest.mark.parametrize("args, named", [
    (["--space", "seq_len=64"], "seq_len is an encoder axis"),
    (["--space", "prune=0.5"], "pass --prune-data"),
    (["--space", "prune=0.5", "--prune-data", "WORDS"], "is also --data"),
    (["--prune-data", "janeausten:emma"], "the space prunes nothing"),
    (["--max-accuracy-drop", "1"], "use --max-perplexity-increase"),
    (["--max-perplexity-increase", "-1"], "--max-perplexity-increase -1"),
    (["--data", "fine-foods"], "--data 'fine-foods'"),
    (["--space", "quant=gguf"], "candidate quant=gguf"),
    (["--device", "ssh://"], "--device 'ssh://'"),
    (["--target", "android-vulkan"], "XNNPACK targets"),
])
def test_bad_input_for_a_causal_lm_is_one_line_and_writes_nothing(tiny_llama_folder, words, capsys, tmp_path, args, named):
    out = tmp_path / "o"
    base = ["search", str(tiny_llama_folder), "--data", str(words), "-o", str(out)]
    code, _, err = run_cli(base + [str(words) if a == "WORDS" else a for a in args], capsys)
    assert code == 2 and named in err and err.strip().count("\n") == 0, err
    assert not out.exists() and not (tmp_path / "o.search").exists()


def test_an_encoder_refuses_the_perplexity_budget(tiny_bert_cls, data_csv, capsys, tmp_path):
    code, _, err = run_cli(["search", str(tiny_bert_cls), "--data", str(data_csv), "-o", str(tmp_path / "o"),
                            "--max-perplexity-increase", "3"], capsys)
    assert code == 2 and "use --max-accuracy-drop" in err


def test_a_gguf_lms_default_space_is_planned_with_a_size_estimate(tiny_gguf):
    from edgeformer.pipeline.spec import BuildSpec
    from edgeformer.search.measure import estimate_mb

    est = {q: estimate_mb(str(tiny_gguf), BuildSpec(str(tiny_gguf), "android", quant=q)) for q in ("int8", "8da4w", "gguf")}
    assert est["gguf"] == est["8da4w"] < est["int8"]


def test_a_text_too_short_to_bound_the_increase_is_refused(tiny_llama_folder, tmp_path):
    from types import SimpleNamespace

    from edgeformer.errors import UserError
    from edgeformer.search.lm import reference

    short = tmp_path / "short.txt"
    short.write_text(" ".join(WORDS * 20))  # 240 words: fewer than 10 blocks of 64 tokens
    spec = SimpleNamespace(data=str(short), model=str(tiny_llama_folder))
    with pytest.raises(UserError, match=r"tokens to score; the perplexity gate resamples blocks of 64 and needs at least 10"):
        reference(spec, "sha", tiny_llama_folder / "tokenizer.json", 256, tmp_path / "work")


def test_a_pruned_level_is_distilled_on_other_text_and_gated_against_the_unpruned_model(tiny_llama_folder, words, tmp_path,
                                                                                        capsys):
    rng = random.Random(1)
    other = tmp_path / "other.txt"
    other.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(300)))
    spec = SearchSpec(str(tiny_llama_folder), "android", data=str(words), out=tmp_path / "p", prune_data=str(other),
                      space="quant=fp32 kv_cache=fp32 prune=0,0.5", max_perplexity_increase=50)
    said = []
    r = search(spec, say=said.append)
    unpruned, pruned = r.results
    assert pruned["describe"] == "quant=fp32 prune=0.5 kv_cache=fp32" and pruned["source"] != spec.model
    assert any(line.startswith("prune: 1 level(s) (0.5) distilled on other.txt") for line in said)
    # both gated against the same unpruned fp32 reference: the fp32 .pte of the unpruned model matches it
    assert abs(unpruned["increase_pct"]) < 0.05 and pruned["reference_perplexity"] == unpruned["reference_perplexity"]
    assert pruned["size_mb"] < unpruned["size_mb"]
    if r.winner["key"] == pruned["key"]:  # what `build --from` rebuilds: prune on the same text, gate on --data
        m = load_artifact(r.path).manifest
        assert m.spec["prune"] == "heads=0.5,ffn=0.5" and m.spec["data"] == str(other) and m.spec["eval_data"] == str(words)
