"""Where audit lines go: an append-only file (hash-chained across rotation), stdout, logging.

The file sink owns the chain on disk: under an exclusive ``flock`` on ``<file>.lock`` it reads
the last complete line (only when another process appended or rotated since this one's last
write), lets the auditor build the next line from it, and appends that line with one
``write(2)``. Several processes can therefore share one trail and it stays a single chain. A line
torn by ``kill -9`` is left as it is, on a line of its own; the chain continues from the last
complete line, and ``leaseline audit verify`` reports the fragment without failing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["FSYNC_POLICIES", "ChainedSink", "FileSink", "LoggingSink", "Sink", "StdoutSink"]

FSYNC_POLICIES = ("always", "interval", "never")
_TAIL_BYTES = 65536


class Sink(Protocol):
    """Receives complete audit lines (no trailing newline)."""

    def write(self, line: str) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class ChainedSink(Protocol):
    """A sink that keeps the chain itself: ``append(build)`` calls ``build(last_line)``."""

    def append(self, build: Callable[[str | None], str]) -> str: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


def last_complete_line(path: Path) -> str | None:
    """The last newline-terminated line of ``path`` that parses as JSON (``None`` if none)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            start = max(0, size - _TAIL_BYTES)
            fh.seek(start)
            data = fh.read()
    except OSError:
        return None
    if not data.endswith(b"\n"):  # a torn last line never counts
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut >= 0 else b""
    lines = data.splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first one may be cut
    for raw in reversed(lines):
        text = raw.decode("utf-8", "replace")
        if not text.strip():
            continue
        try:
            json.loads(text)
        except ValueError:
            continue
        return text
    return None


def rotated_name(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


class FileSink:
    """Append-only JSON lines with an fsync policy and size-based rotation.

    ``fsync``: ``always`` (every line), ``interval`` (at most once per ``fsync_interval``
    seconds, and by :meth:`sync`, which the auditor's flusher calls), ``never`` (the OS decides).
    ``max_bytes`` > 0 rotates ``audit.jsonl`` to ``audit.jsonl.1`` (older ones shift to ``.2``...,
    keeping ``backups``) before a line would take the file past that size; the first line of the
    new file chains to the last line of the old one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fsync: str = "interval",
        *,
        max_bytes: int = 0,
        backups: int = 5,
        fsync_interval: float = 1.0,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"[audit] fsync must be one of {', '.join(FSYNC_POLICIES)}: {fsync!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._interval = fsync_interval
        self._max_bytes = max(0, int(max_bytes))
        self._backups = max(1, int(backups))
        self._lock = threading.Lock()
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._lock_fd = lock_fd
        self._fd = -1
        self._ino = -1
        self._open()
        #: (inode, size) after this process's last write: if the file still has it, the tail
        #: this process remembers is the file's tail and nothing needs to be read.
        self._mine: tuple[int, int] | None = None
        self._tail: str | None = None
        self._dirty = False
        self._last_sync = time.monotonic()

    def _open(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._ino = os.fstat(self._fd).st_ino

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def last_line(self) -> str | None:
        """The last complete line of the trail (the previous file's, if this one is empty)."""
        line = last_complete_line(self.path)
        if line is None:
            line = last_complete_line(rotated_name(self.path, 1))
        return line

    def append(self, build: Callable[[str | None], str]) -> str:
        """Append ``build(last_line)`` as one line; returns the line written."""
        with self._exclusive():
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is None or st.st_ino != self._ino:  # rotated (or removed) by someone else
                self._open()
                st = os.fstat(self._fd)
            size = st.st_size
            if self._mine != (st.st_ino, size):
                self._tail = self.last_line()
                if size and not self._ends_with_newline():
                    os.write(self._fd, b"\n")  # keep a torn fragment on its own line
                    size += 1
            line = build(self._tail)
            data = (line + "\n").encode("utf-8")
            if self._max_bytes and size and size + len(data) > self._max_bytes:
                self._rotate()
                size = 0
            os.write(self._fd, data)
            self._tail = line
            self._mine = (self._ino, size + len(data))
            self._dirty = True
            if self._fsync == "always" or (
                self._fsync == "interval" and time.monotonic() - self._last_sync >= self._interval
            ):
                self._sync_locked()
            return line

    def write(self, line: str) -> None:
        """Append a line as it is (the chain is the caller's business)."""
        self.append(lambda _prev: line)

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def _rotate(self) -> None:
        if self._fsync != "never":
            os.fsync(self._fd)
        oldest = rotated_name(self.path, self._backups)
        with contextlib.suppress(FileNotFoundError):
            oldest.unlink()
        for n in range(self._backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(rotated_name(self.path, n), rotated_name(self.path, n + 1))
        os.replace(self.path, rotated_name(self.path, 1))
        self._open()

    def _sync_locked(self) -> None:
        os.fsync(self._fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def sync(self) -> None:
        """fsync pending lines (policy ``interval``; called by the auditor's flusher)."""
        if self._dirty and self._fsync != "never":
            with self._lock:
                if self._fd >= 0:
                    self._sync_locked()

    def close(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            try:
                if self._fsync != "never" and self._dirty:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                os.close(self._lock_fd)
                self._fd = -1

    def __repr__(self) -> str:
        return f"FileSink({str(self.path)!r}, fsync={self._fsync!r})"


class StdoutSink:
    """One line per event on standard output (for a container's log collector)."""

    def write(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "StdoutSink()"


class LoggingSink:
    """Each line as an INFO record of the ``leaseline.audit`` logger (the line is the message)."""

    def __init__(self, name: str = "leaseline.audit") -> None:
        self._log = logging.getLogger(name)

    def write(self, line: str) -> None:
        self._log.info("%s", line)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LoggingSink({self._log.name!r})"
