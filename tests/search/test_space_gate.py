"""The search's pure parts: the space, the accuracy gate, the front (no builds)."""

import pytest

from edgeformer.errors import UserError
from edgeformer.search import front
from edgeformer.search.gate import paired_drop, paired_increase
from edgeformer.search.space import parse_space


def test_the_space_is_the_product_of_its_axes_in_a_fixed_order():
    space = parse_space("quant=int8,8da4w prune=0,0.50 attention=full,window=8")
    got = [c.describe() for c in space.candidates()]
    assert len(got) == 8 and got[0] == "quant=int8 prune=0 attention=full"
    assert "quant=8da4w prune=0.5 attention=window=8" in got  # 0.50 -> 0.5; the attention spec canonical
    assert parse_space(["quant=int8", "prune=0"]).candidates() == parse_space("quant=int8 prune=0").candidates()
    levels = [c.prune for c in parse_space("quant=int8 prune=0,0:layers=0,0.5:layers=1,auto").candidates()]
    assert levels == ["0", "0.5:layers=1", "auto"]
    assert [c.prune for c in parse_space("quant=int8 prune=0:layers=2").candidates()] == ["0:layers=2"]
    c = parse_space("quant=int8 prune=0.5:layers=1").candidates()[0]
    assert c.prune_options(1.0) == dict(heads=0.5, ffn=0.5, layers=1) and c.build_prune() == "heads=0.5,ffn=0.5,layers=1"
    assert [x.build_prune() for x in parse_space("quant=int8 prune=0,0.25,auto").candidates()] == [None, "heads=0.25,ffn=0.25", "auto"]
    default = parse_space(None)
    assert {c.quant for c in default.candidates()} == {"int8", "8da4w"} and len(default.candidates()) == 6


@pytest.mark.parametrize("spec, named", [
    ("bits=4", "unknown axis 'bits'"), ("quant=int4", "quant=int4"), ("quant=gguf", "quant=gguf"),
    ("prune=1.5", "prune=1.5"), ("prune=half", "prune=half"), ("prune=0.5:layers=x", "prune=0.5:layers=x"),
    ("attention=sparse", "attention=sparse"),
    ("seq_len=ten", "seq_len=ten"), ("seq_len=0", "seq_len=0"), ("quant=", "give values"),
    ("quant=int8 quant=fp32", "given twice"), ("embedding=int2", "embedding=int2"), ("group=48", "group=48"),
    ("lengths=any", r"lengths=any: unknown; lengths takes encoders' input lengths: auto, dynamic, static"),
    ("batch=0", r"batch=0: unknown; batch takes encoders' texts per call of the batch method, 1 \(none\) to 64"), ("batch=x", "batch=x"),
    ("group=row", r"group=row: unknown; group takes 4-bit group size: 0, 32, 64, 128, 256 \(0: one group per row\)"),
])
def test_a_bad_space_is_refused_naming_the_axis_or_value(spec, named):
    with pytest.raises(UserError, match=named) as e:
        parse_space(spec)
    assert "\n" not in str(e.value)


def test_the_group_axis_multiplies_only_what_has_4_bit_weights():
    cands = parse_space("quant=int8,8da4w embedding=int8,int4 group=32,0 prune=0").candidates()
    got = [c.describe() for c in cands]
    assert got == ["quant=int8 embedding=int8 prune=0 group=32", "quant=int8 embedding=int4 prune=0 group=32",
                   "quant=int8 embedding=int4 prune=0 group=0", "quant=8da4w embedding=int8 prune=0 group=32",
                   "quant=8da4w embedding=int8 prune=0 group=0", "quant=8da4w embedding=int4 prune=0 group=32",
                   "quant=8da4w embedding=int4 prune=0 group=0"]
    assert cands[-1].build_fields()["group_size"] == 0
    no_axis = parse_space("quant=8da4w prune=0").candidates()[0]
    assert "group" not in no_axis.to_dict() and no_axis.build_fields()["group_size"] is None  # cached keys unchanged


