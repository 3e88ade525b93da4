"""One decoder layer's key-value cache and the attention that reads it.

Three ways to write and read the cache (`Decoder` picks one per layer) times two storage
types (`dtype`, the recipe's `kv_cache`):

- full cache, ExecuTorch's LLM custom ops: `llama::update_cache` writes at the positions,
  `llama::custom_sdpa` reads causally up to the last written one;
- ring cache, custom ops: `llama::update_cache_with_indices` writes at the slots,
  `custom_sdpa` reads every slot under a [T, slots] mask;
- portable (core ATen ops only, for the C++ runner): `index_put` at the slots, attention as
  two bmm + softmax over every slot under a mask.

`int8`: each key and value vector (one token, one head) is stored as int8 with its own fp32
scale and zero point (asymmetric, per token and head, as ExecuTorch's own quantized KV cache
does: `quantized_decomposed::choose_qparams_per_token_asymmetric` + `quantize_per_token`,
kernels in the wheel's quantized library and in the C++ runner). A head-vector of 64 dims
takes 69 bytes instead of 256 (codes, fp32 scale, int8 zero point; 72 in the portable layout,
which keeps scale·zero point in fp32). The custom-op path reads it with
`llama::custom_quantized_sdpa`, which also takes the query as int8 per token and head. The
portable path never dequantizes the cache: with K = sₖ·(Kq − zₖ) per slot, q·K = sₖ·(q·Kq) − sₖzₖ·Σq, and with V = sᵥ·(Vq − zᵥ),
Σ pⱼVⱼ = (p·sᵥ)·Vq − Σ pⱼsᵥzᵥ; so it keeps sₖ, sₖzₖ, sᵥ and sᵥzᵥ per slot (fp32) and converts
only the int8 codes to fp32 for the bmm, inside XNNPACK (`_codes`).
"""

from __future__ import annotations

import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  registers llama::update_cache / custom_sdpa
import executorch.kernels.quantized  # noqa: F401  out variants of quantized_decomposed::* for lowering
import torch
from torch import nn
from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401

from edgeformer.recipe import KV_CACHES


def vector_bytes(d: int, dtype: str, portable: bool) -> int:
    """Bytes the cache keeps per key or value vector of `d` dims (one token, one head)."""
    if dtype == "fp32":
        return 4 * d
    return d + 4 + (4 if portable else 1)  # codes, fp32 scale, zero point (portable: fp32 scale·zero point)


