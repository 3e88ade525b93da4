"""Where `bench --device` runs an artifact with the C++ runner, and what it records.

    native          the runner on this machine (its own architecture)
    qemu-aarch64    the arm64 runner under qemu-aarch64 -cpu cortex-a76: ARM kernels, checked
                    here; its timings are emulated, never device latency
    ssh://user@host[:port]   a board (Raspberry Pi, arm64 or x86-64 Linux) over OpenSSH
    adb:SERIAL      an Android phone (needs an Android runner: see runner_build)

Each run returns the runner's JSON with `measured_on`: where (host, emulated, device), the
transport and the fingerprint the runner read on the device itself.

This module is the leaf the transports share (`local`, `ssh`, `adb`); `run.run_on_device`
picks the transport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

from edgeformer.artifact import MANIFEST, Artifact, load_artifact, write_text_atomic
from edgeformer.errors import UserError
from edgeformer.manifest import Manifest
from edgeformer.report_md import write_report


@dataclass(frozen=True)
class Device:
    spec: str
    kind: str  # "host", "emulated" or "device": where the numbers come from
    transport: str  # "local", "qemu", "ssh", "adb"
    user: str | None = None
    host: str | None = None
    port: int | None = None
    python: str = "python3"  # ssh: the device's interpreter to try for the Python runtime (?python=PATH)
    dir: str | None = None  # ssh: where to install on the device (the URL's path; None: the default)


def parse_device(spec: str) -> Device:
    if spec == "native":
        return Device(spec, "host", "local")
    if spec == "qemu-aarch64":
        return Device(spec, "emulated", "qemu")
    if spec.startswith("ssh://"):
        u = urlsplit(spec)
        try:
            port = u.port
        except ValueError:
            port = -1
        query = parse_qs(u.query)
        if not u.hostname or port == -1 or set(query) - {"python"}:
            raise UserError(f"--device {spec!r} is not ssh://[user@]host[:port][/dir][?python=PATH]; "
                            "e.g. ssh://pi@raspberrypi.local")
        return Device(spec, "device", "ssh", u.username, u.hostname, port, query.get("python", ["python3"])[0],
                      u.path if u.path not in ("", "/") else None)
    if spec.startswith("adb:"):
        return Device(spec, "device", "adb", host=spec[4:] or None)
    raise UserError(f"--device {spec!r} is not one of: native, qemu-aarch64, ssh://user@host[:port], adb:SERIAL")


def runner_args(a: Artifact, threads: int, warmup: int | None, iters: int | None, prompt_tokens: int | None = None,
                new_tokens: int | None = None) -> list[str]:
    """The runner's command line: encoders time `iters` runs; causal LMs prefill `prompt_tokens`
    seeded ids and decode `new_tokens` greedily (the artifact's defaults when None)."""
    args = ["--threads", str(threads), "--no-outputs"]
    if warmup is not None:
        args += ["--warmup", str(warmup)]
    if not a.manifest.generation:
        return args + (["--iters", str(iters)] if iters is not None else [])
    from edgeformer.lm.speed import default_lengths

    prompt_tokens, new_tokens = default_lengths(a.manifest.generation, prompt_tokens, new_tokens)
    return args + ["--prompt-tokens", str(prompt_tokens), "--max-new-tokens", str(new_tokens), "--ignore-eos"]


def with_measured_on(device: Device, result: dict, **extra) -> dict:
    """The runner's `device` fingerprint moved into `measured_on`, with where and how it ran."""
    result["measured_on"] = dict(kind=device.kind, transport=device.transport, spec=device.spec, **extra,
                                 **result.pop("device"))
    return result


def parse_runner_output(rc: int, stdout: str, stderr: str, where: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if rc == 0 and lines:
        return json.loads(lines[-1])
    errors = [ln.removeprefix("error: ") for ln in stderr.splitlines() if ln.startswith("error: ")]
    if rc < 0 or rc > 128:  # killed by a signal (ssh reports 128+N)
        sig = -rc if rc < 0 else rc - 128
        raise UserError(f"the runner crashed on {where} (signal {sig}); the local artifact is untouched")
    last = errors[-1] if errors else ((stderr.strip().splitlines() or ["no output"])[-1])
    raise UserError(f"the runner failed on {where} (exit {rc}): {last}")


def record(a: Artifact, result: dict) -> Manifest:
    """Add `result` to the artifact's manifest under `devices` (one entry per device spec,
    the latest kept), written atomically. The .pte and its hash are not touched."""
    m = load_artifact(a.path).manifest
    entry = dict(result, recorded=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    entry.pop("artifact", None)
    spec = result["measured_on"]["spec"]
    m.devices = [d for d in (m.devices or []) if d["measured_on"]["spec"] != spec] + [entry]
    write_text_atomic(a.path / MANIFEST, m.to_json())
    write_report(a.path, m)
    return m
