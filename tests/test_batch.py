"""Encoders in batches: the `.pte`'s batch method ([B, 1..S]) beside forward, and everything
that runs many texts (Predictor.batch, `run`, `eval`) going through it."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import edgeformer
from edgeformer.artifact import load_artifact
from edgeformer.batching import by_length, run_batched, stack
from edgeformer.errors import UserError
from edgeformer.models import load_model
from edgeformer.models.hf import reference_forward
from edgeformer.predict import Predictor
from edgeformer.program import Program
from edgeformer.tokenize import Encoded
from edgeformer.validate.accuracy import Runner
from tests.conftest import run_cli

TEXTS = ["great tea", "love the granola nuts and would buy again and again", "x", "too sweet for me",
         "the coffee arrived stale and the box was crushed", "ok", "would not buy", "best snack ever",
         "my dog loves these treats", "salty", "fine"]


@pytest.fixture(scope="module")
def built_fp32_cls(tiny_bert_cls, tmp_path_factory):
    return edgeformer.build(str(tiny_bert_cls), "host", tmp_path_factory.mktemp("art") / "cls", quant="fp32",
                            embedding_quant="fp32", seq_len=16, bench_iters=0, batch=4)


def encoded(ids: list[int]) -> Encoded:
    return Encoded(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), len(ids), False)


def test_batches_sort_by_length_and_fill_with_the_last_text():
    e = [encoded([1] * n) for n in (3, 9, 1, 5, 7)]
    assert by_length(e, 2) == [[1, 4], [3, 0], [2]]
    ids, mask = stack([e[3], e[0]], pad_id=0, rows=4)
    assert ids.shape == (4, 5) and mask.tolist() == [[1] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]


def test_run_batched_keeps_the_input_order_and_drops_the_fill():
    e = [encoded([n] * n) for n in (3, 9, 1, 5, 7, 2)]
    calls = []

    def batch(ids, mask):  # the first id of each row, and the row count seen
        calls.append(ids.shape[0])
        return ids[:, :1].float()

    out = run_batched(e, 0, 4, batch, single=lambda ids, mask: ids[:, :1].float())
    assert out.reshape(-1).tolist() == [3, 9, 1, 5, 7, 2]
    assert calls == [4]  # the last 2 texts (<= 4/2) ran one at a time
    calls.clear()
    run_batched(e, 0, 4, batch, static=False)
    assert calls == [4, 2]


@pytest.mark.parametrize("which", ["built_fp32", "built_fp32_cls"])
def test_batch_method_is_exact_at_every_length(which, request):
    """Rows of different lengths padded in one call equal each text alone through forward and
    Hugging Face (fp32, tight), at lengths 1, 7 and the maximum."""
    r = request.getfixturevalue(which)
    m = r.manifest
    size = m.batch["size"]
    assert m.batch["inputs"][0]["shape"] == [size, 16] and m.batch["inputs"][0]["min_shape"] == [size, 1]
    assert m.batch["numerics"]["max_abs_err_vs_exported"] < 1e-5 and m.batch["numerics"]["max_abs_err_vs_forward"] < 1e-5
    assert m.numerics["sqnr_db_vs_exported_batch"] == m.batch["numerics"]["sqnr_db_vs_exported"] > 60
    single, batch = Program(r.path / "model.pte", 2), Program(r.path / "model.pte", 2, method=m.batch["method"])
    hf = load_model(m.model["path"]).hf
    g = torch.Generator().manual_seed(0)
    for longest in (1, 7, 16):
        lengths = [longest] + [max(1, longest - k) for k in range(1, size)]
        texts = [encoded(torch.randint(5, m.tokenizer["vocab_size"], (n,), generator=g).tolist()) for n in lengths]
        ids, mask = stack(texts, m.tokenizer["pad_id"], size)
        out = batch(ids, mask)
        assert out.shape[0] == size
        torch.testing.assert_close(out, reference_forward(hf, ids, mask), atol=1e-5, rtol=1e-5)
        alone = torch.cat([single(t.input_ids, t.attention_mask) for t in texts])
        torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-5)


def test_batch_method_stays_in_one_delegate(built_fp32, built_fp32_cls):
    """The batch method leaves outside XNNPACK exactly what forward leaves (no expand, no zeros)."""
    for r in (built_fp32, built_fp32_cls):
        b = r.manifest.batch["delegation"]
        assert b["delegated_subgraphs"] == 1
        assert b["non_delegated_ops"] == r.manifest.delegation["non_delegated_ops"]


def test_weights_are_stored_once(tiny_bert, built_fp32, tmp_path):
    """The batch method shares forward's weights in the .pte: it adds program, not weights."""
    one = edgeformer.build(str(tiny_bert), "host", tmp_path / "one", quant="fp32", embedding_quant="fp32", seq_len=16,
                           bench_iters=0, batch=1)
    assert one.manifest.batch is None and one.manifest.recipe["batch"] == 1
    weights = sum(p.numel() * 4 for p in load_model(str(tiny_bert)).encoder.parameters())
    assert built_fp32.manifest.pte["bytes"] - one.manifest.pte["bytes"] < weights / 2
    worker = Path(__file__).resolve().parents[1] / "runtimes" / "python" / "edgeformer_worker.py"
    p = subprocess.run([sys.executable, str(worker), str(one.path), "--text", "hi", "--batch"], capture_output=True, text=True)
    assert p.returncode == 2 and "has no batch method; rebuild it with edgeformer build --batch 8" in p.stderr


