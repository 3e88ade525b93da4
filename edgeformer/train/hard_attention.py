"""Choosing the layers for selective hard attention by validation accuracy (AxFormer).

Each candidate layer is tried alone (the validation hidden states entering it are cached, so
only the layers from it on rerun); then, best first, layers are added while validation
accuracy stays at or above the model's without hard attention.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from edgeformer.data import load_data, parse_spec
from edgeformer.errors import UserError
from edgeformer.train.loop import make_tokenizer
from edgeformer.train.search import Evaluator, make_batches


def choose_hard_layers(enc, top_k: int, data: str, tokenizer_file, pad_id: int, seq_len: int, labels: list[str],
                       progress: Callable[[str], None] | None = None) -> tuple[list[int], dict]:
    """(chosen layers, report) for top-`top_k` hard attention on `enc` (modified only on return:
    the chosen layers keep `top_k`). `data` is a task data spec; its validation split decides."""
    if enc.head is None:
        raise UserError("--attention hard=...:layers=auto measures classification accuracy; an embedder has no head: "
                        "fine-tune it first (edgeformer finetune) or name the layers (hard=top8:layers=3-5)")
    val = load_data(f"{parse_spec(data)[0]}:validation")
    unknown = sorted(set(val.labels) - set(labels))
    if unknown:
        raise UserError(f"--data {data}: labels {unknown} are not in the model's head {labels}; use the task's own data")
    tok = make_tokenizer(tokenizer_file, seq_len)
    batches = make_batches(tok, val.texts, [labels.index(y) for y in val.labels], pad_id)
    with torch.no_grad():
        ev = Evaluator(enc, batches)
        base_acc = ev.score()[0]
        alone = {}
        for i, ly in enumerate(enc.layers):
            ly.attn.top_k = top_k
            alone[i] = ev.score(layer=i)
            ly.attn.top_k = None
            if progress:
                progress(f"layer {i}: accuracy {alone[i][0]:.4f} with top{top_k} (full {base_acc:.4f})")
        chosen: list[int] = []
        acc = base_acc
        for i in sorted(alone, key=lambda j: (-alone[j][0], alone[j][1])):
            if alone[i][0] < base_acc:
                break
            enc.layers[i].attn.top_k = top_k
            trial = Evaluator(enc, batches).score()[0] if chosen else alone[i][0]
            if trial >= base_acc:
                chosen.append(i)
                acc = trial
            else:
                enc.layers[i].attn.top_k = None
    report = dict(data=val.name, examples=len(val), full_accuracy=round(base_acc, 4), accuracy=round(acc, 4),
                  per_layer_accuracy={i: round(a, 4) for i, (a, _) in alone.items()})
    return sorted(chosen), report
