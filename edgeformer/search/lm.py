"""What a search measures of a causal LM's candidates: perplexity on the `--data` text token
by token beside the fp32 model's, decode speed and memory where the target is, size from
the file; and the gate on the perplexity increase's bootstrap bound (gate.paired_increase).

The candidates of one model share its tokenizer, so the fp32 reference scores the same
tokens once (cached by model content, text and segment). Each `.pte` is fed one token per
call, the decode path an app runs (lm/perplexity.py). On `host` decode speed is a ratio:
the fp32 eager model (transformers with its KV cache) and the candidate in alternating
fresh processes, as `build` measures it.

`spec` below is the search's `SearchSpec` (run.py).
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

from edgeformer import artifact as art
from edgeformer.errors import UserError
from edgeformer.search import gate, keys
from edgeformer.targets import Budgets
from edgeformer.validate.budgets import BudgetCheck, check_budgets

TOKENS = 2048  # scored per candidate: ~20 s of decode for SmolLM2-135M int8 on 2 cores
DECODE_TOKENS = 64  # timed per round on host (after a 128-token prompt)


def source_sha(model: str) -> str:
    """The content hash of a causal LM's source: the GGUF file, or the folder's defining files."""
    from edgeformer.models import folder_sha256
    from edgeformer.models.causal import resolve_lm

    _, folder, gguf = resolve_lm(model)
    return folder_sha256(folder, (gguf,)) if gguf else folder_sha256(folder)


def segment_of(built: list[dict]) -> int:
    """One segment length every candidate can score (the smallest full cache bounds it)."""
    from edgeformer.lm.perplexity import default_segment

    return min(default_segment(art.load_artifact(r["artifact"]).manifest.generation["max_context"]) for r in built)


def reference(spec, sha: str, tokenizer_file: Path, segment: int, work: Path) -> dict:
    """The fp32 model's negative log-likelihood of every scored token of `spec.data` (cached)."""
    from tokenizers import Tokenizer

    from edgeformer.data.janeausten import load_text
    from edgeformer.lm.perplexity import nll_full, segments
    from edgeformer.models.causal import load_reference, resolve_lm

    name, text = load_text(spec.data)
    ids = Tokenizer.from_file(str(tokenizer_file)).encode(text).ids[:TOKENS]
    key = keys.key(dict(model=sha, ids=keys.digest([" ".join(map(str, ids))]), segment=segment))
    f = work / "reference" / f"{key}.json"
    if f.is_file():
        return json.loads(f.read_text())
    segs = segments(ids, TOKENS, segment)
    scored = sum(len(x) - 1 for x in segs)
    if scored < gate.MIN_BLOCKS * gate.BLOCK_TOKENS:
        raise UserError(f"--data {spec.data}: {scored} tokens to score; the perplexity gate resamples blocks of "
                        f"{gate.BLOCK_TOKENS} and needs at least {gate.MIN_BLOCKS} ({gate.MIN_BLOCKS * gate.BLOCK_TOKENS} "
                        f"tokens) to bound the increase; give a longer text")
    hf = load_reference(*resolve_lm(spec.model)[1:])
    ref = dict(key=key, data=name, segments=segs, nll=[x for s in segs for x in nll_full(hf, s)])
    f.parent.mkdir(parents=True, exist_ok=True)
    art.write_text_atomic(f, json.dumps(ref))
    return ref