def test_predictor_batch_equals_one_at_a_time(built_fp32, built_fp32_cls):
    for r in (built_fp32, built_fp32_cls):
        pred = Predictor(load_artifact(r.path))
        together = pred.batch(TEXTS)
        assert [x["text"] for x in together] == TEXTS
        for a, b in zip(together, map(pred, TEXTS), strict=True):
            assert a["tokens"] == b["tokens"] and a.get("label") == b.get("label")
            key = "embedding" if "embedding" in a else "score"
            torch.testing.assert_close(torch.tensor(a[key]), torch.tensor(b[key]), atol=1e-5, rtol=0)


def test_eval_runner_batches_artifact_and_reference(built_fp32_cls):
    """`eval`'s outputs for the artifact and for the eager fp32 model, batched, equal the
    per-text outputs."""
    art = Runner(str(built_fp32_cls.path))
    ref = Runner(built_fp32_cls.manifest.model["path"], seq_len=16)
    alone = torch.cat([reference_forward(ref.loaded.hf, e.input_ids, e.attention_mask) for e in map(ref.text.encode, TEXTS)])
    torch.testing.assert_close(art.outputs(TEXTS), alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref.outputs(TEXTS), alone, atol=1e-5, rtol=1e-5)


def test_run_file_goes_through_the_batch_method(built_fp32_cls, tmp_path, capsys):
    f = tmp_path / "texts.txt"
    f.write_text("\n".join(TEXTS) + "\n")
    code, out, _ = run_cli(["run", str(built_fp32_cls.path), "-f", str(f)], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    pred = Predictor(load_artifact(built_fp32_cls.path))
    assert [ln.split("\t")[2] for ln in lines] == TEXTS
    assert [ln.split("\t")[0] for ln in lines] == [pred(t)["label"] for t in TEXTS]


@pytest.mark.parametrize("args, match", [
    (dict(batch=0), "--batch 0 is out of range; use 1"),
    (dict(batch=65), "--batch 65 is out of range"),
    (dict(target="android-vulkan", batch=4), "--batch 4: the batch method is built for XNNPACK"),
    (dict(target="server-cuda", batch=4, fallback="cpu"), "--batch 4 is for the XNNPACK targets"),
])
def test_bad_batch_is_one_line(args, match, tiny_bert, tmp_path):
    with pytest.raises(UserError, match=match):
        edgeformer.build(str(tiny_bert), out=tmp_path / "a", **{"target": "host", **args})
    assert not (tmp_path / "a").exists()


def test_batch_is_refused_for_causal_lms(tiny_gguf, tmp_path):
    with pytest.raises(UserError, match="--batch 4 applies to encoders"):
        edgeformer.build(str(tiny_gguf), "host", tmp_path / "lm", batch=4)


def test_bench_batch_times_the_batch_method(built_fp32_cls, capsys):
    code, out, err = run_cli(["bench", str(built_fp32_cls.path), "--batch", "--iters", "3", "--warmup", "1", "--json"], capsys)
    assert code == 0, err
    import json

    r = json.loads(out)
    assert r["batch"] == 4 and r["ms_per_text"] == pytest.approx(r["latency_ms_p50"] / 4)
    code, _, err = run_cli(["bench", str(built_fp32_cls.path), "--batch", "--device", "native"], capsys)
    assert code == 2 and "--device runs the C++ runner: use its --batch on texts" in err
