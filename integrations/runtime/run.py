"""``leaseline run``: a command with secrets in its environment, leases held for its whole life."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..cli import Options, fail

if TYPE_CHECKING:
    from .._ledger import Ledger, Unrevoked
    from .._resolver import LeaseHandle, Resolver
    from .._secret import Secret
    from .child import Child


FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
WAITED = {*FORWARDED, signal.SIGCHLD, signal.SIGWINCH}
SI_KERNEL = 0x80  # si_code of a signal the terminal driver sent (Ctrl-C): the child got it too
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass
class Plan:
    """What to resolve: env var -> reference, and secret file -> reference."""

    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    on_change: str | None = None


def _pair(option: str, text: str, *, path_ok: bool = False) -> tuple[str, str]:
    name, sep, ref = text.partition("=")
    if not sep or not ref or not (_NAME.match(name) or (path_ok and name.startswith("/"))):
        what = "NAME=REF or /ABS/PATH=REF" if path_ok else "NAME=REF"
        raise click.UsageError(f"{option} expects {what}, got {text.split('=', 1)[0]!r}=...")
    return name, ref


def load_manifest(path: str) -> Plan:
    """A manifest: TOML (or JSON when the file ends in .json) with ``[env]`` and ``[files]``.

    ::

        on_change = "restart"            # optional: restart | signal:HUP | ignore
        [env]
        OPENAI_API_KEY = "vault://secret/llm/openai#api_key"
        [files]
        PGPASSFILE = "vault://secret/db#pgpass"   # the variable gets the file's path
    """
    from .._exceptions import ConfigError

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"manifest {path}: cannot be read: {exc.strerror}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(raw)
        else:
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"manifest {path}: not valid {'JSON' if path.endswith('.json') else 'TOML'} "
            f'({first}); expected [env] NAME = "REF" and [files] NAME = "REF" tables'
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"manifest {path}: expected a table with [env] and [files]")
    unknown = sorted(set(data) - {"env", "files", "on_change"})
    if unknown:
        raise ConfigError(
            f"manifest {path}: unknown key(s) {', '.join(unknown)}; known: env, files, on_change"
        )
    plan = Plan()
    for section in ("env", "files"):
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f'manifest {path}: [{section}] must be a table of NAME = "REF"')
        for name, ref in table.items():
            ok_name = _NAME.match(name) or (section == "files" and name.startswith("/"))
            if not ok_name or not isinstance(ref, str):
                raise ConfigError(
                    f'manifest {path}: {section}.{name}: expected NAME = "STORE://..." '
                    "(a variable name and a reference string)"
                )
            getattr(plan, section)[name] = ref
    if "on_change" in data:
        plan.on_change = str(data["on_change"])
    return plan


def _on_change(value: str) -> tuple[str, int]:
    if value in {"restart", "ignore"}:
        return value, 0
    if value.startswith("signal:"):
        name = value.split(":", 1)[1].upper()
        name = name if name.startswith("SIG") else "SIG" + name
        signum = getattr(signal, name, None)
        if isinstance(signum, signal.Signals):
            return "signal", int(signum)
    raise click.BadParameter(
        f"{value!r}: expected restart, ignore or signal:NAME (e.g. signal:HUP)",
        param_hint="--on-change",
    )


def _private_dir() -> Path:
    """A 0700 directory on tmpfs (``/dev/shm``, else ``$XDG_RUNTIME_DIR``), never on disk if avoidable."""
    for base in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR"), None):
        if base is None or (os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK)):
            return Path(tempfile.mkdtemp(prefix="leaseline-run-", dir=base))
    raise AssertionError("unreachable")


class Session:
    """Resolution, ledger and files for one ``leaseline run`` (across restarts)."""

    def __init__(self, resolver: Resolver, plan: Plan, ledger: Ledger) -> None:
        from .._ledger import Recorder

        self.resolver = resolver
        self.plan = plan
        self.ledger = ledger
        self.recorder = Recorder(ledger, resolver, "run")
        self.stack = ExitStack()
        self.handles: dict[str, LeaseHandle] = {}
        self.dir: Path | None = None
        self.file_paths: dict[str, Path] = {}
        self._lock = threading.Lock()

    def resolve(self) -> None:
        refs = list(dict.fromkeys([*self.plan.env.values(), *self.plan.files.values()]))
        for ref in refs:  # parse everything first: a typo fails before any lease is taken
            self.resolver.parse(ref)
        for ref in refs:
            self.handles[ref] = self.stack.enter_context(self.resolver.lease(ref))
        if self.plan.files:
            self.dir = _private_dir()
            for name in self.plan.files:
                path = Path(name) if name.startswith("/") else self.dir / name
                self.file_paths[name] = path
        self.write_files()

    def write_files(self) -> None:
        from .render import atomic_write

        for name, ref in self.plan.files.items():
            atomic_write(self.file_paths[name], self.handles[ref].reveal().encode(), 0o600)

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The child's environment: ``base`` without the credentials leaseline logged in with
        (see ``child_environment``), then the values and file paths asked for."""
        from .. import masking
        from .._logins import credentials
        from .child import child_environment

        explicit = {name: self.handles[ref].reveal() for name, ref in self.plan.env.items()}
        for name, path in self.file_paths.items():
            if not name.startswith("/"):
                explicit[name] = str(path)
        stores = {self.resolver.parse(ref).store for ref in self.handles}
        env, removed = child_environment(
            base,
            store_types={self.resolver.backend(store).type for store in stores},
            credentials=credentials(),
            explicit=explicit,
        )
        for name in removed:  # a login variable of a store we used (AWS keys...): a credential
            masking.masker().add(base[name])
        return env

    def record(self, child_pid: int | None, argv: list[str]) -> None:
        """Write the run (with its ``--file`` paths) and every lease and child token it holds
        to the ledger (fsync'd), each once; the run again once its child's pid is known."""
        stores = {self.resolver.parse(r).store for r in self.handles}
        with self._lock:
            self.recorder.record(
                stores,
                child_pid=child_pid,
                cmd=os.path.basename(argv[0]) if argv else None,
                dir=str(self.dir) if self.dir else None,
                files=sorted(str(p) for n, p in self.file_paths.items() if n.startswith("/")),
            )

    def close(self) -> list[Unrevoked]:
        """Revoke everything, remove the files; returns what could not be revoked (kept in the
        ledger as pending, which the run's ``done`` record does not cover)."""
        try:
            self.stack.close()
            self.resolver.close()
        finally:
            for _name, path in self.file_paths.items():
                with contextlib.suppress(OSError):
                    path.unlink()
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.recorder.done()
        return list(self.resolver.unrevoked)


