import pytest

from edgeformer.errors import UserError
from edgeformer.recipe import Recipe


@pytest.mark.parametrize("kw,msg", [
    (dict(quant="int3"), r"--quant 'int3' is not a known scheme; use one of: fp32, int8, 8da4w"),
    (dict(embedding_quant="int2"), r"--embedding-quant 'int2' is not a known scheme; use one of: fp32, int8, int4"),
    (dict(group_size=48), r"--group-size 48 is not supported; use one of 0, 32, 64, 128, 256 \(0: one group per row\)"),
    (dict(seq_len=0), r"--seq-len 0 is out of range"),
    (dict(threads=0), r"--threads 0 is out of range"),
])
def test_bad_recipes_are_rejected(kw, msg):
    with pytest.raises(UserError, match=msg):
        Recipe(**kw)


def test_round_trip_and_overrides():
    r = Recipe().with_overrides(quant="8da4w", seq_len=None)
    assert r.quant == "8da4w" and r.seq_len == 128
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(UserError, match=r"unknown fields \['bogus'\]"):
        Recipe.from_dict({**r.to_dict(), "bogus": 1})
