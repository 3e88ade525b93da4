"""The Python twin of runtimes/cpp/runner.cpp, for a device that has `pip install executorch`
but no edgeformer: same arguments, same JSON out. It needs only executorch and torch (which
executorch installs), so `bench --device ssh://` can copy it next to an artifact and run it.
It also runs causal LMs built with ExecuTorch's LLM custom ops (the C++ runner cannot).

    python edgeformer_worker.py ARTIFACT [--inputs FILE.json] [--threads N] [--warmup N] [--iters N]
                                [--text TEXT]... [--texts FILE] [--batch] [--tokenize-only]
                                [--prompt-tokens N] [--max-new-tokens N] [--ignore-eos] [--no-outputs]
Text (--text, --texts) also needs `pip install tokenizers`: the artifact's tokenizer.json is read
with it, as edgeformer's Predictor does.
Exit codes: 0 ok, 2 bad arguments or artifact, 3 the runtime failed.
"""

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time


def _status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return -1.0


def _first(path, prefix):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":" if ":" in line else "=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def device():
    try:
        with open("/proc/device-tree/model") as f:
            model = f.read().strip("\0\n")
    except OSError:
        model = _first("/proc/cpuinfo", "model name") or _first("/proc/cpuinfo", "Model") or platform.processor()
    return dict(machine=platform.machine(), processor=model or "unknown", cores=os.cpu_count(),
                system=_first("/etc/os-release", "PRETTY_NAME"), kernel=f"{platform.system()} {platform.release()}")


def seeded_ids(n, vocab):  # the runner's generator: the same ids on every device
    s, out = 0x9E3779B97F4A7C15, []
    for _ in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append((s >> 33) % vocab)
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))] if xs else 0.0


class Fail(Exception):
    def __init__(self, msg, code):
        super().__init__(msg)
        self.code = code


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("artifact")
    p.add_argument("--inputs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--no-outputs", action="store_true")
    p.add_argument("--text", action="append", default=[])
    p.add_argument("--texts")
    p.add_argument("--tokenize-only", action="store_true")
    p.add_argument("--batch", action="store_true")
    a = p.parse_args(argv)
    try:
        print(json.dumps(run(a)))
        return 0
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code


def _verify(path, sha256):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise Fail(f"cannot read {path} ({e.strerror}); copy the whole artifact folder", 2) from None
    if h.hexdigest() != sha256:
        raise Fail(f"{path} sha256 does not match the manifest: the file was changed or damaged; copy it again", 2)


