"""A compact, export-friendly BERT-family encoder.

Hugging Face modelling code is written for training and for many backends at once: its mask
machinery, dropout, and `scaled_dot_product_attention` leave dozens of small ops outside the
XNNPACK delegate (see shared/NOTES.md). Like ExecuTorch's own `examples/models/llama`, we
re-express the model as the handful of ops an edge backend runs well, and take the weights
from the Hugging Face model (`edgeformer.models.hf`). Numerics are checked against the
Hugging Face model in tests and on every build.

Every size is per layer (heads, FFN width), read off the weights, so physically pruned
models need no special case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from edgeformer.models.activations import ACTIVATIONS
from edgeformer.models.attention_kernels import Attention, Rope


class LayerNorm(nn.LayerNorm):
    """LayerNorm written as mean/var arithmetic so XNNPACK delegates it.

    ExecuTorch 1.5.1's XNNPACK partitioner does not take `native_layer_norm`; each one would
    run as a portable kernel between two delegate calls. The same arithmetic in elementary
    ops is delegated and keeps the graph in one XNNPACK blob.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x - mean_last(x)
        y = xc * torch.rsqrt(mean_last(xc * xc) + self.eps) * self.weight
        return y if self.bias is None else y + self.bias


def mean_last(x: torch.Tensor) -> torch.Tensor:
    """Mean over the last dim, keepdim, in the one form XNNPACK delegates.

    XNNPACK's `mean.dim` takes only 4-D input averaged over dims (2, 3) with keepdim
    (`backends/xnnpack/partition/config/generic_node_configs.py: MeanDimConfig`), so view
    [..., H] as [1, N, H, 1].
    """
    n = x.shape[-1]
    return x.reshape(1, -1, n, 1).mean(dim=(2, 3), keepdim=True).reshape(*inferred(x.shape[:-1]), 1)


def inferred(dims) -> tuple:
    """`dims` for a reshape with a dynamic (symbolic) size as -1: XNNPACK's reshape takes
    static sizes and at most one inferred one."""
    return tuple(d if isinstance(d, int) else -1 for d in dims)


class Layer(nn.Module):
    """A post-LayerNorm transformer block (BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT)."""

    def __init__(self, hidden: int, num_heads: int, head_dim: int, ffn: int, act: str, eps: float):
        super().__init__()
        self.attn = Attention(hidden, num_heads, head_dim)
        self.ln1 = LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ln2 = LayerNorm(hidden, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor, mask_add: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, mask_add, rope))
        return self.ln2(x + self.ffn_out(ACTIVATIONS[self.act](self.ffn_in(x))))


class PreNormLayer(nn.Module):
    """A pre-LayerNorm block with a gated FFN (ModernBERT): x + attn(ln1(x)), then
    x + ffn_out(act(ffn_in(h)) * ffn_gate(h)) with h = ln2(x). The gate is its own linear
    (Hugging Face's `Wi` holds both halves): slicing one fused output is not delegated at a
    dynamic length, two linears are. The first layer has no ln1 (its input is the embedding
    LayerNorm's output)."""

    def __init__(self, hidden: int, num_heads: int, head_dim: int, ffn: int, act: str, eps: float):
        super().__init__()
        self.attn = Attention(hidden, num_heads, head_dim)
        self.ln1: nn.Module = LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_gate = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ln2 = LayerNorm(hidden, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor, mask_add: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask_add, rope)
        h = self.ln2(x)
        return x + self.ffn_out(ACTIVATIONS[self.act](self.ffn_in(h)) * self.ffn_gate(h))


@dataclass(frozen=True)
class EncoderShape:
    """What an encoder looks like; per-layer lists allow pruned models."""

    vocab_size: int
    hidden: int
    head_dim: int
    num_heads: tuple[int, ...]
    ffn: tuple[int, ...]
    max_positions: int
    activation: str
    eps: float
    # Factorised embeddings (ALBERT, ELECTRA-small): tokens embedded in this many dims, then a
    # linear to `hidden`. None: embedded at `hidden`, no projection.
    embedding_size: int | None = None
    # Cross-layer sharing (ALBERT): position i runs distinct layer tied[i]. None: all distinct.
    tied: tuple[int, ...] | None = None
    # Pre-norm gated layers with a final LayerNorm (ModernBERT) instead of BERT's post-norm ones.
    pre_norm: bool = False
    # Rotary positions, the base of each layer (ModernBERT's local and global layers differ);
    # None: a learned position table added to the embeddings.
    rope_theta: tuple[float, ...] | None = None

    def __post_init__(self):
        if len(self.num_heads) != len(self.ffn):
            raise ValueError(f"num_heads has {len(self.num_heads)} layers, ffn has {len(self.ffn)}")
        if self.tied is not None and len(self.tied) != len(self.ffn):
            raise ValueError(f"tied has {len(self.tied)} entries for {len(self.ffn)} layers")
        if self.rope_theta is not None and len(self.rope_theta) != len(self.ffn):
            raise ValueError(f"rope_theta has {len(self.rope_theta)} entries for {len(self.ffn)} layers")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} not supported; one of {sorted(ACTIVATIONS)}")

    @property
    def num_layers(self) -> int:
        return len(self.num_heads)

    @property
    def embedded(self) -> int:
        """The width tokens are embedded at."""
        return self.embedding_size or self.hidden

    @property
    def shares_layers(self) -> bool:
        return self.tied is not None and len(set(self.tied)) < len(self.tied)


