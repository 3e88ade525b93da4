"""Causal LMs end to end on a tiny Llama folder: build, run (streaming), bench, eval, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_cli

import edgeformer
from edgeformer.transforms.smooth import GRID_ALPHA
from edgeformer.transforms.tied_table import SHARED

WORDS = "the coffee was stale and bitter great tea love this product not good bad box arrived broken".split()


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    import random

    rng = random.Random(0)
    f = tmp_path_factory.mktemp("text") / "words.txt"
    f.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(60)))
    return f


@pytest.fixture(scope="module")
def fp32_lm(tiny_llama_folder, tmp_path_factory, text_file):
    out = tmp_path_factory.mktemp("lm") / "fp32"
    r = edgeformer.build(str(tiny_llama_folder), "host", out, quant="fp32", embedding_quant="fp32", max_context=64,
                         bench_iters=8, eval_data=str(text_file))
    return r


@pytest.fixture(scope="module")
def ring_lm(tiny_llama_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "ring"
    return edgeformer.build(str(tiny_llama_folder), "host", out, attention="window=16:sinks=2", seq_len=8, bench_iters=0,
                            kv_cache="int8")


def test_manifest_describes_the_cache_and_what_ran_where(fp32_lm, ring_lm):
    m = fp32_lm.manifest
    assert m.model["task"] == "causal-lm" and m.passed
    g = m.generation
    assert (g["cache"], g["max_context"], g["cache_slots"], g["max_tokens_per_call"]) == ("full", 64, 64, 64)
    assert g["cache_dtype"] == "fp32" and g["cache_bytes_per_token"] == 2 * 2 * 2 * 16 * 4  # K, V; 2 layers, 2 heads of 16
    assert g["stop_ids"] == [3] and "assistant" in g["chat_template"]
    d = m.delegation
    outside = set(d["non_delegated_ops"])
    assert {"update_cache", "llama_custom_sdpa_default"} <= outside
    assert not any("linear" in op or "mm" in op for op in outside)  # every projection runs in XNNPACK
    assert m.numerics["sqnr_db_vs_exported"] > 80 and m.numerics["top1_agreement"] == 1.0
    assert m.measurements["decode_tokens_per_s"] > 0 and m.measurements["prefill_tokens_per_s"] > 0
    assert abs(m.accuracy["increase_pct"]) < 0.1  # fp32 .pte: the perplexity of the fp32 model
    r = ring_lm.manifest.generation
    assert (r["cache"], r["window"], r["sinks"], r["cache_slots"], r["max_context"]) == ("ring", 16, 2, 2 + 16 + 7, None)
    assert r["cache_dtype"] == "int8" and r["cache_bytes_per_token"] == 2 * 2 * 2 * (16 + 5)  # codes, scale, zero point
    assert "llama_custom_quantized_sdpa_default" in ring_lm.manifest.delegation["non_delegated_ops"]
    assert ring_lm.manifest.recipe["quant"] == "int8"  # the target's default for LMs too
    assert ring_lm.manifest.numerics["sqnr_db_vs_exported"] > 20


def test_run_streams_hugging_face_greedy_text(fp32_lm, tiny_llama_folder, capsys):
    import transformers as tf
    from tokenizers import Tokenizer

    code, out, _ = run_cli(["run", str(fp32_lm.path), "--prompt", "the coffee was", "-n", "10", "--no-chat", "--json"], capsys)
    r = json.loads(out)
    assert code == 0 and r["new_tokens"] == 10 and r["stopped"] == "max tokens"
    tok = Tokenizer.from_file(str(fp32_lm.path / "tokenizer.json"))
    ids = tok.encode("the coffee was").ids
    hf = tf.AutoModelForCausalLM.from_pretrained(tiny_llama_folder).eval()
    with torch.no_grad():
        want = hf.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, min_new_tokens=10)[0, len(ids):]
    assert r["text"].split() == tok.decode(want.tolist(), skip_special_tokens=True).split()
    code, _, err = run_cli(["run", str(fp32_lm.path), "--prompt", "the coffee was", "-n", "4"], capsys)
    assert code == 0 and "4 tokens in" in err


def test_chat_template_and_long_prompt(fp32_lm, capsys):
    from tokenizers import Tokenizer

    from edgeformer.lm.session import render_chat

    rendered = render_chat(fp32_lm.manifest.generation["chat_template"], "the coffee", {})
    assert rendered == "[CLS] user the coffee [SEP][CLS] assistant"
    _, chat, _ = run_cli(["run", str(fp32_lm.path), "-p", "the coffee", "-n", "2", "--json"], capsys)
    tok = Tokenizer.from_file(str(fp32_lm.path / "tokenizer.json"))
    assert json.loads(chat)["prompt_tokens"] == len(tok.encode(rendered, add_special_tokens=False).ids)
    code, out, err = run_cli(["run", str(fp32_lm.path), "-p", " ".join(WORDS * 5), "-n", "8", "--json"], capsys)
    r = json.loads(out)
    assert code == 0 and r["cut_tokens"] > 0 and r["prompt_tokens"] + 8 <= 64
    assert "were dropped to leave room for 8 new tokens in the 64-token context" in err


def test_ring_cache_generates_far_past_its_slots(ring_lm, capsys):
    code, out, _ = run_cli(["run", str(ring_lm.path), "-p", "the coffee", "-n", "200", "--no-chat", "--json"], capsys)
    assert code == 0 and json.loads(out)["new_tokens"] > 0


def test_a_one_token_program_decodes_as_the_dynamic_one(fp32_lm, tiny_llama_folder, tmp_path, capsys):
    """`--seq-len 1`: a static [1, 1] program (torch.export has no Dim of one value), the prompt
    fed a token at a time; it writes what the dynamic program writes."""
    r = edgeformer.build(str(tiny_llama_folder), "host", tmp_path / "t1", quant="fp32", embedding_quant="fp32", max_context=64,
                         seq_len=1, bench_iters=0)
    assert r.manifest.generation["max_tokens_per_call"] == 1 and r.manifest.inputs[0]["shape"] == [1, "1..1"]
    texts = []
    for art in (fp32_lm.path, r.path):
        code, out, _ = run_cli(["run", str(art), "--prompt", "the coffee was", "-n", "8", "--no-chat", "--json"], capsys)
        assert code == 0
        texts.append(json.loads(out)["text"])
    assert texts[0] == texts[1]


def test_bench_and_eval_commands(fp32_lm, text_file, capsys):
    code, out, _ = run_cli(["bench", str(fp32_lm.path), "--prompt-tokens", "16", "--new-tokens", "24", "--rounds", "2", "--json"], capsys)
    r = json.loads(out)
    assert code == 0 and (r["prompt_tokens"], r["new_tokens"]) == (16, 24)
    assert r["decode_tokens_per_s"] > 0 and r["peak_rss_mb"] > r["runtime_baseline_rss_mb"] > 0 and r["bytes_per_token"] > 0
    code, out, _ = run_cli(["eval", str(fp32_lm.path), "--data", str(text_file), "--tokens", "200", "--json"], capsys)
    r = json.loads(out)
    assert code == 0 and r["scored_tokens"] > 150 and r["perplexity"] > 1 and abs(r["increase_pct"]) < 0.1


@pytest.mark.parametrize("args,msg", [
    (["-p", "   "], "the prompt is empty"),
    (["-p", "the coffee", "-n", "64"], "--max-new-tokens 64 leaves no room for the prompt in the 64-token context"),
    (["-p", "the coffee", "--temperature", "-1"], "--temperature -1.0"),
    (["-p", "the coffee", "--top-p", "0"], "--top-p 0.0"),
])
def test_bad_generation_input(fp32_lm, capsys, args, msg):
    code, _, err = run_cli(["run", str(fp32_lm.path), *args], capsys)
    assert code == 2 and msg in err and "Traceback" not in err


@pytest.mark.parametrize("args,msg", [
    (["--max-context", "1000"], "--max-context 1000: use 2 to 256"),
    (["--attention", "hard=top4"], "is not a causal-LM cache spec"),
    (["--attention", "window=0"], "window must be >= 2, got 0"),
    (["--attention", "window=8:global=2"], "'window=8:global=2' is not a causal-LM cache spec"),
    (["--prune", "auto"], "--prune auto is data-driven: pass --data text"),
    (["--prune", "heads=0.5", "--data", "fine-foods"], "use janeausten[:BOOK]"),
    (["--kv-cache", "int4"], "--kv-cache 'int4' is not a known scheme; use one of: fp32, int8"),
    (["--eval-data", "fine-foods"], "use janeausten[:BOOK]"),
    (["--eval-data", "janeausten:ulysses"], "janeausten has no book 'ulysses'"),
    (["--quant", "8da4w", "--quant-method", "gptq"], "--quant-method gptq calibrates on text: pass --data"),
    (["--quant", "8da4w", "--quant-method", "gptq", "--data", "janeausten", "--eval-data", "janeausten"],
     "is also --eval-data: the perplexity would be measured on the text GPTQ calibrated on"),
    (["--data", "janeausten:emma"], "--data is the text --prune distills on (or --quant-method gptq calibrates on)"),
])
def test_bad_build_input(tiny_llama_folder, tmp_path, capsys, args, msg):
    out = tmp_path / "never"
    code, _, err = run_cli(["build", str(tiny_llama_folder), "-o", str(out), *args], capsys)
    assert code == 2 and msg in err and not out.exists()


def test_max_context_is_refused_for_encoders(tiny_bert, tmp_path, capsys):
    code, _, err = run_cli(["build", str(tiny_bert), "-o", str(tmp_path / "x"), "--max-context", "64"], capsys)
    assert code == 2 and "--max-context 64 applies to causal LMs" in err


def test_ctrl_c_stops_the_stream_cleanly(ring_lm):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-c", "from edgeformer.cli import main; main()", "run", str(ring_lm.path), "-p",
                          "the coffee", "-n", "1000000", "--no-chat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert p.stdout.read(1)  # streaming has started
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err.decode()
    assert b"(interrupted)" in err and b"Traceback" not in err


def test_a_gguf_builds_on_its_own_grid(tiny_gguf, tiny_llama_folder, tmp_path, capsys):
    r = edgeformer.build(str(tiny_gguf), "host", tmp_path / "grid", quant="gguf", max_context=64, bench_iters=0)
    m = r.manifest
    q = m.quantization
    assert q["scheme"] == "gguf" and q["modules"]["layers.0.down"] == "Q4_1 -> 4-bit groups + group-sum correction (exact)"
    assert q["modules"]["embed"] == SHARED and q["modules"]["lm_head"] == "Q8_0 -> int8"  # the tied table, stored once
    assert q["head_smoothing"]["alpha"] == 0.5 and q["head_smoothing"]["calibration_tokens"] > 8  # the int8 head's input
    assert q["input_smoothing"]["alpha"] == GRID_ALPHA and q["input_smoothing"]["calibration_tokens"] > 8  # every layer's
    outside = set(m.delegation["non_delegated_ops"])
    assert not any("linear" in op or "mm" in op or "mean" in op for op in outside)  # corrections run in XNNPACK too
    assert m.numerics["sqnr_db_vs_exported"] > 30 and m.numerics["sqnr_db"] > 25  # vs the dequantized GGUF in fp32
    assert json.loads((tmp_path / "grid" / "manifest.json").read_text())["quantization"]["scheme"] == "gguf"
    code, out, _ = run_cli(["inspect", str(tmp_path / "grid"), "--no-profile"], capsys)
    assert code == 0 and "quantization" in out and "Q8_0" in out
    with pytest.raises(edgeformer.UserError, match=r"--quant gguf keeps a GGUF causal LM's own 4-bit grid, and .* is not a GGUF"):
        edgeformer.build(str(tiny_llama_folder), "host", tmp_path / "no", quant="gguf")
    assert not (tmp_path / "no").exists()


def test_gptq_calibrates_a_causal_lm_on_its_text(tiny_llama_folder, text_file, tmp_path):
    r = edgeformer.build(str(tiny_llama_folder), "host", tmp_path / "g", quant="8da4w", quant_method="gptq",
                         data=str(text_file), max_context=64, bench_iters=0)
    q = r.manifest.quantization
    assert q["scales"] == "gptq" and q["calibration"]["data"] == "words.txt" and q["calibration"]["tokens"] > 0
    assert q["modules"]["lm_head"] == "8da4w (gptq)" and set(q["summary"]) == {"8da4w (gptq)"}
    assert "head_smoothing" not in q  # a 4-bit head: GPTQ chose its codes on the unsmoothed input
    assert r.manifest.numerics["sqnr_db_vs_exported"] > 30
    outside = set(r.manifest.delegation["non_delegated_ops"])
    assert not any("linear" in op or "mm" in op for op in outside)