def run(a):
    try:
        with open(os.path.join(a.artifact, "manifest.json")) as f:
            mf = json.load(f)
    except (OSError, ValueError) as e:
        raise Fail(f"cannot read {a.artifact}/manifest.json ({e}); copy the whole artifact folder", 2) from None
    pte = os.path.join(a.artifact, mf["pte"]["file"])
    # the data file, where the program has one: the weights it uses twice, stored once (model.ptd)
    data = os.path.join(a.artifact, mf["pte"]["data"]["file"]) if mf["pte"].get("data") else None
    t0 = time.perf_counter()
    _verify(pte, mf["pte"]["sha256"])
    if data:
        _verify(data, mf["pte"]["data"]["sha256"])
    hash_ms = (time.perf_counter() - t0) * 1e3
    inputs = {}
    if a.inputs:
        with open(a.inputs) as f:
            inputs = json.load(f)
    # argv holds undecodable bytes as surrogates: read them as U+FFFD, as --texts and the runner do
    texts = [t.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for t in a.text]
    texts += read_lines(a.texts) if a.texts else []
    if a.tokenize_only and not texts:
        raise Fail("--tokenize-only needs --text or --texts", 2)
    if a.batch and not texts:
        raise Fail("--batch runs texts: give --text or --texts", 2)
    if a.batch and not mf.get("batch"):
        raise Fail("--batch: this artifact's .pte has no batch method; rebuild it with edgeformer build --batch 8", 2)
    if texts and a.inputs:
        raise Fail("give --inputs (token ids) or --text/--texts, not both", 2)
    prompt_tok = None  # a causal LM's prompt as text (the runner's bpe.h)
    if texts and mf.get("generation"):
        if a.batch:
            raise Fail("--batch is for encoders; a causal LM takes one prompt", 2)
        prompt_tok = load_tokenizer(a.artifact, mf)
        if a.tokenize_only:
            return dict(runner="edgeformer-worker (python)", runner_version=f"executorch {executorch_version()}", kind="tokens",
                        results=[dict(ids=prompt_tok.encode(t).ids) for t in texts])
        if len(texts) != 1:
            raise Fail('a causal LM takes one prompt: --text PROMPT, or --inputs {"prompt_ids": [...]}', 2)
        inputs, texts = dict(prompt_ids=prompt_tok.encode(texts[0]).ids), []
    tok = Tokens(a.artifact, mf) if texts else None
    if a.tokenize_only:
        return dict(runner="edgeformer-worker (python)", runner_version=f"executorch {executorch_version()}", kind="tokens",
                    results=[tok.encode(t)[1] for t in texts])
    import executorch.kernels.quantized  # noqa: F401  quantized embedding kernels
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime
    if mf.get("generation"):
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  llama::update_cache, custom_sdpa
    portable_lib._unsafe_reset_threadpool(a.threads)
    rss_before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    try:
        program = Runtime.get().load_program(pte, data_path=data)
        # --batch loads the batch method only: forward's packed weights would be a second copy in memory
        method = program.load_method(mf["batch"]["method"] if a.batch else "forward")
    except Exception as e:
        raise Fail(f"the ExecuTorch runtime could not load {pte} ({e})", 3) from None
    load_ms = (time.perf_counter() - t0) * 1e3
    if mf.get("generation"):
        body = lm(method, mf, inputs, a, torch)
        if prompt_tok is not None:
            body["text"] = prompt_tok.decode(body["generated_ids"], skip_special_tokens=True)
    else:
        body = (on_texts_batched(method, mf, tok, texts, a, torch) if a.batch
                else on_texts(method, mf, tok, texts, a, torch) if texts else encoder(method, mf, inputs, a, torch))
    peak = _status_mb("VmHWM")
    return dict(runner="edgeformer-worker (python)", runner_version=f"executorch {executorch_version()}", artifact=a.artifact,
                sha256_verified=True, hash_ms=hash_ms, load_ms=load_ms, threads=a.threads, **body, peak_rss_mb=peak,
                runtime_baseline_rss_mb=rss_before, model_memory_mb=peak - rss_before,
                planned_memory_mb=None,  # the pybindings do not expose the plan (and zero-fill all of it)
                device=device())


def executorch_version():
    from importlib.metadata import version

    return version("executorch")


def table_rows(mf):
    """Rows of the model's token table (older manifests: the tokenizer's count)."""
    return mf["model"].get("vocab_size") or mf["tokenizer"]["vocab_size"]


def seed_vocab(mf):
    """Ids seeded for timing: ones the tokenizer makes and the table has rows for (a tokenizer may
    count more: tokens added past the table)."""
    return min(mf["tokenizer"]["vocab_size"], table_rows(mf))


def check_ids(ids, mf, what, fix):
    rows = table_rows(mf)
    for i in ids:  # an id past the token table aborts the gather kernel (SIGABRT, no message)
        if not 0 <= i < rows:
            raise Fail(f"{what} {i} is outside the model's token table (0..{rows - 1}); {fix}", 2)


