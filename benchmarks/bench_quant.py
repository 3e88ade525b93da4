"""MiniLM, batch 1, sequence 128, 2 threads: eager PyTorch vs edgeformer `.pte` builds.

Contenders, each timed in its own fresh process (warm-up excluded, median of many runs),
in interleaved rounds so machine noise hits all of them alike; the table reports the
median over rounds:

  eager-fp32        the Hugging Face model in PyTorch eager (what a user starts from)
  plain-int8        the Hugging Face model exported as is, torchao int8, XNNPACK
                    (the "plain flow" edgeformer improves on)
  edgeformer-fp32 / -int8 / -8da4w   `edgeformer build minilm --quant ...`

SQNR is each output vs the eager fp32 model on the same sample texts.

    python benchmarks/bench_quant.py [--rounds 3] [--iters 100] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import RESULTS, SEQ, THREADS, cpu_line, log, measure_rounds, round_ratio, without, write_results


def minilm_gflop(seq: int = SEQ, hidden: int = 384, ffn: int = 1536, layers: int = 6) -> float:
    """Multiply-adds x 2 of the encoder layers (projections, FFN, attention matmuls)."""
    per_layer = seq * hidden * (4 * hidden + 2 * ffn) + 2 * seq * seq * hidden
    return 2 * per_layer * layers / 1e9


def build_plain_int8(out: Path) -> Path:
    """The plain flow: export the Hugging Face model itself (mean pooling added), int8, XNNPACK."""
    import shutil

    import torch

    from edgeformer.artifact import MANIFEST
    from edgeformer.models import load_model
    from edgeformer.models.hf import reference_forward
    from edgeformer.recipe import Recipe
    from edgeformer.targets.backend import config_for
    from edgeformer.targets.xnnpack import XNNPACK
    from edgeformer.transforms.quantize import quantize_model

    loaded = load_model("minilm")

    class Pooled(torch.nn.Module):
        def __init__(self, hf):
            super().__init__()
            self.model = hf.reference
            self.hf = hf

        def forward(self, ids, mask):
            return reference_forward(self.hf, ids, mask)

    from torchao.quantization import quantize_
    from torchao.utils import unwrap_tensor_subclass

    # padding_idx only affects gradients; with it set, aten.embedding carries an argument that
    # ExecuTorch's quantized-embedding fusion pattern does not match.
    loaded.hf.reference.embeddings.word_embeddings.padding_idx = None
    m = quantize_model(Pooled(loaded.hf), Recipe(quant="int8", embedding_quant="fp32"))
    # Only the word table: the position/type lookups do not match ExecuTorch's quantized
    # embedding fusion and would leave a dequantize_affine without an out-variant.
    quantize_(m, config_for(XNNPACK, "embedding", "int8", 32), filter_fn=lambda mod, fqn: fqn.endswith("word_embeddings"))
    unwrap_tensor_subclass(m)
    ids = torch.randint(0, 30522, (1, SEQ))
    ep = torch.export.export(m, (ids, torch.ones(1, SEQ, dtype=torch.long)))
    lowered = XNNPACK.lower(ep, Recipe())
    # Reuse an edgeformer artifact's manifest and tokenizer; bench it with --pte.
    shutil.copytree(out.parent / "edgeformer-int8", out)
    (out / "plain.pte").write_bytes(lowered.pte)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["delegation"] = lowered.delegation.to_dict()
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out / "plain.pte"


def plain_sqnr(pte: Path) -> float:
    import torch

    from edgeformer.models import load_model
    from edgeformer.models.hf import reference_forward
    from edgeformer.program import Program
    from edgeformer.tokenize import TextEncoder
    from edgeformer.validate.numerics import SAMPLE_TEXTS, sqnr_db

    loaded = load_model("minilm")
    te = TextEncoder(loaded.hf.tokenizer_file, SEQ, loaded.pad_id)
    prog = Program(pte.read_bytes(), THREADS)
    outs, refs = [], []
    for e in map(te.encode, SAMPLE_TEXTS):
        outs.append(prog(e.input_ids, e.attention_mask))
        refs.append(reference_forward(loaded.hf, e.input_ids, e.attention_mask))
    return sqnr_db(torch.cat(refs), torch.cat(outs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()

    import edgeformer

    work = Path(tempfile.mkdtemp(prefix="edgeformer-bench-"))
    rows: dict[str, dict] = {}
    for quant, emb in (("fp32", "fp32"), ("int8", "int8"), ("8da4w", "int8")):
        name = f"edgeformer-{quant}"
        log(f"building {name} …")
        r = edgeformer.build("minilm", "host", work / name, quant=quant, embedding_quant=emb, enforce=False, bench_iters=0)
        m = r.manifest
        rows[name] = dict(bytes=m.stored_bytes, sqnr_db=m.numerics["sqnr_db"], outside=m.delegation["non_delegated_nodes"],
                          cmd=["-m", "edgeformer.validate.latency", str(r.path)])
    log("building plain-int8 …")
    plain = build_plain_int8(work / "plain-int8")
    pm = json.loads((plain.parent / "manifest.json").read_text())
    rows["plain-int8"] = dict(bytes=plain.stat().st_size, sqnr_db=round(plain_sqnr(plain), 2),
                              outside=pm["delegation"]["non_delegated_nodes"],
                              cmd=["-m", "edgeformer.validate.latency", str(plain.parent), "--pte", str(plain)])
    rows["eager-fp32"] = dict(bytes=None, sqnr_db=None, outside=None,
                              # the eager worker of the ONNX Runtime benchmark: same inputs, own process
                              cmd=[str(Path(__file__).with_name("bench_vs_onnxruntime.py")), "--worker", "eager", "--path", "minilm"])

    order = ["eager-fp32", "plain-int8", "edgeformer-fp32", "edgeformer-int8", "edgeformer-8da4w"]
    timing = ["--iters", str(a.iters), "--warmup", str(a.warmup)]
    timed = {name: dict(cmd=rows[name]["cmd"] + timing + ([] if name == "eager-fp32" else ["--threads", str(THREADS)]))
             for name in order}
    samples = measure_rounds(timed, a.rounds)

    def speedup(name: str) -> float:
        return round_ratio(samples, "eager-fp32", name)

    fp32_bytes = rows["edgeformer-fp32"]["bytes"]
    gflop = minilm_gflop()
    lines = [
        f"MiniLM (all-MiniLM-L6-v2), batch 1, seq {SEQ}, {THREADS} threads; median of {a.rounds} rounds x {a.iters} runs "
        f"({a.warmup} warm-up), each contender in its own process; speed-ups are medians of per-round ratios. {cpu_line()}",
        "",
        "| contender | p50 ms | vs eager | GFLOP/s | .pte MiB | fp32 .pte / size | SQNR vs eager dB | ops outside delegate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in order:
        r, p50 = rows[name], statistics.median(samples[name])
        size = "-" if r["bytes"] is None else f"{r['bytes'] / 2**20:.1f}"
        shrink = "-" if r["bytes"] is None else f"{fp32_bytes / r['bytes']:.2f}x"
        sq = "(reference)" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
        outside = "-" if r["outside"] is None else str(r["outside"])
        lines.append(f"| {name} | {p50:.2f} | {speedup(name):.2f}x | {gflop / p50 * 1e3:.0f} | {size} | {shrink} | {sq} | {outside} |")
    write_results(a.out, "quant", "\n".join(lines) + "\n", dict(samples_ms=samples, rows=without(rows, "cmd")))


if __name__ == "__main__":
    main()
