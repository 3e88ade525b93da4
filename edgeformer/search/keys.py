"""Cache keys: what decides a pruned model, an artifact or a measurement, hashed."""

from __future__ import annotations

import hashlib
import json


def key(d: dict) -> str:
    """A short, stable hash of `d` (sorted keys)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def digest(xs: list[str]) -> str:
    """The hash of a list of texts (examples and labels, by content)."""
    return hashlib.sha256("\0".join(xs).encode()).hexdigest()


def toolchain() -> dict:
    """The versions an artifact depends on: a new toolchain is a new artifact."""
    from edgeformer.pipeline.stages import toolchain_versions

    return toolchain_versions()
