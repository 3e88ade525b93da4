"""The attention transform: which kernel each layer's attention runs (`--attention`).

Specs, one or more (`--attention` may repeat, or join them with `+`):

    full                              the edge rewrite, every op delegated (the default)
    sdpa                              stock scaled_dot_product_attention + LayerNorm ops,
                                      the form a plain export gets (for comparison)
    window=W[:global=G][:layers=A-B]  sliding-window attention as Longformer defines it: W/2
                                      keys on each side, plus G leading global tokens
                                      (default: 1, the pooled [CLS] token, for classifiers;
                                      0 for embedders)
    hard=topK[:layers=A-B|auto]       selective hard attention: each query keeps its K best
                                      keys, in the layers given or chosen by validation
                                      accuracy (`auto`, the default; needs task data)
    positions=copy                    a --seq-len beyond the model's position table: tile the
                                      learned position embeddings (Longformer's initialisation)

Layers are 0-based: `3-5`, `0,2,4` or a mix (`0,3-5`). Kernels: `edgeformer.models.attention_kernels`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgeformer.errors import UserError

SPEC_HELP = "full, sdpa, window=W[:global=G][:layers=A-B], hard=topK[:layers=A-B|auto], positions=copy"
LM_SPEC_HELP = "full or window=W[:sinks=S] (a sliding-window ring cache)"
DEFAULT_SINKS = 4  # causal LMs: attention-sink tokens kept in a ring cache (StreamingLLM)


@dataclass(frozen=True)
class AttentionPlan:
    """What the transform does; `None` fields leave that part alone."""

    kind: str = "full"  # full | sdpa
    window: int | None = None
    global_tokens: int | None = None  # None: by task (1 for classifiers, 0 for embedders)
    window_layers: tuple[int, ...] | None = None  # None: every layer
    top_k: int | None = None
    hard_layers: tuple[int, ...] | str | None = None  # a tuple, or "auto"
    copy_positions: bool = False
    best_effort: bool = False
    sinks: int | None = None  # causal LMs' ring cache (None: DEFAULT_SINKS with a window)

    @property
    def changes_outputs(self) -> bool:
        """Whether the transformed model computes something other than the source model."""
        return bool(self.window or self.top_k or self.copy_positions)

    def describe(self) -> str:
        parts = [self.kind] if self.kind != "full" or not self.changes_outputs else []
        if self.window:
            parts.append(f"window={self.window}" + (f":global={self.global_tokens}" if self.global_tokens is not None else "")
                         + (f":layers={_layers_str(self.window_layers)}" if self.window_layers else "")
                         + (f":sinks={self.sinks}" if self.sinks is not None else ""))
        if self.top_k:
            layers = self.hard_layers if isinstance(self.hard_layers, str) else _layers_str(self.hard_layers)
            parts.append(f"hard=top{self.top_k}:layers={layers}")
        if self.copy_positions:
            parts.append("positions=copy")
        if self.best_effort:
            parts.append("full:best-effort" if not parts else parts.pop() + ":best-effort")
        return "+".join(parts) or "full"

    def cache(self) -> tuple[int | None, int]:
        """A causal LM's (window, sinks): the one attention form a decoder takes."""
        if self.kind != "full" or self.top_k or self.copy_positions or self.global_tokens is not None or self.window_layers:
            raise UserError(f"--attention {self.describe()!r} is not a causal-LM cache spec; use {LM_SPEC_HELP}")
        if self.window is None:
            return None, 0
        return self.window, DEFAULT_SINKS if self.sinks is None else self.sinks

    def check_encoder(self) -> None:
        """UserError for the parts that apply to causal LMs only."""
        if self.sinks is not None:
            raise UserError(f"--attention {self.describe()!r}: sinks= applies to causal LMs' ring cache; encoders take {SPEC_HELP}")


