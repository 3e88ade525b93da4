"""`bench --device ssh://` against a real OpenSSH server on loopback, with a throwaway key."""

import json
import os
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_cli

from edgeformer.artifact import load_artifact

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not (Path(SSHD).exists() and shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("needs openssh-server and openssh-client (tools/setup.sh installs them)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\n"
        f"PermitRootLogin yes\nUsePAM no\nPidFile {d / 'sshd.pid'}\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "w"))
    old = os.environ.get("EDGEFORMER_SSH_COMMAND")
    os.environ["EDGEFORMER_SSH_COMMAND"] = (f"ssh -i {d / 'user'} -o UserKnownHostsFile={d / 'known_hosts'} "
                                            "-o StrictHostKeyChecking=accept-new -o LogLevel=ERROR")
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield dict(url=f"ssh://{user}@127.0.0.1:{port}", dir=d, port=port, user=user)
    proc.terminate()
    proc.wait(10)
    if old is None:
        os.environ.pop("EDGEFORMER_SSH_COMMAND", None)
    else:
        os.environ["EDGEFORMER_SSH_COMMAND"] = old


@pytest.fixture
def art(built_int8_cls, tmp_path):
    a = tmp_path / "art"
    shutil.copytree(built_int8_cls.path, a)
    return a


def _remote(tmp_path):
    return tmp_path / "device-home"


def test_bench_over_ssh_records_the_device(sshd, art, tmp_path, capsys, host_runner):
    remote = _remote(tmp_path)
    url = f"{sshd['url']}{remote}"
    before = (art / "model.pte").read_bytes()
    code, out, err = run_cli(["bench", str(art), "--device", url, "--iters", "3", "--warmup", "1", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    on = r["measured_on"]
    assert on["kind"] == "device" and on["transport"] == "ssh" and on["spec"] == url
    assert on["machine"] == platform.machine() and on["cores"] == os.cpu_count() and on["system"]
    m = load_artifact(art).manifest
    assert (art / "model.pte").read_bytes() == before
    assert m.devices[-1]["measured_on"]["spec"] == url and m.devices[-1]["iters"] == 3
    # installed whole: the runner with its libraries, the artifact's three files, no partial folders
    installed = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file())
    assert any(p.endswith("bin/edgeformer-runner") for p in installed)
    assert sum(p.startswith("artifacts/") and not p.endswith(".complete") for p in installed) == 3
    assert not [p for p in remote.rglob("*.partial.*")]
    # a second bench reuses what is installed (no copy): the artifact folder is not rewritten
    stamp = next(remote.glob("artifacts/*")).stat().st_mtime_ns
    code, out, err = run_cli(["bench", str(art), "--device", url, "--iters", "2", "--warmup", "0", "--json"], capsys)
    assert code == 0, err
    assert next(remote.glob("artifacts/*")).stat().st_mtime_ns == stamp


def test_unreachable_device_is_one_line(art, capsys, monkeypatch):
    monkeypatch.setenv("EDGEFORMER_SSH_COMMAND", "ssh -o ConnectTimeout=3")
    code, out, err = run_cli(["bench", str(art), "--device", f"ssh://nobody@127.0.0.1:{_free_port()}"], capsys)
    assert code == 2 and "cannot reach ssh://nobody@127.0.0.1" in err and "Traceback" not in err
    assert load_artifact(art).manifest.devices is None


def test_copy_cut_midway_leaves_nothing_installed(sshd, art, tmp_path, capsys, monkeypatch, host_runner):
    """An ssh whose stdin is cut after 64 KiB: the remote tar fails, its temporary folder goes."""
    cut = tmp_path / "cut-ssh"
    cut.write_text(f"#!/bin/sh\nhead -c 65536 | {os.environ['EDGEFORMER_SSH_COMMAND']} \"$@\"\n")
    cut.chmod(0o755)
    monkeypatch.setenv("EDGEFORMER_SSH_COMMAND", str(cut))
    remote = _remote(tmp_path)
    code, out, err = run_cli(["bench", str(art), "--device", f"{sshd['url']}{remote}"], capsys)
    assert code == 2 and "nothing was left installed" in err, err
    assert not list(remote.rglob("*.partial.*")) and not list(remote.rglob(".complete"))
    assert load_artifact(art).manifest.devices is None


def test_runner_crash_on_device_is_reported(sshd, art, tmp_path, capsys, host_runner):
    """A runner that dies of a signal on the device: a clear error, the local artifact untouched."""
    from edgeformer.artifact import sha256_file

    remote = _remote(tmp_path)
    fake = remote / "runners" / sha256_file(host_runner)[:16]
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "edgeformer-runner").write_text("#!/bin/sh\nkill -SEGV $$\n")
    (fake / "bin" / "edgeformer-runner").chmod(0o755)
    (fake / ".complete").touch()
    code, out, err = run_cli(["bench", str(art), "--device", f"{sshd['url']}{remote}"], capsys)
    assert code == 2 and "the runner crashed on ssh://" in err and "signal 11" in err, err
    assert load_artifact(art).manifest.devices is None


def test_build_rpi5_checks_budgets_on_the_device(sshd, tiny_bert_cls, tmp_path, capsys, host_runner):
    """`build --target rpi5 --device ssh://...`: latency and memory budgets are checked against
    the numbers the runner measured on the device (here the loopback 'board' is this x86-64 host)."""
    out = tmp_path / "rpi5"
    url = f"{sshd['url']}{_remote(tmp_path)}"
    code, _, err = run_cli(["build", str(tiny_bert_cls), "--target", "rpi5", "-o", str(out), "--lengths", "static", "--batch", "1",
                            "--seq-len", "16",
                            "--bench-iters", "5", "--min-sqnr", "0", "--device", url], capsys)
    assert code == 0, err
    m = load_artifact(out).manifest
    assert m.measurements["measured_on"]["kind"] == "device" and m.measurements["measured_on"]["spec"] == url
    lat = next(b for b in m.budgets if b["name"] == "max_latency_ms_p50")
    assert lat["where"] == "device" and lat["passed"] is True and lat["measured"] == round(m.measurements["latency_ms_p50"], 3)
    assert m.devices[0]["measured_on"]["spec"] == url


def test_build_under_qemu_records_but_does_not_check_timings(tiny_bert_cls, tmp_path, capsys, arm_runner):
    out = tmp_path / "rpi5-qemu"
    code, _, err = run_cli(["build", str(tiny_bert_cls), "--target", "rpi5", "-o", str(out), "--lengths", "static", "--batch", "1",
                            "--seq-len", "16",
                            "--bench-iters", "2", "--min-sqnr", "0", "--device", "qemu-aarch64"], capsys)
    assert code == 0, err
    m = load_artifact(out).manifest
    assert m.measurements["measured_on"]["kind"] == "emulated"
    lat = next(b for b in m.budgets if b["name"] == "max_latency_ms_p50")
    assert lat["passed"] is None and lat["where"] == "emulated: not checked"


def test_custom_op_lm_runs_in_the_devices_runner(sshd, tiny_llama_folder, tmp_path, capsys, host_runner):
    """A causal LM built with ExecuTorch's LLM custom ops (the default) runs in the C++ runner on
    a board with no Python: the runner carries those ops (runtimes/cpp/llm_ops.cpp)."""
    import edgeformer

    art = edgeformer.build(str(tiny_llama_folder), "host", tmp_path / "lm", quant="fp32", max_context=64, bench_iters=0).path
    code, out, err = run_cli(["bench", str(art), "--device", f"{sshd['url']}{_remote(tmp_path)}", "--json",
                              "--prompt-tokens", "9", "--new-tokens", "6"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["runner"] == "edgeformer-runner" and r["kind"] == "causal_lm" and len(r["generated_ids"]) == 6
    assert r["measured_on"]["kind"] == "device"


def test_device_python_runs_when_no_runner_can_be_built(sshd, tiny_llama_folder, tmp_path, capsys, monkeypatch):
    """No runner for the board's architecture (no cross compiler here) but executorch on the
    device (?python= names its interpreter): the Python worker runs it; with neither, the error
    names both fixes."""
    import sys

    import edgeformer
    from edgeformer.devices import ssh
    from edgeformer.errors import UserError

    def no_compiler(arch, log=None):
        raise UserError("no C++ compiler for x86_64")

    monkeypatch.setattr(ssh, "ensure_runner", no_compiler)
    art = edgeformer.build(str(tiny_llama_folder), "host", tmp_path / "lm", quant="fp32", max_context=64, bench_iters=0).path
    url = f"{sshd['url']}{_remote(tmp_path)}"
    code, out, err = run_cli(["bench", str(art), "--device", f"{url}?python={sys.executable}", "--json", "--prompt-tokens", "9",
                              "--new-tokens", "6"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["runner"] == "edgeformer-worker (python)" and r["kind"] == "causal_lm" and len(r["generated_ids"]) == 6
    code, _, err = run_cli(["bench", str(art), "--device", url], capsys)
    assert code == 2 and "no C++ compiler" in err and "pip install executorch on the device" in err


def test_wrong_architecture_is_named(sshd, art, tmp_path, capsys, monkeypatch):
    """A 32-bit board: `uname -m` answers armv7l (a fake ssh answers the probe, then stops)."""
    fake = tmp_path / "armv7-ssh"
    fake.write_text("#!/bin/sh\necho armv7l\n")
    fake.chmod(0o755)
    monkeypatch.setenv("EDGEFORMER_SSH_COMMAND", str(fake))
    code, _, err = run_cli(["bench", str(art), "--device", "ssh://pi@raspberrypi.local"], capsys)
    assert code == 2 and "reports architecture 'armv7l'" in err and "64-bit Raspberry Pi OS" in " ".join(err.split())
