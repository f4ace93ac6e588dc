"""Relay one output stream of ``leaseline run``'s child to our own fd, masking it on the way.

Each read (up to 256 KiB: whatever the pipe or pty holds, so a prompt or a progress line passes
at once) lands in one reused buffer right behind the bytes the masker held back from the read
before, so nothing is allocated or concatenated per read, and the clean stretches are written
from that buffer in place. Output in bulk is scanned by Hyperscan when the ``fast`` extra is
installed (see ``leaseline.masking._stream``); the masker's engines are built when the relay starts,
while the child starts, not at its first byte.

Measured and left out (benchmarks/RESULTS.md, cli): a second thread writing while this one reads
and scans (slower on 2 cores shared with the child and the reader: the hand-offs cost more than
the overlap gains); 1 MiB reads (slower than 256 KiB: the data leaves the CPU's cache between
the read and the write).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading

from ..masking._ansi import ESC
from ..masking._stream import MASK, StreamMasker

__all__ = ["PIPE_SIZE", "READ_SIZE", "Relay", "big_pipe", "write_all"]

#: per read: 256 KiB, which both copies (in, out) find in the CPU's cache (1 MiB reads
#: measured ~15% slower through the relay: see benchmarks/RESULTS.md, cli)
READ_SIZE = 256 * 1024
PIPE_SIZE = 1024 * 1024


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def big_pipe(fd: int) -> None:
    """Grow a pipe to 1 MiB (Linux): fewer, larger reads and writes on the relay's hot path."""
    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsz is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setsz, PIPE_SIZE)


class Relay(threading.Thread):
    """Copy ``src`` to ``dst`` through a masker until EOF (or EIO: the pty's other side closed).

    A write error on ``dst`` (our reader went away) does not stop the relay: it keeps draining
    ``src`` so the child is never blocked on a full pipe.
    """

    def __init__(self, src: int, dst: int, masker: StreamMasker | None = None) -> None:
        super().__init__(name=f"leaseline-relay-{src}", daemon=True)
        self.src, self.dst = src, dst
        self.masker = masker or StreamMasker()  # default: the process masker's values
        self.broken = False

    def _out(self, data: bytes | memoryview) -> None:
        if data and not self.broken:
            try:
                write_all(self.dst, data)
            except OSError:  # BrokenPipeError included: our reader went away
                self.broken = True

    def _read(self, into: memoryview) -> int:
        while True:
            try:
                return os.readv(self.src, [into])
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # pty: every slave fd closed
                    return 0
                raise

    def run(self) -> None:
        masker = self.masker
        # the engines, built while the child starts: no compile between its first byte and EOF
        masker.prepare()
        # bytearray() is zero-filled lazily by the kernel: a quiet command touches a page or two
        buffer = bytearray(0)
        view = memoryview(buffer)
        try:
            while True:
                held = masker.held
                k = len(held)
                if len(view) < k + READ_SIZE:  # first read, longer forms since (a rotation),
                    # or a partial form with escape sequences inside it held
                    buffer = bytearray(READ_SIZE + max(masker.longest, k))
                    view = memoryview(buffer)
                view[:k] = held
                n = self._read(view[k : k + READ_SIZE])
                if not n:
                    return
                data = view[: k + n]
                escapes = buffer.find(ESC, 0, k + n) >= 0  # memchr, no copy
                for a, b, masked in masker.segments(data, escapes):
                    self._out(MASK if masked else data[a:b])
        finally:
            self._out(masker.flush())
            with contextlib.suppress(OSError):
                os.close(self.src)
