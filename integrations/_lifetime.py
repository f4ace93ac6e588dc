"""Process lifetime: leases end when the process that took them ends, however it ends.

Every live resolver is registered here (:func:`track`). This module closes them at exit
(``atexit``, and multiprocessing's exit finalizers: its forked workers end with ``os._exit``), on
SIGTERM and SIGHUP (then the process ends as the signal says, or the handler installed before
ours runs), and tells them about a fork (``os.register_at_fork``), after which the child serves
what it inherited read-only. The rules, per framework, are in docs/processes.md.

It knows resolvers only as :class:`Closable`: the resolver imports this module, never the other
way round.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["ENDING_SIGNALS", "Closable", "close_all", "install_signal_handlers", "track", "untrack"]

log = logging.getLogger("leaseline")


class Closable(Protocol):
    """What this module needs of a resolver."""

    def close(self) -> None: ...

    def _after_fork_in_child(self) -> None: ...


_live: weakref.WeakSet[Closable] = weakref.WeakSet()
#: signals that end the process and so revoke first: SIGTERM (docker stop, Pool.terminate,
#: Airflow's supervisor) and SIGHUP (terminal closed, ssh dropped). SIGINT raises
#: KeyboardInterrupt, which unwinds ``with`` blocks and ends in the atexit close.
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


_closing: tuple[int, int] | None = None  # (pid, thread) of a close_all in progress
_closed_event = threading.Event()
_deferred: list[Callable[[], None]] = []  # signals that came in during it, acted on after


def close_all() -> None:
    """Close every live resolver (at exit, on SIGTERM and SIGHUP)."""
    global _closing
    outer = _closing is None or _closing[0] != os.getpid()
    if outer:
        _closing = (os.getpid(), threading.get_ident())
        _closed_event.clear()
    try:
        for resolver in list(_live):
            try:
                resolver.close()
            except Exception:  # at exit, one failure must not stop the others
                log.exception("leaseline: closing a resolver failed")
    finally:
        if outer:
            _closing = None
            _closed_event.set()
            while _deferred:
                _deferred.pop(0)()


atexit.register(close_all)


def _after_fork() -> None:
    for resolver in list(_live):
        resolver._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)

_exit_hooked: int | None = None


def _exit_hook_for_forked_workers() -> None:
    """multiprocessing ends its forked workers with ``os._exit`` (no atexit): close through its
    own exit finalizers too, so a worker's own leases are revoked when it ends normally. Spawned
    workers exit through atexit, but its other handlers (urllib3 draining its pools, under a lock)
    run first: closing in multiprocessing's finalizers, before them, leaves a ``Pool.terminate()``
    SIGTERM less to land in."""
    global _exit_hooked
    if _exit_hooked == os.getpid():
        return
    _exit_hooked = os.getpid()
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return

    def register() -> None:
        util.Finalize(None, close_all, exitpriority=100)

    register()  # a plain os.fork() child, or one already past the worker's bootstrap
    # a multiprocessing worker clears the finalizers after the fork: register again after that
    util.register_after_fork(_exit_hook_for_forked_workers, lambda _: register())


#: how long revoking on a signal may take before the process ends anyway (each revocation has
#: a 10 s deadline of its own; this only catches a handler stuck on a lock it interrupted)
SIGNAL_CLOSE_LIMIT = 60.0


def _before_signal_close() -> None:
    """The signal may have interrupted the HTTP client with its pool's lock held: revoke through
    new connections (``backends._http.abandon_pools``), never through the interrupted pool."""
    http = sys.modules.get(f"{__package__}.backends._http")
    if http is not None:
        http.abandon_pools()


def _stuck_in_signal_close(signum: int) -> None:
    """The handler has not finished revoking after ``SIGNAL_CLOSE_LIMIT`` (a lock the signal
    interrupted, most likely): end the process rather than hang it (``Pool.terminate()`` and
    ``docker stop`` would wait for ever, or kill it anyway). What was not revoked ends at its TTL;
    ``leaseline run`` children's leases stay pending in the lease ledger."""
    try:
        os.write(
            2,
            f"leaseline: revoking on signal {signum} is stuck after {SIGNAL_CLOSE_LIMIT:.0f} s; "
            "ending the process. Leases it could not revoke end at their TTL; "
            "'leaseline leases list' shows the ones recorded as pending.\n".encode(),
        )
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def _install_sigterm_handler() -> None:
    """On SIGTERM and SIGHUP, revoke everything, then do what the previous handler would have done.

    Idempotent while ours is the installed handler; call it again after a framework replaced the
    handler (Airflow's task runner does) to put ours back in front of theirs. A SIGHUP that is
    ignored (``nohup``) stays ignored: the process lives on, and so do its leases.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in ENDING_SIGNALS:
        _install_handler(signum)


def _install_handler(signum: int) -> None:
    try:
        previous = signal.getsignal(signum)
    except ValueError:
        return
    if getattr(previous, "_leaseline", False):
        return
    if signum != signal.SIGTERM and previous == signal.SIG_IGN:
        return

    def then(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def handler(signum: int, frame: Any) -> None:
        closing = _closing
        if closing is not None and closing[0] == os.getpid():
            if closing[1] == threading.get_ident():
                # interrupting a close in progress (a pool worker ending, atexit): let it
                # finish revoking, then end as the signal says
                _deferred.append(lambda: then(signum, frame))
                return
            _closed_event.wait(30)  # another thread is revoking: wait for it
        _before_signal_close()
        watchdog = threading.Timer(SIGNAL_CLOSE_LIMIT, _stuck_in_signal_close, (signum,))
        watchdog.daemon = True
        watchdog.start()
        try:
            close_all()
        finally:
            watchdog.cancel()
        then(signum, frame)

    handler._leaseline = True  # type: ignore[attr-defined]
    try:
        signal.signal(signum, handler)
    except ValueError:  # not the main thread of the main interpreter
        return


def track(resolver: Closable, *, handle_signals: bool) -> None:
    """Close ``resolver`` when this process ends (and on SIGTERM/SIGHUP with ``handle_signals``)."""
    _live.add(resolver)
    _exit_hook_for_forked_workers()  # a spawned pool worker: close before its exit finalizers
    if handle_signals:
        _install_sigterm_handler()


def untrack(resolver: Closable) -> None:
    """``resolver`` is closed: nothing left to do for it at exit."""
    _live.discard(resolver)


def after_fork_in_child() -> None:
    """Called by a resolver rebuilt in a forked child: its own leases end with the child too."""
    _exit_hook_for_forked_workers()


#: the public name of the handler installer (adapters re-install it after a framework's own)
install_signal_handlers = _install_sigterm_handler
