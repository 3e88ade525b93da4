"""The search space as data: axes, their values, and the candidates they span.

A space spec is `AXIS=V1,V2,...` terms, separated by spaces (or given as several `--space`
options); axes left out keep their default. Attention values take the `--attention` syntax
with layer ranges (`window=32:layers=0-2`), since `,` separates values here.

    quant=int8,8da4w                  the linears' scheme (edgeformer's --quant values)
    embedding=int8,int4               the token table's scheme (--embedding-quant)
    group=32,0                        4-bit group size (--group-size; 0: one group per row,
                                      as fast as int8 at an encoder's 128 tokens); candidates
                                      with nothing at 4-bit take one value, not each
    prune=0,0.25,0.5:layers=1,auto    0 keeps every weight; R removes a share R of the heads
                                      and of the FFN neurons (by Taylor score, then
                                      distillation), R:layers=N also N whole layers; auto is
                                      the accuracy-driven prune within the search's budget
    attention=full,window=32          the attention kernels (--attention)
    seq_len=128                       the longest input (--seq-len)
    lengths=auto,static               encoders: any length up to seq_len, or padded to it (--lengths)
    batch=1,8                         encoders: texts per call of the batch method (--batch; 1:
                                      none, a smaller file for an app that runs one text at a time)
    kv_cache=fp32,int8                causal LMs: how the KV cache stores keys and values
    offsets=fp32,folded               causal LMs at quant=gguf: Q4_1 offsets exact or inside the
                                      4-bit kernel (--gguf-offsets); other candidates take one value

A causal LM's space has quant, embedding, attention (window=N: a ring cache) and kv_cache;
its default is `quant=int8,8da4w kv_cache=fp32,int8` (`quant=gguf` too for a GGUF source).

Example:
    >>> space = parse_space("quant=int8,8da4w prune=0,0.5")
    >>> [c.describe() for c in space.candidates()]
    ['quant=int8 prune=0', 'quant=int8 prune=0.5', 'quant=8da4w prune=0', 'quant=8da4w prune=0.5']
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from edgeformer.errors import UserError
from edgeformer.recipe import (
    EMBEDDING_SCHEMES,
    GGUF_OFFSETS,
    GROUP_SIZES,
    KV_CACHES,
    LENGTHS,
    MAX_BATCH,
    QUANT_SCHEMES,
    Recipe,
    stores_4bit,
)
from edgeformer.transforms.attention import SPEC_HELP, parse_attention

AXES: dict[str, str] = {
    "quant": "the linears' quantization: " + ", ".join(QUANT_SCHEMES),
    "embedding": "the token table's quantization: " + ", ".join(EMBEDDING_SCHEMES),
    "group": "4-bit group size: " + ", ".join(map(str, GROUP_SIZES)) + " (0: one group per row)",
    "prune": "0, a share R of heads and FFN neurons to remove in (0, 1) (R:layers=N also removes N whole layers), or auto",
    "attention": SPEC_HELP,
    "seq_len": "the longest input, in tokens",
    "lengths": "encoders' input lengths: " + ", ".join(LENGTHS),
    "batch": f"encoders' texts per call of the batch method, 1 (none) to {MAX_BATCH}",
    "kv_cache": "causal LMs' KV-cache storage: " + ", ".join(KV_CACHES),
    "offsets": "causal LMs at quant=gguf, where Q4_1's offsets go: " + ", ".join(GGUF_OFFSETS),
}
DEFAULTS: dict[str, tuple[str, ...]] = {"quant": ("int8", "8da4w"), "prune": ("0", "0.25", "0.5")}
LM_DEFAULTS: dict[str, tuple[str, ...]] = {"quant": ("int8", "8da4w"), "kv_cache": ("fp32", "int8")}
ENCODER_ONLY = ("seq_len", "lengths", "batch")  # a causal LM's prompt runs at its own length


@dataclass(frozen=True)
class Candidate:
    """One point of the space. None leaves the field to the target's recipe."""

    quant: str | None = None
    embedding: str | None = None
    group: int | None = None
    prune: str = "0"
    attention: str | None = None
    seq_len: int | None = None
    kv_cache: str | None = None
    lengths: str | None = None
    batch: int | None = None
    offsets: str | None = None

    @property
    def pruned(self) -> bool:
        return self.prune != "0"

    def prune_options(self, max_accuracy_drop: float | None) -> dict:
        """`train.prune_run.PruneOptions` fields of this pruning level (not called unpruned)."""
        if self.prune == "auto":
            return dict(max_accuracy_drop=max_accuracy_drop)
        share, _, layers = self.prune.partition(":layers=")
        return dict(heads=float(share), ffn=float(share), **({"layers": int(layers)} if layers else {}))

    def lm_prune_options(self, max_increase: float | None) -> dict:
        """`train.prune_lm.LMPruneOptions` fields of this level for a causal LM: a share R of the
        key-value groups and of the FFN neurons; auto, the search within `max_increase` percent."""
        if self.prune == "auto":
            return dict(max_perplexity_increase=max_increase)
        return self.prune_options(None)

    def build_prune(self) -> str | None:
        """This level as `edgeformer build --prune` spells it (None unpruned)."""
        if not self.pruned or self.prune == "auto":
            return None if not self.pruned else "auto"
        o = self.prune_options(None)
        return f"heads={o['heads']:g},ffn={o['ffn']:g}" + (f",layers={o['layers']}" if "layers" in o else "")

    def build_fields(self) -> dict:
        """The BuildSpec fields this candidate sets (pruning is done before, once per level)."""
        given = {k: v for k, v in dict(lengths=self.lengths, batch=self.batch, gguf_offsets=self.offsets).items()
                 if v is not None}  # else the defaults
        return dict(quant=self.quant, embedding_quant=self.embedding, group_size=self.group, attention=self.attention,
                    seq_len=self.seq_len, kv_cache=self.kv_cache, **given)

    @property
    def four_bit(self) -> bool:
        """Whether anything is 4-bit, so the group size matters (the targets default to int8)."""
        return stores_4bit(self.quant, self.embedding)

    def to_dict(self) -> dict:
        d = dict(quant=self.quant, embedding=self.embedding, prune=self.prune, attention=self.attention,
                 seq_len=self.seq_len)
        for axis in ("group", "lengths", "batch", "offsets"):  # without these axes, the keys stay as they were (cached searches)
            if getattr(self, axis) is not None:
                d[axis] = getattr(self, axis)
        return d if self.kv_cache is None else dict(d, kv_cache=self.kv_cache)  # encoders' keys stay as they were

    def describe(self) -> str:
        lm = self.kv_cache is not None  # a causal LM's space always has kv_cache, and prunes only when asked
        return " ".join(f"{k}={v}" for k, v in self.to_dict().items()
                        if v is not None and not (lm and k == "prune" and v == "0"))


