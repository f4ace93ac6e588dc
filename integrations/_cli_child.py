"""The child process of ``leaseline run``: spawned, its output masked, its exit status mapped.

The child is started with ``posix_spawnp`` (its signal mask cleared, SIGPIPE back to default).
When masking is on, each of stdout/stderr goes either to a pseudo-terminal (when ours is a
terminal: colour, line buffering and ``isatty()`` survive) or to a pipe; one relay thread per
source masks it on its way to our own fd (:mod:`leaseline._relay`: reads into one reused
buffer behind the held-back bytes, clean stretches written from it in place).
With a pseudo-terminal the child is a session leader with the pty as its controlling terminal;
our terminal is put in raw mode and keystrokes are relayed, so Ctrl-C reaches the child through
the pty's line discipline, exactly as in a normal terminal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import termios
import threading
import tty
from collections.abc import Mapping, Sequence

from ._relay import Relay, big_pipe, write_all

__all__ = ["Child", "exit_status"]


def exit_status(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N after signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 1


def _copy_winsize(src: int, dst: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)


class Child:
    """One run of the command. ``start()``, then ``poll()``/``wait``, then ``finish()``."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        mask: bool,
        use_pty: bool | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.mask = mask
        out_tty, err_tty = os.isatty(1), os.isatty(2)
        self.use_pty = mask and (out_tty or err_tty) if use_pty is None else use_pty and mask
        self.pid = 0
        self.status: int | None = None
        self._relays: list[Relay] = []
        self._master: int | None = None
        self._saved_tty: list[object] | None = None

    def start(self) -> None:
        """Spawn the child. Raises ``FileNotFoundError``/``PermissionError`` from exec."""
        actions: list[tuple[object, ...]] = []
        to_close: list[int] = []
        reads: list[tuple[int, int]] = []  # (read fd, our destination fd)
        out_tty, err_tty, in_tty = os.isatty(1), os.isatty(2), os.isatty(0)
        setsid = False
        if self.mask and self.use_pty:
            master, slave = os.openpty()
            self._master = master
            _copy_winsize(1 if out_tty else 2, slave)
            name = os.ttyname(slave)
            to_close.append(slave)
            # opening the tty as a new session leader makes it the controlling terminal
            first = 1 if out_tty else 2
            actions.append((os.POSIX_SPAWN_OPEN, first, name, os.O_RDWR, 0))
            for fd, is_tty in ((0, in_tty), (1, out_tty), (2, err_tty)):
                if fd != first and is_tty:
                    actions.append((os.POSIX_SPAWN_DUP2, first, fd))
            setsid = True
            reads.append((master, 1 if out_tty else 2))
            for fd, is_tty in ((1, out_tty), (2, err_tty)):
                if not is_tty:
                    r, w = os.pipe()
                    actions.append((os.POSIX_SPAWN_DUP2, w, fd))
                    to_close.append(w)
                    reads.append((r, fd))
        elif self.mask:
            for fd in (1, 2):
                r, w = os.pipe()
                big_pipe(r)
                big_pipe(fd)  # our own stdout/stderr, when it is a pipe
                actions.append((os.POSIX_SPAWN_DUP2, w, fd))
                to_close.append(w)
                reads.append((r, fd))
        try:
            self.pid = os.posix_spawnp(
                self.argv[0],
                self.argv,
                self.env,
                file_actions=actions,
                setsid=setsid,
                setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM),
            )
        except BaseException:
            for fd in to_close + [r for r, _ in reads]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        for fd in to_close:
            os.close(fd)
        for src, dst in reads:
            relay = Relay(src, dst)
            relay.start()
            self._relays.append(relay)
        if self._master is not None and in_tty:
            self._relay_stdin(self._master)

    def _relay_stdin(self, master: int) -> None:
        with contextlib.suppress(termios.error):
            self._saved_tty = termios.tcgetattr(0)
            tty.setraw(0)

        def pump() -> None:
            while True:
                try:
                    data = os.read(0, 4096)
                    if not data:
                        return
                    write_all(master, data)
                except OSError:
                    return

        threading.Thread(target=pump, name="leaseline-stdin", daemon=True).start()

    def resized(self) -> None:
        """Our terminal changed size: pass it on (the kernel then sends SIGWINCH to the child)."""
        if self._master is not None:
            _copy_winsize(1 if os.isatty(1) else 2, self._master)

    def poll(self) -> int | None:
        """The child's exit status (shell style) once it has ended, else ``None``."""
        if self.status is None and self.pid:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.status = 1
                return self.status
            if pid:
                self.status = exit_status(status)
        return self.status

    def signal(self, signum: int) -> None:
        if self.pid and self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def finish(self, drain_timeout: float = 5.0) -> None:
        """After exit: let the relays drain (bounded: a grandchild may hold a pipe open)."""
        for relay in self._relays:
            relay.join(drain_timeout)
        self.restore_terminal()

    def restore_terminal(self) -> None:
        if self._saved_tty is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(0, termios.TCSADRAIN, self._saved_tty)  # type: ignore[arg-type]
            self._saved_tty = None
