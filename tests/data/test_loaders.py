"""Data specs, files, fixed splits, and every bad-data error."""

import json

import pytest

from edgeformer.data import carve, load_data
from edgeformer.errors import UserError


def _csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_csv_and_jsonl(tmp_path):
    d = load_data(str(_csv(tmp_path / "a.csv", ["good tea,pos", '"bad, stale coffee",neg'])))
    assert d.texts == ["good tea", "bad, stale coffee"] and d.labels == ["pos", "neg"] and d.label_names == ["neg", "pos"]
    j = tmp_path / "a.jsonl"
    j.write_text("\n".join(json.dumps(dict(review=t, stars=s)) for t, s in [("nice", "5"), ("meh", "2")]) + "\n")
    d = load_data(str(j), text_column="review", label_column="stars")
    assert d.labels == ["5", "2"]


def test_validation_split_is_fixed_and_disjoint(tmp_path):
    rows = [f"text {i},{'pos' if i % 2 else 'neg'}" for i in range(80)]
    f = str(_csv(tmp_path / "a.csv", rows))
    train, val = load_data(f + ":train"), load_data(f + ":validation")
    assert len(val) == 10 and len(train) == 70 and not set(train.texts) & set(val.texts)
    assert load_data(f + ":validation").texts == val.texts  # seeded: the same every time
    assert carve(load_data(f), "validation").texts == val.texts


@pytest.mark.parametrize("content,kw,msg", [
    (b"text,label\nok,pos\n", dict(text_column="review"),
     r"has no column 'review'; columns: \['text', 'label'\]; choose one with --text-column"),
    (b"text,label\nok,pos\n,neg\n", {}, r"row 2 has an empty 'text' or 'label'"),
    (b"text,label\nok,\n", {}, r"row 1 has an empty"),
    (b"text,label\n", {}, r"has no rows"),
])
def test_bad_files(tmp_path, content, kw, msg):
    f = tmp_path / "d.csv"
    f.write_bytes(content)
    with pytest.raises(UserError, match=msg):
        load_data(str(f), **kw)


def test_non_utf8_data_is_read_with_replacement(tmp_path, capsys):
    f = tmp_path / "d.csv"
    f.write_bytes(b"text,label\ncaf\xe9,pos\nok,neg\n")
    d = load_data(str(f))
    assert d.texts == ["caf\ufffd", "ok"]
    assert "is not valid UTF-8 (line 2, byte offset 3: 0xe9; 1 line(s) in all)" in capsys.readouterr().err
    f.write_text('text,label\n"two\u2028lines, one review",pos\n"quoted\nbreak",neg\n', encoding="utf-8")
    assert load_data(str(f)).texts == ["two\u2028lines, one review", "quoted\nbreak"]


def test_bad_specs(tmp_path):
    with pytest.raises(UserError, match="neither a file nor a built-in data set; built-in: fine-foods"):
        load_data("nope.csv")
    with pytest.raises(UserError, match="unknown split 'dev'; use one of train, validation, test"):
        load_data("fine-foods:dev")
    f = tmp_path / "d.txt"
    f.write_text("x")
    with pytest.raises(UserError, match=r"must end in .csv or .jsonl"):
        load_data(str(f))


def test_fine_foods_real_slice():
    try:
        test = load_data("fine-foods:test")
    except UserError as e:
        pytest.skip(f"fine-foods could not be fetched here: {e}")
    train, val = load_data("fine-foods:train"), load_data("fine-foods:validation")
    assert (len(train), len(val), len(test)) == (3500, 500, 1000)
    assert test.label_names == ["great", "other"] and test.labels.count("great") == 658
    assert not set(train.texts[:200]) & set(val.texts)
