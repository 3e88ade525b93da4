"""An encoder (embedder or classifier) for an on-device target: the list of stages, then the
stages only encoders have.

    prune      optional: structured pruning + distillation (`edgeformer prune`) into OUT.pruned/
    load       bundled name or Hugging Face folder -> fp32 reference + Encoder, tokenizer staged
    attention  the attention kernels (edge rewrite, sliding window, hard top-k)
    quantize   torchao, with the backend's scheme -> config table
    export     torch.export: any length up to --seq-len (--lengths), or static at --seq-len
    lower      the target's backend -> .pte
    validate   .pte vs exported program and vs fp32 reference; the manifest
    measure    latency and memory where the target is (host: beside the fp32 eager model)
    evaluate   optional: task accuracy of the .pte vs fp32 (with --eval-data)
    budgets    every budget, measured where it counts
    publish    manifest + report, renamed into place (or nothing, when a budget fails)
"""

from __future__ import annotations

import copy

from edgeformer.errors import UserError
from edgeformer.pipeline import stages as st
from edgeformer.pipeline.stages import BuildState, Stage


def prune(s: BuildState) -> None:
    from edgeformer.train.prune_run import prune_for_build

    s.source, report = prune_for_build(s.spec.model, s.spec.prune, task_data(s), s.spec.out, s.budgets.max_accuracy_drop)
    s.extra["pruning"] = dict(unpruned=s.spec.model, mode=report["mode"], plan=report["plan"],
                              flops_ratio=report["flops_per_sequence"]["ratio"],
                              validation_accuracy=report["validation_accuracy"])


def load(s: BuildState) -> None:
    from edgeformer import artifact as art
    from edgeformer.data import load_data
    from edgeformer.models import load_model
    from edgeformer.tokenize import TextEncoder
    from edgeformer.validate.numerics import SAMPLE_TEXTS

    s.loaded = load_model(s.source)
    n = s.recipe.seq_len
    check_seq_len(s.loaded, n, s.spec.attention_plan().copy_positions)
    dynamic = s.extra["dynamic"] = s.spec.dynamic_lengths() and not own_windows_static(s, n)
    s.extra["text"] = text = TextEncoder(s.loaded.hf.tokenizer_file, n, s.loaded.pad_id, pad=not dynamic)
    if n <= text.specials:
        raise UserError(f"--seq-len {n} leaves no room for text: the tokenizer adds {text.specials} special tokens; "
                        f"use --seq-len {text.specials + 1} or more")
    # each sample at its own length when the .pte takes any: the check sees several shapes
    s.extra["samples"] = [(e.input_ids, e.attention_mask) for e in map(text.encode, SAMPLE_TEXTS)]
    s.example = padded(s.extra["samples"][0], n, s.loaded.pad_id)
    if dynamic:
        from torch.export import Dim

        seq = Dim("seq", min=1, max=n)
        s.extra["dynamic_shapes"] = ({1: seq}, {1: seq})
    size = s.spec.batch_size()
    if size > 1:  # the batch method: `size` texts per call, the same lengths
        s.extra["methods"] = {BATCH_METHOD: tuple(x.repeat(size, 1) for x in s.example)}
    (s.staged / art.TOKENIZER).write_bytes(s.loaded.hf.tokenizer_file.read_bytes())
    if s.spec.eval_data is not None:
        load_data(s.spec.eval_data)  # a bad spec fails now, not after minutes of lowering
    s.module = s.loaded.encoder


def own_windows_static(s: BuildState, n: int) -> bool:
    """Whether the model's own sliding-window layers (ModernBERT's local layers) make an
    `n`-token export static; refused when --lengths dynamic asked for any length."""
    from edgeformer.pipeline.spec import window_static_because

    windows = sorted({ly.attn.window for ly in s.loaded.encoder.layers if ly.attn.window})
    why = next(filter(None, (window_static_because(w, n) for w in windows)), None)
    if why and s.recipe.lengths == "dynamic":
        raise UserError(f"--lengths dynamic: this model's local layers have {why}; use --lengths static or a shorter --seq-len")
    return why is not None


