"""prune on a tiny fine-tuned classifier: ratios, the accuracy search and its budget, resume, bad input."""

import json

import pytest
import torch
from conftest import make_tiny, run_cli
from safetensors.torch import load_file, save_file

import edgeformer
from edgeformer.errors import UserError
from edgeformer.models import load_model
from edgeformer.train import finetune as ft
from edgeformer.train import prune_run as pr
from edgeformer.train import search
from edgeformer.transforms.prune import Plan

FAST = dict(distill_epochs=1, lr=3e-3, batch_size=4, max_len=16)


def fast(**kwargs) -> pr.PruneOptions:
    return pr.PruneOptions(**{**FAST, **kwargs})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, data_csv):
    root = tmp_path_factory.mktemp("tuned")
    base = make_tiny(root / "base", "bert", "embedder")
    ft.finetune(str(base), str(data_csv), root / "tuned", ft.FinetuneOptions(epochs=6, lr=3e-3, batch_size=4, max_len=16, seed=0))
    return root / "tuned"


def test_ratio_mode_removes_the_share_asked_and_the_folder_builds(tuned, data_csv, tmp_path):
    r = pr.prune(str(tuned), str(data_csv), tmp_path / "p", fast(heads=0.5, ffn=0.5))
    back = load_model(str(tmp_path / "p"))
    assert sum(back.encoder.shape.num_heads) == 4 and sum(back.encoder.shape.ffn) == 64  # of 8 and 128
    assert r["flops_per_sequence"]["ratio"] == pytest.approx(0.5, abs=0.01)
    assert r["params"]["after"] < r["params"]["before"]
    assert json.loads((tmp_path / "p" / "prune.json").read_text())["plan"] == r["plan"]
    assert r["distill"]["steps"] == 9 and r["validation_accuracy"]["distilled"] is not None
    assert not (tmp_path / ".p.ckpt").exists()
    built = edgeformer.build(str(tmp_path / "p"), "host", tmp_path / "art", lengths="static", batch=1, quant="int8", seq_len=16,
                             bench_iters=0, min_sqnr_db=0)
    assert built.manifest.model["task"] == "classifier"


def _setup(tuned, data_csv):
    from edgeformer.data import training_splits
    from edgeformer.models.hf import to_encoder
    from edgeformer.train.loop import make_tokenizer
    from edgeformer.transforms.prune import apply_plan

    loaded = load_model(str(tuned))
    train, val = training_splits(str(data_csv))
    tok = make_tokenizer(loaded.hf.tokenizer_file, 16)
    lab = loaded.hf.labels
    val_b = search.make_batches(tok, val.texts, [lab.index(v) for v in val.labels], 0)
    score_b = search.make_batches(tok, train.texts, [lab.index(v) for v in train.labels], 0)

    def build_encoder(p):
        import copy

        hf = copy.copy(loaded.hf)
        hf.reference = apply_plan(copy.deepcopy(loaded.hf.reference), "bert", p)
        return to_encoder(hf)

    s = loaded.encoder.shape
    return build_encoder, Plan.full(list(s.num_heads), list(s.ffn), s.head_dim, s.hidden), val_b, score_b


@pytest.mark.parametrize("budget", [0.0, 30.0])
def test_accuracy_search_stops_at_its_budget(tuned, data_csv, budget):
    build_encoder, plan0, val_b, score_b = _setup(tuned, data_csv)
    plan, traj = search.search(build_encoder, plan0, val_b, score_b, search.SearchOptions(max_drop_points=budget, seq_len=16))
    floor = traj[0]["val_accuracy"] - budget / 100
    assert all(p["val_accuracy"] >= floor - 1e-9 for p in traj)
    assert len(traj) > 1 and plan.flops(16) < plan0.flops(16)
    # it stopped because every further step breaks the budget: re-measure each remaining candidate
    enc = build_encoder(plan)
    ev = search.Evaluator(enc, val_b)
    hs, ns = search.taylor_scores(enc, score_b)
    for c in search.candidates(plan, hs, ns, head_chunk=1, ffn_chunk=8):
        pos = plan.kept_layers.index(c.layer)
        acc, _ = ev.score(pos, heads=c.local if c.kind == "heads" else (), neurons=c.local if c.kind == "ffn" else (),
                          skip=c.kind == "layer")
        assert acc < floor, c.describe()


