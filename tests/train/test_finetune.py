"""finetune on a tiny model: loss goes down, the folder builds, and resume == uninterrupted."""

import json

import pytest
import torch
from conftest import make_tiny
from safetensors.torch import load_file

import edgeformer
from edgeformer.errors import UserError
from edgeformer.train import finetune as ft
from edgeformer.train import loop


def interrupt_at(stop: int):
    """A progress callback that stops training like Ctrl-C after step `stop`."""

    def progress(step, total, loss):
        if step == stop:
            raise KeyboardInterrupt

    return progress


def _run(model, data, out, **kw):
    return ft.finetune(str(model), str(data), out, ft.FinetuneOptions(epochs=6, lr=3e-3, batch_size=4, max_len=16, seed=0), **kw)


def test_loss_goes_down_and_the_folder_builds(tmp_path, data_csv):
    base = make_tiny(tmp_path / "base", "bert", "embedder")
    r = _run(base, data_csv, tmp_path / "tuned")
    first, last = sum(r["loss_curve"][:5]) / 5, sum(r["loss_curve"][-5:]) / 5
    assert last < first * 0.5, (first, last)
    assert r["validation_accuracy"][-1] == 1.0  # 5 held-out rows of a separable toy set
    assert r["labels"] == ["negative", "positive"] and r["train_examples"] == 35 and r["validation_examples"] == 5
    assert json.loads((tmp_path / "tuned" / "finetune.json").read_text())["steps"] == r["steps"] == 54
    assert not (tmp_path / ".tuned.ckpt").exists()  # checkpoint removed once done
    built = edgeformer.build(str(tmp_path / "tuned"), "host", tmp_path / "art", lengths="static", batch=1, seq_len=16, bench_iters=0,
                             min_sqnr_db=0)
    assert built.manifest.model["task"] == "classifier" and built.manifest.model["labels"] == ["negative", "positive"]


def test_interrupted_run_resumes_to_the_same_model(tmp_path, data_csv, monkeypatch):
    base = make_tiny(tmp_path / "base", "bert", "embedder")
    _run(base, data_csv, tmp_path / "straight")
    monkeypatch.setattr(loop, "CHECKPOINT_EVERY", 3)
    with pytest.raises(KeyboardInterrupt):
        _run(base, data_csv, tmp_path / "resumed", progress=interrupt_at(14))
    assert not (tmp_path / "resumed").exists() and (tmp_path / ".resumed.ckpt" / "progress.json").is_file()
    r = _run(base, data_csv, tmp_path / "resumed")
    assert r["steps"] == 54
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_of_another_run_is_not_mixed_in(tmp_path, data_csv, monkeypatch):
    base = make_tiny(tmp_path / "base", "bert", "embedder")
    monkeypatch.setattr(loop, "CHECKPOINT_EVERY", 3)
    with pytest.raises(KeyboardInterrupt):
        _run(base, data_csv, tmp_path / "m", progress=interrupt_at(4))
    with pytest.raises(UserError, match="interrupted run with other settings; pass --restart"):
        ft.finetune(str(base), str(data_csv), tmp_path / "m", ft.FinetuneOptions(epochs=1, lr=3e-3, batch_size=4, max_len=16))
    r = ft.finetune(str(base), str(data_csv), tmp_path / "m",
                    ft.FinetuneOptions(epochs=1, lr=3e-3, batch_size=4, max_len=16, restart=True))
    assert r["steps"] == 9


def test_single_label_data_is_refused(tmp_path):
    base = make_tiny(tmp_path / "base", "bert", "embedder")
    f = tmp_path / "one.csv"
    f.write_text("text,label\n" + "\n".join(f"text {i},pos" for i in range(16)) + "\n")
    with pytest.raises(UserError, match=r"has 1 label\(s\) \['pos'\]; a classifier needs at least 2"):
        _run(base, f, tmp_path / "x")


@pytest.mark.parametrize("spec", ["fine-foods:test", "fine-foods:validation"])
def test_training_on_held_out_splits_is_refused(tmp_path, spec):
    with pytest.raises(UserError, match=r"finetune trains on the train split .*; pass 'fine-foods'"):
        ft.finetune("minilm", spec, tmp_path / "x")


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=0), r"epochs=0: must be >= 1"),
    (dict(lr=1.5), r"lr=1.5: the learning rate must be in \(0, 1\)"),
    (dict(batch_size=0), r"batch_size=0: must be >= 1"),
    (dict(max_steps=0), r"max_steps=0: must be >= 1, or None"),
    (dict(max_len=4), r"max_len=4: must be >= 8 tokens"),
    (dict(threads=0), r"threads=0: must be >= 1, or None"),
])
def test_bad_options_are_refused_when_made(kwargs, message):
    with pytest.raises(UserError, match=message):
        ft.FinetuneOptions(**kwargs)


def test_options_are_frozen_and_carry_the_training_settings():
    o = ft.FinetuneOptions(epochs=3, lr=3e-4, batch_size=8, seed=1, max_steps=5)
    assert o.train_options() == loop.TrainOptions(epochs=3, lr=3e-4, batch_size=8, seed=1, max_steps=5)
    with pytest.raises(AttributeError):
        o.epochs = 4