def attention(s: BuildState) -> None:
    from edgeformer.models.hf import reference_forward
    from edgeformer.transforms.attention import apply_attention, layer_kinds

    plan = s.spec.attention_plan()
    info = apply_attention(s.module, plan, s.recipe.seq_len, hard_layer_chooser(s, plan))
    s.extra["attention"] = dict(**info, layers=layer_kinds(s.module))
    if s.extra["dynamic"]:  # a fused q/k/v output is sliced, and XNNPACK slices no dynamic-length tensor
        for layer in s.module.distinct_layers():
            layer.attn.split_qkv()
    if plan.changes_outputs:  # the .pte should match the transformed model
        s.reference, s.extra["reference"] = copy.deepcopy(s.module).eval(), "fp32 with the attention transform"
    else:
        s.reference, s.extra["reference"] = (lambda i, m: reference_forward(s.loaded.hf, i, m)), "fp32 Hugging Face"


def quantize(s: BuildState) -> None:
    from edgeformer.transforms.quantize import quantize_model

    calibrate = calibration(s) if s.recipe.quant == "mixed" or s.recipe.quant_method == "gptq" else None
    s.module = quantize_model(s.module, s.recipe, s.backend, calibrate=calibrate, budget_mb=s.budgets.max_pte_mb)


def validate(s: BuildState) -> None:
    from edgeformer.program import Program
    from edgeformer.transforms.quantize import quantization_record
    from edgeformer.validate.numerics import check_numerics

    cannot_run = s.backend.runs_here()
    if cannot_run:  # structural validation only: delegation and size
        numerics = dict(samples=0, sqnr_db=None, sqnr_db_vs_exported=None, reason=cannot_run)
    else:
        program = Program.of(s.lowered, s.recipe.threads)
        numerics = check_numerics(program, s.exported, s.reference, s.extra["samples"],
                                  is_logits=s.loaded.hf.task == "classifier")
        numerics["reference"] = s.extra["reference"]
    s.manifest = encoder_manifest(s, numerics)
    if s.methods:  # the lowering budget covers every method of the .pte
        s.manifest.batch = batch_record(s, program if not cannot_run else None)
        if "numerics" in s.manifest.batch:
            numerics["sqnr_db_vs_exported_batch"] = s.manifest.batch["numerics"]["sqnr_db_vs_exported"]
    s.manifest.model["attention"] = s.extra["attention"]
    s.manifest.quantization = quantization_record(s.recipe, s.module)
    if "calibration" in s.extra:
        s.manifest.quantization["calibration"] = s.extra["calibration"]
    if "pruning" in s.extra:
        s.manifest.model["pruning"] = s.extra["pruning"]


