"""ELECTRA and ALBERT built like any encoder: one XNNPACK subgraph at any length, the .pte
equal to its exported program, and ALBERT's shared layer stored once."""

import pytest
import torch
from conftest import SEQ, make_tiny, write_tokenizer

import edgeformer
from edgeformer.errors import UserError
from edgeformer.models import load_model


@pytest.mark.parametrize("arch", ["electra", "albert"])
def test_family_builds_to_one_subgraph_at_any_length(arch, tmp_path):
    model = make_tiny(tmp_path / arch, arch, "classifier")
    r = edgeformer.build(str(model), "host", tmp_path / "a", quant="int8", seq_len=SEQ, batch=1, bench_iters=0, min_sqnr_db=0)
    m = r.manifest
    assert m.model["architecture"] == arch and m.model["embedding_size"] == 16 and m.inputs[0]["min_shape"] == [1, 1]
    assert m.model.get("shared_layers") == ([0, 0, 1, 1] if arch == "albert" else None)
    assert m.delegation["delegated_subgraphs"] == 1
    assert set(m.delegation["non_delegated_ops"]) == {"aten_slice_copy_tensor", "dim_order_ops__to_dim_order_copy_default",
                                                      "quantized_decomposed_embedding_byte_default", "sym_size"}
    assert m.numerics["sqnr_db_vs_exported"] > 60 and m.numerics["label_agreement"] == 1.0 and m.numerics["sqnr_db"] > 20


def test_albert_runs_each_group_at_its_depths(tmp_path):
    enc = load_model(str(make_tiny(tmp_path, "albert", "embedder"))).encoder
    assert enc.shape.tied == (0, 0, 1, 1) and len(enc.distinct_layers()) == 2
    assert enc.layers[0] is enc.layers[1] and enc.layers[1] is not enc.layers[2]
    assert enc.shape.embedded == 16 and enc.project.in_features == 16 and enc.project.out_features == 32


def _albert(path, layers: int):
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.AlbertConfig(vocab_size=64, max_position_embeddings=40, embedding_size=16, hidden_size=128, num_hidden_layers=layers,
                          num_attention_heads=4, intermediate_size=512, pad_token_id=0)
    tf.AlbertModel(cfg).eval().save_pretrained(path)
    write_tokenizer(path)
    return path


def test_albert_pte_stores_its_shared_layer_once(tmp_path):
    """4 depths of one int8 layer cost less than a second copy of it would: the weights are
    stored once, only the graph grows."""
    sizes = {}
    for n in (1, 4):
        r = edgeformer.build(str(_albert(tmp_path / f"m{n}", n)), "host", tmp_path / f"a{n}", quant="int8",
                             embedding_quant="fp32", seq_len=SEQ, lengths="static", batch=1, bench_iters=0, min_sqnr_db=0)
        sizes[n] = r.manifest.pte["bytes"]
    per_layer = 4 * 128 * 128 + 2 * 128 * 512  # int8 bytes of the shared layer's weights
    assert sizes[4] - sizes[1] < per_layer, sizes  # 3 more copies would add 3x this


def test_albert_hard_attention_in_some_of_a_shared_layers_depths_is_refused(tmp_path, data_csv):
    model = make_tiny(tmp_path / "albert", "albert", "classifier")
    with pytest.raises(UserError, match=r"--attention hard: layer 0 is the same shared layer as layer 1 .* "
                                        r"choose all of layers 0-1 or none of them"):
        edgeformer.build(str(model), "host", tmp_path / "a", seq_len=SEQ, bench_iters=0, attention="hard=top4:layers=0,2,3")
    with pytest.raises(UserError, match=r"layers=auto chooses layer by layer, .* name the layers \(hard=top4:layers=0-3\)"):
        edgeformer.build(str(model), "host", tmp_path / "a", seq_len=SEQ, bench_iters=0, attention="hard=top4", data=str(data_csv))
    assert not (tmp_path / "a").exists()
