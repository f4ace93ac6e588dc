"""The child process of ``leaseline run``: its environment, spawned, its output masked, its exit
status mapped.

**Environment**: leaseline's own, minus the credentials leaseline logged in with
(:func:`child_environment`), plus the values asked for.

**Terminal**: when masking is on, the child runs in a new session, so it can never reach our
terminal except through a masker. When any of our stdin/stdout/stderr is a terminal, the child
gets its own pseudo-terminal on those fds, as its controlling terminal (``/dev/tty`` is that
pty): colour, line buffering and ``isatty()`` survive, and what the child writes to it, echo
included, is relayed masked to our terminal. Its other stdout/stderr are pipes; with no
terminal at all, it has pipes and no controlling terminal. A terminal on our stdin while we run
in the background is left alone: the child's stdin is then ``/dev/null``. One relay thread per source masks
it on its way to our own fd (:mod:`leaseline.runtime.relay`). The pty's line discipline turns ``\n``
into ``\r\n`` (ONLCR), so its relay also masks every form with ``\r\n`` line ends. Our
terminal is put in raw mode and keystrokes are relayed, so Ctrl-C reaches the child through
the pty's line discipline, exactly as in a normal terminal.

The child is started with ``posix_spawnp`` (its signal mask cleared, SIGPIPE back to default).
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
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from .. import masking
from ..masking._stream import StreamMasker
from .relay import Relay, big_pipe, write_all

__all__ = ["LOGIN_VARIABLES", "Child", "child_environment", "exit_status"]

_AWS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)
#: the variables a store type's standard login reads its credentials from: a child does not
#: inherit them once leaseline used a store of that type (``--env NAME=env://NAME`` passes one on)
LOGIN_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "aws-sm": _AWS,
    "aws-ssm": _AWS,
    "aws-sts": _AWS,
    "azure-kv": ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_PASSWORD"),
    "vault": ("VAULT_TOKEN", "BAO_TOKEN"),
}
#: a credential at least this long is looked for inside values too (``Bearer TOKEN``)
_INSIDE = 8


def child_environment(
    base: Mapping[str, str],
    *,
    store_types: Iterable[str],
    credentials: Collection[str],
    explicit: Mapping[str, str],
) -> tuple[dict[str, str], list[str]]:
    """The child's environment: ``base`` without the login variables of ``store_types`` and
    without any variable that holds one of ``credentials``, then ``explicit`` (what the user
    asked for with ``--env``/``--file``) on top. Returns it and the names left out."""
    login = {name for kind in store_types for name in LOGIN_VARIABLES.get(kind, ())}
    env: dict[str, str] = {}
    removed: list[str] = []
    for name, value in base.items():
        holds = any(c == value or (len(c) >= _INSIDE and c in value) for c in credentials)
        if name in login or holds:
            removed.append(name)
        else:
            env[name] = value
    env.update(explicit)
    return env, [name for name in removed if name not in explicit]


def _crlf_forms() -> Callable[[], frozenset[str]]:
    """The process masker's forms plus, for each with a line break, its ``\r\n`` form as a
    pty's ONLCR writes it (``\r\n`` in the value becomes ``\r\r\n``)."""
    seen: list[frozenset[str]] = [frozenset(), frozenset()]

    def forms() -> frozenset[str]:
        current = masking.masker().forms
        if current is not seen[0]:
            seen[:] = [current, current | {f.replace("\n", "\r\n") for f in current if "\n" in f}]
        return seen[1]

    return forms


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


def _terminals() -> tuple[list[int], bool]:
    """Which of our fds 0, 1, 2 are terminals the child's pty stands in for, and whether our
    stdin is a terminal we must not touch: we run in the background (``cmd &``), where raw
    mode or a read would stop us with SIGTTOU/SIGTTIN."""
    ttys = [fd for fd in (0, 1, 2) if os.isatty(fd)]
    if 0 in ttys:
        try:
            foreground = os.tcgetpgrp(0) == os.getpgrp()
        except OSError:  # not our controlling terminal: no job control stops us
            foreground = True
        if not foreground:
            ttys.remove(0)
            return ttys, True
    return ttys, False


