"""BuildSpec: every cross-option check in validate(), before any work; the spec as data."""

from __future__ import annotations

import pytest

from edgeformer.errors import UserError
from edgeformer.pipeline import BuildSpec


@pytest.mark.parametrize("fields,msg", [
    (dict(target="pi"), r"unknown target 'pi'; use one of: host"),
    (dict(quant="int3"), r"--quant 'int3' is not a known scheme; use one of: fp32, int8, 8da4w"),
    (dict(fallback="cpu"), r"--fallback cpu applies to --target server-cuda"),
    (dict(lm_ops="portable"), r"--lm-ops portable applies to causal LMs"),
    (dict(max_context=64), r"--max-context 64 applies to causal LMs"),
    (dict(kv_cache="int8"), r"--kv-cache int8 applies to causal LMs; .* keeps no key-value cache"),
    (dict(attention="window=8:sinks=2"), r"sinks= applies to causal LMs' ring cache"),
    (dict(attention="window=x"), r"window 'x' is not an integer"),
    (dict(target="android-vulkan", eval_data="fine-foods"), r"--eval-data/--prune/--device need to run the .pte"),
    (dict(target="server-cuda", fallback="cpu", prune="auto"), r"takes a model as it is"),
    (dict(target="server-cuda", fallback="cpu", quant="8da4w"), r"int4 weight-only, a CUDA kernel"),
    (dict(device="usb://x"), r"--device 'usb://x' is not one of"),
    (dict(eval_data="nosuch-data"), r"data 'nosuch-data' is neither a file nor a built-in data set"),
    (dict(bench_iters=-1), r"--bench-iters -1"),
    (dict(max_perplexity_increase=5.0), r"--max-perplexity-increase 5.0 is a causal LM's budget"),
])
def test_bad_combinations_fail_in_validate(tiny_bert, tmp_path, fields, msg):
    with pytest.raises(UserError, match=msg):
        BuildSpec(str(tiny_bert), out=tmp_path / "x", **fields).validate()
    assert not (tmp_path / "x").exists()


def test_causal_lm_checks(tiny_llama_folder, tmp_path):
    with pytest.raises(UserError, match="--prune auto is data-driven: pass --data text"):
        BuildSpec(str(tiny_llama_folder), out=tmp_path / "x", prune="auto").validate()
    with pytest.raises(UserError, match="--max-perplexity-increase -1.0: percent"):
        BuildSpec(str(tiny_llama_folder), out=tmp_path / "x", max_perplexity_increase=-1.0).validate()
    lm = BuildSpec(str(tiny_llama_folder), out=tmp_path / "x", max_perplexity_increase=12.5)
    assert lm.budgets().max_perplexity_increase_pct == 12.5
    with pytest.raises(UserError, match="does not take causal LMs yet"):
        BuildSpec(str(tiny_llama_folder), target="android-vulkan", out=tmp_path / "x").validate()
    with pytest.raises(UserError, match="is not a causal-LM cache spec"):
        BuildSpec(str(tiny_llama_folder), out=tmp_path / "x", attention="hard=top4").validate()
    spec = BuildSpec(str(tiny_llama_folder), out=tmp_path / "x", attention="window=16:sinks=2").validate()
    assert spec.kind() == "causal-lm" and spec.attention_plan().cache() == (16, 2)
    assert spec.recipe().attention == "window=16:sinks=2"
    with pytest.raises(UserError, match="--batch 4 applies to encoders"):
        BuildSpec(str(tiny_llama_folder), out=tmp_path / "x", batch=4).validate()
    # what the manifest records (the recipe resolved, batch included) rebuilds: `build --from`
    assert BuildSpec.from_dict(spec.to_dict(), out=tmp_path / "y").validate().recipe() == spec.recipe()


def test_a_bad_out_is_refused_before_any_work(tiny_bert, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("mine")
    with pytest.raises(UserError, match="exists and is not an edgeformer artifact"):
        BuildSpec(str(tiny_bert), out=f).validate()
    d = tmp_path / "notes"
    d.mkdir()
    (d / "x.txt").write_text("keep")
    with pytest.raises(UserError, match="exists and is not an edgeformer artifact"):
        BuildSpec(str(tiny_bert), out=d).validate()
    assert f.read_text() == "mine" and (d / "x.txt").read_text() == "keep"


def test_spec_round_trips_as_data(tiny_bert, tmp_path):
    spec = BuildSpec(str(tiny_bert), target="rpi5", out=tmp_path / "x", quant="8da4w", attention=("window=8", "hard=top2:layers=1"))
    d = spec.to_dict()
    assert d["version"] == 1 and "out" not in d and "dump" not in d
    assert d["threads"] == 4 and d["seq_len"] == 128 and d["attention"] == "window=8+hard=top2:layers=1"  # resolved recipe
    again = BuildSpec.from_dict(d, out=tmp_path / "y")
    assert again.to_dict() == d and again.recipe() == spec.recipe()
    with pytest.raises(UserError, match=r"build spec has unknown fields \['exec'\]"):
        BuildSpec.from_dict({**d, "exec": "rm -rf /"})
    with pytest.raises(UserError, match="build spec version 7"):
        BuildSpec.from_dict({**d, "version": 7})


def test_python_api_names_unknown_options(tiny_bert, tmp_path):
    import edgeformer

    with pytest.raises(UserError, match=r"build\(\) got an unknown option .*quantization.*known: target, out, quant"):
        edgeformer.build(str(tiny_bert), "host", tmp_path / "x", quantization="int8")


def test_a_gguf_on_a_4bit_grid_builds_on_it_by_default(tiny_gguf, tiny_llama_folder, tmp_path):
    """A Q4_0/Q4_1 GGUF's default is `--quant gguf` (its own grid, as shipped); any choice of
    torchao's 4-bit or of pruning, a Hugging Face folder, or a Q8_0 file keeps the target's int8."""
    from conftest import make_tiny_gguf

    out = str(tmp_path / "never")
    assert BuildSpec(str(tiny_gguf), out=out).validate().recipe().quant == "gguf"
    assert BuildSpec(str(tiny_gguf), "android", out=out).recipe().quant == "gguf"
    assert BuildSpec(str(tiny_gguf), out=out, quant="int8").recipe().quant == "int8"
    assert BuildSpec(str(tiny_gguf), out=out, group_size=64).recipe().quant == "int8"
    assert BuildSpec(str(tiny_gguf), out=out, prune="heads=0.5,ffn=0.5").recipe().quant == "int8"
    assert BuildSpec(str(tiny_llama_folder), out=out).recipe().quant == "int8"
    q8 = make_tiny_gguf(tmp_path / "q8.gguf", kind="Q8_0")
    assert BuildSpec(str(q8), out=out).recipe().quant == "int8"
