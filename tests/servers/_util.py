"""Small helpers shared by the server launchers."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class ComponentMissing(RuntimeError):
    """A component (binary, package) needed to start a server is not installed.

    The message names the component and the fix. ``tests/conftest.py`` turns it into a failure in CI
    and a skip elsewhere.
    """


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (bind to port 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``check`` until it returns True; raise TimeoutError naming ``what``.

    ``alive`` returns an error string when the process being waited for has died, so a crash is
    reported at once instead of after the full timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # not ready yet, keep polling
            pass
        if alive is not None:
            problem = alive()
            if problem:
                raise RuntimeError(f"{what}: {problem}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: ask the kernel to SIGKILL the child when the test process dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the atexit backstop still applies
        pass


def tail(path: Path, limit: int = 4000) -> str:
    """Last ``limit`` characters of a log file, for error messages."""
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return "(no log)"
    return data.decode("utf-8", "replace")


def stop_process(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 10
) -> None:
    """Stop ``proc``: SIGCONT (in case it is frozen), ``sig``, then SIGKILL after ``grace`` s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)  # a frozen process cannot handle SIGTERM
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_live: list[_Stoppable] = []
_live_lock = threading.Lock()


def track(server: _Stoppable) -> None:
    """Remember a started server so the interpreter's exit stops it if the caller did not."""
    with _live_lock:
        _live.append(server)


def untrack(server: _Stoppable) -> None:
    with _live_lock, contextlib.suppress(ValueError):
        _live.remove(server)


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(reversed(_live))
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()
