"""Two runtimes, one `.pte`: how far apart int8 dynamic activations put two computations that
differ only in float summation order.

The Python runtime runs ExecuTorch's own LLM kernels (flash-attention blocks); the C++
runner its own (runtimes/cpp/llm_ops.cpp, one pass over the keys). Everything else is the
same program, the same XNNPACK kernels. For each artifact and each of PROMPTS seeded random
prompts (ids drawn from the whole vocabulary), the next-token logits after the prompt:
SQNR of each runtime against the fp32 model the artifact was built from, and of the two
against each other; then the two against each other by prompt length (1, 2, 8, 40, 100).

An fp32 build's two runtimes agree to float rounding (tests/devices/test_runner.py); with
int8 activations, a last-bit difference in a layer's input flips some roundings of the next
linear's per-token quantization, and over 30 layers the two computations decorrelate until
each is as far from the other as from fp32. So agreement between two quantized computations
(a `.pte` against its exported program) measures that spread, not a loss of fidelity: read
quality against fp32, over many tokens.

    python benchmarks/bench_realizations.py ART [ART ...] [--prompts 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import RESULTS, THREADS, cpu_line, write_results

LENGTHS = (1, 2, 8, 40, 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", type=Path, nargs="+")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--length", type=int, default=60, help="prompt tokens for the comparison against fp32")
    a = ap.parse_args()

    import torch

    from edgeformer.artifact import load_artifact
    from edgeformer.devices.runner_build import BINARY, ensure_runner
    from edgeformer.models.causal import load_reference
    from edgeformer.program import Program
    from edgeformer.validate.numerics import sqnr_db

    runner = str(ensure_runner("x86_64") / BINARY)
    tmp = Path(tempfile.mkdtemp())

    def runner_logits(art: Path, prompt: list[int]) -> torch.Tensor:
        f = tmp / "prompt.json"
        f.write_text(json.dumps({"prompt_ids": prompt}))
        out = subprocess.run([runner, str(art), "--inputs", str(f), "--max-new-tokens", "1", "--ignore-eos", "--warmup", "0",
                              "--threads", str(THREADS)], capture_output=True, text=True, check=True).stdout
        return torch.tensor(json.loads(out)["first_logits"])

    lines = [f"Next-token logit SQNR (dB) after seeded random prompts, the Python runtime and the C++ runner on the same "
             f"`.pte`; medians over {a.prompts} prompts of {a.length} tokens. {cpu_line()}", "",
             "| artifact | runner vs fp32 | Python vs fp32 | runner vs Python | " + " | ".join(f"{n} tok" for n in LENGTHS) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(LENGTHS)]
    data, refs = {}, {}
    for art in a.artifacts:
        m = load_artifact(art)
        src = Path(m.manifest.model["path"])
        if src not in refs:
            refs[src] = load_reference(*((src.parent, src.name) if src.suffix == ".gguf" else (src,)))
        vocab = m.manifest.model.get("vocab") or refs[src].config.vocab_size
        py_prog = Program(m.pte_file, THREADS, causal_lm=True, data=m.data_file)

        def python_logits(prompt: list[int], prog=py_prog) -> torch.Tensor:
            return prog(torch.tensor([prompt]), torch.tensor([0]))[0, -1].clone()

        r = dict(runner_vs_fp32=[], python_vs_fp32=[], runner_vs_python=[], by_length={n: [] for n in LENGTHS})
        for seed in range(a.prompts):
            prompt = np.random.default_rng(seed).integers(0, vocab, max(a.length, *LENGTHS)).tolist()
            p = prompt[:a.length]
            with torch.no_grad():
                f = refs[src](torch.tensor([p])).logits[0, -1]
            cc, py = runner_logits(art, p), python_logits(p)
            r["runner_vs_fp32"].append(float(sqnr_db(f, cc)))
            r["python_vs_fp32"].append(float(sqnr_db(f, py)))
            r["runner_vs_python"].append(float(sqnr_db(py, cc)))
            for n in LENGTHS:
                r["by_length"][n].append(float(sqnr_db(python_logits(prompt[:n]), runner_logits(art, prompt[:n]))))
        med = {k: statistics.median(v) for k, v in r.items() if k != "by_length"}
        by_len = {n: statistics.median(v) for n, v in r["by_length"].items()}
        data[str(art)] = dict(medians=med, by_length=by_len, samples=r)
        lines.append(f"| {art.name} | {med['runner_vs_fp32']:.1f} | {med['python_vs_fp32']:.1f} | {med['runner_vs_python']:.1f} | "
                     + " | ".join(f"{by_len[n]:.1f}" for n in LENGTHS) + " |")
    write_results(RESULTS, "realizations", "\n".join(lines) + "\n", data)


if __name__ == "__main__":
    sys.exit(main())
