"""`--quant mixed`: int8/4-bit per module by measured sensitivity, fit to a size budget."""

import copy
import json

import pytest
import torch
from torchao.utils import unwrap_tensor_subclass

from edgeformer.errors import UserError
from edgeformer.models import load_model
from edgeformer.program import Program
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import XNNPACK
from edgeformer.transforms import mixed
from edgeformer.transforms.quantize import quantization_record, quantize_model
from edgeformer.validate.numerics import sqnr_db
from tests.conftest import run_cli

MIB = 2.0**20


@pytest.fixture(scope="module")
def tiny(tiny_bert_cls):
    loaded = load_model(str(tiny_bert_cls))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # heavy-tailed weights, as trained ones are: 4-bit costs something everywhere
        for m in loaded.encoder.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                m.weight.mul_(torch.exp(torch.randn(m.weight.shape, generator=g)))
    ids = torch.randint(4, loaded.encoder.shape.vocab_size, (8, 16), generator=g)
    mask = torch.ones(8, 16, dtype=torch.long)
    mask[4:, 11:] = 0  # padded rows too
    return loaded.encoder.eval(), (ids, mask)


def _plan(model, inputs, budget_mb, recipe=Recipe(quant="mixed")):
    model = copy.deepcopy(model)
    with torch.no_grad():
        plan = mixed.quantize_mixed(model, recipe, XNNPACK, budget_mb, lambda m: m(*inputs))
    return model, plan


def _bounds(model, inputs):
    """(smallest, largest) size in MiB any plan can reach."""
    _, plan = _plan(model, inputs, 1e6)
    return plan.size_bytes({m.name for m in plan.modules}) / MIB, plan.size_bytes(set()) / MIB


def test_the_plan_fits_the_budget_and_its_sqnr_is_what_it_predicted(tiny):
    model, inputs = tiny
    small, large = _bounds(model, inputs)
    budget = (small + large) / 2
    q, plan = _plan(model, inputs, budget)
    rec = plan.record()
    assert plan.size_bytes() <= budget * MIB
    assert 0 < len(plan.low) < len(plan.modules)  # some moved, not all
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linears <= set(rec["modules"])  # every linear has its choice, with why
    assert rec["modules"]["word"] in ("int8", "int4 (affine)", "int4 (hqq)")
    db = rec["sqnr_db"]
    assert db["all_4bit"] < db["measured"] < db["all_high"] + 1.0  # (random tiny weights: 4-bit may even help)
    # noise powers of modules measured alone roughly add (rounding errors compound a little)
    assert -1.0 < db["predicted"] - db["measured"] < 4.0
    with torch.no_grad():
        ref = model(*inputs)
        assert sqnr_db(ref, q(*inputs)) == pytest.approx(db["measured"], abs=0.01)  # applied as planned


def test_an_outlier_makes_its_module_more_sensitive(tiny):
    model, inputs = tiny
    _, before = _plan(model, inputs, 1e6)
    model = copy.deepcopy(model)
    with torch.no_grad():  # outliers in one column: at 4-bit their groups' scales crush the rest
        model.layers[1].ffn_in.weight[:, 3] *= 200.0
    _, after = _plan(model, inputs, 1e6)
    added = [{m.name: m.added[m.method] for m in p.modules} for p in (before, after)]
    assert added[1]["layers.1.ffn_in"] > 4 * added[0]["layers.1.ffn_in"]
    assert max(added[1], key=added[1].get) != "layers.1.ffn_in"  # (the table and the head still matter more)


def test_the_plan_is_the_best_subset_within_the_budget():
    """The knapsack against brute force: the least added noise of every subset that fits."""
    import itertools
    import random

    rng = random.Random(0)
    for _ in range(20):
        mods = [mixed.Module(f"m{i}", "linear", "int8", hi, hi * rng.uniform(0.3, 0.6), {"affine": rng.uniform(-0.1, 1.0)})
                for i, hi in enumerate(rng.uniform(1e3, 1e5) for _ in range(8))]
        budget = sum(m.bytes_low for m in mods) + rng.uniform(0, 1) * sum(m.bytes_high - m.bytes_low for m in mods)
        plan = mixed.MixedPlan(budget, 0.0, mods, set(), {}, 1.0, 0.0, 1.0)
        mixed._choose(plan)
        assert plan.size_bytes() <= budget
        noise = lambda low, mods=mods: sum(m.added["affine"] for m in mods if m.name in low)  # noqa: E731
        best = min(noise(low) for r in range(len(mods) + 1) for low in map(set, itertools.combinations([m.name for m in mods], r))
                   if plan.size_bytes(low) <= budget)
        assert noise(plan.low) == pytest.approx(best, abs=1e-3 * sum(abs(m.added["affine"]) for m in mods))


def test_a_budget_everything_int8_meets_keeps_everything_int8(tiny):
    model, inputs = tiny
    _, plan = _plan(model, inputs, 1e6)
    assert plan.low == {m.name for m in plan.modules if m.added[m.method] <= 0}  # only what costs nothing moves
    assert plan.record()["sqnr_db"]["measured"] >= plan.record()["sqnr_db"]["all_high"] - 0.5


