"""Pruning causal LMs: the cut model equals the masked original, the Decoder and its .pte equal
the cut Hugging Face model (caches sized per layer), a pruned folder loads back, the Taylor
scores find a dead group, and bad input is refused in one line with nothing written."""

import copy
import json
import random
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_llama, run_cli

sys.path.insert(0, str(Path(__file__).parents[1] / "lm"))
from test_decoder import steps  # noqa: E402
from test_families import decoder, tiny  # noqa: E402

from edgeformer.errors import UserError  # noqa: E402
from edgeformer.models.causal import load_lm  # noqa: E402
from edgeformer.models.decoder import export_decoder  # noqa: E402
from edgeformer.program import Program  # noqa: E402
from edgeformer.recipe import Recipe  # noqa: E402
from edgeformer.targets.xnnpack import lower  # noqa: E402
from edgeformer.train.prune_lm import LMPruneOptions, prune_lm, taylor_scores, text_chunks  # noqa: E402
from edgeformer.transforms.prune_lm import check_prunable, cut, full_plan  # noqa: E402

ARCHS = ["llama", "qwen2", "qwen3", "mistral", "gemma3_text"]


def model(arch: str):
    kw = dict(num_hidden_layers=3) if arch != "gemma3_text" else {}
    if arch == "qwen2":
        kw.update(attention_bias=True)  # q/k/v biases are cut with their rows
    return tiny(arch, **kw)


def plan_of(hf):
    """Group 1 and a third of the neurons of layer 0, the whole of layer 1, two neurons of layer 2."""
    return (full_plan(hf.config).without(0, heads=[1], neurons=list(range(0, 128, 3)))
            .without(1, whole=True).without(2, neurons=[5, 7]))


@torch.no_grad()
def masked_logits(hf, ids):
    """The reference: group 1 of layer 0 and the neurons zeroed in their output columns, layer 1 skipped."""
    m = copy.deepcopy(hf)
    layers, d = m.model.layers, m.config.head_dim if getattr(m.config, "head_dim", None) else 16
    group = m.config.num_attention_heads // m.config.num_key_value_heads
    layers[0].self_attn.o_proj.weight[:, group * d:2 * group * d] = 0
    layers[0].mlp.down_proj.weight[:, list(range(0, 128, 3))] = 0
    layers[2].mlp.down_proj.weight[:, [5, 7]] = 0
    layers[1].register_forward_hook(lambda mod, args, kwargs, out: args[0] if args else kwargs["hidden_states"],
                                    with_kwargs=True)
    return m(ids).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_cut_equals_the_masked_model_and_the_decoder_equals_the_cut(arch):
    hf = model(arch)
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    want = masked_logits(hf, ids)
    pruned = cut(copy.deepcopy(hf), plan_of(hf))
    with torch.no_grad():
        got = pruned(ids).logits
        assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
        dec = decoder(pruned)
        assert dec.shape.num_layers == 2 and dec.shape.layer_sizes == ((2, 1, 85), (4, 2, 126))
        assert torch.allclose(steps(dec, ids, 5), got, atol=1e-4)


