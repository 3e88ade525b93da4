"""build --attention end to end on a tiny classifier: everything delegated, .pte equals eager."""

import json

import pytest
from conftest import SEQ, run_cli

import edgeformer

# The only nodes left outside XNNPACK in an edgeformer encoder: the token-embedding gather
# (no gather in XNNPACK) and the int64 -> float cast of the attention mask.
INPUT_ONLY = {"aten_embedding_default", "dim_order_ops__to_dim_order_copy_default"}
# At a dynamic length also the length read and the slices of constants to it (position rows,
# the first-token selector, the band's positions), all before the delegate.
ANY_LENGTH = {"aten_slice_copy_tensor", "sym_size"}


@pytest.mark.parametrize("spec,seq", [
    ("window=4", SEQ),
    ("window=12", SEQ),  # up to 3 blocks long: n×n scores under a band mask computed in the graph, at any length
    ("window=10:global=0", 18),  # 18 is not a multiple of the block (5)
    ("hard=top3:layers=1", SEQ),
    ("window=4+hard=top2:layers=0", 18),
])
def test_transformed_pte_is_fully_delegated_and_equals_eager(tiny_bert_cls, tmp_path, spec, seq):
    r = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "a", quant="fp32", embedding_quant="fp32", seq_len=seq,
                         batch=8 if spec == "window=12" else 1,  # the band at any length in a batch method too; one is enough
                         bench_iters=0, attention=spec)
    d, n = r.manifest.delegation, r.manifest.numerics
    assert d["delegated_subgraphs"] == 1
    assert r.manifest.any_length == (spec == "window=12")
    assert set(d["non_delegated_ops"]) == INPUT_ONLY | (ANY_LENGTH if r.manifest.any_length else set()), d["non_delegated_ops"]
    assert n["reference"] == "fp32 with the attention transform"
    assert n["max_abs_err_vs_exported"] < 1e-5 and n["sqnr_db"] > 80  # vs the transformed eager model
    att = r.manifest.model["attention"]
    assert att["applied"] and len(att["layers"]) == 2 and att["spec"]


def test_stock_sdpa_leaves_masking_outside_the_delegate(tiny_bert_cls, tmp_path):
    """The contrast the edge rewrite removes: what a plain export of SDPA + LayerNorm leaves outside."""
    r = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "a", quant="fp32", embedding_quant="fp32", seq_len=SEQ, batch=1,
                         bench_iters=0, attention="sdpa")
    outside = set(r.manifest.delegation["non_delegated_ops"]) - INPUT_ONLY
    assert {"aten_where_self", "aten_logical_not_default"} <= outside
    assert r.manifest.delegation["delegated_subgraphs"] > 1
    assert r.manifest.numerics["reference"] == "fp32 Hugging Face" and r.manifest.numerics["sqnr_db"] > 80


def test_hard_layers_chosen_on_validation(tiny_bert_cls, data_csv, tmp_path):
    r = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "a", quant="fp32", embedding_quant="fp32", seq_len=SEQ, batch=1,
                         bench_iters=0, attention="hard=top2", data=str(data_csv))
    hard = r.manifest.model["attention"]["hard"]
    sel = r.manifest.model["hard_attention_selection"]
    assert hard["chosen_by"] == "validation accuracy" and set(hard["layers"]) <= {0, 1}
    assert set(sel["per_layer_accuracy"]) == {0, 1} and sel["accuracy"] >= sel["full_accuracy"]
    assert sel["data"].endswith(":validation")


def test_cli_attention_errors_are_one_line(tiny_bert_cls, tmp_path, capsys):
    code, _, err = run_cli(["build", str(tiny_bert_cls), "-o", str(tmp_path / "a"), "--seq-len", "16",
                            "--attention", "window=64"], capsys)
    assert code == 2 and "window=64 is larger than the sequence (16)" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_inspect_profiles_what_runs_outside(tiny_bert_cls, tmp_path, capsys):
    out = tmp_path / "a"
    edgeformer.build(str(tiny_bert_cls), "host", out, seq_len=SEQ, batch=1, bench_iters=0, attention="window=4", min_sqnr_db=0)
    code, stdout, _ = run_cli(["inspect", str(out), "--iters", "3", "--json"], capsys)
    assert code == 0
    p = json.loads(stdout)["profile"]
    assert p["runs"] == 3 and p["total_ms"] > 0
    assert {o["op"] for o in p["outside"]} == {"_to_dim_order_copy.out", "embedding_byte.out"}
    assert 0.5 < p["delegate_share"] <= 1.0 and p["inside"]
    code, stdout, _ = run_cli(["inspect", str(out), "--iters", "2"], capsys)
    assert code == 0 and "time share" in stdout and "quantized_decomposed_embedding_byte_default" in stdout


def test_seq_len_beyond_positions_needs_positions_copy(tiny_bert, tmp_path):
    with pytest.raises(edgeformer.UserError, match=r"exceeds the model's 40 positions.*--attention positions=copy"):
        edgeformer.build(str(tiny_bert), "host", tmp_path / "a", seq_len=64, bench_iters=0, attention="window=8")
    r = edgeformer.build(str(tiny_bert), "host", tmp_path / "a", quant="fp32", embedding_quant="fp32", seq_len=64, batch=1,
                         bench_iters=0, attention="window=8+positions=copy")
    assert r.manifest.inputs[0]["shape"] == [1, 64] and r.manifest.numerics["max_abs_err_vs_exported"] < 1e-5
    assert set(r.manifest.delegation["non_delegated_ops"]) == INPUT_ONLY


def test_classifier_beyond_positions_with_positions_copy(tiny_bert_cls, tmp_path):
    """The first-token row grows with the tiled position table (any length up to 64)."""
    r = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "a", quant="fp32", embedding_quant="fp32", seq_len=64, batch=1,
                         bench_iters=0, attention="positions=copy")
    assert r.manifest.any_length and r.manifest.numerics["max_abs_err_vs_exported"] < 1e-5
    r = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "b", quant="fp32", embedding_quant="fp32", seq_len=64, batch=1,
                         bench_iters=0, attention="window=8+positions=copy")
    assert r.manifest.numerics["max_abs_err_vs_exported"] < 1e-5
