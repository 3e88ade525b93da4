"""The build: a `BuildSpec` in, an artifact folder out, through one list of stages per kind
of model (encoder.py, lm.py, server.py; the shared stages are in stages.py).

    >>> r = edgeformer.build("minilm", target="host", out="out/minilm-host")
    >>> r.manifest.budgets[0]["passed"]
    True
"""

from __future__ import annotations

from pathlib import Path

from edgeformer.errors import UserError
from edgeformer.pipeline.spec import BuildSpec
from edgeformer.pipeline.stages import BuildResult, Report, Stage

__all__ = ["BuildResult", "BuildSpec", "build", "stages_for"]


def stages_for(kind: str) -> list[Stage]:
    """The list of stages of one kind of build ("encoder", "causal-lm", "server")."""
    if kind == "causal-lm":
        from edgeformer.pipeline.lm import STAGES
    elif kind == "server":
        from edgeformer.pipeline.server import STAGES
    else:
        from edgeformer.pipeline.encoder import STAGES
    return STAGES


def build(spec: BuildSpec | str, target: str | None = None, out: str | Path | None = None, *,
          report: Report | None = None, **fields) -> BuildResult:
    """Compile a model for a target into an artifact folder.

    `spec` is a `BuildSpec`, or a model (bundled name, Hugging Face folder, .gguf) with
    `target`, `out` and any other BuildSpec field as keywords. `report(stage, seconds)` is
    called as each stage ends. With `enforce` (the default) a missed budget raises
    `BudgetError` carrying the result, and nothing is written.

    Example:
        >>> r = edgeformer.build("minilm", target="rpi5", out="out/pi", quant="8da4w", enforce=False)
        >>> r.manifest.recipe["quant"]
        '8da4w'
    """
    if not isinstance(spec, BuildSpec):
        given = {k: v for k, v in dict(target=target, out=out).items() if v is not None}
        try:
            spec = BuildSpec(spec, **given, **fields)
        except TypeError as e:  # an unknown keyword: name it and the known ones
            known = ", ".join(f for f in BuildSpec.__dataclass_fields__ if f != "model")
            raise UserError(f"build() got an unknown option ({e}); known: {known}") from None
    spec.validate()
    from edgeformer.pipeline.stages import run

    return run(stages_for(spec.kind()), spec, report).extra["result"]
