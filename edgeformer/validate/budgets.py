"""Check measured numbers against a target's budgets, saying plainly which failed."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeformer.targets import Budgets

NOT_ON_DEVICE = "not measured on device"


@dataclass
class BudgetCheck:
    name: str
    limit: float | None
    measured: float | None
    unit: str
    passed: bool | None  # None: not checked (no limit, or not measured where it counts)
    where: str  # "host", "artifact", or NOT_ON_DEVICE

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        op = ">=" if self.name.startswith("min_") else "<="
        m = "n/a" if self.measured is None else f"{self.measured:.2f}"
        return f"{self.name}: measured {m} {self.unit}, budget {op} {self.limit} {self.unit}"


def check_budgets(budgets: Budgets, pte_bytes: int, numerics: dict, bench: dict | None, where: str,
                  accuracy: dict | None = None, lm: bool = False) -> list[BudgetCheck]:
    """`numerics` is the numerics dict of the build; `bench` is None when latency/memory are
    not measured where they count; `accuracy` is validate.accuracy.evaluate's dict (encoders)
    or lm.perplexity's (causal LMs, `lm=True`: latency is then ms per decoded token)."""
    lat = mem = speedup = None
    at = NOT_ON_DEVICE if where == "host" else where  # e.g. "emulated: not checked"
    if bench is not None:
        lat, mem, speedup, at = bench["latency_ms_p50"], bench["peak_rss_mb"], bench.get("speedup_vs_eager"), where
    checks = [
        _upper("max_pte_mb", budgets.max_pte_mb, pte_bytes / 2**20, "MiB", "artifact"),
        _upper("max_latency_ms_p50", budgets.max_latency_ms_p50, lat, "ms/token" if lm else "ms", at),
    ]
    if budgets.min_speedup_vs_eager is not None:
        checks.append(_lower("min_speedup_vs_eager", budgets.min_speedup_vs_eager, speedup, "x", at))
    checks += [
        _upper("max_peak_memory_mb", budgets.max_peak_memory_mb, mem, "MiB", at),
        _lower("min_sqnr_db", budgets.min_sqnr_db, numerics["sqnr_db"]),
        _lower("min_lowering_sqnr_db", budgets.min_lowering_sqnr_db, _lowest(numerics["sqnr_db_vs_exported"],
                                                                              numerics.get("sqnr_db_vs_exported_batch"))),
    ]
    if lm:
        return checks + [_upper("max_perplexity_increase_pct", budgets.max_perplexity_increase_pct,
                                accuracy and accuracy["increase_pct"], "%", "artifact" if accuracy else "no eval data")]
    return checks + [_upper("max_accuracy_drop", budgets.max_accuracy_drop, accuracy and accuracy["accuracy_drop_points"],
                            "points", "artifact" if accuracy else "no eval data")]


def _lowest(*values):
    """The lowest of the values given (each method of a `.pte` against its exported program)."""
    given = [v for v in values if v is not None]
    return min(given) if given else None


def _upper(name, limit, value, unit, at):
    if limit is None or value is None:
        return BudgetCheck(name, limit, value, unit, None, at)
    return BudgetCheck(name, limit, round(value, 3), unit, value <= limit, at)


def _lower(name, limit, value, unit="dB", at="artifact"):
    if value is None:  # the .pte could not run here (e.g. Vulkan), or it was not measured
        return BudgetCheck(name, limit, None, unit, None, "cannot run here" if unit == "dB" else at)
    return BudgetCheck(name, limit, round(value, 2), unit, None if limit is None else value >= limit, at)