def test_lengths_and_batch_reach_the_build_only_when_given():
    c = parse_space("quant=int8 prune=0 lengths=static batch=1").candidates()[0]
    assert c.describe() == "quant=int8 prune=0 lengths=static batch=1"
    assert c.build_fields()["lengths"] == "static" and c.build_fields()["batch"] == 1
    plain = parse_space("quant=int8 prune=0").candidates()[0]
    assert "batch" not in plain.build_fields() and "batch" not in plain.to_dict()  # the target's default; cached keys unchanged
    assert [c.batch for c in parse_space("quant=int8 prune=0 batch=1,8").candidates()] == [1, 8]


def test_the_gate_bounds_the_drop_and_pays_for_uncertainty():
    same = paired_drop([True] * 80 + [False] * 20, [True] * 80 + [False] * 20)
    assert same["drop_points"] == 0 and same["drop_upper_points"] == 0 and same["changed"] == 0
    # two flips each way: no drop on average, yet a bound above it
    mixed = paired_drop([True] * 78 + [False, False, True, True], [True] * 78 + [True, True, False, False])
    assert mixed["drop_points"] == 0 and mixed["drop_upper_points"] > 0.5
    # the same share of flips on 10x the examples: a tighter bound
    wide = paired_drop(([True] * 78 + [False, False, True, True]) * 10, ([True] * 78 + [True, True, False, False]) * 10)
    assert 0 < wide["drop_upper_points"] < mixed["drop_upper_points"]
    worse = paired_drop([True] * 100, [True] * 95 + [False] * 5)
    assert worse["drop_points"] == 5.0 and worse["drop_upper_points"] > 5.0
    assert paired_drop([True] * 100, [True] * 95 + [False] * 5, confidence=0.99)["drop_upper_points"] > worse["drop_upper_points"]
    with pytest.raises(ValueError):
        paired_drop([True], [True, False])


def _r(key, speedup, acc, size, passed=True, status="measured", **kw):
    return dict(key=key, describe=key, status=status, speedup_vs_eager=speedup, accuracy=acc, size_mb=size, passed=passed,
                drop_points=0.0, drop_upper_points=0.0, checks=[], **kw)


def test_the_front_and_the_winner():
    rs = [_r("fast", 4.0, 0.80, 10), _r("accurate", 2.0, 0.90, 20), _r("dominated", 1.5, 0.85, 25),
          _r("small", 1.0, 0.70, 5), _r("fastest-but-failed", 9.0, 0.95, 1, passed=False),
          dict(key="filtered", describe="filtered", status="filtered", size_estimate_mb=99, reason="too big")]
    assert [r["key"] for r in front.pareto(rs)] == ["fastest-but-failed"]  # it dominates every other
    ok = rs[:4]
    assert {r["key"] for r in front.pareto(ok)} == {"fast", "accurate", "small"}
    assert front.choose(rs, "latency")["key"] == "fast"
    assert front.choose(rs, "size")["key"] == "small"
    assert front.choose(rs, "accuracy")["key"] == "accurate"
    assert front.choose([rs[4], rs[5]]) is None
    assert front.closest([rs[5]])["key"] == "filtered"
    one = [dict(name="max_pte_mb", limit=10, measured=11, passed=False)]
    two = [dict(name="max_pte_mb", limit=10, measured=10.5, passed=False), dict(name="min_sqnr_db", limit=20, measured=19, passed=False)]
    near = [_r("one-miss", 1, 0.8, 11, passed=False), _r("two-misses", 1, 0.8, 10.5, passed=False), rs[5]]
    near[0]["checks"], near[1]["checks"] = one, two
    assert front.closest(near)["key"] == "one-miss"  # the fewest budgets missed, measured before filtered
    table = front.table(rs, rs[0])
    assert "fast **(chosen)**" in table and "| filtered |" in table and table.count("\n") == len(rs) + 2