def parse_attention(specs: str | list[str] | None) -> AttentionPlan:
    """`--attention` values -> a plan; UserError naming the bad part and the allowed forms."""
    if not specs:
        return AttentionPlan()
    items = [p for s in ([specs] if isinstance(specs, str) else specs) for p in s.split("+") if p]
    fields: dict = {}
    for item in items:
        head, *opts = item.split(":")
        key, _, value = head.partition("=")
        opts_d = _options(item, opts)
        if "best-effort" in opts_d:
            fields["best_effort"] = True
            opts_d.pop("best-effort")
        if key in ("full", "sdpa") and not value:
            _no_options(item, opts_d)
            fields["kind"] = key
        elif key in ("window", "hard") and _seen(fields, "window" if key == "window" else "top_k"):
            raise UserError(f"--attention {item!r}: {key}= is given twice; one {key}= per build (its layers= picks where)")
        elif key == "window":
            fields["window"] = _int(item, "window", value, lo=2)
            if "global" in opts_d:
                fields["global_tokens"] = _int(item, "global", opts_d.pop("global"), lo=0)
            if "layers" in opts_d:
                fields["window_layers"] = _parse_layers(item, opts_d.pop("layers"))
            if "sinks" in opts_d:
                fields["sinks"] = _int(item, "sinks", opts_d.pop("sinks"), lo=0)
            _no_options(item, opts_d)
        elif key == "hard":
            if not value.startswith("top"):
                raise UserError(f"--attention {item!r}: hard attention is written hard=topK (e.g. hard=top8)")
            fields["top_k"] = _positive_int(item, "top-k", value[3:])
            layers = opts_d.pop("layers", "auto")
            fields["hard_layers"] = "auto" if layers == "auto" else _parse_layers(item, layers)
            _no_options(item, opts_d)
        elif key == "positions":
            if value != "copy":
                raise UserError(f"--attention {item!r}: the one positions mode is positions=copy")
            _no_options(item, opts_d)
            fields["copy_positions"] = True
        else:
            raise UserError(f"--attention {item!r} is not understood; use one of: {SPEC_HELP}")
    plan = AttentionPlan(**fields)
    if plan.kind == "sdpa" and plan.changes_outputs:
        raise UserError("--attention sdpa is the stock attention, kept for comparison; it does not combine with window= or hard=")
    return plan


