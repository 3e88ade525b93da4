"""The real SmolLM2-135M (bundled GGUF): build for the host with perplexity on Jane Austen,
then chat with the .pte through the CLI. About 6 minutes (lowering 30 layers is most of it)."""

import json

import pytest
from conftest import run_cli

import edgeformer

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    return edgeformer.build("smollm2-135m", "host", tmp_path_factory.mktemp("smol") / "a", eval_data="janeausten",
                            bench_iters=8)  # the speed itself is benchmarks/' business


def test_default_build_keeps_the_gguf_grid_meets_every_budget_and_keeps_perplexity(smol):
    m = smol.manifest
    assert m.recipe["quant"] == "gguf"  # a Q4_1 file builds on its own grid unless told otherwise
    assert m.passed, m.failed_budgets()
    assert m.accuracy["increase_pct"] < 5 and 20 < m.accuracy["reference_perplexity"] < 80
    assert m.numerics["top1_agreement"] >= 0.8
    assert m.delegation["delegated_subgraphs"] >= 30 and m.delegation["non_delegated_ops"]["llama_custom_sdpa_default"] == 30
    g = m.generation
    assert g["stop_ids"] == [2] and "<|im_start|>" in g["chat_template"] and g["max_context"] == 1024
    assert m.measurements["decode_tokens_per_s"] > 0  # speed itself is benchmarks/' business


def test_chat_reply_streams_and_stops(smol, capsys):
    code, out, _ = run_cli(["run", str(smol.path), "-p", "What is the capital of France?", "-n", "48", "--json"], capsys)
    assert code == 0, out
    r = json.loads(out)
    # Not "Paris": the fp32 model says it, but this build, the int8 one and llama.cpp's Q4_1 all
    # answer "L'Étoile ..." (2026-12-07): a near tie the int8 activations tip, not a broken chat.
    assert r["prompt_tokens"] > 8 and r["new_tokens"] > 4 and len(r["text"].split()) > 3, r
    assert "<|im_start|>" not in r["text"] and r["stopped"] in ("max tokens", "stop token"), r
