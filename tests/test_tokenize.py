import pytest

from edgeformer.errors import UserError
from edgeformer.tokenize import TextEncoder, read_texts


def test_pads_to_the_exported_length(tiny_bert):
    e = TextEncoder(tiny_bert / "tokenizer.json", seq_len=16, pad_id=0).encode("the coffee was stale")
    assert e.input_ids.shape == e.attention_mask.shape == (1, 16)
    assert e.attention_mask.sum() == 6 and e.num_tokens == 6 and not e.truncated  # [CLS] 4 words [SEP]
    assert e.input_ids[0, 6:].tolist() == [0] * 10


def test_long_text_truncates_or_refuses(tiny_bert):
    te = TextEncoder(tiny_bert / "tokenizer.json", seq_len=8, pad_id=0)
    long = "the coffee was stale and bitter great tea love this product"
    e = te.encode(long)
    assert e.truncated and e.num_tokens == 13 and e.attention_mask.sum() == 8
    assert e.input_ids[0, -1] == 3  # still ends with [SEP]
    with pytest.raises(UserError, match="text has 13 tokens, more than the exported sequence length 8"):
        te.encode(long, truncate=False)


def test_unpadded_keeps_the_text_length(tiny_bert):
    t = TextEncoder(tiny_bert / "tokenizer.json", seq_len=16, pad_id=0, pad=False)
    e = t.encode("the coffee was stale")
    assert e.input_ids.shape == (1, 6) and bool(e.attention_mask.all())
    assert t.encode(" ".join(["tea"] * 30)).input_ids.shape == (1, 16)  # still cut to the longest the .pte takes


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_is_an_error(tiny_bert, text):
    with pytest.raises(UserError, match="input text is empty"):
        TextEncoder(tiny_bert / "tokenizer.json", 16, 0).encode(text)


def test_read_texts_from_file(tmp_path, capsys):
    f = tmp_path / "in.txt"
    f.write_text("one\n\ntwo\n")
    assert read_texts([], f) == ["one", "two"]
    capsys.readouterr()
    f.write_bytes(b"fine\ncaf\xe9 au lait\n\xff\xfe bad\n")  # Latin-1 and a stray BOM-like pair
    assert read_texts([], f) == ["fine", "caf\ufffd au lait", "\ufffd\ufffd bad"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not valid UTF-8 (line 2, byte offset 3: 0xe9; 2 line(s) in all)" in err
    assert "invalid bytes read as U+FFFD" in err
    with pytest.raises(UserError, match="does not exist"):
        read_texts([], tmp_path / "missing.txt")


def test_non_utf8_arguments_read_the_same_way(capsys):
    arg = b"caf\xe9".decode("utf-8", errors="surrogateescape")  # what Python makes of such an argv
    assert read_texts([arg, "ok"], None) == ["caf\ufffd", "ok"]
    assert "argument 1 is not valid UTF-8 (line 1, byte offset 3: 0xe9" in capsys.readouterr().err
