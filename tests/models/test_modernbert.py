"""ModernBERT: pre-norm GeGLU layers, two RoPE bases, local layers on the window kernel. The
Encoder equals Hugging Face at lengths on both sides of the window kernel's band/blocks switch,
and builds to one XNNPACK subgraph, at any length while its local layers score under a band."""

import json

import pytest
import torch
from conftest import make_tiny

import edgeformer
from edgeformer.errors import UserError
from edgeformer.models import load_model
from edgeformer.models.hf import reference_forward, to_encoder
from edgeformer.program import Program
from edgeformer.train.prune_run import PruneOptions, prune

# The tiny model's local layer sees 4 tokens on each side: up to 12 tokens it scores n×n under a
# band, past that in blocks of 4.
LENGTHS = (1, 5, 12, 13, 21, 40)


def _ids(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 64, (2, n), generator=g)
    mask = torch.ones(2, n, dtype=torch.long)
    mask[1, max(1, n - n // 3):] = 0
    return ids, mask


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("modernbert") / "cls", "modernbert", "classifier")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encoder_equals_hugging_face_at_every_length(tmp_path, pooling):
    path = make_tiny(tmp_path / "m", "modernbert", "classifier")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "classifier_pooling": pooling}))
    loaded = load_model(str(path))
    enc = loaded.encoder
    assert enc.shape.pre_norm and enc.shape.rope_theta == (160000.0, 10000.0, 160000.0) and enc.pos is None
    assert [ly.attn.window for ly in enc.layers] == [None, 8, None] and enc.pooling == ("mean" if pooling == "mean" else "first")
    for n in LENGTHS:
        ids, mask = _ids(n)
        with torch.no_grad():
            torch.testing.assert_close(enc(ids, mask), reference_forward(loaded.hf, ids, mask), atol=2e-5, rtol=1e-4)


def test_the_local_window_and_both_rope_bases_matter(tmp_path):
    """The comparison above would notice a dropped window or a swapped RoPE base: each moves
    the output by far more than the mapping's own error (with q and k scaled up: a random
    model's attention is near uniform, where positions hardly matter)."""
    loaded = load_model(str(make_tiny(tmp_path, "modernbert", "embedder")))
    with torch.no_grad():
        for ly in loaded.hf.reference.layers:
            ly.attn.Wqkv.weight[:64] *= 8.0
    enc = to_encoder(loaded.hf)
    ids, mask = _ids(21)
    ref = reference_forward(loaded.hf, ids, mask)

    def err() -> float:
        with torch.no_grad():
            return float((enc(ids, mask) - ref).abs().max())

    exact = max(err(), 1e-7)
    enc.layers[1].attn.set_window(None)
    assert err() > 100 * exact
    enc.layers[1].attn.set_window(8)
    enc.rope.bases.reverse()  # each layer's base swapped for the other
    assert err() > 100 * exact


def test_builds_to_one_subgraph_at_any_length(tiny_cls, tmp_path):
    """--seq-len 12: the local layer scores under a band, so the .pte takes any length up to 12
    and equals its exported program and Hugging Face at each."""
    r = edgeformer.build(str(tiny_cls), "host", tmp_path / "a", quant="fp32", embedding_quant="fp32", seq_len=12, batch=1, bench_iters=0)
    m = r.manifest
    assert m.any_length and m.inputs[0]["min_shape"] == [1, 1] and m.model["architecture"] == "modernbert"
    assert m.model["attention"]["layers"] == ["full", "window 8", "full"]
    assert m.delegation["delegated_subgraphs"] == 1
    assert set(m.delegation["non_delegated_ops"]) <= {"aten_embedding_default", "aten_slice_copy_tensor", "sym_size",
                                                      "dim_order_ops__to_dim_order_copy_default"}
    assert m.numerics["sqnr_db"] > 60 and m.numerics["sqnr_db_vs_exported"] > 60
    hf = load_model(str(tiny_cls)).hf
    program, exported = Program(r.path / "model.pte", 2), r.exported.module()
    for n in (1, 5, 12):
        ids, mask = (t[:1] for t in _ids(n, seed=n))
        out = program(ids, mask)
        torch.testing.assert_close(out, exported(ids, mask), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out, reference_forward(hf, ids, mask), atol=1e-5, rtol=1e-5)


def test_int8_past_the_band_is_static_and_within_budgets(tiny_cls, tmp_path):
    r = edgeformer.build(str(tiny_cls), "host", tmp_path / "a", quant="int8", seq_len=32, batch=1, bench_iters=0)
    m = r.manifest
    assert not m.any_length and m.inputs[0]["shape"] == [1, 32] and m.delegation["delegated_subgraphs"] == 1
    assert m.numerics["sqnr_db_vs_exported"] > 60 and m.numerics["label_agreement"] == 1.0
    with pytest.raises(UserError, match=r"--lengths dynamic: this model's local layers have a window of 8 runs blocks picked by "
                                        r"length past 12 tokens, and --seq-len is 32 .* use --lengths static or a shorter --seq-len"):
        edgeformer.build(str(tiny_cls), "host", tmp_path / "x", seq_len=32, lengths="dynamic", bench_iters=0)
    assert not (tmp_path / "x").exists()


def test_what_is_not_mapped_is_refused_by_name(tiny_cls, tmp_path, data_csv):
    with pytest.raises(UserError, match=r"cannot prune .* \(modernbert\): ModernBERT's fused Wqkv and gated Wi are not cut"):
        prune(str(tiny_cls), str(data_csv), tmp_path / "p", PruneOptions(heads=0.25))
    path = tmp_path / "scaled"
    path.mkdir()
    for f in tiny_cls.iterdir():
        (path / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((path / "config.json").read_text())
    cfg["rope_parameters"]["full_attention"].update(rope_type="linear", factor=2.0)  # rope scaling, not mapped
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"rope_parameters\['full_attention'\].rope_type='linear' is not supported"):
        edgeformer.build(str(path), "host", tmp_path / "x", seq_len=12, bench_iters=0)
    with pytest.raises(UserError, match=r"positions=copy tiles a learned position table, and this model \(modernbert\) has "
                                        r"rotary positions, up to 40; drop positions=copy"):
        edgeformer.build(str(tiny_cls), "host", tmp_path / "x", seq_len=12, attention="positions=copy", bench_iters=0)
    with pytest.raises(UserError, match=r"--seq-len 48 exceeds the model's 40 positions; use --seq-len 40 or less$"):
        edgeformer.build(str(tiny_cls), "host", tmp_path / "x", seq_len=48, bench_iters=0)
    assert not (tmp_path / "p").exists() and not (tmp_path / "x").exists()


def test_every_constant_follows_the_model_to_a_device(tmp_path):
    """The server target moves the model to its GPU: parameters, buffers (RoPE) and the
    window's plain-tensor constants all go (checked on the meta device, which every machine has)."""
    from edgeformer.models.attention_kernels import constants_to

    enc = load_model(str(make_tiny(tmp_path, "modernbert", "classifier"))).encoder.to("meta")
    assert enc.layers[1].attn.band.device.type == "cpu"  # what Module.to leaves behind
    constants_to(enc, "meta")
    plain = [getattr(m, n) for m in enc.modules() for n in ("head_rows", "band", "positions", "local") if hasattr(m, n)]
    assert len(plain) == 3 + 3 + 1  # head_rows in each layer; band, positions, local in the local layer; the RoPE positions
    assert all(t.device.type == "meta" for t in [*plain, *enc.parameters(), *enc.buffers()])
