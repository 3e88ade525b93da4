"""`edgeformer runtime build --arch x86_64|aarch64`: the C++ runner, built against the
headers and shared libraries of the executorch wheel for that architecture.

The host's own architecture uses the installed wheel; another one downloads the same
executorch version's wheel for it (pip, ~18 MB) and cross-compiles with Debian's
g++-<arch>-linux-gnu. The result is a relocatable folder, bin/edgeformer-runner + lib/*.so
(RUNPATH $ORIGIN/../lib), published whole into the cache (or -o) or not at all.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

from edgeformer.artifact import commit
from edgeformer.errors import UserError
from edgeformer.resources import runtime_dir

# arch -> (wheel platform tag, C++ compiler when cross-compiling, Debian package giving it)
ARCHES = {
    "x86_64": ("manylinux_2_28_x86_64", "x86_64-linux-gnu-g++", "g++-x86-64-linux-gnu"),
    "aarch64": ("manylinux_2_28_aarch64", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
}
ANDROID = "android-arm64"
BINARY = "bin/edgeformer-runner"


def cache_root() -> Path:
    base = os.environ.get("EDGEFORMER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeformer"
    return Path(base)


def default_dir(arch: str) -> Path:
    """The cache folder of the runner for `arch`, named by the executorch version and a digest of
    the runner's sources (a changed runner.cpp is a new folder, not a stale binary)."""
    return cache_root() / "runtime" / f"executorch-{version('executorch')}-{arch}-{sources_digest()}"


def sources_digest() -> str:
    h = hashlib.sha256()
    for f in sorted(runtime_dir("cpp").iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def find_runner(arch: str) -> Path | None:
    """The runner folder built for `arch` in the cache, or None."""
    d = default_dir(arch)
    return d if (d / BINARY).is_file() else None


def ensure_runner(arch: str, log=None) -> Path:
    """The cached runner for `arch`, built first if it is not there yet."""
    return find_runner(arch) or build_runner(arch, log=log)


def build_runner(arch: str, out: Path | None = None, ndk: Path | None = None, log=None) -> Path:
    """Build the runner for `arch` into `out` (default: the cache); returns the folder."""
    if arch == ANDROID:
        raise UserError(_android_message(ndk))
    if arch not in ARCHES:
        raise UserError(f"--arch {arch!r} is not supported; use one of: {', '.join([*ARCHES, ANDROID])}")
    sources = runtime_dir("cpp")  # runtimes/cpp in a checkout, edgeformer/_runtimes/cpp in a wheel
    cmake = shutil.which("cmake")
    if cmake is None:
        raise UserError("cmake is not installed; install it (apt-get install cmake, or pip install cmake) and retry")
    cross = arch != platform.machine()
    compiler = ARCHES[arch][1] if cross else (shutil.which("g++") and "g++")
    if not compiler or not shutil.which(compiler):
        pkg = ARCHES[arch][2] if cross else "g++"
        raise UserError(f"no C++ compiler for {arch} ({compiler or 'g++'} not found); install it with apt-get install {pkg}")
    out = Path(out) if out else default_dir(arch)
    root = _executorch_root(arch, cross)
    work = Path(tempfile.mkdtemp(prefix="edgeformer-runner-"))
    log_file = work / "build.log"
    try:
        configure = [cmake, "-S", str(sources), "-B", str(work / "build"), f"-DEXECUTORCH_ROOT={root}",
                     f"-DEDGEFORMER_RUNNER_VERSION={version('edgeformer')}+executorch-{version('executorch')}"]
        if cross:
            configure += [f"-DCMAKE_TOOLCHAIN_FILE={sources / f'toolchain-{arch}.cmake'}"]
        stage = work / "install"
        for step, cmd in (("configure", configure), ("compile", [cmake, "--build", str(work / "build"), "-j", "2"]),
                          ("install", [cmake, "--install", str(work / "build"), "--prefix", str(stage)])):
            if log:
                log(f"{step} ({arch})")
            with log_file.open("a") as f:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
                print(tail, file=sys.stderr)
                raise UserError(f"the runner's {step} step failed for {arch} (exit {rc}); the build log's end is above")
        _publish(stage, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _publish(stage: Path, out: Path) -> None:
    """Move the installed tree beside `out` (same file system), then swap it in as artifacts are."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.rmdir()
    shutil.move(str(stage), tmp)
    commit(tmp, out)


def _executorch_root(arch: str, cross: bool) -> Path:
    """The executorch package folder (include/, lib/, share/cmake/) for `arch`."""
    if not cross:
        from importlib.util import find_spec

        return Path(list(find_spec("executorch").submodule_search_locations)[0])  # a namespace package
    ver = version("executorch")
    dest = cache_root() / "wheels" / f"executorch-{ver}-{arch}"
    if (dest / "executorch" / "share" / "cmake" / "executorch-config.cmake").is_file():
        return dest / "executorch"
    py = f"{sys.version_info.major}{sys.version_info.minor}"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"executorch=={ver}", "--platform", ARCHES[arch][0],
               "--python-version", py, "--implementation", "cp", "--abi", f"cp{py}", "--only-binary=:all:",
               "--no-deps", "-q", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("executorch-*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise UserError(f"could not download the executorch {ver} wheel for {arch} ({last}); check access to PyPI")
        part = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=_mkdir(dest.parent)))
        with zipfile.ZipFile(wheels[0]) as z:
            keep = [n for n in z.namelist() if n.split("/")[:2][-1] in ("include", "lib", "share") and n.startswith("executorch/")]
            z.extractall(part, keep)
        shutil.rmtree(dest, ignore_errors=True)
        part.rename(dest)
    return dest / "executorch"


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _android_message(ndk: Path | None) -> str:
    where = f"--ndk {ndk} is given, but" if ndk else "and"
    return (f"--arch {ANDROID}: the executorch wheels carry Linux (glibc) libraries only, {where} an Android runner "
            "needs ExecuTorch's libraries built with the NDK; build ExecuTorch for arm64-v8a (its Android docs) or use "
            "its Android AAR in an app (runtimes/android/), and bench on a phone from the app")