def quantize_per_head(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int8 codes, fp32 scales and int8 zero points of `x` [..., d], asymmetric over each last-dim vector."""
    scale, zero = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric.default(x, torch.int8)
    codes = torch.ops.quantized_decomposed.quantize_per_token(x, scale, zero, -128, 127, torch.int8)
    return codes, scale.to(torch.float32), zero.to(torch.int8)


def _codes(cache: torch.Tensor) -> torch.Tensor:
    """int8 codes as fp32, exactly. Written as a dequantize with scale 1 and zero point 0 because
    XNNPACK takes that into its partition (a convert beside the bmm), where `.to(torch.float32)`
    stays outside as a portable copy of the whole cache: on SmolLM2's 1024 slots that copy made
    decode 3.3x slower (27.5 against 90.6 tok/s in the C++ runner)."""
    return torch.ops.quantized_decomposed.dequantize_per_tensor(cache, 1.0, 0, -128, 127, torch.int8)


class KVCache(nn.Module):
    """The cache of one layer (`slots` positions of `kv` heads of `d` dims) and attention over it.

    forward(q [1, T, h, d], k, v [1, T, kv, d], start, ring) -> [1, T, h·d]; `ring` is
    (slots [1, T], additive mask [T, slots]) for a ring or portable layer, None for a full
    custom-op cache."""

    def __init__(self, heads: int, kv: int, d: int, slots: int, scale: float, portable: bool, dtype: str = "fp32"):
        super().__init__()
        if dtype not in KV_CACHES:
            raise ValueError(f"KV cache dtype {dtype!r}: use one of {', '.join(KV_CACHES)}")
        self.h, self.kv, self.d, self.scale = heads, kv, d, scale
        self.portable, self.int8 = portable, dtype == "int8"
        store = torch.int8 if self.int8 else torch.float32
        if portable:  # the layouts bmm reads without a copy: K transposed [kv, d, slots], V [kv, slots, d]
            k_shape, v_shape, per_slot = (kv, d, slots), (kv, slots, d), (kv, 1, slots)
        else:  # the layout update_cache / custom_sdpa take
            k_shape = v_shape = (1, slots, kv, d)
            per_slot = (1, slots, kv, 1)
        self.register_buffer("k_cache", torch.zeros(k_shape, dtype=store), persistent=False)
        self.register_buffer("v_cache", torch.zeros(v_shape, dtype=store), persistent=False)
        if self.int8:  # custom ops: scale and int8 zero point; portable: scale and scale·zero point
            zero = torch.float32 if portable else torch.int8
            for name in ("k", "v"):
                self.register_buffer(f"{name}_scales", torch.zeros(per_slot), persistent=False)
                self.register_buffer(f"{name}_zeros", torch.zeros(per_slot, dtype=zero), persistent=False)

    def forward(self, q, k, v, start, ring):
        if self.portable:
            return self._portable(q, k, v, *ring)
        if self.int8:
            return self._custom_int8(q, k, v, start, ring)
        if ring is None:  # full cache: positions are slots, causal attention up to the last one written
            torch.ops.llama.update_cache(k, self.k_cache, start)
            torch.ops.llama.update_cache(v, self.v_cache, start)
            out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0.0, True, self.scale)
        else:  # ring cache: write at the slots, read all slots under the mask
            slots, mask = ring
            torch.ops.llama.update_cache_with_indices(k, self.k_cache, 0, slots)
            torch.ops.llama.update_cache_with_indices(v, self.v_cache, 0, slots)
            first = self.k_cache.shape[1] - q.shape[1]  # custom_sdpa reads keys [0, first + T)
            out = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, first, mask, 0.0, False, self.scale)
        return out.view(1, -1, self.h * self.d)

    def _custom_int8(self, q, k, v, start, ring):
        caches = ((k, self.k_cache, self.k_scales, self.k_zeros), (v, self.v_cache, self.v_scales, self.v_zeros))
        for x, *dest in caches:
            for part, cache in zip(quantize_per_head(x), dest, strict=True):
                if ring is None:
                    torch.ops.llama.update_cache(part, cache, start)
                else:
                    torch.ops.llama.update_cache_with_indices(part, cache, 0, ring[0])
        qq, qs, qz = quantize_per_head(q)
        first, mask, causal = (start, None, True) if ring is None else (self.k_cache.shape[1] - q.shape[1], ring[1], False)
        out = torch.ops.llama.custom_quantized_sdpa(qq, self.k_cache, self.v_cache, first, mask, 0.0, causal, self.scale,
                                                    qz, qs, self.k_zeros, self.k_scales, self.v_zeros, self.v_scales)
        return out.view(1, -1, self.h * self.d)

    def _portable(self, q, k, v, slots, mask):
        """The cache write and attention in core ATen ops (and the quantized library's per-token
        kernels for int8), which every ExecuTorch runtime has: index_put at the slots, then
        grouped-query attention over every slot under `mask` ([T, slots], additive). Reads the
        whole cache each call, where custom_sdpa stops at the last written position."""
        t, g = q.shape[1], self.h // self.kv
        at = slots[0]
        if self.int8:  # codes, and per slot the scale and scale·zero point (see the module docstring)
            for x, cache, scales, zeros in ((k, self.k_cache, self.k_scales, self.k_zeros),
                                            (v, self.v_cache, self.v_scales, self.v_zeros)):
                codes, s, z = quantize_per_head(x)
                scales[:, :, at] = s[0].permute(1, 2, 0)  # [kv, 1, T]
                zeros[:, :, at] = (s * z.to(torch.float32))[0].permute(1, 2, 0)
                if cache is self.k_cache:
                    cache[:, :, at] = codes[0].permute(1, 2, 0)
                else:
                    cache[:, at] = codes[0].transpose(0, 1)
        else:
            self.k_cache[:, :, at] = k[0].permute(1, 2, 0)  # in place once lowering re-inplaces index_put
            self.v_cache[:, at] = v[0].transpose(0, 1)
        qg = q.view(t, self.kv, g, self.d).permute(1, 2, 0, 3).reshape(self.kv, g * t, self.d)
        if self.int8:
            raw = torch.bmm(qg, _codes(self.k_cache))  # [kv, g*T, slots]
            scores = (raw * self.k_scales - qg.sum(-1, keepdim=True) * self.k_zeros) * self.scale
        else:
            scores = torch.bmm(qg, self.k_cache) * self.scale  # [kv, g*T, slots]
        p = torch.softmax(scores.view(self.kv, g, t, -1) + mask, dim=-1).view(self.kv, g * t, -1)
        if self.int8:
            out = torch.bmm(p * self.v_scales, _codes(self.v_cache)) - (p * self.v_zeros).sum(-1, keepdim=True)
        else:
            out = torch.bmm(p, self.v_cache)  # [kv, g*T, d]
        return out.view(self.kv, g, t, self.d).permute(2, 0, 1, 3).reshape(1, t, self.h * self.d)

    def reset(self) -> None:
        """Zero the cache (eager use; a fresh sequence only needs to start at position 0)."""
        for buf in self.buffers():
            buf.zero_()
