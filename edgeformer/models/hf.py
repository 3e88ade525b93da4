"""Load a Hugging Face BERT-family folder and map its weights onto `Encoder`.

The architecture families it reads are the table in `edgeformer.models.families`; each
family reads the Hugging Face modules (not state-dict strings) and fills an `Encoder` of the
same sizes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeformer.errors import UserError
from edgeformer.models import modernbert
from edgeformer.models.encoder import (
    Encoder,
    EncoderShape,
    Head,
    clone_linear,
    copy_params,
    fold_attention_scale,
)
from edgeformer.models.families import FAMILIES
from edgeformer.transforms.prune import CONFIG_KEY, shrink_to_config

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class HFModel:
    """A loaded Hugging Face folder: the reference model and what edgeformer needs of it."""

    path: Path
    model_type: str
    task: str  # "embedder" | "classifier"
    reference: nn.Module  # the Hugging Face model, eval mode, fp32
    labels: list[str]
    tokenizer_file: Path


def read_config(path: Path) -> dict:
    """The folder's config.json, or a UserError saying what is missing."""
    cfg_file = path / "config.json"
    if not path.is_dir():
        raise UserError(f"model {str(path)!r} is not a folder; pass a Hugging Face model folder or a bundled name (`edgeformer models`)")
    if not cfg_file.is_file():
        raise UserError(f"{str(path)!r} is not a model folder: no config.json; pass the folder holding config.json and model.safetensors")
    try:
        return json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_file} is not valid JSON ({e.__class__.__name__}); re-save the model with save_pretrained") from None


# Families whose layers are not BERT's post-norm layout: each module maps its own weights
# (`to_encoder(model, task)`) and says why pruning cannot cut it (`NO_PRUNING`).
OWN_LAYOUT = {"modernbert": modernbert}
SUPPORTED = sorted({*FAMILIES, *OWN_LAYOUT})

# Encoder families people bring that are refused, and why (one line each).
NOT_YET = {
    "deberta-v2": " (DeBERTa-v2/v3's relative-position buckets and c2p/p2c gathers run outside XNNPACK on every "
                  "call; the fixed-length rewrite that lowers them whole is measured in tools/deberta_study, not built in)",
}


def no_pruning(model_type: str) -> str | None:
    """Why `prune` cannot cut this family, or None when it can."""
    own = OWN_LAYOUT.get(model_type)
    return own.NO_PRUNING if own is not None else FAMILIES[model_type].no_pruning


def load_hf_folder(path: Path) -> HFModel:
    """Load a Hugging Face encoder folder (safetensors only; never unpickles)."""
    cfg = read_config(path)
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED:
        why = NOT_YET.get(model_type, "")
        raise UserError(
            f"architecture {model_type!r} in {path}/config.json is not supported{why}; "
            f"supported: {', '.join(SUPPORTED)}"
        )
    if not (path / "model.safetensors").is_file():
        found = [f for f in WEIGHT_FILES if (path / f).is_file()]
        hint = " (pytorch_model.bin is a pickle; convert it with save_pretrained(safe_serialization=True))" if found else ""
        raise UserError(f"{path} has no model.safetensors{hint}; edgeformer reads weights only from safetensors")
    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise UserError(f"{path} has no tokenizer.json; save it with AutoTokenizer.from_pretrained(...).save_pretrained({str(path)!r})")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # edgeformer reports its own stages

    archs = cfg.get("architectures") or []
    is_classifier = any(a.endswith("ForSequenceClassification") for a in archs)
    auto = transformers.AutoModelForSequenceClassification if is_classifier else transformers.AutoModel
    try:
        if CONFIG_KEY in cfg:
            model = _load_pruned(path, auto, model_type, cfg)
        else:
            model = auto.from_pretrained(str(path), dtype=torch.float32, use_safetensors=True)
    except Exception as e:  # transformers raises many types for a broken folder
        raise UserError(f"could not load {path} with transformers: {str(e).splitlines()[0]}") from None
    model.eval()
    labels = []
    if is_classifier:
        id2label = model.config.id2label
        labels = [str(id2label[i]) for i in range(model.config.num_labels)]
    return HFModel(path, model_type, "classifier" if is_classifier else "embedder", model, labels, tokenizer_file)


