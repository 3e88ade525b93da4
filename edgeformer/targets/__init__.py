"""Targets as data: one registry of where a model can ship, its default recipe and budgets.

Each target names a backend (`targets/<backend>.py`), an object that follows the one
`Backend` protocol of `targets/backend.py`; `backend_for(target)` returns it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeformer.errors import UserError
from edgeformer.recipe import Recipe
from edgeformer.targets.backend import Backend


@dataclass(frozen=True)
class Budgets:
    """Limits an artifact must meet on its target. None means no limit."""

    max_pte_mb: float | None
    max_latency_ms_p50: float | None  # at the recipe's sequence length, batch 1 (targets of known hardware)
    max_peak_memory_mb: float | None  # peak RSS of the process running the model
    min_sqnr_db: float | None = 20.0  # .pte output vs the fp32 Hugging Face model
    # .pte vs the exported (already quantized) program: what lowering alone changed. Low
    # values mean a backend bug, not a quantization trade-off. int8 MiniLM measures ~26 dB
    # (XNNPACK's dynamic-quant rounding differs from torchao's reference), fp32 ~118 dB.
    min_lowering_sqnr_db: float | None = 20.0
    # Task accuracy lost vs the fp32 model, in points; checked when build gets eval data.
    max_accuracy_drop: float | None = 1.0
    # Causal LMs: perplexity of the .pte over the fp32 model's, in percent (with eval data).
    max_perplexity_increase_pct: float | None = None
    # `host` is whatever machine the user has, so its latency budget is a ratio: the .pte at
    # least this many times faster than the fp32 eager model, measured side by side in the
    # same build (alternating processes, median of per-round ratios).
    min_speedup_vs_eager: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    name: str
    alias: str
    description: str
    arch: str
    backend: str  # a module in edgeformer/targets/
    recipe: Recipe
    budgets: Budgets
    measure_here: bool  # latency/memory measured on this machine are the target's own
    # Budgets of a causal LM on this target: latency is ms per decoded token (p50); SQNR is of
    # the next-token logits over the vocabulary after 30 layers of int8 rounding (SmolLM2 int8:
    # 18.8 dB vs fp32, 19.4 dB vs the torchao eager model, top-1 agreement 94%), so the
    # perplexity budget is the quality gate and the SQNR floors only catch broken lowering.
    lm_budgets: Budgets | None = None
    fallback_budgets: Budgets | None = None  # server-cuda built with --fallback cpu: a CPU server's limits


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            name="host-x86_64-xnnpack",
            alias="host",
            description="this x86-64 machine's CPU through XNNPACK",
            arch="x86_64",
            backend="xnnpack",
            recipe=Recipe(quant="int8", embedding_quant="int8", seq_len=128, threads=2),
            # int8 MiniLM measured 6.2x eager on an AMD EPYC and 2.8x on an Intel Xeon (bench_quant.py):
            # 2x leaves room for CPUs where XNNPACK's int8 kernels are weakest, and still fails a
            # broken lowering (the plain export flow measured 0.9x).
            budgets=Budgets(max_pte_mb=32, max_latency_ms_p50=None, max_peak_memory_mb=512, min_speedup_vs_eager=2.0),
            measure_here=True,
            lm_budgets=Budgets(max_pte_mb=256, max_latency_ms_p50=None, max_peak_memory_mb=1024, min_sqnr_db=15.0,
                               min_lowering_sqnr_db=15.0, max_accuracy_drop=None, max_perplexity_increase_pct=5.0,
                               # SmolLM2 int8 decodes only 1.23x faster than transformers' eager
                               # decode with its KV cache (CI, quiet Xeon): a floor of 1x fails a
                               # broken lowering without failing the honest one.
                               min_speedup_vs_eager=1.0),
        ),
        Target(
            name="rpi5-arm64-xnnpack",
            alias="rpi5",
            description="Raspberry Pi 5 (Cortex-A76, 64-bit OS) through XNNPACK",
            arch="aarch64",
            backend="xnnpack",
            recipe=Recipe(quant="int8", embedding_quant="int8", seq_len=128, threads=4),
            budgets=Budgets(max_pte_mb=64, max_latency_ms_p50=50, max_peak_memory_mb=1024),
            measure_here=False,
            lm_budgets=Budgets(max_pte_mb=256, max_latency_ms_p50=50, max_peak_memory_mb=1024, min_sqnr_db=15.0,
                               min_lowering_sqnr_db=15.0, max_accuracy_drop=None, max_perplexity_increase_pct=5.0),
        ),
        Target(
            name="android-arm64-xnnpack",
            alias="android",
            description="Android phone (arm64-v8a) through XNNPACK",
            arch="aarch64",
            backend="xnnpack",
            recipe=Recipe(quant="int8", embedding_quant="int8", seq_len=128, threads=4),
            budgets=Budgets(max_pte_mb=32, max_latency_ms_p50=30, max_peak_memory_mb=512),
            measure_here=False,
            lm_budgets=Budgets(max_pte_mb=256, max_latency_ms_p50=40, max_peak_memory_mb=1024, min_sqnr_db=15.0,
                               min_lowering_sqnr_db=15.0, max_accuracy_drop=None, max_perplexity_increase_pct=5.0),
        ),
        Target(
            name="android-arm64-vulkan",
            alias="android-vulkan",
            description="Android phone GPU through ExecuTorch's Vulkan delegate (validated structurally here)",
            arch="aarch64",
            backend="vulkan",
            recipe=Recipe(quant="fp32", embedding_quant="fp32", seq_len=128, threads=4, batch=1),
            # numerics, latency and memory need the phone: the pip runtime cannot execute Vulkan
            budgets=Budgets(max_pte_mb=128, max_latency_ms_p50=None, max_peak_memory_mb=None, min_sqnr_db=None,
                            min_lowering_sqnr_db=None, max_accuracy_drop=None),
            measure_here=False,
        ),
        Target(
            name="server-cuda",
            alias="server-cuda",
            description="NVIDIA GPU server: an AOTInductor package (--fallback cpu: the same for a CPU server)",
            arch="x86_64+cuda",
            backend="cuda",
            recipe=Recipe(quant="int8", embedding_quant="fp32", seq_len=128, threads=2, batch=1),
            budgets=Budgets(max_pte_mb=512, max_latency_ms_p50=5, max_peak_memory_mb=4096),
            measure_here=False,
            fallback_budgets=Budgets(max_pte_mb=512, max_latency_ms_p50=50, max_peak_memory_mb=4096),
        ),
    ]
}
_ALIASES = {t.alias: t.name for t in TARGETS.values()}


def backend_for(target: Target, fallback: str | None = None) -> Backend:
    """The backend object of `target` (server-cuda: for the GPU, or the CPU with `fallback`)."""
    if target.backend == "cuda":
        from edgeformer.targets.cuda import Cuda, server_device

        return Cuda(server_device(fallback))
    if target.backend == "vulkan":
        from edgeformer.targets.vulkan import VULKAN

        return VULKAN
    from edgeformer.targets.xnnpack import XNNPACK

    return XNNPACK


def get_target(name: str) -> Target:
    """The target called `name` (full name or alias)."""
    full = _ALIASES.get(name, name)
    if full not in TARGETS:
        known = ", ".join(f"{t.alias} ({t.name})" if t.alias != t.name else t.name for t in TARGETS.values())
        raise UserError(f"unknown target {name!r}; use one of: {known}")
    return TARGETS[full]