def test_a_causal_lms_space_has_its_own_axes_and_defaults():
    default = parse_space(None, "causal-lm").candidates()
    assert [c.describe() for c in default] == ["quant=int8 kv_cache=fp32", "quant=int8 kv_cache=int8",
                                               "quant=8da4w kv_cache=fp32", "quant=8da4w kv_cache=int8"]
    assert all(c.build_fields()["kv_cache"] in ("fp32", "int8") and not c.pruned for c in default)
    assert [c.quant for c in parse_space("quant=gguf,int8 kv_cache=int8", "causal-lm").candidates()] == ["gguf", "int8"]
    # an encoder's candidate keeps the dict (and so the cache keys) it had before LMs searched
    assert "kv_cache" not in parse_space("quant=int8 prune=0").candidates()[0].to_dict()
    # a causal LM prunes when asked: the same share of key-value groups and of neurons
    lm = parse_space("quant=int8 kv_cache=fp32 prune=0,0.25:layers=1,auto", "causal-lm").candidates()
    assert [c.describe() for c in lm] == ["quant=int8 kv_cache=fp32", "quant=int8 prune=0.25:layers=1 kv_cache=fp32",
                                          "quant=int8 prune=auto kv_cache=fp32"]
    assert lm[1].lm_prune_options(None) == dict(heads=0.25, ffn=0.25, layers=1) and lm[1].build_prune() == "heads=0.25,ffn=0.25,layers=1"
    assert lm[2].lm_prune_options(7.5) == dict(max_perplexity_increase=7.5)


@pytest.mark.parametrize("spec, kind, named", [
    ("seq_len=64", "causal-lm", "seq_len is an encoder axis"), ("batch=1", "causal-lm", "batch is an encoder axis"),
    ("kv_cache=fp16", "causal-lm", "kv_cache=fp16"), ("kv_cache=int8", "encoder", "an encoder has no KV cache"),
    ("quant=gguf", "encoder", "quant=gguf"), ("offsets=folded", "encoder", "an encoder has none"),
    ("offsets=int4", "causal-lm", "offsets=int4: unknown"),
])
def test_axes_of_the_other_kind_are_refused_by_name(spec, kind, named):
    with pytest.raises(UserError, match=named) as e:
        parse_space(spec, kind)
    assert "\n" not in str(e.value)


def test_the_offsets_axis_multiplies_only_the_gguf_grid():
    cands = parse_space("quant=int8,gguf kv_cache=fp32 offsets=fp32,folded", "causal-lm").candidates()
    assert [c.describe() for c in cands] == ["quant=int8 offsets=fp32 kv_cache=fp32", "quant=gguf offsets=fp32 kv_cache=fp32",
                                             "quant=gguf offsets=folded kv_cache=fp32"]
    assert cands[2].build_fields()["gguf_offsets"] == "folded" and cands[0].build_fields()["gguf_offsets"] == "fp32"
    plain = parse_space("quant=gguf kv_cache=fp32", "causal-lm").candidates()[0]
    assert "offsets" not in plain.to_dict() and "gguf_offsets" not in plain.build_fields()  # cached keys unchanged


def test_the_perplexity_gate_bounds_the_increase_over_blocks_of_tokens():
    import random

    rng = random.Random(0)
    ref = [rng.uniform(1, 5) for _ in range(1000)]
    assert paired_increase(ref, ref) == dict(increase_pct=0.0, increase_upper_pct=0.0, confidence=0.9, tokens=1000,
                                             blocks=16, block_tokens=64)
    worse = [x + 0.03 + rng.gauss(0, 0.5) for x in ref]
    g = paired_increase(ref, worse)
    assert 1.0 < g["increase_pct"] < g["increase_upper_pct"] < 8.0  # exp(0.03) - 1 = 3%, plus what noise allows
    assert paired_increase(ref, worse, confidence=0.99)["increase_upper_pct"] > g["increase_upper_pct"]
    with pytest.raises(ValueError, match="paired tokens"):
        paired_increase(ref, worse[:10])


def test_a_gguf_source_searches_its_own_grid_by_default(tiny_gguf, tiny_llama_folder):
    from edgeformer.search import SearchSpec

    assert [c.quant for c in SearchSpec(str(tiny_gguf), "android", data="janeausten").candidates()][-2:] == ["gguf"] * 2
    assert "gguf" not in {c.quant for c in SearchSpec(str(tiny_llama_folder), "android", data="janeausten").candidates()}
    assert {c.quant for c in SearchSpec(str(tiny_gguf), "android", space="quant=int8").candidates()} == {"int8"}