def apply_attention(model, plan: AttentionPlan, seq_len: int, choose: Callable[[], list[int]] | None = None) -> dict:
    """Set each layer's attention kernel per `plan` (in place); returns what was applied.

    `seq_len` is the exported length (bounds for the window and k). `choose()` picks the
    hard-attention layers when the plan says `auto`, on the model as windowed so far (see
    `choose_hard_layers`).
    """
    from edgeformer.models.encoder import Encoder

    if not isinstance(model, Encoder):
        name = type(model).__name__
        if plan.best_effort:
            return dict(applied=False, reason=f"the attention transform does not know {name}; left untouched (best-effort)")
        raise UserError(f"--attention: the transform does not know the attention of {name}; it knows BERT-family encoders "
                        f"(add :best-effort to leave such a model untouched)")
    n = len(model.layers)
    if plan.copy_positions:
        copy_positions(model, seq_len)
    window_layers = _check_layers(plan.window_layers, n, "window") if plan.window else ()
    _whole_shared_layers(model, window_layers, "window")
    if plan.top_k and plan.hard_layers == "auto" and model.shape.shares_layers:
        raise UserError(f"--attention hard=top{plan.top_k}: layers=auto chooses layer by layer, but this model runs one "
                        f"shared layer at several depths; name the layers (hard=top{plan.top_k}:layers=0-{n - 1})")
    g = 0
    if plan.window:
        if plan.window > seq_len:
            raise UserError(f"--attention window={plan.window} is larger than the sequence ({seq_len}); "
                            f"use a window of at most {seq_len} (or a longer --seq-len)")
        g = plan.global_tokens if plan.global_tokens is not None else (1 if model.head is not None else 0)
        if g >= seq_len:
            raise UserError(f"--attention global={g}: at most {seq_len - 1} global tokens at --seq-len {seq_len}")
    if plan.top_k:
        visible = min(seq_len, 2 * (plan.window // 2) + 1 + g) if plan.window else seq_len
        if plan.top_k > visible:
            what = f"the {visible} keys a query sees in window={plan.window}" if plan.window else f"the sequence ({seq_len})"
            raise UserError(f"--attention hard=top{plan.top_k}: k is larger than {what}; use k <= {visible}")
    for ly in model.layers:
        ly.attn.kind = plan.kind
        ly.ln1.decomposed = ly.ln2.decomposed = plan.kind != "sdpa"
    model.ln_emb.decomposed = plan.kind != "sdpa"
    for i in window_layers:
        model.layers[i].attn.set_window(plan.window, g)
    hard: list[int] = []
    if plan.top_k:
        if plan.hard_layers == "auto":
            if choose is None:
                raise UserError(f"--attention hard=top{plan.top_k}: layers=auto chooses layers by validation accuracy; "
                                f"pass task data (--data fine-foods) or name the layers (hard=top{plan.top_k}:layers=3-5)")
            hard = sorted(choose())
        else:
            hard = list(_check_layers(plan.hard_layers, n, "hard"))
            _whole_shared_layers(model, hard, "hard")
        for i in hard:
            model.layers[i].attn.top_k = plan.top_k
    return dict(applied=True, spec=plan.describe(), kind=plan.kind,
                window=dict(size=plan.window, global_tokens=g, layers=list(window_layers)) if plan.window else None,
                hard=dict(top_k=plan.top_k, layers=hard, chosen_by="validation accuracy" if plan.hard_layers == "auto" else "user")
                if plan.top_k else None)


def _whole_shared_layers(model, layers, what: str) -> None:
    """UserError when `layers` holds some but not all depths of a shared layer (ALBERT): a
    kernel set on a shared module is set at every depth it runs."""
    chosen = set(layers)
    for i, ly in enumerate(model.layers):
        same = [j for j, other in enumerate(model.layers) if other is ly]
        if i in chosen and not chosen.issuperset(same):
            missing = next(j for j in same if j not in chosen)
            raise UserError(f"--attention {what}: layer {i} is the same shared layer as layer {missing} (this model shares "
                            f"weights across depths); choose all of layers {_ranges(same)} or none of them")


def _ranges(xs: list[int]) -> str:
    return f"{xs[0]}-{xs[-1]}" if xs == list(range(xs[0], xs[-1] + 1)) and len(xs) > 1 else ",".join(map(str, xs))


def copy_positions(model, seq_len: int) -> None:
    """Tile the position table to `seq_len` rows (Longformer copies RoBERTa's 512 the same way)."""
    table = model.pos.data
    if seq_len > table.shape[0]:
        reps = -(-seq_len // table.shape[0])
        model.set_positions(table.repeat(reps, 1)[:seq_len])


def layer_kinds(model) -> list[str]:
    """One short description per layer, e.g. ['full', 'window 64+1g', 'window 64+1g top8']."""
    out = []
    for ly in model.layers:
        a = ly.attn
        s = f"window {a.window}" + (f"+{a.global_tokens}g" if a.global_tokens else "") if a.window else a.kind
        out.append(s + (f" top{a.top_k}" if a.top_k else ""))
    return out


def _seen(fields: dict, name: str) -> bool:
    return fields.get(name) is not None


def _options(item: str, opts: list[str]) -> dict[str, str]:
    d = {}
    for o in opts:
        k, eq, v = o.partition("=")
        if not eq and k != "best-effort":
            raise UserError(f"--attention {item!r}: option {o!r} should be key=value (global=1, layers=3-5) or best-effort")
        d[k] = v
    return d


def _no_options(item: str, opts: dict) -> None:
    if opts:
        raise UserError(f"--attention {item!r}: unknown option(s) {', '.join(sorted(opts))}; forms: {SPEC_HELP}")


def _int(item: str, name: str, value: str, lo: int) -> int:
    try:
        v = int(value)
    except ValueError:
        raise UserError(f"--attention {item!r}: {name} {value!r} is not an integer") from None
    if v < lo:
        raise UserError(f"--attention {item!r}: {name} must be >= {lo}, got {v}")
    return v


def _positive_int(item: str, name: str, value: str) -> int:
    return _int(item, name, value, lo=1)


def _parse_layers(item: str, text: str) -> tuple[int, ...]:
    out: set[int] = set()
    for part in text.split(","):
        a, dash, b = part.partition("-")
        try:
            lo, hi = int(a), int(b if dash else a)
        except ValueError:
            raise UserError(f"--attention {item!r}: layers {text!r} should look like 3-5 or 0,2,4 (0-based)") from None
        if lo > hi:
            raise UserError(f"--attention {item!r}: layer range {part!r} is backwards; write {hi}-{lo}")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def _check_layers(layers: tuple[int, ...] | None, n: int, what: str) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(n))
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise UserError(f"--attention {what}: layer(s) {bad} out of bounds; this model has layers 0-{n - 1}")
    return layers


def _layers_str(layers: tuple[int, ...] | None) -> str:
    return ",".join(map(str, layers)) if layers else "all"
