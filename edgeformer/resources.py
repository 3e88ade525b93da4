"""Files edgeformer ships beside its code: the device runtimes (the repository's `runtimes/`).

A wheel carries them as package data in `edgeformer/_runtimes/` (pyproject.toml maps the
repository's `runtimes/` there); a source checkout or an editable install reads `runtimes/`
at the repository root. `runtime_dir` finds either, so callers never build the path themselves.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from edgeformer.errors import UserError

RUNTIMES = ("android", "cpp", "python")  # the folders of runtimes/


def runtime_dir(name: str) -> Path:
    """The folder of runtime `name` (android: the app's Kotlin glue; cpp: the native runner's
    sources; python: the device worker), from an installed wheel or the source tree.

    Example:
        >>> (runtime_dir("cpp") / "CMakeLists.txt").is_file()
        True
    """
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; use one of {', '.join(RUNTIMES)}")
    installed = Path(str(files("edgeformer"))) / "_runtimes" / name  # a wheel's package data
    source = Path(__file__).resolve().parents[1] / "runtimes" / name  # a checkout, an editable install
    for path in (installed, source):
        if path.is_dir():
            return path
    raise UserError(f"this edgeformer installation has no runtimes/{name} (looked in {installed} and {source}); "
                    "reinstall edgeformer from its wheel or a full source checkout")
