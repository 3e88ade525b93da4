"""The C++ runner against the Python runtime on the same .pte, on x86-64 and under qemu-aarch64."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import make_tiny_llama, run_cli, write_tokenizer

from edgeformer.artifact import load_artifact
from edgeformer.devices.local import ARM_SYSROOT, QEMU_CPU
from edgeformer.program import Program
from edgeformer.tokenize import TextEncoder
from edgeformer.validate.numerics import sqnr_db

TEXTS = ["the runner on the device", "a second, longer sentence with more tokens in it"]


def _inputs(a, tmp_path, text):
    m = a.manifest
    # each text at its own length where the artifact takes any (the runners size the inputs by them)
    e = TextEncoder(a.tokenizer_file, m.inputs[0]["shape"][1], m.tokenizer["pad_id"], pad=not m.any_length).encode(text)
    f = tmp_path / "inputs.json"
    f.write_text(json.dumps(dict(input_ids=e.input_ids.flatten().tolist(), attention_mask=e.attention_mask.flatten().tolist())))
    return f, e


def run_json(cmd, env=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _python_output(a, e):
    return Program(a.pte_file, 2)(e.input_ids, e.attention_mask).numpy().reshape(-1)


@pytest.mark.parametrize("which", ["built_fp32", "built_int8_cls"])
def test_host_runner_matches_python_runtime(which, host_runner, tmp_path, request):
    a = load_artifact(request.getfixturevalue(which).path)
    for text in TEXTS:
        f, e = _inputs(a, tmp_path, text)
        r = run_json([str(host_runner), str(a.path), "--inputs", str(f), "--iters", "2", "--warmup", "1"])
        out = np.array(r["outputs"][0]["data"], dtype=np.float32)
        assert r["outputs"][0]["shape"] == a.manifest.outputs[0]["shape"]
        np.testing.assert_allclose(out, _python_output(a, e), atol=1e-6, rtol=1e-6)  # same kernels, same program
    assert r["sha256_verified"] and r["kind"] == "encoder" and r["iters"] == 2
    assert 0 < r["latency_ms_p50"] <= r["latency_ms_p90"] and r["peak_rss_mb"] > 0


def test_runners_refuse_a_length_the_artifact_does_not_take(built_fp32, host_runner, tmp_path):
    import sys
    from pathlib import Path

    worker = Path(__file__).resolve().parents[2] / "runtimes" / "python" / "edgeformer_worker.py"
    n = built_fp32.manifest.inputs[0]["shape"][1] + 1
    f = tmp_path / "long.json"
    f.write_text(json.dumps(dict(input_ids=[5] * n, attention_mask=[1] * n)))
    for cmd in ([str(host_runner)], [sys.executable, str(worker)]):
        proc = subprocess.run([*cmd, str(built_fp32.path), "--inputs", str(f)], capture_output=True, text=True)
        assert proc.returncode == 2 and f"input_ids has {n} tokens" in proc.stderr and "takes 1 to 16" in proc.stderr
    f.write_text(json.dumps(dict(input_ids=[5] * 4, attention_mask=[1] * 5)))
    for cmd in ([str(host_runner)], [sys.executable, str(worker)]):
        proc = subprocess.run([*cmd, str(built_fp32.path), "--inputs", str(f)], capture_output=True, text=True)
        assert proc.returncode == 2 and "give ids and mask of one length" in proc.stderr
    rows = built_fp32.manifest.model["vocab_size"]
    f.write_text(json.dumps(dict(input_ids=[5, rows, 5])))  # an id past the table aborted the gather kernel (SIGABRT)
    for cmd in ([str(host_runner)], [sys.executable, str(worker)]):
        proc = subprocess.run([*cmd, str(built_fp32.path), "--inputs", str(f)], capture_output=True, text=True)
        assert proc.returncode == 2 and f"input_ids has id {rows} is outside the model's token table (0..{rows - 1})" in proc.stderr
    f.write_text(json.dumps(dict(input_ids=[5] * 4)))  # the mask defaults to ones of the ids' length
    outs = [json.loads(subprocess.run([*cmd, str(built_fp32.path), "--inputs", str(f), "--iters", "1", "--warmup", "0"],
                                      capture_output=True, text=True, check=True).stdout)["outputs"][0]["data"]
            for cmd in ([str(host_runner)], [sys.executable, str(worker)])]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)


@pytest.mark.parametrize("which,min_sqnr", [("built_fp32", 80.0), ("built_int8_cls", 25.0)])
def test_arm_runner_under_qemu_matches_host(which, min_sqnr, arm_runner, host_runner, tmp_path, request):
    """ARM kernels (the arm64 wheel's XNNPACK) vs x86-64's on the same .pte and inputs: fp32 to
    rounding, int8 within its dynamic-quantization rounding (activation scales differ per kernel)."""
    a = load_artifact(request.getfixturevalue(which).path)
    f, _ = _inputs(a, tmp_path, TEXTS[1])
    args = [str(a.path), "--inputs", str(f), "--iters", "1", "--warmup", "0"]
    host = np.array(run_json([str(host_runner), *args])["outputs"][0]["data"])
    r = run_json(["qemu-aarch64", "-cpu", QEMU_CPU, "-L", ARM_SYSROOT, str(arm_runner), *args])
    arm = np.array(r["outputs"][0]["data"])
    assert r["device"]["machine"] == "aarch64"
    assert sqnr_db(torch.tensor(host), torch.tensor(arm)) > min_sqnr


def test_runner_refuses_a_changed_pte(built_fp32, host_runner, tmp_path):
    bad = tmp_path / "art"
    shutil.copytree(built_fp32.path, bad)
    with (bad / "model.pte").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    proc = subprocess.run([str(host_runner), str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "does not match the manifest" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,needle", [(["--iters", "0"], "--iters 0 is not an integer >= 1"),
                                         (["--bogus"], "unknown option --bogus"),
                                         (["--inputs", "/nonexistent.json"], "cannot read /nonexistent.json")])
def test_runner_bad_arguments(args, needle, built_fp32, host_runner):
    proc = subprocess.run([str(host_runner), str(built_fp32.path), *args], capture_output=True, text=True)
    assert proc.returncode == 2 and needle in proc.stderr


def test_bench_device_native_records_in_manifest(built_int8_cls, host_runner, tmp_path, capsys):
    art = tmp_path / "art"
    shutil.copytree(built_int8_cls.path, art)
    before = (art / "model.pte").read_bytes()
    code, out, err = run_cli(["bench", str(art), "--device", "native", "--iters", "3", "--warmup", "1", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["measured_on"]["kind"] == "host" and r["measured_on"]["cores"] >= 1
    m = load_artifact(art).manifest  # still verifies: the .pte is untouched
    assert (art / "model.pte").read_bytes() == before
    assert [d["measured_on"]["spec"] for d in m.devices] == ["native"] and m.devices[0]["iters"] == 3
    report = (art / "report.md").read_text()  # rewritten with the device's numbers beside the build's
    assert "## Budgets" in report and "Also measured this host `native`" in report


def test_bench_device_qemu_is_marked_emulated(built_fp32, arm_runner, tmp_path, capsys):
    art = tmp_path / "art"
    shutil.copytree(built_fp32.path, art)
    code, out, err = run_cli(["bench", str(art), "--device", "qemu-aarch64", "--iters", "1", "--warmup", "0"], capsys)
    assert code == 0, err
    assert "EMULATED (not device latency)" in " ".join(out.split())
    d = load_artifact(art).manifest.devices[0]
    assert d["measured_on"]["kind"] == "emulated" and d["measured_on"]["machine"] == "aarch64"


@pytest.mark.parametrize("args,needle", [
    (["bench", "{art}", "--device", "ftp://x"], "is not one of: native, qemu-aarch64"),
    (["bench", "{art}", "--device", "ssh://"], "is not ssh://[user@]host[:port][/dir]"),
    (["bench", "{art}", "--device", "ssh://pi@host:99999"], "is not ssh://[user@]host[:port][/dir]"),
    (["runtime", "build", "--arch", "mips"], "--arch 'mips' is not supported"),
    (["bench", "{art}", "--device", "adb:emulator-5554"], "adb"),
    (["runtime", "build", "--arch", "android-arm64"], "needs ExecuTorch's libraries built with the NDK"),
])
def test_bad_device_and_arch(args, needle, built_fp32, capsys):
    code, out, err = run_cli([x.format(art=built_fp32.path) for x in args], capsys)
    assert code == 2 and needle in " ".join(err.split()), err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def portable_lm(tiny_llama_folder, tmp_path_factory):
    import edgeformer

    out = tmp_path_factory.mktemp("lm") / "portable"
    return edgeformer.build(str(tiny_llama_folder), "host", out, quant="fp32", max_context=64, lm_ops="portable",
                            bench_iters=0).path


def greedy_python(art, prompt, n):
    from edgeformer.lm.generate import Sampling, generate

    a = load_artifact(art)
    prog = Program(a.pte_file, 2, causal_lm=True, data=a.data_file)
    return list(generate(prog, prompt, n, frozenset(), Sampling(temperature=0.0),
                         chunk=a.manifest.generation["max_tokens_per_call"]))


def test_runner_generates_what_python_generates(portable_lm, host_runner, arm_runner, tmp_path):
    """The portable LM: the runner's greedy ids and first logits equal the Python runtime's, on
    x86-64 and on ARM under qemu."""
    prompt = [5, 17, 33, 2, 41, 8, 60, 12, 9]
    f = tmp_path / "prompt.json"
    f.write_text(json.dumps({"prompt_ids": prompt}))
    args = [str(portable_lm), "--inputs", str(f), "--max-new-tokens", "20", "--ignore-eos", "--warmup", "0"]
    host = run_json([str(host_runner), *args])
    arm = run_json(["qemu-aarch64", "-cpu", QEMU_CPU, "-L", ARM_SYSROOT, str(arm_runner), *args])
    want = greedy_python(portable_lm, prompt, 20)
    assert host["kind"] == "causal_lm" and host["generated_ids"] == want
    assert arm["generated_ids"] == want
    np.testing.assert_allclose(arm["first_logits"], host["first_logits"], atol=1e-4)
    assert host["prompt_tokens"] == 9 and host["decode_tokens"] == 19 and host["decode_tok_s"] > 0


def test_runner_runs_the_int8_kv_cache(tiny_llama_folder, host_runner, tmp_path):
    """The portable LM with an int8 cache: the runner has the quantized kernels it needs and
    generates what the Python runtime does."""
    import edgeformer

    art = edgeformer.build(str(tiny_llama_folder), "host", tmp_path / "kv8", quant="fp32", max_context=64,
                           lm_ops="portable", kv_cache="int8", bench_iters=0).path
    prompt = [5, 17, 33, 2, 41, 8, 60, 12, 9]
    f = tmp_path / "prompt.json"
    f.write_text(json.dumps({"prompt_ids": prompt}))
    got = run_json([str(host_runner), str(art), "--inputs", str(f), "--max-new-tokens", "20", "--ignore-eos", "--warmup", "0"])
    assert got["generated_ids"] == greedy_python(art, prompt, 20)


def test_runner_memory_is_what_the_reply_touches(host_runner, tmp_path):
    """A 16384-token cache (32 MiB planned) that a 9-token prompt and 20 new tokens barely write:
    the runner maps planned memory as fresh pages, resident once written, so the model's memory is
    a fraction of the plan (Module's own zero-filled vectors made all of it resident from load).
    The prefill chunk (--seq-len 8) bounds what XNNPACK's workspace holds for attention scores."""
    import transformers as tf

    import edgeformer

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=64, hidden_size=128, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, max_position_embeddings=16384, eos_token_id=3, bos_token_id=2)
    tf.LlamaForCausalLM(cfg).eval().save_pretrained(tmp_path / "src", safe_serialization=True)
    write_tokenizer(tmp_path / "src")
    art = edgeformer.build(str(tmp_path / "src"), "host", tmp_path / "long", quant="fp32", max_context=16384, seq_len=8,
                           lm_ops="portable", bench_iters=0)
    assert art.manifest.generation["cache_mb"] == 32 and art.manifest.generation["max_tokens_per_call"] == 8
    prompt = [5, 17, 33, 2, 41, 8, 60, 12, 9]
    f = tmp_path / "prompt.json"
    f.write_text(json.dumps({"prompt_ids": prompt}))
    got = run_json([str(host_runner), str(art.path), "--inputs", str(f), "--max-new-tokens", "20", "--ignore-eos",
                    "--warmup", "0"])
    assert got["generated_ids"] == greedy_python(art.path, prompt, 20)
    assert got["planned_memory_mb"] > 32
    assert got["model_memory_mb"] < got["planned_memory_mb"] / 2, got  # 20 of 64 MiB here; 78 zero-filled


def test_runner_loads_the_data_file(tiny_gguf, host_runner, tmp_path):
    """A tied GGUF's table stored once, in model.ptd: the runner (and the Python worker) verify
    and load it beside the .pte and generate what the Python runtime does."""
    import sys
    from pathlib import Path

    import edgeformer

    art = edgeformer.build(str(tiny_gguf), "host", tmp_path / "tied", quant="gguf", max_context=64, lm_ops="portable",
                           bench_iters=0).path
    assert (art / "model.ptd").is_file()
    prompt = [5, 17, 33, 2, 41, 8, 60, 12, 9]
    f = tmp_path / "prompt.json"
    f.write_text(json.dumps({"prompt_ids": prompt}))
    args = [str(host_runner), str(art), "--inputs", str(f), "--max-new-tokens", "12", "--ignore-eos", "--warmup", "0"]
    want = greedy_python(art, prompt, 12)
    assert run_json(args)["generated_ids"] == want
    worker = Path(__file__).resolve().parents[2] / "runtimes" / "python" / "edgeformer_worker.py"
    assert run_json([sys.executable, str(worker), *args[1:]])["generated_ids"] == want  # the device-side Python twin
    seeded = [str(art), "--prompt-tokens", "40", "--max-new-tokens", "2", "--warmup", "0"]  # ids within the 256-row table
    assert run_json([str(host_runner), *seeded])["generated_ids"] == run_json([sys.executable, str(worker), *seeded])["generated_ids"]
    f.write_text(json.dumps({"prompt_ids": [5, 256]}))  # the tokenizer's added <|endoftext|>, past the 256-row table
    for cmd in (args, [sys.executable, str(worker), *args[1:]]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 2 and "prompt id 256 is outside the model's token table (0..255)" in proc.stderr
    (art / "model.ptd").write_bytes((art / "model.ptd").read_bytes()[:-1] + b"\0")
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 2 and "model.ptd sha256" in proc.stderr


@pytest.fixture(scope="module")
def peaky_llama(tmp_path_factory):
    """A tiny Llama with larger weights than the default's: its greedy text varies, so the ids
    follow what attention reads (a near-uniform model repeats one token whatever it reads)."""
    return make_tiny_llama(tmp_path_factory.mktemp("peaky"), chat=False, initializer_range=0.3, positions=512)


@pytest.mark.parametrize("cache", [dict(), dict(kv_cache="int8"), dict(attention=("window=16",), kv_cache="int8")],
                         ids=["full-fp32", "full-int8", "ring-int8"])
def test_runner_runs_the_llm_custom_ops(cache, peaky_llama, host_runner, arm_runner, tmp_path):
    """The default LM build (`--lm-ops custom`): the runner's own llama::update_cache,
    update_cache_with_indices, custom_sdpa and custom_quantized_sdpa (runtimes/cpp/llm_ops.cpp)
    generate 150 tokens id for id as the Python runtime's ExecuTorch kernels do, with the same
    logits after the prompt, on x86-64 and on ARM under qemu; the ring (window 16) wraps."""
    import edgeformer

    art = edgeformer.build(str(peaky_llama), "host", tmp_path / "custom", quant="fp32", max_context=256, bench_iters=0,
                           **cache).path
    assert load_artifact(art).manifest.generation["ops"] == "custom"
    prompt = [5, 17, 33, 2, 41, 8, 60, 12, 9]
    f = tmp_path / "prompt.json"
    f.write_text(json.dumps({"prompt_ids": prompt}))
    args = [str(art), "--inputs", str(f), "--max-new-tokens", "150", "--ignore-eos", "--warmup", "0"]
    want = greedy_python(art, prompt, 150)
    assert len(set(want)) > 20  # the text varies
    host = run_json([str(host_runner), *args])
    arm = run_json(["qemu-aarch64", "-cpu", QEMU_CPU, "-L", ARM_SYSROOT, str(arm_runner), *args])
    sse2 = run_json([str(host_runner), *args], env=dict(os.environ, EDGEFORMER_RUNNER_NO_AVX2="1"))  # x86 without AVX2
    assert host["generated_ids"] == want and arm["generated_ids"] == want and sse2["generated_ids"] == want
    a = load_artifact(art)
    first = Program(a.pte_file, 2, causal_lm=True, data=a.data_file)(torch.tensor([prompt]), torch.tensor([0]))
    np.testing.assert_allclose(host["first_logits"], first[0, -1].numpy(), atol=1e-4)
    np.testing.assert_allclose(arm["first_logits"], host["first_logits"], atol=1e-4)


def test_python_worker_agrees_with_the_runner(built_fp32, portable_lm, host_runner, tmp_path):
    """runtimes/python/edgeformer_worker.py (for devices with executorch but no runner): same
    arguments, same JSON, same numbers as the C++ runner."""
    import sys
    from pathlib import Path

    worker = Path(__file__).resolve().parents[2] / "runtimes" / "python" / "edgeformer_worker.py"
    a = load_artifact(built_fp32.path)
    f, _ = _inputs(a, tmp_path, TEXTS[0])
    args = [str(a.path), "--inputs", str(f), "--iters", "2", "--warmup", "0"]
    py, cc = run_json([sys.executable, str(worker), *args]), run_json([str(host_runner), *args])
    assert set(cc) - set(py) == set() and py["kind"] == "encoder"
    np.testing.assert_allclose(py["outputs"][0]["data"], cc["outputs"][0]["data"], atol=1e-6)
    lm_args = [str(portable_lm), "--prompt-tokens", "7", "--max-new-tokens", "9", "--ignore-eos", "--warmup", "0"]
    assert run_json([sys.executable, str(worker), *lm_args])["generated_ids"] == run_json([str(host_runner), *lm_args])["generated_ids"]