@dataclass(frozen=True)
class Space:
    """Each axis's values; `candidates()` is their product, in a fixed order."""

    values: dict[str, tuple]

    def candidates(self) -> list[Candidate]:
        names = [a for a in AXES if a in self.values]
        cands = [Candidate(**dict(zip(names, combo, strict=True))) for combo in itertools.product(*(self.values[a] for a in names))]
        first = self.values.get("group", (None,))[0]  # nothing at 4-bit: one group value, not one candidate each
        cands = [c if c.four_bit else replace(c, group=first) for c in cands]
        plain = "fp32" if "offsets" in self.values else None  # no GGUF grid: one offsets value, the exact form's
        return list(dict.fromkeys(c if c.quant == "gguf" else replace(c, offsets=plain) for c in cands))

    def describe(self) -> str:
        return " ".join(f"{a}={','.join(map(str, v))}" for a, v in self.values.items())


def parse_space(spec: str | list[str] | None, kind: str = "encoder", gguf: bool = False) -> Space:
    """The space a spec names for a model of `kind` ("encoder" or "causal-lm"; `gguf`: a GGUF
    file, whose own grid is a default candidate too), every value checked (UserError naming
    the axis and value)."""
    terms = spec if isinstance(spec, list) else [spec] if spec else []
    lm = kind == "causal-lm"
    values: dict[str, tuple] = dict(LM_DEFAULTS if lm else DEFAULTS)
    if lm and gguf:
        values["quant"] += ("gguf",)
    seen = set()
    for term in (t for s in terms for t in s.split()):
        axis, eq, raw = term.partition("=")
        if axis not in AXES:
            raise UserError(f"--space {term!r}: unknown axis {axis!r}; axes: {', '.join(AXES)}")
        if lm and axis in ENCODER_ONLY:
            raise UserError(f"--space {term!r}: {axis} is an encoder axis (a causal LM's prompt runs at its own length); "
                            f"a causal LM searches {', '.join(a for a in AXES if a not in ENCODER_ONLY)}")
        if not lm and axis == "kv_cache":
            raise UserError(f"--space {term!r}: kv_cache applies to causal LMs; an encoder has no KV cache")
        if not lm and axis == "offsets":
            raise UserError(f"--space {term!r}: offsets applies to a GGUF causal LM's grid (quant=gguf); an encoder has none")
        if not eq or not raw.strip(","):
            raise UserError(f"--space {term!r}: give values, e.g. {axis}={_example(axis)}")
        if axis in seen:
            raise UserError(f"--space: axis {axis!r} given twice; list its values once, e.g. {axis}={_example(axis)}")
        seen.add(axis)
        vals = [v for v in raw.split(",") if v]
        values[axis] = tuple(dict.fromkeys(_check(axis, v, lm) for v in vals))
    return Space(values)


