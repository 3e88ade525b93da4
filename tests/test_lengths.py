"""Encoders at their inputs' own length: one `.pte` takes any length from 1 to --seq-len."""

import pytest
import torch

import edgeformer
from edgeformer.artifact import load_artifact
from edgeformer.errors import UserError
from edgeformer.models import load_model
from edgeformer.models.hf import reference_forward
from edgeformer.predict import Predictor
from edgeformer.program import Program

LENGTHS = (1, 2, 7, 8, 15, 16)  # 16 is the artifacts' --seq-len


@pytest.fixture(scope="module")
def built_fp32_cls(tiny_bert_cls, tmp_path_factory):
    return edgeformer.build(str(tiny_bert_cls), "host", tmp_path_factory.mktemp("art") / "cls", quant="fp32",
                            embedding_quant="fp32", seq_len=16, bench_iters=0)


@pytest.mark.parametrize("which", ["built_fp32", "built_fp32_cls"])
def test_one_pte_is_exact_at_every_length(which, request):
    """The .pte vs its exported program and vs Hugging Face at lengths 1 to the maximum, with
    and without padding inside (the mask still counts)."""
    r = request.getfixturevalue(which)
    m = r.manifest
    assert m.any_length and m.inputs[0]["min_shape"] == [1, 1] and m.inputs[0]["shape"] == [1, 16]
    hf = load_model(m.model["path"]).hf
    program, exported = Program(r.path / "model.pte", 2), r.exported.module()
    g = torch.Generator().manual_seed(0)
    for n in LENGTHS:
        ids = torch.randint(5, m.tokenizer["vocab_size"], (1, n), generator=g)
        for mask in (torch.ones(1, n, dtype=torch.long), torch.tensor([[1] * (n - n // 3) + [0] * (n // 3)])):
            out = program(ids, mask)
            assert out.shape == tuple(m.outputs[0]["shape"])
            torch.testing.assert_close(out, exported(ids, mask), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out, reference_forward(hf, ids, mask), atol=1e-5, rtol=1e-5)


def test_dynamic_length_stays_in_one_delegate(built_fp32, built_fp32_cls):
    """Every reshape keeps the length as its one inferred dim and q/k/v are three linears: one
    XNNPACK subgraph; outside it only the gather, the length read and the slices of two
    constants to the length (position rows; the classifier's first-token selector)."""
    for r, slices in ((built_fp32, 1), (built_fp32_cls, 2)):
        d = r.manifest.delegation
        assert d["delegated_subgraphs"] == 1, d
        allowed = {"aten_embedding_default", "aten_slice_copy_tensor", "sym_size", "dim_order_ops__to_dim_order_copy_default"}
        assert set(d["non_delegated_ops"]) <= allowed, d["non_delegated_ops"]
        assert d["non_delegated_ops"]["aten_slice_copy_tensor"] == slices


def test_predictor_runs_each_text_at_its_length(built_fp32):
    a = load_artifact(built_fp32.path)
    pred = Predictor(a)
    hf = load_model(a.manifest.model["path"]).hf
    for text in ("great tea", "love the granola nuts and would buy again"):
        enc = pred.text.encode(text)
        assert enc.input_ids.shape[1] == enc.num_tokens < 16 and bool(enc.attention_mask.all())
        torch.testing.assert_close(torch.tensor([pred(text)["embedding"]]), reference_forward(hf, enc.input_ids, enc.attention_mask),
                                   atol=1e-5, rtol=0)
    long = " ".join(["tea"] * 40)
    assert pred(long)["truncated"] and pred.text.encode(long).input_ids.shape[1] == 16


def test_window_and_hard_attention_stay_static(tiny_bert_cls, tmp_path):
    r = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "w", quant="fp32", seq_len=16, attention="window=8",
                         bench_iters=0)
    assert not r.manifest.any_length and r.manifest.inputs[0] == dict(name="input_ids", dtype="int64", shape=[1, 16])
    assert Predictor(load_artifact(r.path)).text.encode("great tea").input_ids.shape == (1, 16)  # padded
    with pytest.raises(UserError, match=r"--lengths dynamic: a window of 8 runs blocks picked by length past 12 tokens, and "
                                        r"--seq-len is 16 \(any length works up to 12\); use --lengths static"):
        edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "x", seq_len=16, attention="window=8", lengths="dynamic")
    with pytest.raises(UserError, match=r"--lengths dynamic: --attention hard=top4:layers=1 runs static-shaped "
                                        r"\(hard and sdpa attention take one length\)"):
        edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "x", seq_len=16, attention="hard=top4:layers=1", lengths="dynamic")
    with pytest.raises(UserError, match=r"--lengths 'any' is not a known scheme; use one of: auto, dynamic, static"):
        edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "x", seq_len=16, lengths="any")
    assert not (tmp_path / "x").exists()


def test_a_window_that_scores_under_a_band_takes_any_length(tiny_bert_cls, tmp_path):
    """Up to 3 * (window // 2) tokens the window kernel scores n×n under a band computed in the
    graph, so the .pte takes any length and stays exact; past that it would pick blocks by length."""
    r = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "w", quant="fp32", embedding_quant="fp32", seq_len=16,
                         attention="window=12", bench_iters=0)
    m = r.manifest
    assert m.any_length and m.model["attention"]["layers"] == ["window 12+1g"] * 2
    assert m.delegation["delegated_subgraphs"] == 1
    program, exported = Program(r.path / "model.pte", 2), r.exported.module()
    windowed = load_model(str(tiny_bert_cls)).encoder
    for ly in windowed.layers:
        ly.attn.set_window(12, 1)
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 16):
        ids = torch.randint(5, m.tokenizer["vocab_size"], (1, n), generator=g)
        mask = torch.ones(1, n, dtype=torch.long)
        out = program(ids, mask)
        torch.testing.assert_close(out, exported(ids, mask), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out, windowed(ids, mask), atol=1e-5, rtol=1e-5)


def test_seq_len_must_leave_room_for_text(tiny_bert, tmp_path):
    with pytest.raises(UserError, match=r"--seq-len 2 leaves no room for text: the tokenizer adds 2 special tokens; use --seq-len 3"):
        edgeformer.build(str(tiny_bert), "host", tmp_path / "x", seq_len=2, bench_iters=0)
    assert not (tmp_path / "x").exists()


def test_lengths_static_pads_as_before(tiny_bert, tmp_path):
    r = edgeformer.build(str(tiny_bert), "host", tmp_path / "s", quant="fp32", seq_len=16, lengths="static", bench_iters=0)
    assert not r.manifest.any_length and r.manifest.recipe["lengths"] == "static"
    program = Program(r.path / "model.pte", 2)
    with pytest.raises(UserError):  # the runtime refuses a shape the static program was not built for
        program(torch.ones(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.long))
