"""The Pareto front of measured candidates (speed x accuracy x size) and the winner.

Speed is what the target measured: on `host` the speed-up over the unpruned fp32 eager
model, timed side by side (absolute times on an unknown machine compare nothing); on a
device its latency (per decoded token for a causal LM). Quality is validation accuracy, or
for a causal LM its perplexity (lower is better). A candidate is on the front when no other
is at least as fast, as good and as small, and better in one.
"""

from __future__ import annotations

CHART = "search.png"  # the plot beside search.md and an artifact's report.md
OBJECTIVES = {"latency": "the fastest candidate within every budget (then the most accurate, then the smallest)",
              "size": "the smallest candidate within every budget (then the fastest)",
              "accuracy": "the most accurate candidate within every budget (then the fastest)"}


def speed(r: dict) -> float | None:
    """Higher is faster: the host speed-up, else 1 / latency; None when not measured."""
    if r.get("speedup_vs_eager") is not None:
        return r["speedup_vs_eager"]
    return 1.0 / r["latency_ms_p50"] if r.get("latency_ms_p50") else None


def quality(r: dict) -> float:
    """Higher is better: accuracy, or minus a causal LM's perplexity."""
    return r["accuracy"] if r.get("accuracy") is not None else -r["perplexity"]


def _scores(r: dict) -> tuple[float, float, float]:
    return (speed(r) or 0.0, quality(r), -r["size_mb"])


def pareto(results: list[dict]) -> list[dict]:
    """The measured results no other measured result dominates, fastest first."""
    measured = [r for r in results if r["status"] == "measured"]
    front = []
    for r in measured:
        a = _scores(r)
        if not any(all(x >= y for x, y in zip(b, a, strict=True)) and b != a for b in map(_scores, measured)):
            front.append(r)
    return sorted(front, key=lambda r: _scores(r), reverse=True)


def choose(results: list[dict], objective: str = "latency") -> dict | None:
    """The winner among the results that passed every budget, or None."""
    passed = [r for r in results if r["status"] == "measured" and r["passed"]]
    if not passed:
        return None
    s, acc, small = 0, 1, 2
    order = {"latency": (s, acc, small), "size": (small, s, acc), "accuracy": (acc, s, small)}[objective]
    return max(passed, key=lambda r: tuple(_scores(r)[i] for i in order))


def closest(results: list[dict]) -> dict | None:
    """The measured candidate that missed the fewest budgets (by the least), for the refusal;
    with none measured, the filtered one estimated smallest."""
    measured = [r for r in results if r["status"] == "measured"]
    if not measured:
        filtered = [r for r in results if r["status"] == "filtered"]
        return min(filtered, key=lambda r: r["size_estimate_mb"]) if filtered else None

    def miss(r: dict) -> tuple[int, float]:
        failed = [c for c in r["checks"] if c["passed"] is False]
        over = sum(abs(c["measured"] - c["limit"]) / max(abs(c["limit"]), 1e-9) for c in failed)
        return len(failed), over

    return min(measured, key=miss)


def table(results: list[dict], winner: dict | None, lm: bool | None = None) -> str:
    """A Markdown table: every candidate, what it measured and whether it passed (`lm`: a causal
    LM's columns; None: whether any result has a perplexity)."""
    lm = any(r.get("perplexity") is not None for r in results) if lm is None else lm
    head = "| candidate | size MiB | speed | perplexity | increase (bound) % | passed | note |" if lm else \
        "| candidate | size MiB | speed | accuracy | drop (bound) pts | passed | note |"
    rows = [head, "|---|---|---|---|---|---|---|"]
    front = {r["key"] for r in pareto(results)}
    for r in results:
        name = r["describe"] + (" **(chosen)**" if winner and r["key"] == winner["key"] else "")
        if r["status"] != "measured":
            rows.append(f"| {name} | {_f(r.get('size_mb'))} | | | | {r['status']} | {r.get('reason', '')} |")
            continue
        sp = f"{r['speedup_vs_eager']:.2f}x eager" if r.get("speedup_vs_eager") is not None else \
            (f"{r['latency_ms_p50']:.2f} ms" if r.get("latency_ms_p50") else "not measured")
        failed = ", ".join(c["name"] for c in r["checks"] if c["passed"] is False)
        note = ("front" if r["key"] in front else "") + (f"; missed {failed}" if failed else "")
        q = f"{r['perplexity']:.3f} | {r['increase_pct']:.2f} ({r['increase_upper_pct']:.2f})" if lm else \
            f"{r['accuracy']:.4f} | {r['drop_points']:.2f} ({r['drop_upper_points']:.2f})"
        rows.append(f"| {name} | {r['size_mb']:.2f} | {sp} | {q} | {'yes' if r['passed'] else 'no'} | {note.strip('; ')} |")
    return "\n".join(rows) + "\n"


def chosen(results: list[dict], key: str | None) -> dict | None:
    """The result whose key is `key` (the winner a summary names), or None."""
    return next((r for r in results if r["key"] == key), None)


def section(results: list[dict], winner_key: str | None, why: str) -> str:
    """Markdown: why the winner won, the plot, and the table (search.md and report.md alike)."""
    return f"{why}\n\n![the candidates and their front]({CHART})\n\n{table(results, chosen(results, winner_key))}"


def _f(v) -> str:
    return "" if v is None else f"{v:.2f}"


def plot(results: list[dict], winner_key: str | None, path) -> None:
    """Speed against accuracy, marker area by size; the front joined, the winner ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in results if r["status"] == "measured"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = max((r["size_mb"] for r in measured), default=1.0)
    lm = any(r.get("perplexity") is not None for r in measured)

    def y(r: dict) -> float:
        return r["perplexity"] if lm else r["accuracy"] * 100

    for r in measured:
        x = speed(r) or 0.0
        ax.scatter(x, y(r), s=30 + 270 * r["size_mb"] / top, alpha=0.6,
                   color="tab:green" if r["passed"] else "tab:red")
        if r["key"] == winner_key:
            ax.scatter(x, y(r), s=30 + 270 * r["size_mb"] / top + 150, facecolors="none", edgecolors="black")
        ax.annotate(r["describe"], (x, y(r)), textcoords="offset points", xytext=(5, 4), fontsize=6)
    fr = sorted(pareto(results), key=lambda r: speed(r) or 0.0)
    ax.plot([speed(r) or 0.0 for r in fr], [y(r) for r in fr], color="gray", linestyle="--", linewidth=1)
    host = any(r.get("speedup_vs_eager") is not None for r in measured)
    ax.set_xlabel("speed-up over the fp32 eager model (side by side)" if host else "1 / latency (1/ms)")
    ax.set_ylabel("perplexity (lower is better)" if lm else "validation accuracy, %")
    ax.set_title("candidates: green within every budget, marker area ~ .pte size; dashed: the Pareto front", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