def _check(axis: str, value: str, lm: bool = False):
    """The value in its canonical form, or UserError naming it and what the axis takes."""
    allowed = f"{axis} takes {AXES[axis]}"
    if axis == "quant":
        if value not in QUANT_SCHEMES:
            raise UserError(f"--space quant={value}: unknown; {allowed}")
        if value == "gguf" and not lm:
            raise UserError(f"--space quant=gguf keeps a GGUF causal LM's own grid; an encoder searches "
                            f"{', '.join(q for q in QUANT_SCHEMES if q != 'gguf')}")
        return value  # gguf on an LM that is not a GGUF file: refused with the candidate's build
    if axis == "kv_cache":
        if value not in KV_CACHES:
            raise UserError(f"--space kv_cache={value}: unknown; {allowed}")
        return value
    if axis == "offsets":
        if value not in GGUF_OFFSETS:
            raise UserError(f"--space offsets={value}: unknown; {allowed}")
        return value
    if axis == "lengths":
        if value not in LENGTHS:
            raise UserError(f"--space lengths={value}: unknown; {allowed}")
        return value
    if axis == "batch":
        if not value.isdigit() or not 1 <= int(value) <= MAX_BATCH:
            raise UserError(f"--space batch={value}: unknown; {allowed}")
        return int(value)
    if axis == "group":
        if not value.isdigit() or int(value) not in GROUP_SIZES:
            raise UserError(f"--space group={value}: unknown; {allowed}")
        return int(value)
    if axis == "embedding":
        if value not in EMBEDDING_SCHEMES:
            raise UserError(f"--space embedding={value}: unknown; {allowed}")
        return value
    if axis == "prune":
        if value == "auto":
            return value
        share, _, layers = value.partition(":layers=")
        try:
            r, n = float(share), int(layers or 0)
        except ValueError:
            raise UserError(f"--space prune={value}: unknown; {allowed}") from None
        if not 0 <= r < 1 or n < 0:
            raise UserError(f"--space prune={value}: a share to remove must be in [0, 1) and layers >= 0; {allowed}")
        return "0" if r == 0 and n == 0 else f"{r:g}" + (f":layers={n}" if n else "")
    if axis == "attention":
        try:
            return parse_attention(value).describe()
        except UserError as e:
            raise UserError(f"--space attention={value}: {e}") from None
    try:
        n = int(value)
        replace(Recipe(), seq_len=n)
    except ValueError:
        raise UserError(f"--space seq_len={value}: not a whole number of tokens, e.g. seq_len=64,128") from None
    except UserError as e:
        raise UserError(f"--space seq_len={value}: {e}") from None
    return n


def _example(axis: str) -> str:
    return {"quant": "int8,8da4w", "embedding": "int8,int4", "group": "32,0", "prune": "0,0.25,auto", "attention": "full,window=32",
            "seq_len": "64,128", "kv_cache": "fp32,int8", "lengths": "auto,static", "batch": "1,8",
            "offsets": "fp32,folded"}[axis]
