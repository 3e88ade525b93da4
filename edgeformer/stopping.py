"""Deterministic stopping: SIGINT and SIGTERM end a command within ~2 s, nothing half-written.

Python runs signal handlers only when the main thread gets back to bytecode, so a stop that
arrives during a long native call (ExecuTorch's lowering, a forward pass) waits for it, and
library code that swallows a KeyboardInterrupt loses it. `guard()` therefore works on two paths:

- the main thread: the handler sets the process-wide stop flag and raises `Stopped` (a
  KeyboardInterrupt, so `except Exception` does not swallow it); `finally` blocks and
  `artifact.staging` clean up on the way out, and the guard prints one line and exits
  with 128 + the signal number (130 for SIGINT, 143 for SIGTERM);
- a watchdog thread, woken through `signal.set_wakeup_fd` (written by the C-level handler,
  so it fires even while the main thread is stuck in C): it sets the flag at once and, if
  the process is still alive `grace` seconds later, removes every registered staging folder
  itself, prints the same line and calls `os._exit`.

Publishing (`artifact.commit`) and the watchdog take the same lock, and a commit refuses to
start once a stop was requested, so a stop and a publish never interleave: the output is
either published whole (the stop line then says so) or not at all.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 1.5  # the main thread's time to unwind before the watchdog ends the process

_lock = threading.RLock()  # the stop flag, the registry, a publish and the watchdog's exit
_stop: int | None = None  # the first signal received
_raised = False  # Stopped raised once already (a second signal must not interrupt clean-up)
_announced = False
_pending = False  # the handler deferred its raise (the main thread was printing)
_OUTPUT_MODULES = ("rich.", "logging")  # where an exception mid-call garbles or repeats output
_deferring = 0  # critical sections in progress (a publish, a staging folder's creation): the handler waits
_staging: set[Path] = set()
_published: list[Path] = []
_command = "edgeformer"
_outputs: list[Path] = []  # what the command writes (-o); the stop line reports only these


class Stopped(KeyboardInterrupt):
    """Raised in the main thread once SIGINT or SIGTERM arrived; the CLI exits 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return message(self.signum)


def requested() -> int | None:
    """The signal number of the stop requested in this process, or None."""
    return _stop


def check() -> None:
    """Raise `Stopped` if a stop was requested (call it where work is about to be kept)."""
    global _raised
    if _stop is not None:
        _raised = True  # from here the handler only records: the clean-up on the way out runs whole
        raise Stopped(_stop)


def register(path: Path) -> None:
    """Remove `path` (a staging folder) if the process is stopped before `unregister(path)`."""
    with _lock:
        _staging.add(Path(path))


def unregister(path: Path) -> None:
    with _lock:
        _staging.discard(Path(path))


def make_staging_dir(parent: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """A new folder PREFIX<random>SUFFIX in `parent`, registered in the same step (a stop cannot
    fall between); `Stopped` instead once a stop was requested. Made with the umask's mode, not
    mkdtemp's 0700: it is renamed into place as the published folder."""
    with _deferred():
        check()
        for _ in range(100):
            path = Path(parent) / f"{prefix}{secrets.token_hex(4)}{suffix}"
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"no free staging folder name {prefix}*{suffix} in {parent}")
        register(path)
    check()  # a signal during the creation (the guard removes what is registered)
    return path


@contextmanager
def publishing(out: Path) -> Iterator[None]:
    """Hold the stop lock around the renames that publish `out`: `Stopped` instead if a stop
    came first; a signal that arrives meanwhile is honoured once `out` is whole."""
    with _deferred():
        check()
        yield
        _published.append(Path(out))
    check()


@contextmanager
def _deferred() -> Iterator[None]:
    """Hold the lock, and have the main thread's handler record a signal without raising."""
    global _deferring
    with _lock:
        _deferring += 1
        try:
            yield
        finally:
            _deferring -= 1


def message(signum: int) -> str:
    """The one stop line: what stopped which command, and which of its outputs were written."""
    written = [p for p in _published if _is_output(p)]
    what = f"{', '.join(map(str, written))} had already been written" if written else "nothing was written"
    return f"stopped by {signal.Signals(signum).name} during {_command}; {what}"


def _is_output(path: Path) -> bool:
    """One of the command's outputs (or a sibling such as OUT.pruned), not a cache it filled."""
    if not _outputs:
        return True
    return any(path == o or (path.parent == o.parent and path.name.startswith(f"{o.name}.")) for o in _outputs)


