"""Native execution: the C++ runner (`runtimes/cpp`) built from the executorch wheel, and the
devices it runs on (this host, qemu-aarch64, a board over SSH).

    from edgeformer.devices import parse_device, run_on_device, runner_args, record, Device
"""

from edgeformer.devices.device import Device, parse_device, record, runner_args
from edgeformer.devices.run import run_on_device

__all__ = ["Device", "parse_device", "record", "run_on_device", "runner_args"]