def test_a_budget_nothing_meets_names_the_smallest(tiny):
    model, inputs = tiny
    small, _ = _bounds(model, inputs)
    with pytest.raises(UserError, match=f"the smallest is {small:.2f} MiB with every linear and the token table at 4-bit"):
        _plan(model, inputs, small * 0.9)


def test_it_lowers_exactly_with_every_linear_delegated(tiny):
    """The .pte of a mixed model equals its exported program (HQQ and min/max scales both),
    and the sizes the plan estimates are the sizes XNNPACK writes."""
    model, inputs = tiny
    small, large = _bounds(model, inputs)
    sizes = {}
    for name, budget in (("high", 1e6), ("mid", (small + large) / 2), ("low", small)):
        q, plan = _plan(model, inputs, budget)
        unwrap_tensor_subclass(q)
        one = tuple(x[:1] for x in inputs)
        ep = torch.export.export(q, one)
        low = XNNPACK.lower(ep, Recipe(quant="int8"))
        got = Program(low.pte, 1, data=low.data)(*one)
        assert sqnr_db(ep.module()(*one), got) > 35
        assert not [op for op in low.delegation.non_delegated_ops if "linear" in op or "mm" in op]
        sizes[name] = (len(low.pte), plan.size_bytes())
    for a, b in (("high", "mid"), ("mid", "low")):
        real, est = sizes[a][0] - sizes[b][0], sizes[a][1] - sizes[b][1]
        assert real == pytest.approx(est, rel=0.1)


def test_quantize_model_records_every_choice(tiny):
    model, inputs = tiny
    model = copy.deepcopy(model)
    quantize_model(model, Recipe(quant="mixed"), calibrate=lambda m: m(*inputs), budget_mb=1e6)
    rec = quantization_record(Recipe(quant="mixed"), model)
    assert rec["scheme"] == "mixed" and sum(rec["summary"].values()) == len(rec["modules"])
    json.dumps(rec)  # goes into the manifest as is


def test_build_and_inspect_show_the_plan(tiny_bert_cls, tmp_path, capsys):
    import edgeformer

    probe = copy.deepcopy(load_model(str(tiny_bert_cls)).encoder)
    small, large = _bounds(probe, (torch.randint(4, 64, (2, 8)), torch.ones(2, 8, dtype=torch.long)))
    out = tmp_path / "mixed"
    r = edgeformer.build(str(tiny_bert_cls), "host", out, quant="mixed", max_pte_mb=round(large, 3), seq_len=16, lengths="static", batch=1,
                         bench_iters=0, min_sqnr_db=0)
    q = r.manifest.quantization
    assert q["scheme"] == "mixed" and q["calibration"]["data"] == "the numerics samples"
    assert r.manifest.pte["bytes"] <= large * MIB
    code, stdout, _ = run_cli(["inspect", str(out)], capsys)
    assert code == 0 and "quantization" in stdout and "int8" in stdout


def test_bad_mixed_builds_are_refused_in_one_line(tiny_bert_cls, tmp_path, capsys):
    code, _, err = run_cli(["build", str(tiny_bert_cls), "--quant", "mixed", "--max-pte-mb", "0.001", "--seq-len", "16",
                            "--bench-iters", "0", "-o", str(tmp_path / "a")], capsys)
    assert code == 2 and "no mix of int8 and 4-bit fits; the smallest is" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()
    code, _, err = run_cli(["build", str(tiny_bert_cls), "--quant", "mixed", "--max-pte-mb", "-1", "-o", str(tmp_path / "b")],
                           capsys)
    assert code == 2 and "--max-pte-mb -1" in err
    code, _, err = run_cli(["build", str(tiny_bert_cls), "--quant", "mixed", "--target", "android-vulkan", "-o",
                            str(tmp_path / "c")], capsys)
    assert code == 2 and "--quant mixed chooses between XNNPACK's int8 and 4-bit kernels" in err


def test_mixed_on_a_causal_lm_is_refused_in_one_line(tiny_gguf):
    from edgeformer.pipeline import BuildSpec

    with pytest.raises(UserError, match="--quant mixed measures encoders only so far"):
        BuildSpec(str(tiny_gguf), quant="mixed", out="/tmp/never-written").validate()


def test_bytes_per_weight_count_one_scale_per_group_or_row():
    n, rows = 384 * 1536, 384  # MiniLM's ffn_out: 1536 inputs per row
    assert mixed.weight_bytes(n, rows, "8da4w", 32) == n / 2 + 2.0 * n / 32  # bf16 group scales
    assert mixed.weight_bytes(n, rows, "8da4w", 0) == n / 2 + 2.0 * rows  # one group per row
    assert mixed.weight_bytes(n, rows, "int4", 0) == n / 2 + 4.0 * rows
    assert mixed.weight_bytes(n, rows, "int8", 0) == n + 4.0 * rows
