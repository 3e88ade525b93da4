"""A Llama-family causal LM (Llama, SmolLM2, Qwen2-style) with a static key-value cache.

Written, like `encoder.py`, as the ops an edge backend runs well, with the weights taken
from the Hugging Face model (`from_hf`):

- RMSNorm's mean over a 4-D view on dims (2, 3), the one form XNNPACK's mean takes;
- RoPE without slicing: `x·cos + (x @ Rᵀ)·sin` with R the constant ±1 matrix of
  `rotate_half`, and the cos/sin rows gathered once per call;
- the cache written in place by ExecuTorch's `llama::update_cache` and read by
  `llama::custom_sdpa` (causal, grouped-query attention inside, never past the last
  written position). Both ship in the executorch wheel with eager and runtime kernels
  (`executorch.extension.llm.custom_ops`); neither is an XNNPACK op, so they run as
  kernels between the delegated linears.

forward(tokens [1, T] int64, input_pos [1] int64) writes positions input_pos .. input_pos+T-1
into the cache and returns logits [1, T, vocab] (`full_logits`) or [1, 1, vocab] for the last
token. One method serves prefill (T > 1) and decode (T = 1): export it with a dynamic T.
"""

from __future__ import annotations

from dataclasses import dataclass

import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  registers llama::update_cache / custom_sdpa
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DecoderShape:
    vocab_size: int
    hidden: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn: int
    max_context: int  # cache length: prompt + generated tokens must fit
    rope_theta: float
    eps: float
    tie_embeddings: bool

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"{self.num_heads} query heads do not divide into {self.num_kv_heads} key-value heads")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        # view(1, -1, ...): a symbolic T in a view is not delegated, a single -1 is
        ms = (x * x).view(1, -1, 1, n).mean(dim=(2, 3), keepdim=True).view(1, -1, 1)
        return x * torch.rsqrt(ms + self.eps) * self.weight


class DecoderLayer(nn.Module):
    def __init__(self, s: DecoderShape):
        super().__init__()
        self.h, self.kv, self.d = s.num_heads, s.num_kv_heads, s.head_dim
        self.norm1 = RMSNorm(s.hidden, s.eps)
        self.q = nn.Linear(s.hidden, s.num_heads * s.head_dim, bias=False)
        self.k = nn.Linear(s.hidden, s.num_kv_heads * s.head_dim, bias=False)
        self.v = nn.Linear(s.hidden, s.num_kv_heads * s.head_dim, bias=False)
        self.o = nn.Linear(s.num_heads * s.head_dim, s.hidden, bias=False)
        self.norm2 = RMSNorm(s.hidden, s.eps)
        self.gate = nn.Linear(s.hidden, s.ffn, bias=False)
        self.up = nn.Linear(s.hidden, s.ffn, bias=False)
        self.down = nn.Linear(s.ffn, s.hidden, bias=False)
        cache = (1, s.max_context, s.num_kv_heads, s.head_dim)  # the layout update_cache/custom_sdpa take
        self.register_buffer("k_cache", torch.zeros(cache), persistent=False)
        self.register_buffer("v_cache", torch.zeros(cache), persistent=False)

    def forward(self, x, cos, sin, rot, start):
        y = self.norm1(x)
        q = _rope(self.q(y).view(1, -1, self.h, self.d), cos, sin, rot)
        k = _rope(self.k(y).view(1, -1, self.kv, self.d), cos, sin, rot)
        v = self.v(y).view(1, -1, self.kv, self.d)
        torch.ops.llama.update_cache(k, self.k_cache, start)
        torch.ops.llama.update_cache(v, self.v_cache, start)
        attn = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0.0, True)
        x = x + self.o(attn.view(1, -1, self.h * self.d))
        y = self.norm2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


def _rope(x, cos, sin, rot):
    return x * cos + F.linear(x, rot) * sin


class Decoder(nn.Module):
    def __init__(self, shape: DecoderShape):
        super().__init__()
        self.shape = shape
        self.full_logits = True
        self.embed = nn.Embedding(shape.vocab_size, shape.hidden)
        self.layers = nn.ModuleList(DecoderLayer(shape) for _ in range(shape.num_layers))
        self.norm = RMSNorm(shape.hidden, shape.eps)
        self.lm_head = nn.Linear(shape.hidden, shape.vocab_size, bias=False)
        d = shape.head_dim
        inv = 1.0 / shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.outer(torch.arange(shape.max_context, dtype=torch.float64), inv)
        self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], -1).float(), persistent=False)  # [ctx, d]
        self.register_buffer("sin", torch.cat([ang.sin(), ang.sin()], -1).float(), persistent=False)
        rot = torch.zeros(d, d)  # F.linear(x, rot) == rotate_half(x) = cat(-x2, x1)
        i = torch.arange(d // 2)
        rot[i, i + d // 2] = -1.0
        rot[i + d // 2, i] = 1.0
        self.register_buffer("rot", rot, persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + t <= self.shape.max_context)
        pos = input_pos + torch.arange(t)
        cos, sin = self.cos[pos][None, :, None, :], self.sin[pos][None, :, None, :]
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, self.rot, start)
        if not self.full_logits:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))

    def reset(self) -> None:
        """Zero the cache (eager use; a fresh sequence only needs to start at position 0)."""
        for layer in self.layers:
            layer.k_cache.zero_()
            layer.v_cache.zero_()


def from_hf(model, max_context: int) -> Decoder:
    """A `Decoder` with the weights of a Hugging Face Llama-family causal LM."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    scaling = getattr(c, "rope_scaling", None) or {}
    if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
        raise ValueError(f"rope scaling {scaling} is not supported")
    params = getattr(c, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    shape = DecoderShape(
        vocab_size=c.vocab_size, hidden=c.hidden_size, num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
        num_kv_heads=c.num_key_value_heads, head_dim=head_dim, ffn=c.intermediate_size, max_context=max_context,
        rope_theta=float(theta), eps=c.rms_norm_eps, tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
    )
    dec = Decoder(shape)
    src = model.model
    with torch.no_grad():
        dec.embed.weight.copy_(src.embed_tokens.weight)
        dec.norm.weight.copy_(src.norm.weight)
        dec.lm_head.weight.copy_(model.lm_head.weight)
        for dst, lyr in zip(dec.layers, src.layers, strict=True):
            a, m = lyr.self_attn, lyr.mlp
            for name, w in (("q", a.q_proj), ("k", a.k_proj), ("v", a.v_proj), ("o", a.o_proj),
                            ("gate", m.gate_proj), ("up", m.up_proj), ("down", m.down_proj)):
                if w.bias is not None:
                    raise ValueError(f"layer {name} has a bias; Qwen2-style biases are not supported yet")
                getattr(dst, name).weight.copy_(w.weight)
            dst.norm1.weight.copy_(lyr.input_layernorm.weight)
            dst.norm2.weight.copy_(lyr.post_attention_layernorm.weight)
    return dec.eval()


def export_decoder(dec: Decoder):
    """torch.export of `forward` with a dynamic token count (1 .. max_context): prefill and decode."""
    from torch.export import Dim

    t = Dim("T", min=1, max=dec.shape.max_context)
    example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0]))
    with torch.no_grad():
        return torch.export.export(dec, example, dynamic_shapes=({1: t}, None), strict=False)
