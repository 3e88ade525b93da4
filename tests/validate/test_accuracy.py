"""eval of a .pte vs eager, and the accuracy budget of build."""

import pytest
from conftest import SEQ

import edgeformer
from edgeformer.errors import BudgetError, UserError
from edgeformer.validate.accuracy import evaluate, macro_f1


@pytest.fixture(scope="module")
def eval_csv(tmp_path_factory):
    f = tmp_path_factory.mktemp("data") / "eval.csv"
    rows = [("love this product", "positive"), ("great tea", "positive"), ("bad box arrived broken", "negative"),
            ("stale and bitter coffee", "negative"), ("would buy again", "positive"), ("not good", "negative")]
    f.write_text("text,label\n" + "\n".join(f"{t},{lab}" for t, lab in rows) + "\n")
    return f


def test_macro_f1():
    assert macro_f1([0, 0, 1, 1], [0, 0, 1, 1], 2) == 1.0
    assert macro_f1([0, 0, 0, 0], [0, 0, 1, 1], 2) == pytest.approx((2 / 3 + 0) / 2)


def test_pte_eval_agrees_with_eager(built_int8_cls, eval_csv):
    r = evaluate(str(built_int8_cls.path), str(eval_csv))
    assert r["runtime"] == "executorch" and r["examples"] == 6 and r["task"] == "classifier"
    assert r["agreement"] >= 5 / 6  # int8 .pte vs fp32 eager on a random tiny model
    assert r["accuracy_drop_points"] == pytest.approx((r["reference_accuracy"] - r["accuracy"]) * 100, abs=1e-6)
    eager = evaluate(str(built_int8_cls.manifest.model["path"]), str(eval_csv))
    assert eager["runtime"] == "eager-fp32" and eager["accuracy"] == r["reference_accuracy"]


def test_labels_must_match_the_head(built_int8_cls, tmp_path):
    f = tmp_path / "other.csv"
    f.write_text("text,label\ngreat tea,great\nbad tea,other\n")
    with pytest.raises(UserError, match=r"data labels \['great', 'other'\] are not in the model's head \['negative', 'positive'\]"):
        evaluate(str(built_int8_cls.path), str(f))


def test_build_records_accuracy_and_enforces_the_drop(tiny_bert_cls, eval_csv, tmp_path):
    r = edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "a", quant="fp32", embedding_quant="fp32", seq_len=SEQ, batch=1,
                         bench_iters=0, eval_data=str(eval_csv))
    assert r.manifest.accuracy["accuracy_drop_points"] == 0.0 and r.manifest.accuracy["agreement"] == 1.0
    from edgeformer.tables import inspect_tables
    from edgeformer.validate.size import size_breakdown

    info = inspect_tables(r.manifest, size_breakdown((r.path / "model.pte").read_bytes()))[0]
    assert "accuracy" in info.columns[0]._cells
    check = r.manifest.budgets[-1]
    assert check["name"] == "max_accuracy_drop" and check["passed"] is True and check["where"] == "artifact"
    # A budget no model can meet (a negative drop = more accurate than fp32 by 100 points) must fail the build.
    with pytest.raises(BudgetError, match=r"max_accuracy_drop: measured 0.00 points, budget <= -100"):
        edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "b", lengths="static", quant="fp32", embedding_quant="fp32",
                         seq_len=SEQ, batch=1,
                         bench_iters=0, eval_data=str(eval_csv), max_accuracy_drop=-100)
    assert not (tmp_path / "b").exists()


def test_bad_eval_data_fails_before_lowering(tiny_bert_cls, tmp_path, monkeypatch):
    from edgeformer.targets import xnnpack

    def never(*a, **k):
        raise AssertionError("lowering ran before the eval data was checked")

    monkeypatch.setattr(xnnpack, "lower", never)
    with pytest.raises(UserError, match="neither a file nor a built-in data set"):
        edgeformer.build(str(tiny_bert_cls), "host", tmp_path / "a", seq_len=SEQ, bench_iters=0, eval_data="typo.csv")
    assert not (tmp_path / "a").exists()