def _winsize_source(ttys: list[int]) -> int:
    """Our terminal whose size the child's pty takes: stdout's, else stderr's, else stdin's."""
    return next((fd for fd in (1, 2, 0) if fd in ttys), ttys[0])


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
        any_tty = bool(_terminals()[0])
        self.use_pty = mask and any_tty if use_pty is None else use_pty and mask
        #: a new session: signals from our terminal (Ctrl-C) do not reach the child by themselves
        self.own_session = mask
        self.pid = 0
        self.status: int | None = None
        self._relays: list[Relay] = []
        self._master: int | None = None
        self._saved_tty: list[object] | None = None
        self._opened: list[int] = []  # fds we opened for the relays, closed at finish()

    def start(self) -> None:
        """Spawn the child. Raises ``FileNotFoundError``/``PermissionError`` from exec."""
        actions: list[tuple[object, ...]] = []
        to_close: list[int] = []
        reads: list[tuple[int, int, StreamMasker | None]] = []  # (read fd, our fd, masker)
        ttys, background_stdin = _terminals()
        if self.mask and background_stdin:
            # never the user's terminal as a plain fd: the child could write values to it
            actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
        if self.mask and self.use_pty and ttys:
            master, slave = os.openpty()
            self._master = master
            _copy_winsize(_winsize_source(ttys), slave)
            name = os.ttyname(slave)
            to_close.append(slave)
            # opening the tty as a new session leader makes it the controlling terminal
            first = ttys[0]
            actions.append((os.POSIX_SPAWN_OPEN, first, name, os.O_RDWR, 0))
            actions.extend((os.POSIX_SPAWN_DUP2, first, fd) for fd in ttys[1:])
            reads.append((master, self._terminal_fd(ttys), StreamMasker(_crlf_forms())))
            for fd in (1, 2):
                if fd not in ttys:
                    r, w = os.pipe()
                    actions.append((os.POSIX_SPAWN_DUP2, w, fd))
                    to_close.append(w)
                    reads.append((r, fd, None))
        elif self.mask:
            for fd in (1, 2):
                r, w = os.pipe()
                big_pipe(r)
                big_pipe(fd)  # our own stdout/stderr, when it is a pipe
                actions.append((os.POSIX_SPAWN_DUP2, w, fd))
                to_close.append(w)
                reads.append((r, fd, None))
        if self._master is not None and 0 in ttys:
            # raw before the child can write: output must not pass our terminal's ONLCR too
            with contextlib.suppress(termios.error):
                self._saved_tty = termios.tcgetattr(0)
                tty.setraw(0)
        try:
            self.pid = os.posix_spawnp(
                self.argv[0],
                self.argv,
                self.env,
                file_actions=actions,
                setsid=self.own_session,
                setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM),
            )
        except BaseException:
            for fd in to_close + [r for r, _, _ in reads] + self._opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._opened = []
            self.restore_terminal()
            raise
        for fd in to_close:
            os.close(fd)
        for src, dst, masker in reads:
            relay = Relay(src, dst, masker)
            relay.start()
            self._relays.append(relay)
        if self._master is not None and 0 in ttys:
            self._relay_stdin(self._master)

    def _terminal_fd(self, ttys: list[int]) -> int:
        """Where the pty's output goes: our stdout or stderr when it is the terminal, else the
        terminal our stdin is (stdout and stderr redirected, the user at the keyboard)."""
        if 1 in ttys or 2 in ttys:
            return 1 if 1 in ttys else 2
        fd = os.open(os.ttyname(0), os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        self._opened.append(fd)
        return fd

    def _relay_stdin(self, master: int) -> None:
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
            ttys = _terminals()[0]
            if ttys:
                _copy_winsize(_winsize_source(ttys), self._master)

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
        for fd in self._opened:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._opened = []
        self.restore_terminal()

    def restore_terminal(self) -> None:
        if self._saved_tty is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(0, termios.TCSADRAIN, self._saved_tty)  # type: ignore[arg-type]
            self._saved_tty = None
