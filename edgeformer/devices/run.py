"""`run_on_device`: the runner on a parsed `Device`, over the transport its spec names."""

from __future__ import annotations

from pathlib import Path

from edgeformer.artifact import Artifact
from edgeformer.devices.adb import run_over_adb
from edgeformer.devices.device import Device
from edgeformer.devices.local import run_local
from edgeformer.devices.ssh import run_over_ssh

TRANSPORTS = {"local": run_local, "qemu": run_local, "ssh": run_over_ssh, "adb": run_over_adb}


def run_on_device(device: Device, a: Artifact, args: list[str], inputs: Path | None = None, log=None,
                  timeout: float = 1800) -> dict:
    """Run the runner on `device` over artifact `a`; the runner's JSON plus `measured_on`.

    Example:
        >>> from edgeformer import load_artifact
        >>> from edgeformer.devices import parse_device, run_on_device, runner_args
        >>> a = load_artifact("out/")
        >>> r = run_on_device(parse_device("native"), a, runner_args(a, threads=4, warmup=2, iters=20))
        >>> r["measured_on"]["kind"]
        'host'
    """
    return TRANSPORTS[device.transport](device, a, args, inputs, log, timeout)