def test_pruned_pte_equals_eager_and_its_cache_follows_the_pruned_shapes():
    hf = cut(model("llama"), plan_of(model("llama")))
    dec = decoder(hf)
    kv = [b.shape for name, b in dec.named_buffers() if name.endswith("k_cache")]
    assert [s[2] for s in kv] == [1, 2]  # [1, slots, kv heads, head_dim] per layer: the pruned layer holds one group
    program = Program.of(lower(export_decoder(copy.deepcopy(dec)), Recipe(quant="fp32")), 2, causal_lm=True)
    ids = torch.randint(0, 96, (1, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = steps(dec, ids, 4)
    dec.reset()
    got = steps(program, ids, 4)
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())


def test_taylor_scores_rank_a_dead_group_and_dead_neurons_lowest():
    hf = model("llama")
    with torch.no_grad():
        hf.model.layers[0].self_attn.o_proj.weight[:, 32:] = 0  # group 1 of layer 0 contributes nothing
        hf.model.layers[2].mlp.down_proj.weight[:, :10] = 0
    chunks = [torch.randint(0, 96, (1, 16), generator=torch.Generator().manual_seed(i)) for i in range(3)]
    groups, neurons = taylor_scores(hf, chunks)
    assert [len(g) for g in groups] == [2, 2, 2] and groups[0][1] == 0 < groups[0][0]
    assert torch.all(neurons[2][:10] == 0) and torch.all(neurons[2][10:] > 0)


@pytest.fixture(scope="module")
def llama_and_text(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune-lm")
    words = "the cat sat on a mat and the dog ran to the park while it rained".split()
    r = random.Random(0)
    (root / "t.txt").write_text(" ".join(r.choice(words) for _ in range(3000)))
    return make_tiny_llama(root / "llama"), root / "t.txt"


def test_prune_lm_writes_a_folder_that_loads_back_smaller(llama_and_text, tmp_path):
    folder, text = llama_and_text
    r = prune_lm(str(folder), str(text), tmp_path / "out", LMPruneOptions(heads=0.5, ffn=0.25, distill_steps=5, seq_len=32))
    assert r["params"]["ratio"] < 1 and [row["heads"] for row in r["plan"]] == ["1/2", "1/2"]
    assert json.loads((tmp_path / "out" / "prune.json").read_text())["kept"] == r["kept"]
    assert r["distill"]["steps"] == 5 and len(r["distill"]["last_kl"]) == 5
    lm = load_lm(str(tmp_path / "out"), 64)
    sizes = lm.decoder.shape.layer_sizes  # a quarter of all neurons, wherever they scored lowest
    assert [s[:2] for s in sizes] == [(2, 1), (2, 1)] and sum(s[2] for s in sizes) == 192
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(steps(lm.decoder, ids, 3), lm.hf(ids).logits, atol=1e-4)


def test_bad_input_is_refused_by_name_with_nothing_written(llama_and_text, tmp_path):
    folder, text = llama_and_text
    with pytest.raises(UserError, match=r"--heads 0.9 .* at most 0.5 keeps one per layer"):
        prune_lm(str(folder), str(text), tmp_path / "a", LMPruneOptions(heads=0.9, distill_steps=0, seq_len=32))
    with pytest.raises(UserError, match=r"--layers 2: the model has 2 layers; remove at most 1"):
        prune_lm(str(folder), str(text), tmp_path / "a", LMPruneOptions(layers=2, distill_steps=0, seq_len=32))
    with pytest.raises(UserError, match="nothing to prune"):
        LMPruneOptions()
    with pytest.raises(UserError, match="pruning needs at least"):
        text_chunks(list(range(80)), 32, 8)  # 2 chunks: one to hold out is too few
    with pytest.raises(UserError, match=r"'phi3' causal LM is not supported .* prunable: llama"):
        check_prunable(tiny("phi3").config, "tiny-phi3")
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".a.*"))


def test_cli_prunes_a_causal_lm_and_refuses_encoder_options(llama_and_text, tmp_path, capsys):
    folder, text = llama_and_text
    code, out, _ = run_cli(["prune", str(folder), "--data", str(text), "-o", str(tmp_path / "p"), "--ffn", "0.5",
                            "--distill-steps", "2", "--seq-len", "32", "--json"], capsys)
    assert code == 0 and json.loads(out)["params"]["ratio"] < 1
    assert (tmp_path / "p" / "model.safetensors").is_file() and (tmp_path / "p" / "tokenizer.json").is_file()
    code, _, err = run_cli(["prune", str(folder), "--data", str(text), "-o", str(tmp_path / "q"), "--max-accuracy-drop", "1"],
                           capsys)
    assert code == 2 and err.startswith("error: --max-accuracy-drop apply to encoder classifiers") and "Traceback" not in err
    assert not (tmp_path / "q").exists()