def _load_pruned(path: Path, auto, model_type: str, cfg: dict) -> nn.Module:
    """A checkpoint written by `edgeformer prune`: per-layer sizes come from its config."""
    import transformers
    from safetensors.torch import load_file

    config = transformers.AutoConfig.from_pretrained(str(path))
    model = auto.from_config(config)
    c = FAMILIES[model_type].config_get(config)
    shrink_to_config(model, model_type, cfg[CONFIG_KEY], c["hidden"] // c["heads"], c["hidden"])
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"weights do not match the pruned config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.float()


def to_encoder(hf: HFModel) -> Encoder:
    """Build an `Encoder` with the reference model's weights (sizes read per layer)."""
    if hf.model_type in OWN_LAYOUT:
        return OWN_LAYOUT[hf.model_type].to_encoder(hf.reference, hf.task)
    fam = FAMILIES[hf.model_type]
    model = hf.reference
    base = model.base_model
    c = fam.config_get(model.config)
    head_dim = c["hidden"] // c["heads"]
    word, pos, ln_emb = fam.embeddings(base)
    layers = fam.layers(base)
    project = fam.projection(base)
    distinct = list(dict.fromkeys(id(ly["q"]) for ly in layers))  # a shared layer's modules repeat
    tied = tuple(distinct.index(id(ly["q"])) for ly in layers) if len(distinct) < len(layers) else None
    shape = EncoderShape(
        vocab_size=word.num_embeddings,
        hidden=c["hidden"],
        head_dim=head_dim,
        num_heads=tuple(ly["q"].out_features // head_dim for ly in layers),
        ffn=tuple(ly["ffn_in"].out_features for ly in layers),
        max_positions=pos.shape[0],
        activation=c["act"] if isinstance(c["act"], str) else "gelu",
        eps=ln_emb.eps,
        embedding_size=None if project is None else project.in_features,
        tied=tied,
    )
    head = None
    if hf.task == "classifier":
        mods = fam.head(model)
        head = Head(*[clone_linear(m) if isinstance(m, nn.Linear) else m for m in mods])
    enc = Encoder(shape, head=head)
    with torch.no_grad():
        enc.word.weight.copy_(word.weight)
        enc.pos.copy_(pos)
    copy_params(enc.ln_emb, ln_emb)
    if project is not None:
        copy_params(enc.project, project)
    done: set[int] = set()
    for dst, src in zip(enc.layers, layers, strict=True):
        if id(dst) in done:  # a shared layer: copied (and its attention scale folded) once
            continue
        done.add(id(dst))
        with torch.no_grad():
            dst.attn.qkv.weight.copy_(torch.cat([src["q"].weight, src["k"].weight, src["v"].weight]))
            dst.attn.qkv.bias.copy_(torch.cat([src["q"].bias, src["k"].bias, src["v"].bias]))
        fold_attention_scale(dst.attn)
        copy_params(dst.attn.out, src["o"])
        copy_params(dst.ln1, src["ln1"])
        copy_params(dst.ffn_in, src["ffn_in"])
        copy_params(dst.ffn_out, src["ffn_out"])
        copy_params(dst.ln2, src["ln2"])
    return enc.eval()


@torch.no_grad()
def reference_forward(hf: HFModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """What the Hugging Face model says, pooled the way the model card says."""
    out = hf.reference(input_ids=input_ids, attention_mask=attention_mask)
    if hf.task == "classifier":
        return out.logits
    h = out.last_hidden_state
    m = attention_mask[..., None].to(h.dtype)
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
