"""`bench --device ssh://[user@]host[:port][/dir]`: the runner on a board over OpenSSH.

What happens, each step one `ssh` call (the user's own ssh, keys and config; set
EDGEFORMER_SSH_COMMAND, like GIT_SSH_COMMAND, to add options):
1. probe: the device's architecture;
2. install the runner for that architecture and the artifact (model.pte, manifest.json,
   tokenizer.json) under DIR (default ~/.cache/edgeformer-device), each streamed as a tar
   into a temporary folder that is renamed into place only when complete; a copy cut off
   midway removes its temporary folder (trap on exit and hang-up), so nothing half-installed
   is ever used; an installed runner or artifact (same hash) is not copied again;
3. run the runner there and read its JSON.
The local artifact is only read; `record` later adds the result to its manifest.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import tarfile
from pathlib import Path

from edgeformer.artifact import Artifact, sha256_file
from edgeformer.devices.device import Device, parse_runner_output, with_measured_on
from edgeformer.devices.runner_build import BINARY, ensure_runner
from edgeformer.errors import UserError
from edgeformer.resources import runtime_dir

ARCH_NAMES = {"aarch64": "aarch64", "arm64": "aarch64", "x86_64": "x86_64", "amd64": "x86_64"}
DEFAULT_DIR = ".cache/edgeformer-device"  # relative to the remote home
EXIT_MARK = "edgeformer-runner-exit="
WORKER = "edgeformer_worker.py"


def run_over_ssh(device: Device, a: Artifact, args: list[str], inputs: Path | None, log, timeout: float) -> dict:
    base = device.dir or f"$HOME/{DEFAULT_DIR}"
    if log:
        log(f"probing {device.spec}")
    py = shlex.quote(device.python)
    probe = _ssh(device, f"uname -m; {py} -c 'import executorch.runtime' >/dev/null 2>&1 && echo has-executorch || true",
                 timeout=60).stdout.split()
    machine, has_python = (probe or ["?"])[0], "has-executorch" in probe
    arch = ARCH_NAMES.get(machine)
    if arch is None:
        raise UserError(f"{device.spec} reports architecture {machine!r}; the runner needs 64-bit Linux (aarch64 or "
                        "x86_64): on a Raspberry Pi, install the 64-bit Raspberry Pi OS")
    try:
        runner = ensure_runner(arch, log)
    except UserError as e:
        if not has_python:
            raise UserError(f"no runtime for {device.spec}: {e}; or pip install executorch on the device "
                            f"(then the Python runtime is used)") from None
        cmd = _python_worker(device, base, log)
    else:
        remote_runner = f"{base}/runners/{sha256_file(runner / BINARY)[:16]}"
        _install(device, runner, None, remote_runner, log, "the runner")
        cmd = [f"{remote_runner}/{BINARY}"]
    remote_art = f"{base}/artifacts/{a.manifest.pte['sha256'][:16]}"
    _install(device, a.path, a.files, remote_art, log, "the artifact")
    cmd = [*cmd, remote_art, *args]
    stdin = None
    if inputs is not None:
        cmd += ["--inputs", "/dev/stdin"]
        stdin = inputs.read_text()
    if log:
        log(f"running on {device.spec}")
    # The exit status is echoed: ssh itself exits 255 both when it cannot connect and when the
    # remote command dies of a signal, and a crash must not read as an unreachable device.
    proc = _ssh(device, " ".join(_q(c) for c in cmd) + f"; echo {EXIT_MARK}$? >&2", timeout=timeout, check=False,
                stdin=stdin)
    marks = [ln for ln in proc.stderr.splitlines() if ln.startswith(EXIT_MARK)]
    if not marks:
        raise _unreachable(device, proc.stderr)
    result = parse_runner_output(int(marks[-1][len(EXIT_MARK):]), proc.stdout, proc.stderr, device.spec)
    return with_measured_on(device, result)


def _python_worker(device, base: str, log) -> list[str]:
    """Install runtimes/python/edgeformer_worker.py on the device; the command that runs it."""
    worker = runtime_dir("python") / WORKER
    remote = f"{base}/workers/{sha256_file(worker)[:16]}"
    _install(device, worker.parent, [WORKER], remote, log, "the Python worker")
    return [device.python, f"{remote}/{WORKER}"]


def _install(device, local: Path, files: list[str] | None, remote: str, log, what: str) -> None:
    """Copy `files` of `local` (all of it when None) to `remote` on the device, whole or not at all."""
    check = _ssh(device, f'test -e "{remote}/.complete" && echo installed || true', timeout=60)
    if check.stdout.strip() == "installed":
        return
    if log:
        log(f"copying {what} to {device.spec}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in files if files is not None else sorted(p.name for p in local.iterdir()):
            tar.add(local / name, arcname=name)
    script = (f'set -e; d="{remote}"; mkdir -p "$(dirname "$d")"; t=$(mktemp -d "$d.partial.XXXXXX"); '
              f'trap \'rm -rf "$t"\' EXIT HUP INT TERM PIPE; tar -xf - -C "$t"; touch "$t/.complete"; '
              f'rm -rf "$d"; mv "$t" "$d"; trap - EXIT')
    proc = _ssh(device, script, timeout=1800, check=False, stdin_bytes=buf.getvalue())
    if proc.returncode != 0:
        if proc.returncode == 255:
            raise _unreachable(device, proc.stderr, f"while copying {what}; nothing was left installed")
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"copying {what} to {device.spec} failed ({last}); nothing was left installed there")


def _ssh(device, remote_cmd: str, timeout: float, check: bool = True, stdin: str | None = None,
         stdin_bytes: bytes | None = None) -> subprocess.CompletedProcess:
    cmd = [*shlex.split(os.environ.get("EDGEFORMER_SSH_COMMAND", "ssh")), "-o", "BatchMode=yes",
           "-o", "ConnectTimeout=10"]
    if device.port:
        cmd += ["-p", str(device.port)]
    cmd += [f"{device.user}@{device.host}" if device.user else device.host, remote_cmd]
    data = stdin_bytes if stdin_bytes is not None else (stdin.encode() if stdin is not None else b"")
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} is not installed; install OpenSSH's client (apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{device.spec} did not answer within {timeout:.0f} s; check the device and retry") from None
    proc = subprocess.CompletedProcess(cmd, proc.returncode, proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise _unreachable(device, proc.stderr) if proc.returncode == 255 else UserError(
            f"{remote_cmd.split()[0]} failed on {device.spec}: {(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
    return proc


def _unreachable(device, stderr: str, during: str = "") -> UserError:
    last = (stderr.strip().splitlines() or ["no message"])[-1]
    return UserError(f"cannot reach {device.spec} over ssh{' ' + during if during else ''} ({last}); check the address, "
                     "that sshd runs there and that your key is authorized (ssh-copy-id)")


def _q(s: str) -> str:
    return s if s.startswith("$HOME/") and "'" not in s and " " not in s else shlex.quote(s)

