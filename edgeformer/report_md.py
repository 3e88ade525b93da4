"""report.md beside manifest.json: the artifact's story for a human, from the manifest alone.

Written by `build` and rewritten whenever `bench --device` records a measurement. It says
which budget failed and where every number was measured (artifact, host, emulated, device).
"""

from __future__ import annotations

from pathlib import Path

from edgeformer.artifact import write_text_atomic
from edgeformer.manifest import Manifest

REPORT = "report.md"
CHART = "budgets.png"


def _fmt(v, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _where(on: dict | None) -> str:
    if not on:
        return "not measured"
    kind = {"host": "this host", "emulated": "EMULATED: not device latency", "device": "on the device"}.get(on["kind"], on["kind"])
    spec = f" `{on['spec']}`" if on.get("spec") else ""
    return f"{kind}{spec}: {on.get('machine', '?')}, {on.get('processor', '?')}, {on.get('cores', '?')} cores, {on.get('system', '?')}"


def _timing_rows(r: dict) -> list[str]:
    """Rows for a measurement by the runner (prefill_tok_s...) or the Python bench (prefill_tokens_per_s...)."""
    if r.get("kind") == "causal_lm" or "decode_tokens_per_s" in r:
        prefill, decode = r.get("prefill_tok_s", r.get("prefill_tokens_per_s")), r.get("decode_tok_s", r.get("decode_tokens_per_s"))
        return [f"| prefill | {_fmt(prefill, 0)} tok/s |", f"| decode | {_fmt(decode, 1)} tok/s |",
                f"| per token p50 / p90 | {_fmt(r.get('latency_ms_p50'))} / {_fmt(r.get('latency_ms_p90'))} ms |",
                f"| peak RSS | {_fmt(r.get('peak_rss_mb'), 0)} MiB |"]
    return [f"| latency p50 / p90 | {_fmt(r.get('latency_ms_p50'))} / {_fmt(r.get('latency_ms_p90'))} ms |",
            f"| peak RSS | {_fmt(r.get('peak_rss_mb'), 0)} MiB |"]


def render(m: Manifest) -> str:
    status = "**all budgets met**" if m.passed else "**FAILED: " + "; ".join(
        f"{b['name']} (measured {_fmt(b['measured'])} {b['unit']}, limit {b['limit']} {b['unit']}, {b['where']})"
        for b in m.failed_budgets()) + "**"
    r = m.recipe
    lines = [
        f"# {m.model.get('name', 'model')} for {m.target['alias']} ({m.target['name']})", "",
        f"{status}. Built {m.created} with " + ", ".join(f"{k} {v}" for k, v in m.toolchain.items()) + ".", "",
        f"- model: {m.model.get('architecture')} {m.model.get('task')}, {m.model.get('params', 0) / 1e6:.1f} M params, "
        f"from `{m.model.get('path')}`",
        f"- recipe: quant {r.get('quant')}, embedding {r.get('embedding_quant')}, seq {r.get('seq_len')}, {r.get('threads')} threads",
        f"- `.pte`: {m.pte['bytes'] / 2**20:.2f} MiB, sha256 `{m.pte['sha256'][:16]}…`",
        *([f"- data file `{d['file']}` (weights the program uses twice, stored once): {d['bytes'] / 2**20:.2f} MiB, "
           f"sha256 `{d['sha256'][:16]}…`"] if (d := m.pte.get("data")) else []),
        "", "## Budgets", "", f"![each budget: measured over its limit]({CHART})", "",
        "| budget | limit | measured | where | status |", "|---|---|---|---|---|",
    ]
    for b in m.budgets:
        st = {True: "pass", False: "**FAIL**", None: "not checked"}[b["passed"]]
        limit = "-" if b["limit"] is None else f"{b['limit']} {b['unit']}"
        lines.append(f"| {b['name']} | {limit} | {_fmt(b['measured'])} | {b['where']} | {st} |")
    meas = m.measurements or {}
    lines += ["", "## Latency and memory", "", f"Measured {_where(meas.get('measured_on'))}."
              if meas.get("measured_on") else f"Not measured: {meas.get('reason', 'no measurement')}."]
    if meas.get("measured_on"):
        lines += ["", "| | |", "|---|---|", *_timing_rows(meas)]
    for d in m.devices or []:
        if d is meas or d.get("measured_on") == meas.get("measured_on"):
            continue
        lines += ["", f"Also measured {_where(d['measured_on'])} ({d.get('recorded', '')}):", "", "| | |", "|---|---|",
                  *_timing_rows(d)]
    n = m.numerics
    lines += ["", "## Numerics", "", f"- SQNR vs {n.get('reference', 'fp32')}: {_fmt(n.get('sqnr_db'))} dB",
              f"- SQNR vs the exported program (what lowering changed): {_fmt(n.get('sqnr_db_vs_exported'))} dB"]
    if "top1_agreement" in n:
        lines.append(f"- next-token top-1 agreement with fp32: {n['top1_agreement']:.0%}")
    if m.accuracy:
        a = m.accuracy
        if a.get("metric") == "perplexity":
            lines.append(f"- perplexity on {a.get('data')}: {_fmt(a.get('perplexity'))} vs fp32 {_fmt(a.get('reference_perplexity'))} "
                         f"({_fmt(a.get('increase_pct'))}%)")
        else:
            lines.append(f"- accuracy on {a.get('data')}: {_fmt(a.get('accuracy'), 4)} (drop {_fmt(a.get('accuracy_drop_points'))} points)")
    d = m.delegation
    coverage = _fmt(d.get("coverage", 0) * 100, 1)
    lines += ["", "## What runs where", "", f"- {d.get('delegated_subgraphs')} {d.get('backend')} subgraph(s), "
              f"{d.get('delegated_nodes')} nodes delegated, {d.get('non_delegated_nodes')} outside ({coverage}% coverage)"]
    for op, k in sorted((d.get("non_delegated_ops") or {}).items(), key=lambda kv: -kv[1])[:12]:
        lines.append(f"  - outside: `{op}` × {k}")
    if m.batch:
        b, bd = m.batch, m.batch["delegation"]
        lines.append(f"- batch method `{b['method']}` ({b['size']} texts per call): {bd.get('delegated_subgraphs')} "
                     f"subgraph(s), {bd.get('non_delegated_nodes')} nodes outside")
    lines += ["", "| part of the .pte | MiB |", "|---|---|", *(f"| {k} | {v / 2**20:.2f} |" for k, v in m.size.items())]
    if m.generation:
        g = m.generation
        slots = g.get("layer_slots") or g["cache_slots"]  # mixed: each layer's
        lines += ["", "## Generation", "", f"- cache: {g['cache']} {g.get('cache_dtype', 'fp32')}, {slots} slots "
                  f"({g.get('cache_mb')} MiB), "
                  f"up to {g['max_tokens_per_call']} tokens per call, ops: {g.get('ops', 'custom')}",
                  f"- stop ids: {g.get('stop_ids')}"]
    if m.search:
        from edgeformer.search.front import section

        lines += ["", "## Search", "", section(m.search["candidates"], m.search["chosen"], m.search["why"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, m: Manifest) -> None:
    """report.md and its chart, each written beside and renamed into place."""
    tmp = folder / f".{CHART}.tmp.png"
    plot_budgets(m, tmp)
    tmp.replace(folder / CHART)
    if m.search:
        from edgeformer.search.front import CHART as SEARCH_CHART
        from edgeformer.search.front import plot

        tmp = folder / f".{SEARCH_CHART}.tmp.png"
        plot(m.search["candidates"], m.search["chosen"], tmp)
        tmp.replace(folder / SEARCH_CHART)
    write_text_atomic(folder / REPORT, render(m))


def budget_ratios(m: Manifest) -> list[tuple[str, float, bool, str]]:
    """(name, how much of the budget is used (1.0 = at the limit), passed, where) per checked budget.
    For a floor (min_*) it is limit / measured, so below 1 passes either way."""
    rows = []
    for b in m.budgets:
        if b["passed"] is None or not b["measured"] or not b["limit"]:
            continue
        ratio = b["limit"] / b["measured"] if b["name"].startswith("min_") else b["measured"] / b["limit"]
        rows.append((b["name"], ratio, b["passed"], b["where"]))
    return rows


def plot_budgets(m: Manifest, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = budget_ratios(m)
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(len(rows), 1)))
    names = [f"{n} ({w})" for n, _, _, w in rows]
    ax.barh(names, [r for _, r, _, _ in rows], color=["#3a7" if p else "#d33" for _, _, p, _ in rows])
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlabel("share of the budget used: measured / limit (a floor: limit / measured); 1 = at the limit")
    ax.set_xlim(0, max([1.15, *(r * 1.05 for _, r, _, _ in rows)]))
    ax.set_title(f"{m.model.get('name', 'model')} for {m.target['alias']}: " + ("all budgets met" if m.passed else "FAILED"),
                 fontsize=10)
    ax.tick_params(labelsize=8)
    ax.xaxis.label.set_size(8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