def measure(s: BuildState) -> None:
    from edgeformer import artifact as art
    from edgeformer.validate.latency import measure as measure_pte
    from edgeformer.validate.latency import measure_eager

    (s.staged / art.MANIFEST).write_text(s.manifest.to_json())  # the workers load the staged artifact
    iters, threads = s.spec.bench_iters, s.recipe.threads
    st.measure(s, lambda: measure_pte(s.staged, threads, iters=iters),
               lambda: measure_eager(s.source, s.recipe.seq_len, threads, warmup=5, iters=max(10, iters // 2)))


def evaluate(s: BuildState) -> None:
    from edgeformer.validate.accuracy import evaluate as run_eval

    accuracy = run_eval(str(s.staged), s.spec.eval_data, threads=s.recipe.threads)
    if "pruning" in s.extra:  # the drop that counts is against the model before pruning
        base = run_eval(s.spec.model, s.spec.eval_data, threads=s.recipe.threads)["accuracy"]
        accuracy.update(unpruned_accuracy=base, accuracy_drop_vs_pruned_fp32=accuracy["accuracy_drop_points"],
                        accuracy_drop_points=round((base - accuracy["accuracy"]) * 100, 2))
    s.accuracy = s.manifest.accuracy = accuracy


STAGES = [
    Stage("prune", prune, when=lambda s: s.spec.prune is not None, label=lambda s: f"prune ({s.spec.prune})"),
    Stage("load", load, label=lambda s: "load model"),
    Stage("attention", attention, label=lambda s: f"attention ({s.recipe.attention})"),
    Stage("quantize", quantize, label=lambda s: f"quantize ({s.recipe.quant}, embedding {s.recipe.embedding_quant})"),
    Stage("export", st.export),
    Stage("lower", st.lower, label=lambda s: f"lower ({s.backend.name})"),
    Stage("validate", validate, label=lambda s: "check numerics"),
    Stage("measure", measure, label=lambda s: "measure latency and memory"),
    Stage("evaluate", evaluate, when=lambda s: s.spec.eval_data is not None, label=lambda s: f"evaluate on {s.spec.eval_data}"),
    Stage("budgets", st.budgets),
    Stage("publish", st.publish),
]


# ---- helpers of the stages above ----

def task_data(s: BuildState) -> str | None:
    """Task data for pruning and hard-attention selection: --data, else --eval-data's data set."""
    from edgeformer.data import parse_spec

    return s.spec.data or (parse_spec(s.spec.eval_data)[0] if s.spec.eval_data else None)


CALIBRATION_TEXTS = 32  # --quant mixed: texts its sensitivity is measured on; GPTQ's inputs
CALIBRATION_BATCH = 8


def calibration(s: BuildState):
    """`--quant mixed`'s and GPTQ's calibration forward: the model's outputs on the task data's first
    training texts (--data or --eval-data's set), else on the numerics check's samples; in
    batches of similar length, each padded to its longest."""
    import torch

    from edgeformer.data import load_data

    data = task_data(s)
    if data is None:
        samples = s.extra["samples"]
    else:
        samples = [(e.input_ids, e.attention_mask)
                   for e in map(s.extra["text"].encode, load_data(f"{data}:train").texts[:CALIBRATION_TEXTS])]
    samples.sort(key=lambda p: p[0].shape[1])
    batches = []
    for i in range(0, len(samples), CALIBRATION_BATCH):
        chunk = samples[i:i + CALIBRATION_BATCH]
        n = chunk[-1][0].shape[1]
        batches.append([torch.cat(x) for x in zip(*(padded(p, n, s.loaded.pad_id) for p in chunk), strict=True)])
    s.extra["calibration"] = dict(texts=len(samples), data=f"{data}:train" if data else "the numerics samples")
    return lambda model: torch.cat([model(ids, mask) for ids, mask in batches])


BATCH_METHOD = "forward_batch"


def batch_record(s: BuildState, program) -> dict:
    """The manifest's `batch` section: the method, its inputs, what it delegated, and (where
    it runs here) its outputs on the numerics samples, stacked by length as `run`/`eval` do,
    against its exported program and against `forward` one text at a time."""
    import torch

    from edgeformer.batching import run_batched
    from edgeformer.program import Program
    from edgeformer.tokenize import Encoded
    from edgeformer.validate.numerics import sqnr_db

    size, n = s.spec.batch_size(), s.recipe.seq_len
    inputs = [dict(name=name, dtype="int64", shape=[size, n], **(dict(min_shape=[size, 1]) if s.extra.get("dynamic") else {}))
              for name in ("input_ids", "attention_mask")]
    record = dict(method=BATCH_METHOD, size=size, inputs=inputs, delegation=s.lowered.methods[BATCH_METHOD].to_dict())
    if program is not None:
        encoded = [Encoded(ids, mask, ids.shape[1], False) for ids, mask in s.extra["samples"]]
        batched = run_batched(encoded, s.loaded.pad_id, size, Program.of(s.lowered, s.recipe.threads, method=BATCH_METHOD))
        with torch.no_grad():
            exported = run_batched(encoded, s.loaded.pad_id, size, s.methods[BATCH_METHOD].module())
        single = torch.stack([program(ids, mask)[0] for ids, mask in s.extra["samples"]])
        record["numerics"] = dict(samples=len(encoded), sqnr_db_vs_exported=round(sqnr_db(exported, batched), 2),
                                  max_abs_err_vs_exported=float((batched - exported).abs().max()),
                                  max_abs_err_vs_forward=float((batched - single).abs().max()))
    return record


def padded(sample: tuple, n: int, pad_id: int) -> tuple:
    """(ids, mask) padded to n tokens: export's example is the longest input."""
    import torch.nn.functional as F

    ids, mask = sample
    extra = n - ids.shape[1]
    return F.pad(ids, (0, extra), value=pad_id), F.pad(mask, (0, extra), value=0)


def check_seq_len(loaded, seq_len: int, copy_positions: bool) -> None:
    limit = loaded.encoder.shape.max_positions
    if loaded.encoder.pos is None:  # rotary positions: no table to tile
        if copy_positions:
            raise UserError(f"--attention positions=copy tiles a learned position table, and this model "
                            f"({loaded.hf.model_type}) has rotary positions, up to {limit}; drop positions=copy")
        if seq_len > limit:
            raise UserError(f"--seq-len {seq_len} exceeds the model's {limit} positions; use --seq-len {limit} or less")
    if seq_len > limit and not copy_positions:
        raise UserError(f"--seq-len {seq_len} exceeds the model's {limit} positions; use --seq-len {limit} or less, "
                        f"or tile the position table with --attention positions=copy (best with a window)")


def hard_layer_chooser(s: BuildState, plan):
    """`choose()` for hard attention's `layers=auto`, or None without task data."""
    data = task_data(s)
    if plan.hard_layers != "auto" or data is None:
        return None

    def choose() -> list[int]:
        from edgeformer.train.hard_attention import choose_hard_layers

        loaded = s.loaded
        layers, report = choose_hard_layers(loaded.encoder, plan.top_k, data, loaded.hf.tokenizer_file, loaded.pad_id,
                                            s.recipe.seq_len, loaded.hf.labels)
        loaded.source["hard_attention_selection"] = report
        return layers

    return choose


def encoder_manifest(s: BuildState, numerics: dict):
    """An encoder artifact's manifest (also the server flavour's)."""
    from edgeformer import artifact as art

    loaded, text, n = s.loaded, s.extra["text"], s.recipe.seq_len
    shape = loaded.encoder.shape
    if loaded.hf.task == "classifier":
        outputs = [dict(name="logits", dtype="float32", shape=[1, len(loaded.hf.labels)], meaning="class logits")]
    else:
        outputs = [dict(name="embedding", dtype="float32", shape=[1, shape.hidden],
                        meaning="L2-normalised mean-pooled sentence embedding")]
    return st.new_manifest(
        s,
        model=dict(**loaded.source, labels=loaded.hf.labels, vocab_size=shape.vocab_size, layers=shape.num_layers,
                   heads=list(shape.num_heads), ffn=list(shape.ffn), hidden=shape.hidden,
                   **(dict(embedding_size=shape.embedding_size) if shape.embedding_size else {}),
                   **(dict(shared_layers=list(shape.tied)) if shape.shares_layers else {})),
        tokenizer=dict(file=art.TOKENIZER, sha256=art.sha256_bytes(loaded.hf.tokenizer_file.read_bytes()),
                       pad_id=text.pad_id, vocab_size=text.tok.get_vocab_size()),
        # shape is the longest input; min_shape, when there, says any length in between runs
        inputs=[dict(name=name, dtype="int64", shape=[1, n], **(dict(min_shape=[1, 1]) if s.extra.get("dynamic") else {}))
                for name in ("input_ids", "attention_mask")],
        outputs=outputs,
        numerics=numerics,
        size=s.extra.get("size"),
    )
