"""Where the time goes in a `.pte`: ExecuTorch's ETDump, read with the devtools Inspector.

The runtime records every op it runs outside a delegate (`native_call_*`) and each delegate
call; the XNNPACK delegate in the executorch wheel also records its own operators. Times are
medians over the runs, in milliseconds, with each one's share of `Method::execute`.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import torch

from edgeformer.artifact import load_artifact
from edgeformer.program import set_threads

_OP_NUMBER = re.compile(r"\s*#\d+$")


def profile(artifact: str | Path, threads: int | None = None, iters: int = 10) -> dict:
    """Run the artifact `iters` times on a full-length input (a causal LM: one decode step) and
    break its time down.

    Returns total_ms (median `Method::execute`), outside (ops run outside the delegate, each
    {op, ms, share}), delegate_ms/delegate_share, and inside (the delegate's own operators
    grouped by kind, {kind, count, ms, share}, largest first).
    """
    import executorch.kernels.quantized  # noqa: F401  registers quantized_decomposed::embedding_*
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    art = load_artifact(artifact)
    if art.manifest.generation:
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  llama::update_cache, custom_sdpa kernels
    set_threads(threads or art.manifest.recipe["threads"])
    data = art.data_file.read_bytes() if art.data_file else None
    module = portable_lib._load_for_executorch_from_buffer(art.pte, data_map_buffer=data, enable_etdump=True)
    # a causal LM's tokens are "1..N": profile one decode step, what runs once per generated token
    inputs = [torch.ones([int(str(d).split("..")[0]) for d in i["shape"]], dtype=getattr(torch, i["dtype"]))
              for i in art.manifest.inputs]
    for _ in range(iters):
        module.forward(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "profile.etdp")
        module.write_etdump_result_to_file(path)
        with warnings.catch_warnings():  # "Output Buffer not found": we ask for timings, not tensors
            warnings.simplefilter("ignore", UserWarning)
            inspector = Inspector(etdump_path=path)
    return _summarize(inspector.event_blocks, iters)


def _summarize(blocks, iters: int) -> dict:
    run = next(b for b in blocks if any(e.name == "Method::execute" for e in b.events))
    total = next(e for e in run.events if e.name == "Method::execute").perf_data.p50
    outside, delegate_ms = [], 0.0
    inside: dict[str, list[float]] = defaultdict(list)
    for e in run.events:
        if e.perf_data is None:
            continue
        if e.is_delegated_op:
            inside[_OP_NUMBER.sub("", e.name)].append(e.perf_data.p50)
        elif e.name.startswith("native_call_"):
            outside.append(dict(op=e.name.removeprefix("native_call_"), ms=e.perf_data.p50))
        elif e.name == "DELEGATE_CALL":
            delegate_ms += e.perf_data.p50

    def share(ms: float) -> float:
        return round(ms / total, 4) if total else 0.0

    kinds = [dict(kind=k, count=len(v), ms=round(sum(v), 4), share=share(sum(v))) for k, v in inside.items()]
    return dict(
        runs=iters,
        total_ms=round(total, 4),
        outside=[dict(op=o["op"], ms=round(o["ms"], 4), share=share(o["ms"])) for o in outside],
        outside_share=share(sum(o["ms"] for o in outside)),
        delegate_ms=round(delegate_ms, 4),
        delegate_share=share(delegate_ms),
        inside=sorted(kinds, key=lambda k: -k["ms"]),
    )