@contextmanager
def guard(command: str, outputs: Sequence[Path] = (), grace: float = GRACE_S) -> Iterator[None]:
    """Run a command so that SIGINT/SIGTERM end the process within about `grace` + 0.5 s.

    Exits the process (130 for SIGINT, 143 for SIGTERM) after printing one line on stderr,
    whatever the body was doing; outside the main thread it only runs the body. `outputs`
    (the command's -o) are what the line reports as written or not; without them, every
    publish is reported (caches such as the runner's included).

    Example:
        >>> with guard("build", [Path("out/minilm")]):
        ...     edgeformer.build("minilm", "host", Path("out/minilm"))
    """
    global _command, _outputs
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _command, _outputs = command, [Path(o).resolve() for o in outputs]
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    done = threading.Event()
    watchdog = threading.Thread(target=_watch, args=(reader, done, grace), name="edgeformer-stop-watchdog", daemon=True)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    old_hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    try:
        for s in SIGNALS:
            signal.signal(s, _on_signal)
        watchdog.start()
        yield
    except BaseException:
        if _stop is None:
            raise
    finally:
        with _deferred():  # from here on a signal is recorded, not raised into this clean-up
            signal.set_wakeup_fd(old_fd)
            sys.unraisablehook = old_hook
            for s, h in previous.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
        if _stop is not None:  # the body ended by the stop, or ran on past one it swallowed
            with _lock:
                _finish(_stop, flush=True)
        done.set()
        writer.close()  # the watchdog reads EOF and returns
        watchdog.join(timeout=1)
        reader.close()


def _request(signum: int) -> None:
    global _stop
    with _lock:
        if _stop is None:
            _stop = signum


def _on_signal(signum: int, frame) -> None:
    global _raised, _pending
    with _lock:
        _request(signum)
        if _raised or _deferring:  # do not interrupt the clean-up, nor a rename half done
            return
        if _in_output_code(frame):  # rich would print its half-flushed buffer twice: the watchdog re-sends
            _pending = True
            return
        _raised, _pending = True, False
    raise Stopped(signum)


def _unraisable(previous):
    """A `sys.unraisablehook` for the guard: `Stopped` raised inside a finalizer (a `__del__`
    or weakref callback the garbage collector ran) is dropped by Python with a traceback, and
    the stop would wait for the watchdog. Mark it pending instead: the watchdog sends the
    signal again within 50 ms and the handler raises it in the code that runs next."""

    def hook(unraisable) -> None:
        global _raised, _pending
        if not isinstance(unraisable.exc_value, Stopped):
            previous(unraisable)
            return
        with _lock:
            _raised, _pending = False, True

    return hook


def _in_output_code(frame) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_OUTPUT_MODULES):
            return True
        frame = frame.f_back
    return False


def _watch(reader: socket.socket, done: threading.Event, grace: float) -> None:
    """The watchdog thread: wake on a signal byte, then give the main thread `grace` seconds."""
    while True:
        try:
            data = reader.recv(64)
        except OSError:
            return
        if not data:  # the guard closed the socket: the command is over
            return
        signums = [b for b in data if b in SIGNALS]
        if not signums:
            continue
        _request(signums[0])
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if done.wait(0.05):
                return
            if _pending and not _raised:  # the handler ran inside a print: ask again, it is out by now
                os.kill(os.getpid(), _stop)
        _lock.acquire(timeout=5)  # a commit in progress finishes first; never released: _finish exits
        _finish(_stop, flush=False)  # stdout's buffer lock may be held by the stuck main thread


def _remove_staging() -> None:
    for path in list(_staging):
        for _ in range(5):  # the main thread may still be writing into it
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                break
        _staging.discard(path)


def _finish(signum: int, flush: bool) -> None:
    """Remove what is staged, print the stop line once, end the process now (hold `_lock`).

    `os._exit`, not `sys.exit`: interpreter teardown after an interrupted native call can
    hang in the native threadpool's join (see `cli._stream`), and the exit must not wait.
    """
    global _announced
    _remove_staging()
    if not _announced:
        _announced = True
        for stream in (sys.stdout, sys.stderr) if flush else ():
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        prefix = "\r\x1b[2K\x1b[?25h" if os.isatty(2) else ""  # over a spinner line; show the cursor
        os.write(2, f"{prefix}{message(signum)}\n".encode())
    os._exit(128 + signum)


def _reset() -> None:
    """Forget a stop (tests only)."""
    global _stop, _raised, _announced, _deferring, _pending
    with _lock:
        _stop, _raised, _announced, _deferring, _pending = None, False, False, 0, False
        _staging.clear()
        _published.clear()
        _outputs.clear()
