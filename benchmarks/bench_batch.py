"""Bulk throughput: all 1000 fine-foods test reviews, tokenisation included, as `eval` and
`run -f` process them, one at a time against batched.

Each contender runs in its own fresh process (one untimed pass over the reviews first), in
interleaved rounds, 2 threads; ms per review is a whole pass over the number of reviews;
ratios are medians of per-round ratios, measured side by side.

  edgeformer-static-1  `build --lengths static --batch 1`: padded to 128, one review per call
                       (eval before issue 16)
  edgeformer-1         `build --batch 1`: each review at its own length, one per call
  edgeformer-8         `build` (default --batch 8): sorted by length, 8 per call of the batch
                       method, each call padded to its longest (Predictor.outputs, what eval uses)
  runner-8             the same artifact in the C++ runner (`--texts --batch`, its own WordPiece)
  ort-int8-1           ONNX Runtime int8 (dynamic axes, as users export it), one review per call
  ort-int8-8           the same, batched as edgeformer-8 is (sorted, 8 per call, padded to the longest)

Accuracy: `edgeformer eval ART --data fine-foods:test` of each artifact (a probe on the train
split's embeddings for an embedder), outside the timing.

    python benchmarks/bench_batch.py minilm --work out/batch
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

from bench_lengths import export_onnx_dynamic, unpadded_tokenizer
from common import ROOT, THREADS, cpu_line, log, measure_rounds, ort_session, round_ratio, write_results

BATCH = 8


def reviews() -> list[str]:
    from edgeformer.data import load_data

    return load_data("fine-foods:test").texts


def worker(kind: str, path: str, model: str, batch: int) -> dict:
    """Runs in its own process: ms per review over all test reviews, after one untimed pass."""
    texts = reviews()
    if kind == "ort":
        import numpy as np
        import torch

        from edgeformer.batching import run_batched
        from edgeformer.tokenize import Encoded

        s, tok = ort_session(Path(path)), unpadded_tokenizer(model)  # each review (or batch) at its own length

        def ort_run(ids, mask):
            return torch.from_numpy(s.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0])

        def everything():
            if batch == 1:
                for text in texts:
                    ids = np.array([tok.encode(text).ids], dtype=np.int64)
                    s.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
                return
            enc = [torch.tensor([e.ids]) for e in tok.encode_batch(texts)]
            run_batched([Encoded(x, torch.ones_like(x), x.shape[1], False) for x in enc], 0, batch, ort_run, static=False)
    else:
        from edgeformer.artifact import load_artifact
        from edgeformer.predict import Predictor

        pred = Predictor(load_artifact(path), threads=THREADS)

        def everything():
            pred.outputs([pred.text.encode(t) for t in texts])
    everything()
    t0 = time.perf_counter()
    everything()
    return dict(latency_ms_p50=(time.perf_counter() - t0) * 1e3 / len(texts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="minilm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, help="Where the builds go (reused across runs); default a temporary folder.")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--worker", choices=["ort", "edgeformer"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.path, a.model, a.batch)))
        return

    from common import cli_build

    from edgeformer.devices.runner_build import BINARY, ensure_runner
    from edgeformer.tokenize import TextEncoder
    from edgeformer.validate.accuracy import evaluate

    work = a.work or Path(tempfile.mkdtemp(prefix="edgeformer-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    me = str(Path(__file__).resolve())
    builds = {"edgeformer-static-1": ["--lengths", "static", "--batch", "1"], "edgeformer-1": ["--batch", "1"],
              "edgeformer-8": ["--batch", str(BATCH)]}
    rows: dict[str, dict] = {}
    for name, extra in builds.items():
        art = cli_build(work / name, [a.model, "--target", "host", *extra])
        rows[name] = dict(cmd=[me, a.model, "--worker", "edgeformer", "--path", str(art)])
    texts_file = work / "reviews.txt"
    texts_file.write_text("\n".join(reviews()) + "\n")
    rows["runner-8"] = dict(exe=[str(ensure_runner(platform.machine()) / BINARY), str(work / "edgeformer-8"), "--texts",
                                 str(texts_file), "--batch", "--no-outputs", "--threads", str(THREADS), "--warmup", "1"],
                            field="ms_per_text")
    onnx = work / "model.int8.onnx"
    if not onnx.is_file():
        log("exporting ONNX with dynamic axes …")
        onnx = export_onnx_dynamic(a.model, work)
    for b in (1, BATCH):
        rows[f"ort-int8-{b}"] = dict(cmd=[me, a.model, "--worker", "ort", "--path", str(onnx), "--batch", str(b)])
    accuracy = {}
    for name in builds:
        log(f"eval {name} …")
        accuracy[name] = evaluate(str(work / name), "fine-foods:test", threads=THREADS, reference=False)["accuracy"]
    from edgeformer.artifact import load_artifact

    art = load_artifact(work / "edgeformer-8")
    te = TextEncoder(art.tokenizer_file, 128, art.manifest.tokenizer["pad_id"], pad=False)
    lengths = [te.encode(t).input_ids.shape[1] for t in reviews()]
    samples = measure_rounds(rows, a.rounds)
    lines = [
        f"{a.model} int8: all {len(lengths)} fine-foods test reviews, tokenisation included (tokens: median "
        f"{statistics.median(lengths):.0f}, max {max(lengths)}); ms per review over a whole pass, median of {a.rounds} rounds, "
        f"each contender in its own process, {THREADS} threads; ratios are medians of per-round ratios. {cpu_line()}",
        "",
        "| contender | ms per review | reviews/s | vs edgeformer-static-1 | vs ORT int8 (same batching) | accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        ort = f"ort-int8-{BATCH if name.endswith(f'-{BATCH}') else 1}"
        acc = f"{accuracy[name]:.3f}" if name in accuracy else ""
        lines.append(f"| {name} | {r['p50']:.2f} | {1e3 / r['p50']:.0f} | {round_ratio(samples, 'edgeformer-static-1', name):.2f}x "
                     f"| {round_ratio(samples, ort, name):.2f}x | {acc} |")
    data = {k: dict(p50=v["p50"], samples_ms=samples[k]) for k, v in rows.items()}
    write_results(a.out, "batch", "\n".join(lines) + "\n", dict(model=a.model, batch=BATCH, lengths=lengths, accuracy=accuracy,
                                                                 rows=data))


if __name__ == "__main__":
    sys.exit(main())
