"""`bench --device native` and `--device qemu-aarch64`: the runner as a local process, the
arm64 one under qemu-user (ARM kernels checked here; emulated timings, never device latency)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

from edgeformer.artifact import Artifact
from edgeformer.devices.device import Device, parse_runner_output, with_measured_on
from edgeformer.devices.runner_build import BINARY, ensure_runner
from edgeformer.errors import UserError

QEMU_CPU = "cortex-a76"  # the Raspberry Pi 5's core; `-cpu max` runs XNNPACK's SME kernels wrong under qemu 7.2
ARM_SYSROOT = "/usr/aarch64-linux-gnu"


def run_local(device: Device, a: Artifact, args: list[str], inputs: Path | None, log, timeout: float) -> dict:
    """The runner on this machine (transport "local") or under qemu-aarch64 ("qemu")."""
    arch = platform.machine() if device.transport == "local" else "aarch64"
    runner = ensure_runner(arch, log) / BINARY
    cmd = [str(runner), str(a.path), *args]
    if device.transport == "qemu":
        qemu = shutil.which("qemu-aarch64")
        if qemu is None:
            raise UserError("--device qemu-aarch64: qemu-aarch64 is not installed; apt-get install qemu-user")
        cmd = [qemu, "-cpu", QEMU_CPU, "-L", ARM_SYSROOT, *cmd]
    if inputs is not None:
        cmd += ["--inputs", str(inputs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    result = parse_runner_output(proc.returncode, proc.stdout, proc.stderr, device.spec)
    if device.transport == "qemu":  # qemu-user shows the host's /proc/cpuinfo
        result["device"]["processor"] = f"qemu {QEMU_CPU} on {result['device']['processor']}"
        return with_measured_on(device, result, emulator=f"qemu-aarch64 -cpu {QEMU_CPU}")
    return with_measured_on(device, result)
