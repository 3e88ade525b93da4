"""DeBERTa-v2/v3 vs BERT: torch.export + XNNPACK lowering study (tiny random models).

Why `edgeformer build` refuses deberta-v2 (issue 18): the stock model exports and runs
(.pte vs eager 3e-9), but its relative-position part stays outside the XNNPACK delegate
(int64 bucket arithmetic, gather x4, repeat x4, ~17 casts: 12 delegate subgraphs against
BERT's 10). `rewrite.py` is the fixed-length rewrite that lowers it whole (bucket tables
precomputed per layer, the c2p/p2c gathers as bmm + a Transformer-XL relative shift): 5
subgraphs, .pte vs eager 4e-9.

Usage: python study.py [deberta|bert|deberta_patched|all]
"""
import sys
import time
import traceback
from collections import Counter

import torch

torch.set_num_threads(1)

from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
)

SEQ = 32


def make_deberta():
    torch.manual_seed(0)
    cfg = DebertaV2Config(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,  # v3 value (only affects log-bucket max_position)
        type_vocab_size=0,  # v3
        position_biased_input=False,  # v3
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        max_relative_positions=-1,
        hidden_act="gelu",
        num_labels=2,
    )
    return DebertaV2ForSequenceClassification(cfg).eval()


def make_bert():
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        num_labels=2,
    )
    return BertForSequenceClassification(cfg).eval()


class Wrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).logits


def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 128, (1, SEQ), generator=g, dtype=torch.long)
    mask = torch.ones(1, SEQ, dtype=torch.long)
    mask[0, 24:] = 0  # some padding to exercise the mask path
    return ids, mask


def patch_deberta():
    """Rewrite: precompute c2p/p2c index tensors at fixed length as constants and
    replace torch.gather with a one-hot matmul (bmm) so everything is linear algebra."""
    import transformers.models.deberta_v2.modeling_deberta_v2 as md

    def disentangled_attention_bias(self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor):
        q = query_layer.size(-2)
        k = key_layer.size(-2)
        att_span = self.pos_ebd_size
        # ---- length-only part: computed in python/eager at trace time -> constant ----
        with torch.no_grad():
            rp = md.build_relative_position(
                torch.empty(q, 1), torch.empty(k, 1),
                bucket_size=self.position_buckets, max_position=self.max_relative_positions,
            )[0]  # [q, k]
            c2p_pos = torch.clamp(rp + att_span, 0, att_span * 2 - 1)  # [q, k]
            p2c_pos = torch.clamp(-rp + att_span, 0, att_span * 2 - 1)  # [q(k), k]  (q==k)
            # one-hot selection matrices over the 2*att_span relative-embedding rows
            c2p_sel = torch.nn.functional.one_hot(c2p_pos, 2 * att_span).to(query_layer.dtype)  # [q,k,2S]
            p2c_sel = torch.nn.functional.one_hot(p2c_pos, 2 * att_span).to(query_layer.dtype)  # [k,q,2S]
        rel_embeddings = rel_embeddings[0 : att_span * 2, :].unsqueeze(0)
        pos_query_layer = self.transpose_for_scores(self.query_proj(rel_embeddings), self.num_attention_heads)
        pos_key_layer = self.transpose_for_scores(self.key_proj(rel_embeddings), self.num_attention_heads)
        # (Optional better rewrite: gather the *embeddings* instead of scores; with a constant
        #  index this is an index_select on a weight-derived tensor.)  Here: scores + one-hot.
        score = 0
        scale = md.scaled_size_sqrt(pos_key_layer, scale_factor)
        if "c2p" in self.pos_att_type:
            c2p_att = torch.bmm(query_layer, pos_key_layer.transpose(-1, -2))  # [BH, q, 2S]
            # gather(c2p_att, -1, c2p_pos)[b,i,j] = sum_r c2p_att[b,i,r]*sel[i,j,r]
            c2p_att = (c2p_att.unsqueeze(2) * c2p_sel.unsqueeze(0)).sum(-1)  # [BH,q,k]
            score = score + c2p_att / scale.to(dtype=c2p_att.dtype)
        if "p2c" in self.pos_att_type:
            p2c_att = torch.bmm(key_layer, pos_query_layer.transpose(-1, -2))  # [BH, k, 2S]
            p2c_att = (p2c_att.unsqueeze(2) * p2c_sel.unsqueeze(0)).sum(-1).transpose(-1, -2)
            score = score + p2c_att / scale.to(dtype=p2c_att.dtype)
        return score

    md.DisentangledSelfAttention.disentangled_attention_bias = disentangled_attention_bias


