"""A Llama-layout causal LM (Llama, SmolLM2, Mistral, Qwen2, Qwen3, Phi-3, Gemma 3) with a static key-value cache.

Written, like `encoder.py`, as the ops an edge backend runs well, with the weights taken
from the Hugging Face model (`lm_families.from_hf`):

- RMSNorm's mean over a 4-D view on dims (2, 3), the one form XNNPACK's mean takes;
- RoPE without slicing: `x·cos + (x @ Rᵀ)·sin` with R the constant ±1 matrix of
  `rotate_half`; cos/sin computed in the graph from the positions, in fp32 as Hugging Face
  does, so positions are not bounded by a table (partial rotary, Phi-3 style: the dims past
  `rotary_dim` get angle 0, so cos 1 and sin 0 pass them through);
- Qwen3's q/k RMSNorm over each head's dims, before RoPE;
- the cache (`kv_cache.KVCache`, fp32 or int8) written in place by ExecuTorch's
  `llama::update_cache` and read by `llama::custom_sdpa` (causal, grouped-query attention
  inside, never past the last written position). Both ship in the executorch wheel with
  eager and runtime kernels (`executorch.extension.llm.custom_ops`); neither is an XNNPACK
  op, so they run as kernels between the delegated linears.

Sliding-window cache (`window`): a ring buffer that keeps memory flat however long the
generation runs. Each query sees the `window` most recent positions (itself included) plus
the first `sinks` positions (attention sinks, StreamingLLM). The cache holds
`sinks + window + chunk - 1` slots: sinks first, then a ring, so a prefill chunk of up to
`chunk` tokens never overwrites a key that one of its own queries still needs. Keys carry
their rotary position from when they were written (absolute positions, as the model was
trained), `llama::update_cache_with_indices` writes each token at its slot, and
`custom_sdpa` reads every slot under a [T, slots] mask computed in the graph from input_pos.
While the sequence fits in sinks + window this is exactly full attention. With `sliding`
only the layers it names ring (Gemma 3: five sliding layers to one global); the others keep
a full cache of `max_context` slots, and each kind may have its own RoPE base.

Portable variant (`portable`, `build --lm-ops portable`): the cache written with index_put and
attention as two bmm + softmax over every slot under a mask, all core ATen ops. ExecuTorch's
C++ libraries in the wheel have no LLM custom ops (those live only in a Python extension that
links libtorch), so this is the form the C++ runner (`runtimes/cpp`) can run.

forward(tokens [1, T] int64, input_pos [1] int64) writes positions input_pos .. input_pos+T-1
into the cache and returns logits [1, T, vocab] (`full_logits`) or [1, 1, vocab] for the last
token. One method serves prefill (T > 1) and decode (T = 1): export it with a dynamic T.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeformer.models.activations import ACTIVATIONS
from edgeformer.models.kv_cache import KVCache


@dataclass(frozen=True)
class DecoderShape:
    vocab_size: int
    hidden: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn: int
    max_context: int  # full cache: its slots (prompt + generated tokens must fit)
    rope_theta: float
    eps: float
    tie_embeddings: bool
    qkv_bias: bool = False  # Qwen2-style
    qk_norm: bool = False  # Qwen3: RMSNorm over each query and key head before RoPE
    rotary_dim: int | None = None  # RoPE on the first rotary_dim dims of a head (None: all of them)
    window: int | None = None  # sliding-window ring cache: the recent positions each query sees
    sinks: int = 0  # first positions every query also sees (ring cache only)
    chunk: int = 128  # the most tokens one call may write (longer prompts are fed in chunks)
    portable: bool = False  # core ATen ops only (index_put, bmm, softmax): no LLM custom-op library needed
    kv_cache: str = "fp32"  # how the cache stores keys and values: fp32 | int8 (kv_cache.py)
    sliding: tuple[bool, ...] | None = None  # which layers take the ring (Gemma 3's interleaving); None: all
    local_rope_theta: float | None = None  # RoPE base of the local layers, where it differs (Gemma 3)
    local_layers: tuple[bool, ...] | None = None  # the layers the config trained as sliding (their RoPE base),
    # whatever cache they get: with a window no shorter than the context they keep a full one
    # Gemma 3: embeddings times sqrt(hidden), norms after attention and around the MLP too,
    # a tanh-GELU MLP, attention scaled by query_pre_attn_scalar**-0.5, soft-capped logits
    embed_scale: float = 1.0
    sandwich_norms: bool = False
    activation: str = "silu"  # a Hugging Face name in `activations.ACTIVATIONS`
    attn_scale: float | None = None  # None: head_dim**-0.5
    final_softcap: float | None = None
    # a pruned model (`edgeformer prune`): (query heads, key-value heads, FFN width) of each layer;
    # None: num_heads, num_kv_heads and ffn in every layer
    layer_sizes: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self):
        if self.layer_sizes is not None and len(self.layer_sizes) != self.num_layers:
            raise ValueError(f"layer_sizes names {len(self.layer_sizes)} layers, the model has {self.num_layers}")
        for h, kv, _ in self.layer_sizes or [(self.num_heads, self.num_kv_heads, self.ffn)]:
            if kv < 1 or h % kv:
                raise ValueError(f"{h} query heads do not divide into {kv} key-value heads")
        if self.window is None and (self.sinks or self.sliding):
            raise ValueError("attention sinks and sliding layers need a sliding window")
        for name in ("sliding", "local_layers"):
            if getattr(self, name) is not None and len(getattr(self, name)) != self.num_layers:
                raise ValueError(f"{name} names {len(getattr(self, name))} layers, the model has {self.num_layers}")

    def sizes(self, layer: int) -> tuple[int, int, int]:
        """(query heads, key-value heads, FFN width) of `layer`."""
        return self.layer_sizes[layer] if self.layer_sizes else (self.num_heads, self.num_kv_heads, self.ffn)

    @property
    def kv_heads_total(self) -> int:
        """Key-value heads summed over the layers (what one cached token costs, in head vectors)."""
        return sum(self.sizes(i)[1] for i in range(self.num_layers))

    def ring(self, layer: int) -> bool:
        """Whether `layer` keeps a ring cache (else a full one of max_context slots)."""
        return self.window is not None and (self.sliding is None or self.sliding[layer])

    @property
    def mixed(self) -> bool:
        """Some layers ring, some full: the context is bounded by max_context, a call by chunk."""
        return self.window is not None and self.sliding is not None and not all(self.sliding)

    @property
    def max_tokens_per_call(self) -> int:
        """A call's most tokens (a prompt longer than this is fed in chunks). A full cache could take
        the whole context in one call, but XNNPACK sizes its workspace for the largest shape a
        delegate accepts, and it is resident once run: 1024 tokens' attention scores held SmolLM2's
        runner at +36 MiB for every reply (the chunk's prefill speed is the same)."""
        if self.window is None or self.mixed:
            return min(self.chunk, self.max_context)
        return self.chunk

    @property
    def cache_len(self) -> int:
        """Slots in a ring layer's cache (every layer's when there is no ring)."""
        if self.window is None:
            return self.max_context
        return self.sinks + self.window + self.chunk - 1

    def layer_slots(self, layer: int) -> int:
        return self.cache_len if self.ring(layer) else self.max_context


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
    def __init__(self, s: DecoderShape, index: int = 0):
        super().__init__()
        heads, kv, ffn = s.sizes(index)
        self.h, self.kv, self.d = heads, kv, s.head_dim
        self.ring = s.ring(index)
        self.local = bool(s.local_layers and s.local_layers[index])  # takes the local RoPE base
        scale = s.attn_scale if s.attn_scale is not None else s.head_dim**-0.5
        self.act = ACTIVATIONS[s.activation]
        self.norm1 = RMSNorm(s.hidden, s.eps)
        self.q_norm = RMSNorm(s.head_dim, s.eps) if s.qk_norm else None
        self.k_norm = RMSNorm(s.head_dim, s.eps) if s.qk_norm else None
        self.q = nn.Linear(s.hidden, heads * s.head_dim, bias=s.qkv_bias)
        self.k = nn.Linear(s.hidden, kv * s.head_dim, bias=s.qkv_bias)
        self.v = nn.Linear(s.hidden, kv * s.head_dim, bias=s.qkv_bias)
        self.o = nn.Linear(heads * s.head_dim, s.hidden, bias=False)
        self.norm2 = RMSNorm(s.hidden, s.eps)
        # Gemma's sandwich: the attention and MLP outputs normed again before the residual add
        self.post_attn_norm = RMSNorm(s.hidden, s.eps) if s.sandwich_norms else None
        self.post_ffn_norm = RMSNorm(s.hidden, s.eps) if s.sandwich_norms else None
        self.gate = nn.Linear(s.hidden, ffn, bias=False)
        self.up = nn.Linear(s.hidden, ffn, bias=False)
        self.down = nn.Linear(ffn, s.hidden, bias=False)
        # what q/k/v and gate/up take of their shared input (--gguf-offsets folded widens it once for all three)
        self.attn_in, self.ffn_in = nn.Identity(), nn.Identity()
        self.cache = KVCache(heads, kv, s.head_dim, s.layer_slots(index), scale, s.portable,
                             s.kv_cache)

    def forward(self, x, cos, sin, rot, start, ring):
        """`ring`: (slots, mask) for a ring layer or a portable one, None for a full custom-op cache."""
        y = self.attn_in(self.norm1(x))
        q, k = self.q(y), self.k(y)
        if self.q_norm is not None:  # per head: [1, T*heads, d]
            q, k = self.q_norm(q.view(1, -1, self.d)), self.k_norm(k.view(1, -1, self.d))
        q = _rope(q.view(1, -1, self.h, self.d), cos, sin, rot)
        k = _rope(k.view(1, -1, self.kv, self.d), cos, sin, rot)
        v = self.v(y).view(1, -1, self.kv, self.d)
        attn = self.cache(q, k, v, start, ring)
        a = self.o(attn)
        x = x + (a if self.post_attn_norm is None else self.post_attn_norm(a))
        y = self.ffn_in(self.norm2(x))
        f = self.down(self.act(self.gate(y)) * self.up(y))
        return x + (f if self.post_ffn_norm is None else self.post_ffn_norm(f))


def _rope(x, cos, sin, rot):
    return x * cos + F.linear(x, rot) * sin


def _inv_freq(s: DecoderShape, theta: float) -> torch.Tensor:
    """As transformers' default rope init computes it (fp32), so angles match to the bit; laid
    out as its cat(freqs, freqs), then zeros for the dims RoPE leaves alone (partial rotary)."""
    d, r = s.head_dim, s.rotary_dim or s.head_dim
    f = 1.0 / theta ** (torch.arange(0, r, 2).float() / r)
    return torch.cat([f, f, torch.zeros(d - r)])


def _cos_sin(pos: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ang = (pos.float()[:, None] * inv_freq[None, :])[None, :, None, :]
    return ang.cos(), ang.sin()


class Decoder(nn.Module):
    def __init__(self, shape: DecoderShape):
        super().__init__()
        self.shape = shape
        self.full_logits = True
        self.embed = nn.Embedding(shape.vocab_size, shape.hidden)
        self.layers = nn.ModuleList(DecoderLayer(shape, i) for i in range(shape.num_layers))
        self.norm = RMSNorm(shape.hidden, shape.eps)
        self.lm_head = nn.Linear(shape.hidden, shape.vocab_size, bias=False)
        self.register_buffer("inv_freq", _inv_freq(shape, shape.rope_theta), persistent=False)
        local = shape.local_rope_theta
        self.register_buffer("inv_freq_local", _inv_freq(shape, local) if local else None, persistent=False)
        d, r = shape.head_dim, shape.rotary_dim or shape.head_dim
        rot = torch.zeros(d, d)  # F.linear(x, rot) == rotate_half(x) = cat(-x2, x1) on the first r dims
        i = torch.arange(r // 2)
        rot[i, i + r // 2] = -1.0
        rot[i + r // 2, i] = 1.0
        self.register_buffer("rot", rot, persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        s = self.shape
        t = tokens.shape[1]
        start = input_pos[0].item()
        torch._check(start >= 0)
        pos = input_pos + torch.arange(t)
        rope = {False: _cos_sin(pos, self.inv_freq)}
        rope[True] = _cos_sin(pos, self.inv_freq_local) if self.inv_freq_local is not None else rope[False]
        full = ring = None
        if s.window is None or s.mixed:
            torch._check(start + t <= s.max_context)
            if s.portable:  # slots are positions; causal mask over every slot
                seen = torch.arange(s.max_context)[None, :] <= pos[:, None]
                full = pos[None, :], torch.where(seen, 0.0, float("-inf"))
        if s.window is not None:
            ring = self._ring(pos)
        x = self.embed(tokens)
        if s.embed_scale != 1.0:
            x = x * s.embed_scale
        for layer in self.layers:
            cos, sin = rope[layer.local]
            x = layer(x, cos, sin, self.rot, start, ring if layer.ring else full)
        if not self.full_logits:
            x = x[:, -1:]
        logits = self.lm_head(self.norm(x))
        if s.final_softcap is not None:
            logits = torch.tanh(logits / s.final_softcap) * s.final_softcap
        return logits

    def _ring(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slots [1, T] to write positions `pos` to, additive mask [T, slots]) for the ring cache."""
        s = self.shape
        sinks, n = s.sinks, s.cache_len - s.sinks  # n: ring slots
        slots = torch.where(pos < sinks, pos, sinks + torch.remainder(pos - sinks, n))
        # the position each slot holds once `pos` is written: the latest p <= last with slot(p) == j
        last = pos[-1:]
        j = torch.arange(s.cache_len)
        r = j - sinks
        ring_pos = sinks + r + n * torch.div(last - sinks - r, n, rounding_mode="floor")
        held = torch.where(j < sinks, j, ring_pos)  # ring_pos < sinks: never written yet
        written = torch.where(j < sinks, j <= last, ring_pos >= sinks)
        q = pos[:, None]
        seen = written[None, :] & (held[None, :] <= q) & ((j < sinks)[None, :] | (q - held[None, :] < s.window))
        mask = torch.where(seen, 0.0, float("-inf"))
        return slots[None, :], mask

    def reset(self) -> None:
        """Zero the cache (eager use; a fresh sequence only needs to start at position 0)."""
        for layer in self.layers:
            layer.cache.reset()


def export_decoder(dec: Decoder):
    """torch.export of `forward` with a dynamic token count (1 .. max_tokens_per_call): prefill and
    decode; a static one when that is 1 (`--seq-len 1`: the prompt goes in a token at a time)."""
    from torch.export import Dim

    most = dec.shape.max_tokens_per_call
    example = (torch.zeros(1, min(2, most), dtype=torch.long), torch.tensor([0]))
    shapes = ({1: Dim("T", min=1, max=most)}, None) if most > 1 else None
    with torch.no_grad():
        return torch.export.export(dec, example, dynamic_shapes=shapes, strict=False)