def measure_all(spec, built: list[dict], ref: dict, say) -> None:
    """Size, numerics, speed/memory and per-token NLL of each built LM artifact; what an earlier
    run measured is read back."""
    from edgeformer.artifact import load_artifact
    from edgeformer.lm.perplexity import nll_stepwise, perplexity
    from edgeformer.program import open_program
    from edgeformer.search.measure import timings

    def file_of(r: dict) -> Path:
        key = keys.key(dict(artifact=r["key"], device=spec.device, iters=spec.bench_iters, rounds=spec.rounds,
                            reference=ref["key"]))
        return spec.work_dir() / "measured" / f"{key}.json"

    todo = [r for r in built if not file_of(r).is_file()]
    if todo:
        say(f"measure: {len(todo)} candidate(s), perplexity on {len(ref['nll'])} tokens of {ref['data']}"
            + ("" if spec.device or not spec.target_info().measure_here else
               f", decode speed in {spec.rounds} round(s) beside the fp32 eager model"))
    arts = [load_artifact(r["artifact"]) for r in todo]
    for r, a, (bench, where) in zip(todo, arts, timings(spec, arts, host=_host_speed), strict=True):
        prog = open_program(a, a.manifest.recipe["threads"])
        nll = [x for s in ref["segments"] for x in nll_stepwise(prog, s)]
        m = dict(bytes=a.manifest.stored_bytes, numerics=a.manifest.numerics, bench=bench, where=where, nll=nll)
        file_of(r).parent.mkdir(parents=True, exist_ok=True)
        art.write_text_atomic(file_of(r), json.dumps(m))
        say(f"  measured {r['describe']}: perplexity {perplexity(nll):.3f}")
    for r in built:
        m = json.loads(file_of(r).read_text())
        emulated = m["where"].startswith("emulated")
        b = {} if emulated else m["bench"] or {}
        r.update(status="measured", bytes=m["bytes"], size_mb=round(m["bytes"] / 2**20, 3), where=m["where"],
                 bench=None if emulated else m["bench"], emulated=m["bench"] if emulated else None,
                 numerics=m["numerics"], latency_ms_p50=b.get("latency_ms_p50"), speedup_vs_eager=b.get("speedup_vs_eager"),
                 decode_tokens_per_s=b.get("decode_tokens_per_s", b.get("decode_tok_s")), peak_rss_mb=b.get("peak_rss_mb"), nll=m["nll"],
                 accuracy=None, perplexity=round(perplexity(m["nll"]), 4))


def _host_speed(spec, arts: list):
    """(bench, "host") of each artifact: its decode beside the fp32 eager model's, side by side."""
    from edgeformer.lm.speed import default_lengths, measure_lm, measure_lm_eager
    from edgeformer.pipeline.stages import runner_memory, side_by_side
    from edgeformer.validate.latency import host_fingerprint

    for a in arts:
        threads = a.manifest.recipe["threads"]
        prompt, new = default_lengths(a.manifest.generation, None, None)  # prompt + new fit a small full cache
        new = min(new, DECODE_TOKENS, spec.bench_iters)
        bench = side_by_side(partial(measure_lm, a.path, threads, prompt, new, rounds=1),
                             partial(measure_lm_eager, spec.model, threads, min(prompt, 32), max(8, min(new, 32))),
                             rounds=spec.rounds)
        bench.update(runner_memory(a.path, threads, bench))
        yield dict(measured_on=host_fingerprint(), **bench), "host"


def gate_checks(spec, r: dict, ref: dict, budgets: Budgets) -> None:
    """Every LM budget of the target, the perplexity one as the paired block-bootstrap bound."""
    g = gate.paired_increase(ref["nll"], r["nll"], spec.confidence)
    r.update(increase_pct=g["increase_pct"], increase_upper_pct=g["increase_upper_pct"], gate=g,
             reference_perplexity=round(math.exp(sum(ref["nll"]) / len(ref["nll"])), 4))
    checks = check_budgets(budgets, r["bytes"], r["numerics"], r["bench"], r["where"], lm=True)[:-1]
    limit = budgets.max_perplexity_increase_pct
    checks.append(BudgetCheck("max_perplexity_increase_pct", limit, g["increase_upper_pct"], "%",
                              None if limit is None else g["increase_upper_pct"] <= limit,
                              f"{ref['data']}, {spec.confidence:.0%} paired block-bootstrap bound"))
    r["checks"] = [c.to_dict() for c in checks]
    r["passed"] = all(c.passed is not False for c in checks)


def accuracy_record(winner: dict, ref: dict) -> dict:
    """manifest.accuracy of a published LM candidate."""
    return dict(data=ref["data"], metric="perplexity", perplexity=winner["perplexity"],
                reference_perplexity=winner["reference_perplexity"], increase_pct=winner["increase_pct"],
                increase_bound_pct=winner["increase_upper_pct"], scored_tokens=len(winner["nll"]), gate=winner["gate"])