def implicit_refs(environ: Mapping[str, str], resolver: Resolver) -> dict[str, str]:
    """Environment variables whose *value* is a reference to a known store (as ``op run`` does):
    the core's one rule, :func:`leaseline._refs.environment_references`."""
    from .._refs import environment_references

    return environment_references(
        environ, configured=resolver.config.stores, store_names=resolver.store_names
    )


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block the forwarded signals in every thread (before any thread starts); ``sigtimedwait``
    then receives them in the main loop, with the sender's identity."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    try:
        yield
    finally:
        for signum in WAITED:  # drop what arrived in the meantime instead of acting on it late
            while signum in signal.sigpending() and signal.sigtimedwait([signum], 0):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _gc_paused() -> Iterator[bool]:
    """Garbage collection off during start-up; yields whether it was on (the caller turns it
    back on before the command starts). Start-up allocates many long-lived objects (hvac,
    requests and urllib3 are imported when the first store is built): collecting meanwhile
    finds none and costs ~6 ms."""
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        yield gc_was_on
    finally:
        if gc_was_on:
            gc.enable()


def _run_session(
    opts: Options,
    plan: Plan,
    argv: list[str],
    *,
    mask: bool,
    implicit: bool,
    policy: str,
    policy_signal: int,
    gc_on: bool,
) -> int:
    from .._config import load_config
    from .._ledger import Ledger, default_path
    from .._resolver import Resolver
    from .child import Child

    config = load_config(opts.config)
    resolver = Resolver(config, handle_signals=False)
    ledger = Ledger(default_path(config.section("ledger")))
    if implicit:
        for name, ref in implicit_refs(os.environ, resolver).items():
            plan.env.setdefault(name, ref)
    session = Session(resolver, plan, ledger)
    changed = threading.Event()
    main_thread = threading.get_ident()
    child: Child | None = None
    status: int | None = None
    try:
        session.resolve()
        if mask:  # a value too long to mask in every form: refused, its leases revoked below
            from ..masking import masker

            masker().check_limits()

        def rotated(ref: str, old: Secret, new: Secret) -> None:
            changed.set()
            with contextlib.suppress(Exception):
                signal.pthread_kill(main_thread, signal.SIGCHLD)  # wake the main loop

        resolver.on_rotate(rotated)
        while True:
            child = Child(argv, session.environment(os.environ), mask=mask)
            # in the ledger before the command can run: a `kill -9` of leaseline at any moment
            # after this leaves records `leases revoke --orphaned` can clean up
            session.record(None, argv)
            try:
                child.start()
            except FileNotFoundError:
                fail(f"command not found: {argv[0]} (check the name and PATH)", 127)
            except PermissionError:
                fail(f"command not executable: {argv[0]} (check its mode: chmod +x)", 126)
            session.record(child.pid, argv)
            if gc_on:
                gc.enable()
            status = _supervise(child, changed, policy, policy_signal, session)
            if status is not None:
                break
            # restart: the old child ended on our SIGTERM; start again with fresh values
            changed.clear()
    finally:
        if child is not None:
            child.restore_terminal()
        unrevoked = session.close()
    if unrevoked:
        from ..cli.leases import report_unrevoked

        cleanup = report_unrevoked("run", unrevoked)
        if status == 0:  # the command succeeded; cleaning up after it did not
            status = cleanup
    assert status is not None  # the loop ends only with a status (or an exception)
    return status


def _supervise(
    child: Child, changed: threading.Event, policy: str, policy_signal: int, session: Session
) -> int | None:
    """Wait for the child, forwarding signals; ``None`` means "restart it"."""
    restarting = False
    kill_at: float | None = None
    while True:
        status = child.poll()
        if status is not None:
            child.finish()
            return None if restarting else status
        if changed.is_set() and not restarting:
            changed.clear()
            session.record(child.pid, [])
            with contextlib.suppress(Exception):
                session.write_files()
            if policy == "restart":
                restarting = True
                child.signal(signal.SIGTERM)
                kill_at = time.monotonic() + 10
            elif policy == "signal":
                child.signal(policy_signal)
        if kill_at is not None and time.monotonic() > kill_at:
            child.signal(signal.SIGKILL)
            kill_at = None
        info = signal.sigtimedwait(WAITED, 0.5)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_signo == signal.SIGWINCH:
            child.resized()
            continue
        if not child.own_session and info.si_code == SI_KERNEL:
            continue  # from our terminal: the child, in our process group, got it as well
        if info.si_signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            restarting = False  # the user wants it to end, not to come back
            kill_at = None
        child.signal(info.si_signo)
