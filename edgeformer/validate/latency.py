"""Latency and peak memory of an artifact, measured in a fresh process.

A fresh process per measurement keeps the peak RSS honest (nothing else loaded in it) and
keeps one contender's caches and threads away from another's.

Run directly: `python -m edgeformer.validate.latency ARTIFACT --threads 2 --iters 50`
prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgeformer.errors import UserError


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Resident set size now, MiB."""
    now = _proc_status_mb("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process image, MiB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across execve, so a worker
    spawned by a big process (the build, pytest) would report its parent's peak.
    """
    peak = _proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[i]


def _measure(path: Path, pte_override: Path | None, threads: int, warmup: int, iters: int, batch: bool = False) -> dict:
    """Runs inside the worker process: `forward` at the inputs' full shape, or with `batch`
    the batch method at its full shape (then also ms per text)."""
    import executorch.kernels.quantized  # noqa: F401  import the runtime before the baseline
    import torch
    from executorch.runtime import Runtime  # noqa: F401

    from edgeformer.artifact import load_artifact
    from edgeformer.program import open_program

    art = load_artifact(path)
    if batch and not art.manifest.batch:
        raise UserError(f"{path} has no batch method; rebuild it with edgeformer build --batch 8, or bench without --batch")
    shape = art.manifest.batch["inputs"][0]["shape"] if batch else art.manifest.inputs[0]["shape"]
    # ids the token table has rows for: a tokenizer may count more (tokens added past the table),
    # and an id past the table aborts the gather kernel
    vocab = min(art.manifest.tokenizer["vocab_size"], art.manifest.model.get("vocab_size") or art.manifest.tokenizer["vocab_size"])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, shape, generator=g)
    mask = torch.ones(shape, dtype=torch.long)
    rss_before = rss_mb()
    # a .pte is mapped by path, as a device runtime loads it
    prog = open_program(art, threads, pte_override, method=art.manifest.batch["method"] if batch else "forward")
    for _ in range(warmup):
        prog(ids, mask)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        prog(ids, mask)
        times.append((time.perf_counter() - t0) * 1e3)
    peak = peak_rss_mb()
    return dict(
        latency_ms_p50=statistics.median(times),
        latency_ms_p90=percentile(times, 90),
        latency_ms_min=min(times),
        iters=iters,
        warmup=warmup,
        threads=threads,
        peak_rss_mb=peak,
        runtime_baseline_rss_mb=rss_before,
        model_memory_mb=peak - rss_before,
        **(dict(batch=shape[0], ms_per_text=statistics.median(times) / shape[0]) if batch else {}),
    )


def _measure_eager(model: str, seq_len: int, threads: int, warmup: int, iters: int) -> dict:
    """Runs inside the worker process: the fp32 Hugging Face model in eager PyTorch, at the
    same inputs as `_measure` (the reference of host's relative latency budget)."""
    import torch

    from edgeformer.models import load_model
    from edgeformer.models.hf import reference_forward

    torch.set_num_threads(threads)
    loaded = load_model(model)
    vocab = loaded.hf.reference.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, seq_len), generator=g)
    mask = torch.ones((1, seq_len), dtype=torch.long)
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            reference_forward(loaded.hf, ids, mask)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return dict(latency_ms_p50=statistics.median(times), latency_ms_p90=percentile(times, 90), iters=iters,
                threads=threads, reference="fp32 eager PyTorch (transformers)")


def host_fingerprint() -> dict:
    """This machine, as the manifest records where a number was measured."""
    return dict(kind="host", machine=platform.machine(), processor=cpu_model(), cores=os.cpu_count(),
                system=platform.platform())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_json_worker(args: list[str], threads: int, what: str, timeout: float = 600, cwd: Path | None = None,
                    omp_threads: int | None = None) -> dict:
    """Run `python ARGS` in a fresh process with `threads` threads; its last JSON line on stdout.

    Every timed contender goes through here (`measure`, benchmarks/), so each is measured
    alike: own process, same thread settings. `omp_threads` (default `threads`) sizes
    libtorch's OpenMP pool, which a `.pte` uses only through the LLM custom ops.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(omp_threads or threads)}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{what} failed: {last.removeprefix('error: ')}")
    return json.loads(lines[-1])


def measure(path: Path, threads: int, warmup: int = 10, iters: int = 50, timeout: float = 600, batch: bool = False) -> dict:
    """Measure the artifact at `path` in a fresh Python process (its batch method with `batch`);
    returns the JSON dict."""
    args = ["-m", "edgeformer.validate.latency", str(path), "--threads", str(threads), "--warmup", str(warmup), "--iters", str(iters),
            *(["--batch"] if batch else [])]
    return run_json_worker(args, threads, f"benchmark of {path}", timeout)


def measure_eager(model: str, seq_len: int, threads: int, warmup: int = 3, iters: int = 25, timeout: float = 600) -> dict:
    """Time the fp32 eager model `model` (a bundled name or folder) in a fresh process."""
    args = ["-m", "edgeformer.validate.latency", "--eager", model, "--seq-len", str(seq_len), "--threads", str(threads),
            "--warmup", str(warmup), "--iters", str(iters)]
    return run_json_worker(args, threads, f"eager benchmark of {model}", timeout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("artifact", type=Path, nargs="?")
    p.add_argument("--eager", default=None, help="time this model in eager fp32 instead (a bundled name or folder)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--pte", type=Path, default=None, help="bench this .pte instead (same inputs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--batch", action="store_true", help="time the batch method at its full shape")
    a = p.parse_args(argv)
    if a.eager is not None:
        return worker_main(lambda: _measure_eager(a.eager, a.seq_len, a.threads, a.warmup, a.iters))
    if a.artifact is None:
        p.error("give an artifact folder, or --eager MODEL")
    return worker_main(lambda: _measure(a.artifact, a.pte, a.threads, a.warmup, a.iters, a.batch))


def worker_main(work: Callable[[], dict]) -> int:
    """A measuring worker's end (the other side of `run_json_worker`): one JSON line on stdout,
    or a UserError as `error: ...` on stderr and exit 2."""
    try:
        result = work()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