def encoder(method, mf, inputs, a, torch):
    tensors = []
    check_ids(inputs.get("input_ids") or [], mf, "input_ids has id", "give ids from the artifact's tokenizer.json, or --text")
    length = None  # one length for every input: the first one given (any length in range), else the shape's
    for spec in mf["inputs"]:
        given = inputs.get(spec["name"])
        if given is None or "min_shape" not in spec:
            continue
        lo, hi = spec["min_shape"][1], spec["shape"][1]
        if not lo <= len(given) <= hi:
            raise Fail(f"input {spec['name']} has {len(given)} tokens, the artifact takes {lo} to {hi}; cut the ids or "
                       "rebuild with a larger --seq-len", 2)
        if length is not None and len(given) != length:
            raise Fail(f"input {spec['name']} has {len(given)} values and the one before it {length}; give ids and mask "
                       "of one length", 2)
        length = len(given)
    for spec in mf["inputs"]:
        shape = list(spec["shape"])
        given = inputs.get(spec["name"])
        if "min_shape" in spec and length is not None:
            shape[1] = length
        n = shape[0] * shape[1]
        default = seeded_ids(n, seed_vocab(mf)) if spec["name"] == "input_ids" else [1] * n
        tensors.append(torch.tensor(given if given is not None else default, dtype=torch.long).view(*shape))
    warmup = 10 if a.warmup is None else a.warmup
    for _ in range(warmup):
        method.execute(tensors)
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        out = method.execute(tensors)
        times.append((time.perf_counter() - t0) * 1e3)
    r = dict(kind="encoder", latency_ms_p50=statistics.median(times), latency_ms_p90=pct(times, 90),
             latency_ms_min=min(times), iters=a.iters, warmup=warmup)
    if not a.no_outputs:
        r["outputs"] = [dict(name=spec["name"], shape=list(t.shape), data=t.flatten().tolist())
                        for spec, t in zip(mf["outputs"], out, strict=True)]
    return r


def read_lines(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise Fail(f"cannot read {path}; give a text file with one input per line", 2) from None
    # split at "\n" only, as the C++ runner (splitlines() also splits at form feeds, U+2028, ...)
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in raw.decode("utf-8", errors="replace").split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise Fail(f"{path} has no non-empty lines", 2)
    return lines


def load_tokenizer(artifact, mf):
    """The artifact's tokenizer.json through `tokenizers`, without padding or truncation."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise Fail("text in needs the tokenizers package: pip install tokenizers (or pass ids with --inputs)", 2) from None
    tok = Tokenizer.from_file(os.path.join(artifact, mf["tokenizer"]["file"]))
    tok.no_padding()
    tok.no_truncation()
    return tok


class Tokens:
    """The artifact's tokenizer.json through `tokenizers`, cut to the longest input: the words
    counted, then wrapped in the special tokens (as edgeformer.tokenize.TextEncoder)."""

    def __init__(self, artifact, mf):
        self.tok = load_tokenizer(artifact, mf)
        self.max_len = mf["inputs"][0]["shape"][1]
        self.specials = self.tok.num_special_tokens_to_add(False)

    def encode(self, text):
        words = self.tok.encode(text, add_special_tokens=False)
        n = len(words.ids) + self.specials
        if n > self.max_len:
            self.tok.enable_truncation(max_length=self.max_len)
        try:
            ids = self.tok.post_process(words).ids
        finally:
            self.tok.no_truncation()
        return ids, dict(ids=ids, tokens=n, truncated=n > self.max_len)


def result_of(y, info, mf):
    """One text's result: its token count, then the label and score, or the embedding."""
    labels = mf["model"].get("labels") or []
    r = dict(tokens=info["tokens"], truncated=info["truncated"])
    if mf["model"]["task"] == "classifier":
        probs = y.softmax(-1)
        i = int(probs.argmax())
        r.update(label=labels[i] if i < len(labels) else str(i), score=float(probs[i]))
    else:
        r["embedding"] = y.tolist()
    return r


def on_texts_batched(batch_method, mf, tok, texts, a, torch):
    """--batch: sorted by length (longest first), `size` texts per call of the batch method, each
    call padded to its longest and filled with copies of its last text (as the C++ runner)."""
    size, pad = mf["batch"]["size"], mf["tokenizer"]["pad_id"]
    static_len = None if "min_shape" in mf["inputs"][0] else tok.max_len

    def rows(encoded, fill):
        n = static_len or len(encoded[0][0])
        ids = [e[0] + [pad] * (n - len(e[0])) for e in encoded]
        mask = [[1] * len(e[0]) + [0] * (n - len(e[0])) for e in encoded]
        ids, mask = ids + ids[-1:] * (fill - len(ids)), mask + mask[-1:] * (fill - len(mask))
        return [torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)]

    def everything():
        encoded = [tok.encode(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i][0]))
        results = [None] * len(texts)
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            outs = batch_method.execute(rows([encoded[i] for i in chunk], size))[0]
            for i, y in zip(chunk, outs, strict=False):  # copies filling the batch dropped
                results[i] = result_of(y, encoded[i][1], mf)
        return results

    warmup = 1 if a.warmup is None else a.warmup
    for _ in range(warmup):
        everything()
    t0 = time.perf_counter()
    results = everything()
    ms = (time.perf_counter() - t0) * 1e3
    out = dict(kind="encoder", texts=len(texts), batch=size, total_ms=ms, texts_per_s=len(texts) * 1e3 / ms,
               ms_per_text=ms / len(texts), warmup=warmup)
    if not a.no_outputs:
        out["results"] = results
    return out


