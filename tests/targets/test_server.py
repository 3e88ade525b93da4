"""--target server-cuda: an AOTInductor package; without a GPU a clear stop or --fallback cpu."""

import json

import pytest
import torch
from conftest import SEQ, run_cli

import edgeformer
from edgeformer.artifact import load_artifact
from edgeformer.errors import UserError
from edgeformer.predict import Predictor

GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def cpu_server(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("server") / "cpu"
    return edgeformer.build(str(tiny_bert), "server-cuda", out, seq_len=SEQ, fallback="cpu", bench_iters=5)


@pytest.mark.skipif(GPU, reason="this machine has a GPU")
def test_without_a_gpu_it_stops_and_names_the_fallback(tiny_bert, tmp_path):
    with pytest.raises(UserError, match=r"needs a CUDA GPU and this machine has none .* --fallback cpu"):
        edgeformer.build(str(tiny_bert), "server-cuda", tmp_path / "x", seq_len=SEQ, bench_iters=0)
    assert list(tmp_path.iterdir()) == []


def test_cpu_fallback_package_runs_and_matches(cpu_server):
    m = cpu_server.manifest
    assert m.pte["file"] == "model.pt2" and m.pte["format"] == "aoti" and m.pte["device"] == "cpu"
    assert m.delegation["backend"] == "AOTInductor" and m.delegation["details"]["quantization"] == "Int8DynamicActivationInt8WeightConfig"
    assert m.numerics["sqnr_db_vs_exported"] > 30 and m.numerics["sqnr_db"] > 20  # int8 dynamic vs fp32
    assert m.measurements["measured_on"]["kind"] == "host" and m.measurements["latency_ms_p50"] > 0
    lat = next(b for b in m.budgets if b["name"] == "max_latency_ms_p50")
    assert lat["limit"] == 50 and lat["passed"] is True  # the CPU fallback's budgets, not the GPU's 5 ms
    a = load_artifact(cpu_server.path)
    out = Predictor(a)("a server-side embedding")["embedding"]
    assert len(out) == m.outputs[0]["shape"][1] and abs(sum(x * x for x in out) - 1) < 1e-3


def test_cli_run_and_bench_on_the_package(cpu_server, capsys):
    code, out, err = run_cli(["run", str(cpu_server.path), "hello there", "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["results"][0]["embedding"]) == cpu_server.manifest.outputs[0]["shape"][1]
    code, out, err = run_cli(["bench", str(cpu_server.path), "--iters", "3", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["latency_ms_p50"] > 0
    code, out, err = run_cli(["inspect", str(cpu_server.path)], capsys)
    assert code == 0 and "AOTInductor" in out, err


@pytest.mark.parametrize("args,needle", [
    (["--fallback", "cpu", "--quant", "8da4w"], "int4 weight-only, a CUDA kernel"),
    (["--fallback", "tpu"], "--fallback 'tpu': the one fallback is cpu"),
    (["--fallback", "cpu", "--prune", "auto"], "takes a model as it is"),
])
def test_server_bad_options(args, needle, tiny_bert, tmp_path, capsys):
    code, _, err = run_cli(["build", str(tiny_bert), "--target", "server-cuda", "-o", str(tmp_path / "x"), "--seq-len", "16",
                            *args], capsys)
    assert code == 2 and needle in " ".join(err.split()), err
    assert not (tmp_path / "x").exists()


def test_fallback_is_only_for_server(tiny_bert, tmp_path):
    with pytest.raises(UserError, match="--fallback cpu applies to --target server-cuda"):
        edgeformer.build(str(tiny_bert), "host", tmp_path / "x", seq_len=SEQ, fallback="cpu", bench_iters=0)


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("quant,min_sqnr", [("fp32", 60.0), ("int8", 25.0), ("8da4w", 12.0)])
def test_gpu_package(quant, min_sqnr, tiny_bert, tmp_path):
    r = edgeformer.build(str(tiny_bert), "server-cuda", tmp_path / quant, seq_len=SEQ, quant=quant, bench_iters=20,
                         min_sqnr_db=0)
    m = r.manifest
    assert m.pte["device"] == "cuda" and m.numerics["sqnr_db"] > min_sqnr
    assert m.measurements["latency_ms_p50"] > 0
