"""Real reviews at their real length: per-review latency, tokenisation included.

The first N fine-foods test reviews (default 300), one at a time, as an app sees them: text in,
tokenised by the model's tokenizer.json, run, output out. Each contender runs in its own fresh
process (a warm-up pass over the first 20 reviews excluded), in interleaved rounds, 2 threads;
ratios are medians of per-round ratios, measured side by side.

  ort-int8          torch.onnx.export with dynamic axes (batch, sequence), as users export it,
                    then onnxruntime.quantization.quantize_dynamic (QInt8); unpadded inputs
  edgeformer-static `edgeformer build MODEL --target host --lengths static` (padded to 128)
  edgeformer        `edgeformer build MODEL --target host` (any length up to 128), through
                    edgeformer.Predictor (what `edgeformer run` uses)
  edgeformer-runner the same artifact in the C++ runner on text (`--texts`: its own WordPiece
                    tokenizer, no Python), per text mean

    python benchmarks/bench_lengths.py out/minilm-foods     # a fine-tuned classifier
    python benchmarks/bench_lengths.py minilm               # the bundled embedder
    python tools/random_modernbert.py out/modernbert-base-random   # ModernBERT-base's shape, random weights
    python benchmarks/bench_lengths.py out/modernbert-base-random --stem lengths-modernbert
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, THREADS, cpu_line, log, measure_rounds, ort_session, round_ratio, write_results

WARMUP = 20


def reviews(n: int) -> list[str]:
    from edgeformer.data import load_data

    return load_data("fine-foods:test").texts[:n]


def export_onnx_dynamic(model: str, work: Path) -> Path:
    """The model's output (logits, or the pooled, normalised embedding) as ONNX with dynamic
    batch and sequence axes, then dynamic int8 quantization."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgeformer.models import load_model

    hf = load_model(model).hf

    class Output(torch.nn.Module):  # keywords: positional args collide with use_cache in transformers 5
        def __init__(self):
            super().__init__()
            self.m = hf.reference

        def forward(self, input_ids, attention_mask):
            out = self.m(input_ids=input_ids, attention_mask=attention_mask)
            if hf.task == "classifier":
                return out.logits
            mask = attention_mask.unsqueeze(-1).float()
            pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    ids, mask = torch.ones(1, 16, dtype=torch.long), torch.ones(1, 16, dtype=torch.long)
    fp32, int8 = work / "model.onnx", work / "model.int8.onnx"
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(Output().eval(), (ids, mask), str(fp32), input_names=["input_ids", "attention_mask"],
                      output_names=["output"], dynamic_axes={"input_ids": axes, "attention_mask": axes},
                      opset_version=17, dynamo=False)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return int8


def unpadded_tokenizer(model: str):
    """The model's tokenizer.json cut at 128 tokens and not padded (the file pads to 128,
    MiniLM's does): ONNX Runtime gets each review at its own length."""
    from tokenizers import Tokenizer

    from edgeformer.models import load_model

    tok = Tokenizer.from_file(str(load_model(model).hf.tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(max_length=128)
    return tok


def worker(kind: str, path: str, model: str, n: int) -> dict:
    """Runs in its own process: per-review ms over the first n reviews, after a warm-up pass."""
    texts = reviews(n)
    if kind == "ort":
        import numpy as np

        s, tok = ort_session(Path(path)), unpadded_tokenizer(model)

        def one(text):
            ids = np.array([tok.encode(text).ids], dtype=np.int64)
            return s.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    else:
        from edgeformer.artifact import load_artifact
        from edgeformer.predict import Predictor

        pred = Predictor(load_artifact(path), threads=THREADS)
        one = pred
    for text in texts[:WARMUP]:
        one(text)
    t0 = time.perf_counter()
    for text in texts:
        one(text)
    return dict(latency_ms_p50=(time.perf_counter() - t0) * 1e3 / len(texts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(ROOT / "out" / "minilm-foods"))
    ap.add_argument("--reviews", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, help="Where the builds go (reused across runs); default a temporary folder.")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--stem", default="lengths", help="Result files are OUT/STEM.md and .json.")
    ap.add_argument("--worker", choices=["ort", "edgeformer"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.path, a.model, a.reviews)))
        return

    from common import cli_build

    from edgeformer.tokenize import TextEncoder

    work = a.work or Path(tempfile.mkdtemp(prefix="edgeformer-lengths-"))
    work.mkdir(parents=True, exist_ok=True)
    me = str(Path(__file__).resolve())
    rows: dict[str, dict] = {}
    onnx = work / "model.int8.onnx"
    if not onnx.is_file():
        log("exporting ONNX with dynamic axes …")
        onnx = export_onnx_dynamic(a.model, work)
    rows["ort-int8"] = dict(cmd=[me, a.model, "--worker", "ort", "--path", str(onnx), "--reviews", str(a.reviews)])
    for name, extra in (("edgeformer-static", ["--lengths", "static"]), ("edgeformer", [])):
        # host's 32 MiB size budget is for the small encoders; a bigger model (ModernBERT-base) is timed all the same
        art = cli_build(work / name, [a.model, "--target", "host", "--max-pte-mb", "1024", *extra])
        rows[name] = dict(cmd=[me, a.model, "--worker", "edgeformer", "--path", str(art), "--reviews", str(a.reviews)])

    from edgeformer.artifact import load_artifact
    from edgeformer.devices.runner_build import BINARY, ensure_runner

    texts_file = work / "reviews.txt"
    texts_file.write_text("\n".join(reviews(a.reviews)) + "\n")
    rows["edgeformer-runner"] = dict(exe=[str(ensure_runner(platform.machine()) / BINARY), str(work / "edgeformer"), "--texts",
                                          str(texts_file), "--no-outputs", "--threads", str(THREADS), "--warmup", str(WARMUP)],
                                     field="latency_ms_mean")
    m = load_artifact(work / "edgeformer").manifest
    te = TextEncoder(load_artifact(work / "edgeformer").tokenizer_file, 128, m.tokenizer["pad_id"], pad=False)
    lengths = [te.encode(t).input_ids.shape[1] for t in reviews(a.reviews)]
    samples = measure_rounds(rows, a.rounds)
    lines = [
        f"{a.model}: the first {a.reviews} fine-foods test reviews one at a time, tokenisation included "
        f"(tokens: median {statistics.median(lengths):.0f}, max {max(lengths)}); ms per review, median of {a.rounds} rounds, "
        f"each contender in its own process, {THREADS} threads; ratios are medians of per-round ratios. {cpu_line()}",
        "",
        "| contender | ms per review | vs ORT int8 | vs edgeformer-static |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['p50']:.2f} | {round_ratio(samples, 'ort-int8', name):.2f}x | "
                     f"{round_ratio(samples, 'edgeformer-static', name):.2f}x |")
    data = {k: dict(p50=v["p50"], samples_ms=samples[k]) for k, v in rows.items()}
    write_results(a.out, a.stem, "\n".join(lines) + "\n", dict(model=a.model, reviews=a.reviews, lengths=lengths, rows=data))


if __name__ == "__main__":
    sys.exit(main())