def on_texts(method, mf, tok, texts, a, torch):
    """Each text tokenized, run once and timed with its tokenization (the runner's --texts)."""
    spec = mf["inputs"][0]
    any_length, pad = "min_shape" in spec, mf["tokenizer"]["pad_id"]

    def once(text):
        ids, info = tok.encode(text)
        n = len(ids) if any_length else tok.max_len
        x = torch.tensor([ids + [pad] * (n - len(ids))], dtype=torch.long)
        m = torch.tensor([[1] * len(ids) + [0] * (n - len(ids))], dtype=torch.long)
        return method.execute([x, m])[0][0], info

    warmup = 3 if a.warmup is None else a.warmup
    for _ in range(warmup):
        once(texts[0])
    times, results = [], []
    for text in texts:
        t0 = time.perf_counter()
        y, info = once(text)
        r = result_of(y, info, mf)
        times.append((time.perf_counter() - t0) * 1e3)
        results.append(r)
    out = dict(kind="encoder", texts=len(texts), latency_ms_p50=statistics.median(times), latency_ms_p90=pct(times, 90),
               latency_ms_mean=sum(times) / len(times), warmup=warmup)
    if not a.no_outputs:
        out["results"] = results
    return out


def lm(method, mf, inputs, a, torch):
    g = mf["generation"]
    per_call, stop = g["max_tokens_per_call"], set(g.get("stop_ids") or [])
    prompt = inputs.get("prompt_ids") or seeded_ids(a.prompt_tokens, seed_vocab(mf))
    check_ids(prompt, mf, "prompt id", "its tokenizer adds tokens past the table: leave it out")
    if g["cache"] != "ring" and len(prompt) + a.max_new_tokens > g["max_context"]:
        raise Fail(f"{len(prompt)} prompt + {a.max_new_tokens} new tokens exceed max_context {g['max_context']}", 2)

    def step(ids, pos):
        return method.execute([torch.tensor([ids], dtype=torch.long), torch.tensor([pos], dtype=torch.long)])[0][0, -1]

    warmup = 1 if a.warmup is None else a.warmup
    for _ in range(warmup + 1):  # the last generation is the measured one
        t0 = time.perf_counter()
        for i in range(0, len(prompt), per_call):
            logits = step(prompt[i:i + per_call], i)
        prefill_ms = (time.perf_counter() - t0) * 1e3
        first, ids, times = logits, [int(logits.argmax())], []
        while len(ids) < a.max_new_tokens and (a.ignore_eos or ids[-1] not in stop):
            t1 = time.perf_counter()
            ids.append(int(step([ids[-1]], len(prompt) + len(ids) - 1).argmax()))
            times.append((time.perf_counter() - t1) * 1e3)
    r = dict(kind="causal_lm", prompt_tokens=len(prompt), generated_ids=ids, prefill_ms=prefill_ms,
             prefill_tok_s=len(prompt) / (prefill_ms / 1e3), time_to_first_token_ms=prefill_ms, decode_tokens=len(times),
             decode_tok_s=len(times) / (sum(times) / 1e3) if times else 0.0, latency_ms_p50=pct(times, 50),
             latency_ms_p90=pct(times, 90), warmup=warmup)
    if not a.no_outputs:
        r["first_logits"] = first.tolist()
    return r


if __name__ == "__main__":
    sys.exit(main())
