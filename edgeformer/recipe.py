"""A recipe: how one model is compressed and exported. Plain data that checks itself.

The recipe is the whole "how" of a build (the model and the target are the "what" and
"where"): it goes into the manifest as is, and `build --from manifest.json` rebuilds from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from edgeformer.errors import UserError

# Quantization schemes of the linear layers, one greppable literal; each backend maps them
# to torchao configs (`Backend.linear_configs` in targets/).
QUANT_SCHEMES: dict[str, str] = {
    "fp32": "no quantization",
    "int8": "8-bit dynamic per-token activations, 8-bit per-channel symmetric weights",
    "8da4w": "8-bit dynamic per-token activations, 4-bit groupwise symmetric weights",
    "mixed": "int8 or 4-bit per linear and for the token table, by measured sensitivity, to fit the size budget "
             "(--max-pte-mb or the target's) with the least output error",
    "gguf": "a GGUF causal LM on its own grid: Q4_0/Q4_1 linears and a Q8_0 embedding exactly as shipped "
            "(4-bit groups of 32, plus a group-sum correction for Q4_1's minimums); other tensors int8",
}
# How a 4-bit linear's codes and scales are chosen (--quant 8da4w; transforms/gptq.py).
QUANT_METHODS: dict[str, str] = {
    "affine": "each group's scale from its largest magnitude (torchao's default)",
    "hqq": "HQQ scale-only: each group's scale refined to cut the rounding error (ExecuTorch's Llama export)",
    "gptq": "GPTQ on calibration data (--data): each column's rounding error spread over the columns not yet "
            "quantized, weighted by the inverse of the inputs' Gram matrix",
}
# --quant gguf: how a Q4_1 group's offset (its minimum, 8d + m) reaches XNNPACK (transforms/gguf_grid.py).
GGUF_OFFSETS: dict[str, str] = {
    "fp32": "an fp32 linear over each 32-group's mean of the input, added to the 4-bit kernel's output (exact)",
    "folded": "extra 4-bit groups of the same kernel over the group means (offsets as base-16 digits): "
              "one kernel per linear, faster decode; the means take the int8 activations' rounding",
}
# Quantization of the token-embedding table (weight-only; runs as a quantized gather).
EMBEDDING_SCHEMES: dict[str, str] = {
    "fp32": "no quantization",
    "int8": "8-bit per-row weights",
    "int4": "4-bit groupwise weights",
}
# Causal LMs: how the KV cache and attention are written in the graph.
LM_OPS: dict[str, str] = {
    "custom": "ExecuTorch's LLM ops (update_cache, custom_sdpa): the Python runtime, the C++ runner, the Android AAR",
    "portable": "core ops only (index_put, bmm, softmax): any ExecuTorch runtime, no LLM op library needed",
}
# Causal LMs: how the KV cache stores keys and values (models/kv_cache.py).
KV_CACHES: dict[str, str] = {
    "fp32": "fp32 keys and values",
    "int8": "int8 keys and values, an fp32 scale and a zero point per token and head (about 3.5x smaller at 64 dims)",
}
# Encoders: the sequence lengths one `.pte` takes.
LENGTHS: dict[str, str] = {
    "auto": "dynamic where the backend and the attention kernels allow it (XNNPACK, full attention), else static",
    "dynamic": "any length from 1 to --seq-len: each text runs at its own length",
    "static": "every text padded to --seq-len",
}
# XNNPACK delegates 4-bit groupwise linears only for group sizes that are multiples of 32
# (backends/xnnpack/operators/node_visitor.py). 0 is one group per row, all of its inputs
# (ExecuTorch's export convention): at 128 tokens XNNPACK's 4-bit kernel slows as groups shrink.
PER_ROW = 0
GROUP_SIZES = (PER_ROW, 32, 64, 128, 256)


def groups_fit(inputs: int, group_size: int) -> bool:
    """Whether a 4-bit weight of `inputs` columns splits into XNNPACK's groups of `group_size`
    (PER_ROW: one group of all of them, which XNNPACK takes at multiples of 32)."""
    return inputs % 32 == 0 if group_size == PER_ROW else inputs % group_size == 0


def stores_4bit(quant: str | None, embedding_quant: str | None) -> bool:
    """Whether these schemes put anything at 4 bits, so the group size matters (`gguf` keeps
    the file's own groups; None, a target's default, is never 4-bit)."""
    return quant in ("8da4w", "mixed") or embedding_quant == "int4"


# Encoders: texts per call of the `.pte`'s batch method. MiniLM int8 at 2 threads, per text:
# 70 tokens 1.24x faster than one at a time, 20 tokens 2.2x; 16 and 32 gain no more at 70.
BATCH = 8
MAX_BATCH = 64
MAX_THREADS = 64


@dataclass(frozen=True)
class Recipe:
    """What `build` does to a model. Every field is validated on construction.

    `attention` is the canonical form of `--attention` ("full", "window=64:global=1", …;
    see transforms/attention.py); `max_context`, `lm_ops` and `kv_cache` apply to causal LMs only.

    Example:
        >>> Recipe(quant="int8", seq_len=128).embedding_quant
        'int8'
    """

    quant: str = "int8"
    quant_method: str = "affine"  # 4-bit linears: see QUANT_METHODS
    gguf_offsets: str = "fp32"  # --quant gguf: see GGUF_OFFSETS
    group_size: int = 32
    embedding_quant: str = "int8"
    seq_len: int = 128
    threads: int = 2
    attention: str = "full"
    max_context: int | None = None  # causal LMs: KV-cache tokens (None: the model's default)
    lm_ops: str = "custom"
    kv_cache: str = "fp32"  # causal LMs: see KV_CACHES
    lengths: str = "auto"  # encoders: see LENGTHS
    batch: int = BATCH  # encoders on XNNPACK: texts per call of the batch method (1: no batch method)

    def __post_init__(self):
        _one_of("--quant", self.quant, QUANT_SCHEMES)
        _one_of("--quant-method", self.quant_method, QUANT_METHODS)
        if self.quant_method != "affine" and self.quant != "8da4w":
            raise UserError(f"--quant-method {self.quant_method} chooses 4-bit scales, and --quant {self.quant} has none "
                            f"to choose; use it with --quant 8da4w (--quant mixed measures affine and hqq itself)")
        _one_of("--gguf-offsets", self.gguf_offsets, GGUF_OFFSETS)
        if self.gguf_offsets != "fp32" and self.quant != "gguf":
            raise UserError(f"--gguf-offsets {self.gguf_offsets} places a GGUF's Q4_1 offsets, and --quant {self.quant} keeps "
                            f"no GGUF grid; use it with --quant gguf or drop it")
        _one_of("--embedding-quant", self.embedding_quant, EMBEDDING_SCHEMES)
        _one_of("--lm-ops", self.lm_ops, LM_OPS)
        _one_of("--kv-cache", self.kv_cache, KV_CACHES)
        _one_of("--lengths", self.lengths, LENGTHS)
        if self.group_size not in GROUP_SIZES:
            raise UserError(f"--group-size {self.group_size} is not supported; use one of {', '.join(map(str, GROUP_SIZES))} "
                            f"(0: one group per row)")
        if not 1 <= self.seq_len <= 8192:
            raise UserError(f"--seq-len {self.seq_len} is out of range; use 1 to 8192 (the model's own limit also applies)")
        if not 1 <= self.threads <= MAX_THREADS:
            raise UserError(f"--threads {self.threads} is out of range; use 1 to {MAX_THREADS}")
        if not 1 <= self.batch <= MAX_BATCH:
            raise UserError(f"--batch {self.batch} is out of range; use 1 (no batch method) to {MAX_BATCH}")
        if self.max_context is not None and self.max_context < 2:
            raise UserError(f"--max-context {self.max_context}: use at least 2 tokens")

    @property
    def programs(self) -> int:
        """Entry points in an encoder's `.pte`: `forward`, and the batch method when batch > 1
        (a second program beside the same weights)."""
        return 2 if self.batch > 1 else 1

    def with_overrides(self, **overrides) -> Recipe:
        """A copy with the given fields replaced; None means keep the default."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"recipe has unknown fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def _one_of(option: str, value: str, allowed: dict) -> None:
    if value not in allowed:
        raise UserError(f"{option} {value!r} is not a known scheme; use one of: {', '.join(allowed)}")