def test_build_prune_makes_a_smaller_pte_and_reports_both_perplexities(llama_and_text, tmp_path, capsys):
    folder, text = llama_and_text
    out = tmp_path / "b"
    code, _, err = run_cli(["build", str(folder), "--target", "host", "--prune", "heads=0.5,ffn=0.25,steps=3", "--data",
                            str(text), "--eval-data", "janeausten", "--bench-iters", "2", "-o", str(out)], capsys)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["kv_heads"] == [1, 1] and sum(m["model"]["ffn"]) == 192
    assert m["model"]["pruning"]["unit"] == "kv_group" and m["model"]["pruning"]["distill_steps"] == 3
    assert m["generation"]["cache_bytes_per_token"] == 2 * 2 * 16 * 4  # K and V, one head in each of two layers, fp32
    acc = m["accuracy"]
    assert acc["reference_perplexity"] > 0 and acc["unpruned_perplexity"] > 0 and "increase_vs_unpruned_pct" in acc
    assert (tmp_path / "b.pruned" / "prune.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--prune", "ffn=0.5", "--data", "janeausten", "--eval-data", "janeausten:persuasion"],
     "--data janeausten is also --eval-data"),
    (["--data", "TEXT"], "--data is the text --prune distills on"),
    (["--prune", "ffn=0.5"], "--prune ffn=0.5 is data-driven: pass --data text"),
    (["--prune", "ffn=0.5,steps=x", "--data", "TEXT"], "steps=x is not a whole number"),
])
def test_build_prune_bad_input_is_one_line(llama_and_text, tmp_path, capsys, args, message):
    folder, text = llama_and_text
    args = [str(text) if a == "TEXT" else a for a in args]
    code, _, err = run_cli(["build", str(folder), "--target", "host", *args, "-o", str(tmp_path / "b")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_search_keeps_every_step_within_the_perplexity_bound(llama_and_text, tmp_path, capsys):
    folder, text = llama_and_text
    code, out, err = run_cli(["prune", str(folder), "--data", str(text), "-o", str(tmp_path / "s"), "--max-perplexity-increase",
                              "3", "--target-params", "0.8", "--distill-steps", "2", "--seq-len", "32", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    steps_ = r["search_trajectory"]
    assert r["mode"] == "perplexity" and steps_ and all(s["increase_upper_pct"] <= 3 for s in steps_)
    ratios = [s["params_ratio"] for s in steps_]
    assert ratios == sorted(ratios, reverse=True) and r["params"]["layer_ratio"] == ratios[-1]
    assert ratios[-1] <= 0.8 or len(steps_) < 40  # it stopped at the target, or at the budget


def test_search_that_cannot_remove_anything_is_refused(llama_and_text, tmp_path, monkeypatch):
    import edgeformer.search.gate as gate

    folder, text = llama_and_text
    monkeypatch.setattr(gate, "paired_increase", lambda ref, cand: dict(increase_pct=50.0, increase_upper_pct=60.0))
    with pytest.raises(UserError, match=r"--max-perplexity-increase 5.0: removing even 2.5% .* allow more, or prune by ratio"):
        prune_lm(str(folder), str(text), tmp_path / "s", LMPruneOptions(max_perplexity_increase=5.0, seq_len=32))
    assert not (tmp_path / "s").exists()
    with pytest.raises(UserError, match="ratios .* or --max-perplexity-increase for the search, not both"):
        LMPruneOptions(ffn=0.5, max_perplexity_increase=5.0)


def test_a_gguf_model_prunes_into_an_fp32_folder(tiny_gguf, tmp_path):
    r = random.Random(0)
    (tmp_path / "t.txt").write_text("".join(r.choice("abcdefgh ") for _ in range(3000)))
    prune_lm(str(tiny_gguf), str(tmp_path / "t.txt"), tmp_path / "out", LMPruneOptions(ffn=0.25, distill_steps=1, seq_len=64))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in config and config["edgeformer_pruning"]["unit"] == "kv_group"
    lm = load_lm(str(tmp_path / "out"), 64)
    ids = torch.randint(0, 256, (1, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(steps(lm.decoder, ids, 2), lm.hf(ids).logits, atol=1e-4)
