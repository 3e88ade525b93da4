"""edgeformer: ship a transformer to the edge as a validated ExecuTorch program.

    >>> import edgeformer
    >>> result = edgeformer.build("minilm", target="host", out="out/minilm-host")
    >>> result.manifest.numerics["sqnr_db"] > 20
    True
    >>> len(edgeformer.Predictor(edgeformer.load_artifact(result.path))("hello")["embedding"])
    384
    >>> edgeformer.measure(result.path, threads=2)["latency_ms_p50"] < 10
    True

Names are imported on first use, so running an artifact does not load the compiler
(transformers, torchao, the exporter).
"""

import importlib

from edgeformer._quiet import quiet as _quiet

_quiet()

__version__ = "0.1.0"

_LAZY = {
    "Artifact": "edgeformer.artifact",
    "load_artifact": "edgeformer.artifact",
    "BudgetError": "edgeformer.errors",
    "UserError": "edgeformer.errors",
    "BuildResult": "edgeformer.pipeline",
    "BuildSpec": "edgeformer.pipeline",
    "build": "edgeformer.pipeline",
    "Predictor": "edgeformer.predict",
    "measure": "edgeformer.validate.latency",
    "Recipe": "edgeformer.recipe",
    "TARGETS": "edgeformer.targets",
    "get_target": "edgeformer.targets",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeformer' has no attribute {name!r}")
