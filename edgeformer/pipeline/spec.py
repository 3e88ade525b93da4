"""A build, as data: `BuildSpec` says what to build, for where, and how; `validate()` holds
every check across options, so a bad combination stops before any work.

The CLI and the Python API both make one; the manifest records it (with the recipe resolved
against the target's defaults), and `edgeformer build --from manifest.json` makes it again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from edgeformer.errors import UserError
from edgeformer.recipe import Recipe
from edgeformer.targets import Budgets, Target, get_target
from edgeformer.transforms.attention import AttentionPlan, parse_attention

SPEC_VERSION = 1
KINDS = ("encoder", "causal-lm", "server")
# Fields that say where this build writes, not what it builds: not recorded in the manifest.
LOCAL_FIELDS = ("out", "dump")


@dataclass(frozen=True)
class BuildSpec:
    """One build. Recipe fields left None take the target's defaults.

    Example:
        >>> spec = BuildSpec("minilm", target="rpi5", out="out/pi", quant="8da4w")
        >>> spec.validate().recipe().quant
        '8da4w'
    """

    model: str  # a bundled name, a Hugging Face folder or a causal LM's .gguf
    target: str = "host"
    out: str | Path = "out"
    # the recipe (None: the target's default)
    quant: str | None = None
    quant_method: str | None = None  # 4-bit scales: affine | hqq | gptq (calibrated on --data)
    gguf_offsets: str | None = None  # --quant gguf: fp32 | folded (recipe.GGUF_OFFSETS)
    group_size: int | None = None
    embedding_quant: str | None = None
    seq_len: int | None = None
    threads: int | None = None
    attention: str | tuple[str, ...] | None = None  # see transforms/attention.py
    max_context: int | None = None  # causal LMs: KV-cache tokens
    lm_ops: str | None = None  # causal LMs: custom | portable
    kv_cache: str | None = None  # causal LMs: fp32 | int8
    lengths: str | None = None  # encoders: auto | dynamic | static
    batch: int | None = None  # encoders on XNNPACK: texts per call of the batch method
    # compression and data
    prune: str | None = None  # "auto" or "heads=R,ffn=R,layers=N" (encoders)
    data: str | None = None  # task data for --prune and hard attention's layers=auto
    eval_data: str | None = None  # accuracy (encoders) or perplexity (causal LMs) becomes a budget
    # budgets and where they are measured
    min_sqnr_db: float | None = None
    max_accuracy_drop: float | None = None
    max_perplexity_increase: float | None = None  # causal LMs with eval_data, percent
    max_pte_mb: float | None = None
    enforce: bool = True
    bench_iters: int = 50
    device: str | None = None  # ssh://user@host | native | qemu-aarch64
    fallback: str | None = None  # server-cuda without a GPU: cpu
    dump: str | Path | None = None

    def __post_init__(self):
        if isinstance(self.attention, list):  # the CLI repeats --attention
            object.__setattr__(self, "attention", tuple(self.attention) or None)

    # ---- derived views (cheap; validate() calls each once so errors surface early) ----

    def target_info(self) -> Target:
        return get_target(self.target)

    def kind(self) -> str:
        """"causal-lm", "server" or "encoder"."""
        from edgeformer.models.causal import is_causal_lm

        if is_causal_lm(self.model):
            return "causal-lm"
        return "server" if self.target_info().backend == "cuda" else "encoder"

    def attention_plan(self) -> AttentionPlan:
        return parse_attention(list(self.attention) if isinstance(self.attention, tuple) else self.attention)

    def recipe(self) -> Recipe:
        """The full recipe: the target's defaults with this spec's fields over them."""
        base = self.target_info().recipe
        return base.with_overrides(quant=self.quant or self._default_lm_quant(), quant_method=self.quant_method,
                                   gguf_offsets=self.gguf_offsets,
                                   group_size=self.group_size,
                                   embedding_quant=self.embedding_quant,
                                   seq_len=self.seq_len, threads=self.threads, attention=self.attention_plan().describe(),
                                   max_context=self.max_context, lm_ops=self.lm_ops, kv_cache=self.kv_cache,
                                   lengths=self.lengths, batch=self.batch)

    def budgets(self) -> Budgets:
        """The target's budgets for this kind of model, with this spec's overrides."""
        tgt = self.target_info()
        kind = self.kind()
        b = tgt.lm_budgets if kind == "causal-lm" else tgt.budgets
        if self.min_sqnr_db is not None:
            b = replace(b, min_sqnr_db=self.min_sqnr_db)
        if self.max_accuracy_drop is not None:
            b = replace(b, max_accuracy_drop=self.max_accuracy_drop)
        if self.max_pte_mb is not None:
            b = replace(b, max_pte_mb=self.max_pte_mb)
        if self.max_perplexity_increase is not None:
            b = replace(b, max_perplexity_increase_pct=self.max_perplexity_increase)
        return b

    # ---- the one place where options are checked against each other ----

    def validate(self) -> BuildSpec:
        """Every check that needs no model weights; UserError (one line) on the first problem."""
        from edgeformer import artifact

        tgt = self.target_info()
        if not isinstance(self.model, str) or not self.model:
            raise UserError(f"model {self.model!r}: give a bundled name (edgeformer models), a Hugging Face folder or a .gguf")
        if self.bench_iters < 0:
            raise UserError(f"--bench-iters {self.bench_iters}: use 0 (skip) or more timed runs")
        artifact.check_out(Path(self.out))
        kind = self.kind()
        plan = self.attention_plan()
        if self.recipe().quant == "gguf" and not self.gguf_source():  # the Recipe checks its own fields
            raise UserError(f"--quant gguf keeps a GGUF causal LM's own 4-bit grid, and {self.model!r} is not a GGUF "
                            f"model; use --quant int8 or 8da4w")
        if self.max_pte_mb is not None and not self.max_pte_mb > 0:
            raise UserError(f"--max-pte-mb {self.max_pte_mb}: give the size budget in MiB, more than 0")
        if self.max_perplexity_increase is not None:
            if kind != "causal-lm":
                raise UserError(f"--max-perplexity-increase {self.max_perplexity_increase} is a causal LM's budget; an "
                                f"encoder's is --max-accuracy-drop")
            if not self.max_perplexity_increase >= 0:
                raise UserError(f"--max-perplexity-increase {self.max_perplexity_increase}: percent the .pte's perplexity "
                                f"may exceed its fp32 model's, >= 0; e.g. 5")
        if self.recipe().quant == "mixed" and tgt.backend != "xnnpack":
            raise UserError(f"--quant mixed chooses between XNNPACK's int8 and 4-bit kernels, and target {tgt.alias} "
                            f"lowers to {tgt.backend}; use --quant int8 there, or an XNNPACK target (host, rpi5, android)")
        {"causal-lm": self._check_lm, "server": self._check_server, "encoder": self._check_encoder}[kind](tgt, plan)
        if self.device is not None:
            from edgeformer.devices import parse_device

            parse_device(self.device)
        return self

    def _default_lm_quant(self) -> str | None:
        """"gguf" for a causal LM in a GGUF file whose linears are Q4_0/Q4_1 with separate q/k/v,
        built for XNNPACK with no other quantization choice given (no --quant-method, --group-size
        or --prune: those ask for torchao's own 4-bit or change the shapes): its own grid, as
        shipped. None (the target's default) otherwise."""
        if self.quant_method or self.group_size is not None or self.prune:
            return None
        from edgeformer.transforms.gguf_grid import linears_on_grid

        try:
            gguf = self._gguf_file() if self.target_info().backend == "xnnpack" else None
            return "gguf" if gguf is not None and linears_on_grid(str(gguf)) else None
        except UserError:  # validate() says what is wrong with the model
            return None

    def gguf_source(self) -> bool:
        """Whether the model is a causal LM in a GGUF file (whose own grid `--quant gguf` keeps)."""
        return self._gguf_file() is not None

    def _gguf_file(self) -> Path | None:
        """The GGUF file of a causal LM given as one (a bundled name or a path), else None."""
        if self.kind() != "causal-lm":
            return None
        from edgeformer.models.causal import resolve_lm

        _, folder, gguf = resolve_lm(self.model)
        return folder / gguf if gguf is not None else None

    def _check_lm(self, tgt: Target, plan: AttentionPlan) -> None:
        if tgt.lm_budgets is None:
            raise UserError(f"target {tgt.alias} does not take causal LMs yet; use host, rpi5 or android")
        plan.cache()
        if self.recipe().quant == "mixed":
            raise UserError("--quant mixed measures encoders only so far; for a causal LM use --quant int8, 8da4w, "
                            "or gguf (a GGUF on its own grid)")
        gptq = self.recipe().quant_method == "gptq"
        if self.data is not None and self.prune is None and not gptq:
            raise UserError("--data is the text --prune distills on (or --quant-method gptq calibrates on); give --prune "
                            "heads=R,ffn=R,layers=N or --quant 8da4w --quant-method gptq too, or drop --data")
        if gptq and self.data is None:
            raise UserError("--quant-method gptq calibrates on text: pass --data janeausten:BOOK or a .txt, another text "
                            "than --eval-data")
        if self.prune is not None:
            from edgeformer.train.prune_lm import options_from_spec

            options_from_spec(self.prune)
            if self.data is None:
                raise UserError(f"--prune {self.prune} is data-driven: pass --data text to distill on (janeausten:BOOK "
                                f"or a .txt), another text than --eval-data")
        if self.data is not None:  # the text --prune distills on or GPTQ calibrates on, never the one scored
            from edgeformer.data.janeausten import load_text

            if self.eval_data is not None and load_text(self.data)[0] == load_text(self.eval_data)[0]:
                why = "the model was distilled on; distill" if self.prune is not None else "GPTQ calibrated on; calibrate"
                raise UserError(f"--data {self.data} is also --eval-data: the perplexity would be measured on the text "
                                f"{why} on another (e.g. --data janeausten:emma)")
            load_text(self.data)
        if self.lengths not in (None, "auto"):
            raise UserError(f"--lengths {self.lengths} applies to encoders; a causal LM's prompt already runs at its own "
                            "length (use --seq-len for the prefill chunk)")
        if self.batch not in (None, tgt.recipe.batch):  # the recipe's default comes back with `build --from`
            raise UserError(f"--batch {self.batch} applies to encoders; a causal LM generates one reply at a time")
        if self.fallback is not None:
            raise UserError(f"--fallback {self.fallback} applies to --target server-cuda")
        if self.eval_data is not None:
            from edgeformer.data.janeausten import load_text

            load_text(self.eval_data)  # a bad spec fails now, not after minutes of lowering

    def _check_server(self, tgt: Target, plan: AttentionPlan) -> None:
        from edgeformer.targets.cuda import check_quant, server_device

        if self.prune or plan.describe() != "full" or self.eval_data or self.device or self.data:
            raise UserError("target server-cuda takes a model as it is: --prune, --attention, --eval-data, --data and "
                            "--device are for the on-device targets (host, rpi5, android)")
        self._check_encoder_only_options()
        check_quant(self.recipe().quant, server_device(self.fallback))
        if self.lengths == "dynamic":
            raise UserError("--lengths dynamic is for the XNNPACK targets (host, rpi5, android); a server package is "
                            "static-shaped: use --lengths static or auto")
        if self.batch not in (None, 1):
            raise UserError(f"--batch {self.batch} is for the XNNPACK targets (host, rpi5, android); a server package has "
                            "one entry point: use --batch 1")

    def _check_encoder(self, tgt: Target, plan: AttentionPlan) -> None:
        from edgeformer.targets import backend_for

        if self.fallback is not None:
            raise UserError(f"--fallback {self.fallback} applies to --target server-cuda")
        self._check_encoder_only_options()
        plan.check_encoder()
        if self.lengths == "dynamic":
            why = static_because(tgt.backend, plan, self.recipe().seq_len)
            if why:
                raise UserError(f"--lengths dynamic: {why}; use --lengths static (or auto, which picks static here)")
        if self.batch not in (None, 1) and tgt.backend != "xnnpack":
            raise UserError(f"--batch {self.batch}: the batch method is built for XNNPACK, and target {tgt.alias} lowers "
                            f"to {tgt.backend}; use --batch 1 there, or an XNNPACK target (host, rpi5, android)")
        cannot_run = backend_for(tgt).runs_here()
        if cannot_run and (self.eval_data or self.prune or self.device):
            raise UserError(f"target {tgt.alias}: --eval-data/--prune/--device need to run the .pte, and {cannot_run}")
        if self.recipe().quant_method == "gptq" and self.data is None and self.eval_data is None:
            raise UserError("--quant-method gptq calibrates on task data: pass --data DATA (its train split is used), "
                            "e.g. --data fine-foods")
        if self.eval_data is not None:
            from edgeformer.data import parse_spec

            parse_spec(self.eval_data)
        if self.data is not None:
            from edgeformer.data import parse_spec

            parse_spec(self.data)

    def _check_encoder_only_options(self) -> None:
        if self.lm_ops not in (None, "custom"):
            raise UserError(f"--lm-ops {self.lm_ops} applies to causal LMs; {self.model} is an encoder (its ops are all core ops)")
        if self.kv_cache not in (None, "fp32"):
            raise UserError(f"--kv-cache {self.kv_cache} applies to causal LMs; {self.model} is an encoder (it keeps no "
                            "key-value cache)")
        if self.max_context is not None:
            raise UserError(f"--max-context {self.max_context} applies to causal LMs; {self.model} is an encoder (use --seq-len)")

    def dynamic_lengths(self) -> bool:
        """Whether an encoder's `.pte` takes any length up to --seq-len (the recipe's `lengths`, resolved)."""
        lengths = self.recipe().lengths
        return lengths == "dynamic" or (lengths == "auto" and not static_because(self.target_info().backend,
                                                                                 self.attention_plan(), self.recipe().seq_len))

    def batch_size(self) -> int:
        """Texts per call of an encoder's batch method; 1 when it has none (not XNNPACK, or --batch 1)."""
        return self.recipe().batch if self.target_info().backend == "xnnpack" else 1

    # ---- as data ----

    def to_dict(self) -> dict:
        """What the manifest records: the spec with its recipe resolved, without local paths."""
        d = {k: v for k, v in asdict(self).items() if k not in LOCAL_FIELDS}
        if Path(self.model).expanduser().exists():  # a folder or file: absolute, so --from works from anywhere
            d["model"] = str(Path(self.model).expanduser().resolve())
        d.update(self.recipe().to_dict())
        if isinstance(d["attention"], tuple):
            d["attention"] = "+".join(d["attention"])
        return dict(version=SPEC_VERSION, **d)

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> BuildSpec:
        """The spec a manifest recorded; `overrides` (e.g. out=) replace fields. Unknown fields
        are refused by name (no field is ever imported or evaluated)."""
        d = dict(d)
        version = d.pop("version", None)
        if version != SPEC_VERSION:
            raise UserError(f"build spec version {version!r}; this edgeformer reads {SPEC_VERSION}: rebuild with the options")
        known = {f.name for f in fields(cls)} - set(LOCAL_FIELDS)
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"build spec has unknown fields {unknown}; known: {sorted(known)}")
        return cls(**{**d, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_manifest(cls, path: str | Path, **overrides) -> BuildSpec:
        """The spec of the artifact whose manifest is at `path` (a manifest.json or its folder)."""
        from edgeformer.manifest import Manifest

        p = Path(path)
        p = p / "manifest.json" if p.is_dir() else p
        if not p.is_file():
            raise UserError(f"--from {str(path)!r}: no such manifest; pass an artifact's manifest.json (or its folder)")
        m = Manifest.from_json(p.read_text(encoding="utf-8", errors="replace"), where=str(p))
        if not m.spec:
            raise UserError(f"{p} records no build spec (built before edgeformer recorded one); rebuild it with its options")
        return cls.from_dict(m.spec, **overrides)


def static_because(backend: str, plan: AttentionPlan, seq_len: int) -> str | None:
    """Why an encoder on `backend` with `plan` must be static-shaped at `seq_len`, or None when
    it can take any length. XNNPACK reshapes take no symbolic size (the full kernel keeps S as
    the one inferred dim); the window kernel takes any length while it scores n×n under a band
    (up to 3 * (window // 2) tokens) and picks a blocking by length in Python past that; hard
    attention's max reductions need a 4-D view with two sequence-long dims."""
    if backend != "xnnpack":
        return f"the {backend} backend is lowered static-shaped here"
    if plan.kind != "full" or plan.top_k:
        return f"--attention {plan.describe()} runs static-shaped (hard and sdpa attention take one length)"
    if plan.window:
        return window_static_because(plan.window, seq_len)
    return None


def window_static_because(window: int, seq_len: int) -> str | None:
    """Why a window of `window` makes a `seq_len` export static, or None."""
    most = 3 * (window // 2)
    if seq_len > most:
        return (f"a window of {window} runs blocks picked by length past {most} tokens, and --seq-len is {seq_len} "
                f"(any length works up to {most})")
    return None
