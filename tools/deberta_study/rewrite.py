"""Fixed-length rewrite of DeBERTa-v2/v3 disentangled attention so that it lowers fully into XNNPACK.

Idea:
  * everything that depends only on seq length L and weights is precomputed eagerly (before export)
    and stored as per-layer buffers:
      - the bucketed relative index idx(r) = clamp(bucket(r) + S, 0, 2S-1) for r in [-(L-1), L-1]
      - "dense" projected relative tables  Kpos[idx(r)], Qpos[idx(r)]  ([H, 2L-1, d])
        (LayerNorm(rel_embeddings) -> key_proj / query_proj -> row gather; all weight-only)
  * the activation-dependent gathers (c2p / p2c) become  bmm + "relative shift" (skew) implemented with
    view/slice only (Transformer-XL trick), which XNNPACK supports.
  * masked_fill(~mask, min) -> additive float mask (no bool/where ops).

Usage: python rewrite.py [position_buckets] [seq]
"""
import sys

import torch

torch.set_num_threads(1)

import transformers.models.deberta_v2.modeling_deberta_v2 as md

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import study  # noqa: E402


def skew(x, L):
    """x: [B, L, 2L-1]  ->  out[b, r, c] = x[b, r, c + (L-1-r)]   (view/slice only)."""
    B = x.shape[0]
    W = 2 * L - 1
    flat = x.reshape(B, L * W)
    flat = flat[:, L - 1 : L - 1 + L * (W - 1)]
    return flat.reshape(B, L, W - 1)[:, :, :L]


@torch.no_grad()
def prepare(model, L, batch=1):
    enc = model.deberta.encoder
    rel = enc.get_rel_embedding()  # LayerNorm applied, [2S, hidden]
    r = torch.arange(-(L - 1), L)  # relative distance i-j
    if enc.position_buckets > 0 and enc.max_relative_positions > 0:
        b = md.make_log_bucket_position(r, enc.position_buckets, enc.max_relative_positions).to(torch.long)
    else:
        b = r
    for layer in enc.layer:
        att = layer.attention.self
        S = att.pos_ebd_size
        idx = torch.clamp(b + S, 0, 2 * S - 1)  # [2L-1], position n <-> r = n-(L-1)
        rel_e = rel[0 : 2 * S].unsqueeze(0)
        H = att.num_attention_heads
        if att.share_att_key:
            kp = att.transpose_for_scores(att.key_proj(rel_e), H)  # [H, 2S, d]
            qp = att.transpose_for_scores(att.query_proj(rel_e), H)
        else:
            kp = att.transpose_for_scores(att.pos_key_proj(rel_e), H)
            qp = att.transpose_for_scores(att.pos_query_proj(rel_e), H)
        G_k = kp[:, idx, :]  # [H, 2L-1, d], row n <-> r = n-(L-1)
        G_q = qp[:, idx, :]
        F_k = G_k.flip(1)  # row n <-> r = (L-1)-n
        att.register_buffer("_c2p_tab", F_k.repeat(batch, 1, 1).contiguous(), persistent=False)
        att.register_buffer("_p2c_tab", G_q.repeat(batch, 1, 1).contiguous(), persistent=False)
        att._L = L


def disentangled_attention_bias(self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor):
    L = self._L
    scale = float((query_layer.size(-1) * scale_factor) ** 0.5)
    score = 0
    if "c2p" in self.pos_att_type:
        x = torch.bmm(query_layer, self._c2p_tab.transpose(-1, -2))  # [BH, L, 2L-1]
        score = score + skew(x, L) / scale
    if "p2c" in self.pos_att_type:
        y = torch.bmm(key_layer, self._p2c_tab.transpose(-1, -2))  # [BH, L(j), 2L-1]
        score = score + skew(y, L).transpose(-1, -2) / scale
    return score


def attn_forward(self, hidden_states, attention_mask, output_attentions=False, query_states=None,
                 relative_pos=None, rel_embeddings=None):
    if query_states is None:
        query_states = hidden_states
    H = self.num_attention_heads
    q = self.transpose_for_scores(self.query_proj(query_states), H)
    k = self.transpose_for_scores(self.key_proj(hidden_states), H)
    v = self.transpose_for_scores(self.value_proj(hidden_states), H)
    scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
    scale = float((q.size(-1) * scale_factor) ** 0.5)
    s = torch.bmm(q, k.transpose(-1, -2)) / scale
    if self.relative_attention:
        s = s + self.disentangled_attention_bias(q, k, None, None, scale_factor)
    s = s.view(-1, H, s.size(-2), s.size(-1))
    # attention_mask here is the float additive mask built by get_attention_mask below
    s = s + attention_mask
    p = torch.softmax(s, dim=-1)
    ctx = torch.bmm(p.view(-1, p.size(-2), p.size(-1)), v)
    ctx = ctx.view(-1, H, ctx.size(-2), ctx.size(-1)).permute(0, 2, 1, 3).contiguous()
    ctx = ctx.view(ctx.size()[:-2] + (-1,))
    return (ctx, None)


def get_attention_mask(self, attention_mask):
    m = attention_mask.to(torch.float32)
    m = m.unsqueeze(1).unsqueeze(2) * m.unsqueeze(1).unsqueeze(3)  # [B,1,L,L], 1 = attend
    return (1.0 - m) * torch.finfo(torch.float32).min


def apply_patches():
    md.DisentangledSelfAttention.disentangled_attention_bias = disentangled_attention_bias
    md.DisentangledSelfAttention.forward = attn_forward
    md.DebertaV2Encoder.get_attention_mask = get_attention_mask
    md.DebertaV2Encoder.get_rel_pos = lambda self, h, q=None, r=None: None


if __name__ == "__main__":
    buckets = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    study.SEQ = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    L = study.SEQ

    def make():
        m = study.make_deberta()
        if buckets != 256:
            m.config.position_buckets = buckets
            torch.manual_seed(0)
            m = md.DebertaV2ForSequenceClassification(m.config).eval()
        return m

    model = make()
    ids, mask = study.inputs()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        # also compare full last hidden state (logits of a random tiny model are ~1e-3)
        ref_h = model.deberta(input_ids=ids, attention_mask=mask).last_hidden_state
    print(f"position_buckets={model.config.position_buckets} L={L}")
    apply_patches()
    prepare(model, L)
    with torch.no_grad():
        new = model(input_ids=ids, attention_mask=mask).logits
        new_h = model.deberta(input_ids=ids, attention_mask=mask).last_hidden_state
    print("patched eager vs original eager: logits diff %.3e, last_hidden diff %.3e"
          % ((new - ref).abs().max(), (new_h - ref_h).abs().max()))
    study.run(f"deberta_rewrite_b{buckets}_L{L}", model)