class Encoder(nn.Module):
    """Embeddings + transformer layers + a pooled output (embedding or logits).

    forward(input_ids [B, S] int64, attention_mask [B, S] int64) ->
      head is None: L2-normalised mean-pooled embedding [B, hidden] (sentence-transformers)
      head given:   logits [B, num_labels] from the first token through `head`
    """

    def __init__(self, shape: EncoderShape, head: nn.Module | None = None, normalize: bool = True, pooling: str = "first"):
        super().__init__()
        if pooling not in ("first", "mean"):
            raise ValueError(f"pooling {pooling!r}: 'first' or 'mean'")
        self.shape = shape
        # No padding_idx (it only affects gradients): with it, aten.embedding carries an
        # argument that ExecuTorch's quantized-embedding fusion pattern does not match, and
        # a torchao dequantize_affine is left with no out-variant.
        self.word = nn.Embedding(shape.vocab_size, shape.embedded)
        # Position + token-type-0 rows summed once; sliced to the sequence length in forward.
        # A rotary model has no table: its positions enter each layer's queries and keys.
        self.pos = nn.Parameter(torch.zeros(shape.max_positions, shape.embedded)) if shape.rope_theta is None else None
        self.ln_emb = LayerNorm(shape.embedded, eps=shape.eps)
        self.project = nn.Linear(shape.embedded, shape.hidden) if shape.embedding_size is not None else None
        # A shared layer is one module at several positions: its weights are one set of
        # parameters, which torch.export lifts (and the .pte stores) once.
        distinct: dict[int, nn.Module] = {}
        tied = shape.tied if shape.tied is not None else range(shape.num_layers)
        kind = PreNormLayer if shape.pre_norm else Layer
        for t, h, f in zip(tied, shape.num_heads, shape.ffn, strict=True):
            distinct.setdefault(t, kind(shape.hidden, h, shape.head_dim, f, shape.activation, shape.eps))
        self.layers = nn.ModuleList(distinct[t] for t in tied)
        if shape.pre_norm:
            self.layers[0].ln1 = nn.Identity()
        self.ln_final = LayerNorm(shape.hidden, eps=shape.eps) if shape.pre_norm else None
        self.rope = RotaryTables(shape.max_positions, shape.head_dim, shape.rope_theta) if shape.rope_theta else None
        self.head = head
        self.normalize = normalize
        self.pooling = pooling
        self._first_token_row()

    def set_positions(self, table: torch.Tensor) -> None:
        """Replace the position table ([P, hidden]; e.g. tiled past the model's own positions)."""
        self.pos = nn.Parameter(table)
        self.shape = replace(self.shape, max_positions=table.shape[0])
        self._first_token_row()

    def _first_token_row(self) -> None:
        if self.head is not None and self.pooling == "first":  # (an unused non-persistent buffer breaks torch.export's unlifting)
            # The first token picked by a bmm with this one-hot row cut to the length: a slice of a
            # dynamic-length tensor stays outside XNNPACK's delegate, a slice of a constant runs before it.
            self.register_buffer("first_token", F.one_hot(torch.tensor(0), self.shape.max_positions).float(), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x, mask, mask_add = self.embed(input_ids, attention_mask)
        ropes = self.rotary(x.shape[1])
        for layer, rope in zip(self.layers, ropes, strict=True):
            x = layer(x, mask_add, rope)
        return self.pool(x, mask)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(embedded tokens [B, S, H], mask [B, 1, S] float, additive mask [B, 1, 1, S])."""
        b, s = input_ids.shape
        # reshape, not [:, None]: unsqueeze_copy stays outside the XNNPACK delegate.
        mask = attention_mask.to(torch.float32).reshape(b, 1, -1)
        mask_add = ((1.0 - mask) * torch.finfo(torch.float32).min).reshape(b, 1, 1, -1)
        x = self.word(input_ids)
        x = self.ln_emb(x if self.pos is None else x + self.pos[:s])
        return (x if self.project is None else self.project(x)), mask, mask_add

    def rotary(self, length: int) -> list[Rope | None]:
        """Each layer's rotary tables at `length` tokens (None for a model with learned positions)."""
        if self.rope is None:
            return [None] * len(self.layers)
        by_base = {theta: self.rope(length, theta) for theta in dict.fromkeys(self.shape.rope_theta)}
        return [by_base[theta] for theta in self.shape.rope_theta]

    def run_layer(self, i: int, x: torch.Tensor, mask_add: torch.Tensor) -> torch.Tensor:
        """Layer i alone on hidden states x (what forward does at that depth)."""
        rope = None if self.rope is None else self.rope(x.shape[1], self.shape.rope_theta[i])
        return self.layers[i](x, mask_add, rope)

    def distinct_layers(self) -> list[Layer]:
        """Each layer module once, in order of first use (a shared layer appears at many positions)."""
        return list(dict.fromkeys(self.layers))

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The model's output from the last layer's hidden states: logits, or the pooled embedding."""
        if self.ln_final is not None:
            x = self.ln_final(x)
        b, s = x.shape[0], x.shape[1]
        if self.head is not None and self.pooling == "first":  # the first token's hidden state: [B, 1, S] @ [B, S, H]
            first = self.first_token[:s].reshape(1, 1, -1)
            # At B > 1 a broadcast multiply by the mask rows (the first token is never padding)
            # gives one row per sequence: expand_copy would stay outside the delegate.
            return self.head(torch.bmm(first if b == 1 else mask * first, x).reshape(b, -1))
        # Masked mean pooling as a bmm: [B, 1, S] @ [B, S, H] -> [B, 1, H].
        summed = torch.bmm(mask, x)
        count = torch.bmm(mask, mask.permute(0, 2, 1))  # [B, 1, 1]: the mask is 0/1, so this is its sum
        pooled = summed / count.clamp(min=1e-9)
        if self.head is not None:
            return self.head(pooled.reshape(b, -1))
        if self.normalize:
            norm = torch.sqrt(mean_last(pooled * pooled) * pooled.shape[-1])
            pooled = pooled / norm.clamp(min=1e-12)
        return pooled.reshape(pooled.shape[0], -1)  # [B, H]


class RotaryTables(nn.Module):
    """cos/sin of rotary positions, computed in the graph (XNNPACK delegates sin and cos) from
    a constant column of positions sliced to the length, as Hugging Face computes them (fp32
    position x inverse frequency, halves repeated), plus the ±1 matrix of `rotate_half`."""

    def __init__(self, max_positions: int, head_dim: int, bases: tuple[float, ...]):
        super().__init__()
        # Non-persistent buffers, every one used, and R a frozen parameter: XNNPACK's lowering
        # deletes a constant that feeds a linear from the exported program it was given, which
        # the build still runs to check the `.pte` (parameters it leaves).
        self.register_buffer("positions", torch.arange(max_positions, dtype=torch.float32).reshape(-1, 1), persistent=False)
        self.bases = list(dict.fromkeys(bases))
        for i, theta in enumerate(self.bases):
            freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
            self.register_buffer(f"inv_freq{i}", torch.cat([freq, freq]).reshape(1, -1), persistent=False)
        half = head_dim // 2
        rot = torch.zeros(head_dim, head_dim)  # F.linear(x, rot) == cat(-x2, x1)
        rot[torch.arange(half), torch.arange(half) + half] = -1.0
        rot[torch.arange(half) + half, torch.arange(half)] = 1.0
        self.rot = nn.Parameter(rot, requires_grad=False)

    def forward(self, length: int, theta: float) -> Rope:
        ang = self.positions[:length] * getattr(self, f"inv_freq{self.bases.index(theta)}")  # [S, D]
        return ang.cos(), ang.sin(), self.rot


def copy_params(dst: nn.Module, src: nn.Module) -> None:
    """A Hugging Face Linear's or LayerNorm's weight and bias into ours (zeros where the source
    has no bias, as ModernBERT's; a LayerNorm's eps too)."""
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias if src.bias is not None else torch.zeros_like(dst.bias))
    if isinstance(src, nn.LayerNorm):
        dst.eps = src.eps


def clone_linear(src: nn.Linear) -> nn.Linear:
    """A plain Linear with `src`'s weights (a head module lifted out of the reference model)."""
    dst = nn.Linear(src.in_features, src.out_features)
    copy_params(dst, src)
    return dst


class Head(nn.Sequential):
    """A classification head on the pooled token(s): [Linear, activation (, LayerNorm)]* then Linear."""


class Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        if name not in ACTIVATIONS:
            raise ValueError(f"activation {name!r} not supported; one of {sorted(ACTIVATIONS)}")
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.name](x)


def fold_attention_scale(attn: Attention) -> None:
    """Scale the query rows of the fused projection by 1/sqrt(head_dim), in place."""
    q_rows = attn.num_heads * attn.head_dim
    scale = 1.0 / math.sqrt(attn.head_dim)
    with torch.no_grad():
        attn.qkv.weight[:q_rows] *= scale
        attn.qkv.bias[:q_rows] *= scale
