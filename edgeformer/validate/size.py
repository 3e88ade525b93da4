"""Where the bytes of a `.pte` go, read from the file itself.

A `.pte` is a flatbuffer program followed by data segments; each segment is a backend's
compiled graph, the constant tensors of non-delegated ops (e.g. the embedding table), or
named data (weights that delegates reference by key, as XNNPACK does).
"""

from __future__ import annotations

DATA_PART = "data file (weights used twice, stored once)"


def size_breakdown(pte: bytes, data_bytes: int = 0) -> dict[str, int]:
    """Bytes by part: program, delegate blobs by backend, delegate weights, constants, padding,
    and the data file's `data_bytes` where the program has one (targets/shared_data.py)."""
    parts = _pte_parts(pte)
    if data_bytes:
        parts[DATA_PART] = data_bytes
    return parts


def _pte_parts(pte: bytes) -> dict[str, int]:
    from executorch.exir._serialize._program import _flatbuffer_to_program, _get_extended_header
    from executorch.exir.schema import DataLocation

    eh = _get_extended_header(pte)
    if eh is None or not eh.is_valid():
        return {"program": len(pte)}
    program = _flatbuffer_to_program(pte[: eh.program_size])
    owner: dict[int, str] = {}
    for plan in program.execution_plan:
        for d in plan.delegates:
            if d.processed.location == DataLocation.SEGMENT:
                owner[d.processed.index] = f"delegate:{d.id}"
    if program.constant_segment and program.constant_segment.offsets:
        owner[program.constant_segment.segment_index] = "constants (outside delegates)"
    for nd in program.named_data or []:
        owner.setdefault(nd.segment_index, "delegate weights (named data)")
    parts: dict[str, int] = {"program": eh.program_size}
    for i, seg in enumerate(program.segments):
        key = owner.get(i, "other segments")
        parts[key] = parts.get(key, 0) + seg.size
    parts["padding"] = len(pte) - sum(parts.values())
    return parts