def patch_deberta_mm():
    """Variant: gather done as a matmul against a constant one-hot per row:
    out[b,i,:] = c2p_att[b,i,:] @ sel_i  with sel_i [2S, k]; express as a batched matmul over i."""
    import transformers.models.deberta_v2.modeling_deberta_v2 as md

    def disentangled_attention_bias(self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor):
        q = query_layer.size(-2)
        k = key_layer.size(-2)
        S = self.pos_ebd_size
        with torch.no_grad():
            rp = md.build_relative_position(
                torch.empty(q, 1), torch.empty(k, 1),
                bucket_size=self.position_buckets, max_position=self.max_relative_positions,
            )[0]
            c2p_pos = torch.clamp(rp + S, 0, 2 * S - 1)
            p2c_pos = torch.clamp(-rp + S, 0, 2 * S - 1)
            # sel[i] : [2S, k] one-hot columns
            c2p_sel = torch.nn.functional.one_hot(c2p_pos, 2 * S).to(query_layer.dtype).transpose(1, 2)  # [q,2S,k]
            p2c_sel = torch.nn.functional.one_hot(p2c_pos, 2 * S).to(query_layer.dtype).transpose(1, 2)  # [k,2S,q]
        rel_embeddings = rel_embeddings[0 : S * 2, :].unsqueeze(0)
        H = self.num_attention_heads
        pos_query_layer = self.transpose_for_scores(self.query_proj(rel_embeddings), H)  # [H,2S,d]
        pos_key_layer = self.transpose_for_scores(self.key_proj(rel_embeddings), H)
        scale = md.scaled_size_sqrt(pos_key_layer, scale_factor)
        score = 0
        if "c2p" in self.pos_att_type:
            c2p_att = torch.bmm(query_layer, pos_key_layer.transpose(-1, -2))  # [BH,q,2S]
            # -> [q, BH, 2S] @ [q, 2S, k] = [q, BH, k]
            c2p = torch.bmm(c2p_att.transpose(0, 1), c2p_sel).transpose(0, 1)
            score = score + c2p / scale.to(dtype=c2p.dtype)
        if "p2c" in self.pos_att_type:
            p2c_att = torch.bmm(key_layer, pos_query_layer.transpose(-1, -2))  # [BH,k,2S]
            p2c = torch.bmm(p2c_att.transpose(0, 1), p2c_sel).transpose(0, 1).transpose(-1, -2)
            score = score + p2c / scale.to(dtype=p2c.dtype)
        return score

    md.DisentangledSelfAttention.disentangled_attention_bias = disentangled_attention_bias


def run(name, model):
    print(f"\n================ {name} ================", flush=True)
    ids, mask = inputs()
    w = Wrap(model).eval()
    with torch.no_grad():
        ref = w(ids, mask)
    print("eager logits", ref)
    t = time.time()
    try:
        ep = torch.export.export(w, (ids, mask), strict=False)
    except Exception as e:
        print("EXPORT FAILED:", type(e).__name__)
        print("\n".join(traceback.format_exc().splitlines()[-25:]))
        return
    print(f"export OK ({time.time()-t:.1f}s)")
    aten = Counter(str(n.target) for n in ep.graph.nodes if n.op == "call_function")
    print("exported aten ops:", dict(sorted(aten.items())))
    with torch.no_grad():
        d = (ep.module()(ids, mask) - ref).abs().max().item()
    print("ep.module() vs eager max abs diff:", d)

    from executorch.exir import to_edge_transform_and_lower
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info

    t = time.time()
    try:
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    except Exception as e:
        print("LOWER FAILED:", type(e).__name__)
        print("\n".join(traceback.format_exc().splitlines()[-25:]))
        return
    print(f"lower OK ({time.time()-t:.1f}s)")
    gm = edge.exported_program().graph_module
    info = get_delegation_info(gm)
    print(info.get_summary())
    nd = {k: v.non_delegated for k, v in info.delegation_by_operator.items() if v.non_delegated}
    print("NON-DELEGATED ops:", dict(sorted(nd.items())))
    dl = {k: v.delegated for k, v in info.delegation_by_operator.items() if v.delegated}
    print("delegated ops:", dict(sorted(dl.items())))
    # top-level graph listing of non-delegated nodes
    print("-- top-level non-delegated call_function nodes --")
    for n in gm.graph.nodes:
        if n.op == "call_function" and "executorch_call_delegate" not in str(n.target) and "getitem" not in str(n.target):
            val = n.meta.get("val")
            shp = tuple(val.shape) if hasattr(val, "shape") else None
            dt = val.dtype if hasattr(val, "dtype") else None
            print(f"   {n.name}: {n.target} -> {shp} {dt}")

    t = time.time()
    try:
        et = edge.to_executorch()
    except Exception as e:
        print("TO_EXECUTORCH FAILED:", type(e).__name__)
        print("\n".join(traceback.format_exc().splitlines()[-25:]))
        return
    print(f"to_executorch OK ({time.time()-t:.1f}s), pte bytes = {len(et.buffer)}")

    from executorch.runtime import Runtime

    rt = Runtime.get()
    prog = rt.load_program(et.buffer)
    m = prog.load_method("forward")
    out = m.execute([ids, mask])
    d = (out[0] - ref).abs().max().item()
    print("pte logits", out[0])
    print(f"PTE vs eager max abs diff: {d:.3e}")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which in ("deberta", "all"):
        run("deberta", make_deberta())
    if which in ("bert", "all"):
        run("bert", make_bert())
    if which in ("deberta_patched",):
        patch_deberta()
        run("deberta_patched", make_deberta())
    if which in ("deberta_patched_mm",):
        patch_deberta_mm()
        run("deberta_patched_mm", make_deberta())
