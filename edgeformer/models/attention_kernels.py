"""Self-attention written for the edge: fully delegated, windowed in O(n·w), or top-k hard.

Three kernels share one module (`Attention`), chosen per layer by `edgeformer.transforms.
attention`:

- full: `softmax(q·kᵀ + mask)·v` as 3-D `bmm`s and static slices, the ops XNNPACK 1.5.1
  delegates. `F.scaled_dot_product_attention` is decomposed on export and its safe-softmax
  masking (`eq/any/where/logical_not`) runs outside the delegate (shared/NOTES.md); `sdpa`
  keeps that stock form for comparison.
- window: sliding-window (local) attention, as Longformer defines it: a window of w sees
  w/2 tokens on each side (r = w // 2; keys with |i - j| <= r), plus `global_tokens` leading
  tokens that see and are seen by every position. The sequence is cut into blocks of r
  queries, and each block scores only its own and its two neighbouring key blocks (3r keys),
  so work and memory grow as O(n·w), not as a band mask over an n×n score matrix. Up to 3r
  tokens, where n² <= 3·n·r, the n×n scores under a band mask are cheaper, and used.
- hard (AxFormer's selective hard attention): each query keeps only its `top_k` highest
  scores. `topk`, `sort` and comparisons are not delegated by XNNPACK, so the k-th largest
  score is found by k max-reductions, each knocking out the current maximum with a clamp
  ramp (`clamp(1 + (s - max)·RAMP, 0, 1)` is 1 at the maximum and 0 more than 1/RAMP
  below it). Scores within 1/RAMP of the k-th are kept as ties.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEG = torch.finfo(torch.float32).min  # additive mask value of a padded key
RAMP = 1e6  # slope of the max/threshold indicator: scores closer than 1e-6 count as ties
KNOCKOUT = 1e9  # subtracted from scores already counted (finite, so NEG - KNOCKOUT stays finite)

# Rotary positions for one layer: cos [S, D], sin [S, D], and R with F.linear(x, R) ==
# rotate_half(x), so x·cos + (x Rᵀ)·sin rotates without slicing a dynamic-length tensor.
Rope = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Attention(nn.Module):
    """Multi-head self-attention with a fused QKV projection.

    The 1/sqrt(head_dim) scale is folded into the query rows of `qkv` at load time.
    `kind` is "full" | "sdpa"; `window` (and `global_tokens`) and `top_k` are set by the
    attention transform and are None/0 for plain full attention.
    """

    def __init__(self, hidden: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.qkv = nn.Linear(hidden, 3 * num_heads * head_dim)
        self.out = nn.Linear(num_heads * head_dim, hidden)
        self.kind = "full"
        self.window: int | None = None
        self.global_tokens = 0
        self.top_k: int | None = None
        # [1, H, 1, 1] zeros: adding it repeats a mask row per head. A plain tensor attribute,
        # so torch.export keeps it as a constant (`torch.zeros` in forward is an op outside the delegate).
        self.head_rows = torch.zeros(1, num_heads, 1, 1)

    def set_window(self, window: int | None, global_tokens: int = 0) -> None:
        if window is not None and window < 2:
            raise ValueError(f"window {window}: a window sees window // 2 tokens on each side; use 2 or more")
        self.window, self.global_tokens = window, global_tokens if window else 0
        for name in ("band", "positions", "local"):
            if hasattr(self, name):
                delattr(self, name)
        if window:
            r = window // 2
            # Relative position inside a block of r: query i of a block sees key j of [prev,
            # own, next] block when |j - r - i| <= r. The same [r, 3r] for every block.
            i = torch.arange(r)[:, None]
            j = torch.arange(3 * r)[None, :]
            # Plain tensor attributes, not buffers: export keeps the ones the traced length uses as
            # constants (an unused non-persistent buffer breaks torch.export's unlifting).
            self.band = torch.where((j - r - i).abs() <= r, 0.0, NEG)
            # For sequences up to 3r, where blocks would cost more than the n×n scores: token
            # positions and "not a global token" flags, to compute the band mask in the graph.
            self.positions = torch.arange(3 * r, dtype=torch.float32)
            self.local = (self.positions >= self.global_tokens).float()

    def extra_repr(self) -> str:
        parts = [f"heads={self.num_heads}, head_dim={self.head_dim}, kind={self.kind}"]
        if self.window:
            parts.append(f"window={self.window}, global_tokens={self.global_tokens}")
        if self.top_k:
            parts.append(f"top_k={self.top_k}")
        return ", ".join(parts)

    def forward(self, x: torch.Tensor, mask_add: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        """x [B, S, hidden], mask_add [B, 1, 1, S] (0 for a token, NEG for padding); `rope`
        rotates queries and keys by position (ModernBERT), after the scale folded into q."""
        # 3-D bmm and static slices only: 4-D matmul decomposes into expand_copy and
        # indexing into select_copy, neither of which XNNPACK 1.5.1 delegates.
        # A dynamic sequence length S appears in reshapes only as the one inferred (-1) dim:
        # XNNPACK's reshape takes no symbolic sizes and its slices no dynamic input.
        b, s, _ = x.shape
        h, d = self.num_heads, self.head_dim
        if hasattr(self, "qkv"):
            qkv = self.qkv(x)  # [B, S, 3*H*D]
            q, k, v = qkv[:, :, : h * d], qkv[:, :, h * d : 2 * h * d], qkv[:, :, 2 * h * d :]
        else:  # split by `split_qkv` for a dynamic length
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = (t.reshape(b, -1, h, d).permute(0, 2, 1, 3).contiguous().view(b * h, -1, d) for t in (q, k, v))
        if rope is not None:
            cos, sin, rot = rope
            q, k = (t * cos + F.linear(t, rot) * sin for t in (q, k))
        if self.kind == "sdpa":
            ctx = F.scaled_dot_product_attention(q.reshape(b, h, s, d), k.reshape(b, h, s, d), v.reshape(b, h, s, d),
                                                 attn_mask=mask_add, scale=1.0).reshape(b * h, s, d)
        elif self.window:
            ctx = self._windowed(q, k, v, mask_add, b)
        else:
            ctx = self._full(q, k, v, mask_add, b)
        return self.out(ctx.reshape(b, h, -1, d).permute(0, 2, 1, 3).contiguous().view(b, -1, h * d))

    def split_qkv(self) -> None:
        """Replace the fused projection by q, k and v linears (the same rows, so the same
        numbers at every quantization): slicing the fused output is not delegated when the
        sequence length is dynamic, three linears are."""
        n = self.num_heads * self.head_dim
        for name, rows in zip("qkv", (slice(0, n), slice(n, 2 * n), slice(2 * n, 3 * n)), strict=True):
            lin = nn.Linear(self.qkv.in_features, n)
            with torch.no_grad():
                lin.weight.copy_(self.qkv.weight[rows])
                lin.bias.copy_(self.qkv.bias[rows])
            setattr(self, name, lin)
        del self.qkv

    def _full(self, q, k, v, mask_add, b, band=None):
        """[B*H, S, D] -> [B*H, S, D]; every query scores every key (those `band` [1, S, S] allows)."""
        bh = q.shape[0]
        scores = torch.bmm(q, k.permute(0, 2, 1))  # [B*H, S, S]
        # 3-D adds of the mask row per sequence ([B, 1, 1, S]) and the window's band ([1, S, S]):
        # no reshape with two sequence-long dims, so S can stay dynamic. At B > 1 the row is
        # repeated per head by a broadcast add ([B, H, 1, S] -> [B*H, 1, S]; expand_copy is not delegated).
        if not self.top_k:
            rows = mask_add if b == 1 else mask_add + self.head_rows
            scores = scores + rows.reshape(bh if b > 1 else 1, 1, -1)
            return torch.bmm((scores if band is None else scores + band).softmax(dim=-1), v)
        s = q.shape[1]
        scores = scores.reshape(b, bh // b, s, -1) + (mask_add if band is None else mask_add + band)
        scores = keep_top_k(scores, self.top_k)
        return torch.bmm(scores.softmax(dim=-1).reshape(bh, s, -1), v)

    def _windowed(self, q, k, v, mask_add, b):
        """[B*H, S, D] -> [B*H, S, D], scoring only keys at most window // 2 away (+ globals)."""
        bh, s, d = q.shape
        w, g = self.window // 2, self.global_tokens  # blocks of w = r queries
        if s <= 3 * w:  # short: n×n scores under a band mask cost no more than 3w-wide blocks
            return self._full(q, k, v, mask_add, b, band=self._dense_band(s))
        nb = -(-s // w)  # blocks
        tail = nb * w - s
        # Keys and values padded by one block before and after (and up to a whole block at the
        # end): block i's keys are rows [i*w, i*w + 3w) of the padded tensor.
        kb = _neighbour_blocks(_pad_rows(k, w, w + tail), nb, w)  # [B*H*nb, 3w, D]
        vb = _neighbour_blocks(_pad_rows(v, w, w + tail), nb, w)
        qb = _pad_rows(q, 0, tail).reshape(bh * nb, w, d)
        # Key mask per block: padding, the out-of-sequence rows, and the global tokens (they
        # are scored once, below, not twice).
        key_add = mask_add.reshape(b, 1, s)
        local_add = key_add[:, :, g:] if g else key_add
        local_add = F.pad(local_add, (w + g, w + tail), value=NEG).reshape(b, nb * w + 2 * w, 1)
        local_add = _neighbour_blocks(local_add, nb, w).reshape(b, 1, nb, 1, 3 * w)
        scores = torch.bmm(qb, kb.permute(0, 2, 1)).reshape(b, bh // b, nb, w, 3 * w)
        scores = (scores + (local_add + self.band)).reshape(b, bh // b * nb, w, 3 * w)
        if g:
            # Every query also scores the g global keys: [B*H, nb*w, g] beside its block's.
            gk, gv = k[:, :g], v[:, :g]
            g_scores = torch.bmm(_pad_rows(q, 0, tail), gk.permute(0, 2, 1)).reshape(b, bh // b, nb * w, g)
            g_scores = (g_scores + mask_add[:, :, :, :g]).reshape(b, bh // b * nb, w, g)
            scores = torch.cat([scores, g_scores], dim=-1)
        if self.top_k:
            scores = keep_top_k(scores, self.top_k)
        probs = scores.softmax(dim=-1)
        local = probs[..., : 3 * w] if g else probs  # a full-width slice would export as alias_copy, not delegated
        ctx = torch.bmm(local.reshape(bh * nb, w, 3 * w), vb).reshape(bh, nb * w, d)
        if g:
            ctx = ctx + torch.bmm(probs[..., 3 * w :].reshape(bh, nb * w, g), gv)
            # The global queries see the whole sequence.
            g_ctx = self._full(q[:, :g], k, v, mask_add, b)
            ctx = torch.cat([g_ctx, ctx[:, g:s]], dim=1) if s > g else g_ctx
        elif tail:
            ctx = ctx[:, :s]
        return ctx

    def _dense_band(self, s: int) -> torch.Tensor:
        """[1, s, s] additive mask: 0 where |i - j| <= window // 2 or either token is global, else NEG.

        Computed from two small constant vectors with delegated ops (sub, abs, clamp, mul), so
        the `.pte` carries no n×n constant; each reshape has one inferred (-1) size, so `s`
        may be dynamic (up to 3 * (window // 2), the most this path serves).
        """
        p = self.positions[:s]
        far = ((p.reshape(1, -1, 1) - p.reshape(1, 1, -1)).abs() - self.window // 2).clamp(0.0, 1.0)
        if self.global_tokens:
            loc = self.local[:s]
            far = far * loc.reshape(1, -1, 1) * loc.reshape(1, 1, -1)
        return far * NEG


def constants_to(model: nn.Module, device: torch.device | str) -> None:
    """Move every Attention's plain-tensor constants (the head-row zeros, the window's band and
    positions) to `device`: `Module.to` moves parameters and buffers only, and these are plain
    attributes so that export keeps only the ones a length uses (see `Attention.set_window`)."""
    for m in model.modules():
        if isinstance(m, Attention):
            for name in ("head_rows", "band", "positions", "local"):
                if hasattr(m, name):
                    setattr(m, name, getattr(m, name).to(device))


def _pad_rows(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Zero rows before/after dim 1 of a [N, S, D] tensor (a no-op when both are 0)."""
    return F.pad(x, (0, 0, before, after)) if before or after else x


def _neighbour_blocks(x: torch.Tensor, nb: int, w: int) -> torch.Tensor:
    """[N, nb*w + 2w, D] -> [N*nb, 3w, D]: block i gets rows [i*w, i*w + 3w).

    Three static slices and a concatenation, all delegated; no unfold/as_strided.
    """
    n, _, d = x.shape
    parts = [x[:, j * w : j * w + nb * w].reshape(n, nb, w, d) for j in range(3)]
    return torch.cat(parts, dim=2).reshape(n * nb, 3 * w, d)


def keep_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Scores [4-D, keys last] with all but each query's k largest pushed to NEG-like values.

    Only max.dim, clamp and arithmetic: every op is delegated by XNNPACK.
    """
    last = scores.dim() - 1  # XNNPACK's max reduction takes dim 2 or 3 of a 4-D tensor, not -1
    rest = scores
    for _ in range(k - 1):
        top = rest.max(dim=last, keepdim=True).values
        rest = rest - (1.0 + (rest - top) * RAMP).clamp(0.0, 1.0) * KNOCKOUT
    kth = rest.max(dim=last, keepdim=True).values
    keep = (1.0 + (scores - kth) * RAMP).clamp(0.0, 1.0)
    return scores + (keep - 1.0) * KNOCKOUT