def test_search_removes_first_what_hurts(tuned, data_csv, tmp_path):
    """A planted answer: layer 1's attention output is replaced by noise; removing it gains accuracy."""
    import shutil

    sabotaged = tmp_path / "sabotaged"
    shutil.copytree(tuned, sabotaged)
    w = load_file(sabotaged / "model.safetensors")
    torch.manual_seed(0)
    key = "bert.encoder.layer.1.attention.output.dense.weight"
    w[key] = torch.randn_like(w[key]) * 3
    save_file(w, sabotaged / "model.safetensors", metadata={"format": "pt"})
    build_encoder, plan0, val_b, score_b = _setup(sabotaged, data_csv)
    plan, traj = search.search(build_encoder, plan0, val_b, score_b, search.SearchOptions(max_drop_points=0.0, seq_len=16))
    assert "layer 1" in traj[1]["removed"].split("; ") and traj[1]["val_accuracy"] > traj[0]["val_accuracy"], traj[:2]


def test_interrupted_prune_resumes_to_the_same_model(tuned, data_csv, tmp_path):
    pr.prune(str(tuned), str(data_csv), tmp_path / "straight", fast(max_accuracy_drop=0.0))

    steps = []

    def stop_after_two_steps(stage, done, total, info):  # like Ctrl-C after the search's second step
        if stage == "search" and info != "scoring":
            steps.append(info)
            if len(steps) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pr.prune(str(tuned), str(data_csv), tmp_path / "resumed", fast(max_accuracy_drop=0.0), progress=stop_after_two_steps)
    state = json.loads((tmp_path / ".resumed.ckpt" / "search.json").read_text())
    assert not state["done"] and len(state["trajectory"]) == 3 and not (tmp_path / "resumed").exists()
    r = pr.prune(str(tuned), str(data_csv), tmp_path / "resumed", fast(max_accuracy_drop=0.0))
    straight = json.loads((tmp_path / "straight" / "prune.json").read_text())
    assert r["trajectory"] == straight["trajectory"] and r["plan"] == straight["plan"]
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kwargs, message", [
    (dict(heads=1.0), r"--heads 1.0: a pruning ratio is the share to remove, in \[0, 1\)"),
    (dict(ffn=-0.1), r"--ffn -0.1: a pruning ratio"),
    (dict(heads=0.9), r"--heads 0.9 would remove every head of some layers .* at most 0.75 keeps one head per layer; "
                      r"pass --drop-empty-layers"),
    (dict(layers=2), r"--layers 2: the model has 2 layers; remove at most 1"),
    (dict(), r"say what to remove"),
    (dict(heads=0.5, max_accuracy_drop=1.0), r"not both"),
    (dict(max_accuracy_drop=1.0, target_flops=1.5), r"--target-flops 1.5"),
    (dict(heads=0.5, target_flops=0.5), r"--target-flops stops the accuracy-driven search; pass it with --max-accuracy-drop"),
    (dict(heads=0.5, lr=2.0), r"--lr 2.0: the distillation learning rate must be in \(0, 1\)"),
    (dict(heads=0.5, distill_epochs=-1), r"--distill-epochs -1: must be >= 0"),
    (dict(heads=0.5, alpha=1.5), r"alpha=1.5: need temperature > 0 and alpha in \[0, 1\]"),
    (dict(heads=0.5, threads=0), r"--threads 0: must be >= 1"),
])
def test_bad_arguments_are_refused(tuned, data_csv, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        pr.prune(str(tuned), str(data_csv), tmp_path / "x", fast(**kwargs))
    assert not (tmp_path / "x").exists()


def test_drop_empty_layers_removes_a_layer_instead(tuned, data_csv, tmp_path):
    r = pr.prune(str(tuned), str(data_csv), tmp_path / "p", fast(heads=0.9, drop_empty_layers=True))
    assert any(row["removed"] for row in r["plan"])


def test_cli_refuses_an_embedder_and_missing_data(tmp_path, data_csv, capsys):
    emb = make_tiny(tmp_path / "emb", "bert", "embedder")
    code, _, err = run_cli(["prune", str(emb), "--data", str(data_csv), "--heads", "0.5", "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "prune needs a classifier" in err and "edgeformer finetune" in err
    code, _, err = run_cli(["prune", str(emb), "--heads", "0.5", "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "pass --data" in err
    assert not (tmp_path / "o").exists()


def test_build_with_prune_builds_the_pruned_model_and_measures_the_drop_against_the_unpruned(tuned, data_csv, tmp_path):
    out = tmp_path / "art"
    r = edgeformer.build(str(tuned), "host", out, lengths="static", batch=1, prune="heads=0.5,ffn=0.25", data=str(data_csv),
                         eval_data=f"{data_csv}:validation", max_accuracy_drop=100, seq_len=16, bench_iters=0, min_sqnr_db=0)
    m = r.manifest
    assert sum(m.model["heads"]) == 4
    assert sum(m.model["ffn"]) == 96 and m.model["path"] == str((tmp_path / "art.pruned").resolve())
    assert m.model["pruning"]["unpruned"] == str(tuned) and m.model["pruning"]["flops_ratio"] < 0.8
    acc = m.accuracy
    assert acc["accuracy_drop_points"] == pytest.approx((acc["unpruned_accuracy"] - acc["accuracy"]) * 100, abs=0.01)
    assert "accuracy_drop_vs_pruned_fp32" in acc


@pytest.mark.parametrize("spec, data, message", [
    ("heads=half", "csv", r"--prune 'heads=half': 'heads=half' is not understood; use auto, or heads=R,ffn=R,layers=N"),
    ("depth=2", "csv", r"'depth=2' is not understood"),
    ("auto", None, r"--prune auto is data-driven: pass --data"),
])
def test_build_prune_bad_input(tuned, data_csv, tmp_path, capsys, spec, data, message):
    args = ["build", str(tuned), "-o", str(tmp_path / "a"), "--prune", spec, "--lengths", "static", "--batch", "1", "--seq-len", "16",
            "--bench-iters", "0"]
    code, _, err = run_cli(args + (["--prune-data", str(data_csv)] if data else []), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "a").exists()


def test_an_architecture_prune_does_not_know_is_named(tmp_path, data_csv):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(UserError, match=r"architecture 'llama' .* is not supported; supported: albert, bert, camembert, distilbert"):
        pr.prune(str(folder), str(data_csv), tmp_path / "o", fast(heads=0.5))


def test_albert_is_refused_by_name_its_layer_is_shared(tmp_path, data_csv):
    albert = make_tiny(tmp_path / "albert", "albert", "classifier")
    with pytest.raises(UserError, match=r"cannot prune .* \(albert\): ALBERT runs one shared layer at every depth"):
        pr.prune(str(albert), str(data_csv), tmp_path / "o", fast(heads=0.5))
    assert not (tmp_path / "o").exists()


def test_cli_prune_prints_what_went_and_json(tuned, data_csv, tmp_path, capsys):
    args = ["prune", str(tuned), "--data", str(data_csv), "--heads", "0.5", "--layers", "1", "--distill-epochs", "1"]
    code, out, err = run_cli(args + ["-o", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert "layer removed" in out and "heads kept" in out and "wrote" in err and "fewer" in err
    code, out, _ = run_cli(args + ["-o", str(tmp_path / "b"), "--json"], capsys)
    r = json.loads(out)
    assert code == 0 and r["mode"] == "ratio" and sum(row["removed"] for row in r["plan"]) == 1
    # one of two layers gone, half the heads of the other. At seq 128 a layer is
    # 1/4 projections + 1/2 attention scores + 1/4 FFN; halving heads halves the first two: (1/8 + 1/4 + 1/4) / 2
    assert r["flops_per_sequence"]["ratio"] == pytest.approx(0.3125, abs=1e-4)


def test_options_pick_the_mode_and_hand_each_stage_its_options():
    ratio = pr.PruneOptions(heads=0.5, layers=1, drop_empty_layers=True)
    assert ratio.mode == "ratio"
    assert ratio.ratio_options() == search.RatioOptions(heads=0.5, ffn=0.0, layers=1, drop_empty_layers=True)
    acc = pr.PruneOptions(max_accuracy_drop=1.0, target_flops=0.5, max_len=64)
    assert acc.mode == "accuracy"
    assert acc.search_options() == search.SearchOptions(max_drop_points=1.0, seq_len=64, target_flops=0.5)
    assert acc.distill_options().epochs == 2 and acc.distill_options().lr == 1e-4


@pytest.mark.parametrize("make, message", [
    (lambda: search.RatioOptions(heads=1.0), r"heads=1.0: a pruning ratio is the share to remove, in \[0, 1\)"),
    (lambda: search.RatioOptions(layers=-1), r"layers=-1: .* must be >= 0"),
    (lambda: search.RatioOptions(rounds=0), r"rounds=0: must be >= 1"),
    (lambda: search.SearchOptions(max_drop_points=-1, seq_len=16), r"max_drop_points=-1: .* must be >= 0"),
    (lambda: search.SearchOptions(max_drop_points=1, seq_len=16, target_flops=1.0), r"target_flops=1.0: .* in \(0, 1\)"),
    (lambda: search.SearchOptions(max_drop_points=1, seq_len=16, max_batch=0), r"max_batch=0: must be >= 1"),
])
def test_search_options_refuse_bad_values(make, message):
    with pytest.raises(UserError, match=message):
        make()
