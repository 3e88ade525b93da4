"""`bench --device adb:SERIAL`: an Android phone. There is no Android runner from the wheels
yet, so this says what is missing (adb, or an NDK build of ExecuTorch) and what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgeformer.artifact import Artifact
from edgeformer.devices.device import Device
from edgeformer.devices.runner_build import ANDROID
from edgeformer.errors import UserError


def run_over_adb(device: Device, a: Artifact, args: list[str], inputs: Path | None, log, timeout: float) -> dict:
    if shutil.which("adb") is None:
        raise UserError(f"--device {device.spec}: adb is not installed (Android platform-tools); install it and "
                        "connect the phone with USB debugging on")
    raise UserError(f"--device {device.spec}: there is no Android runner: `edgeformer runtime build --arch {ANDROID}` "
                    "needs ExecuTorch built with the NDK, which the wheels do not carry; measure on the phone from the "
                    "app in runtimes/android/")
