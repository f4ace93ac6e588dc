"""The adapter interface: a :class:`Scope` per unit of work, and one resolver per config key.

The adapters (``leaseline.airflow``, ``leaseline.prefect``, ``leaseline.kfp``,
``leaseline.mlflow``) map their orchestrator's hooks onto these and the public ``leaseline``
names, and import nothing else of the core (``tests/test_architecture.py`` pins it). They hold
no cache, lease or retry logic of their own:

- :class:`Scope`: one unit of work (an Airflow task, a Prefect flow run, a KFP component run,
  one lookup in a long-running server). A dynamic secret read through it is held (the resolver
  renews it) until the scope ends, then released: revoked once no other holder is left. It can
  set environment variables to resolved values for its life and remembers those values
  (:attr:`Scope.resolved`), so an adapter can refuse to let one leave the task.
- :class:`Scopes`: the open scopes of a process by key (a flow-run id; the running task).
- :class:`Resolvers`: one resolver per config key, built on first use (the default resolver,
  Airflow's per-config-file and Prefect's per-store resolvers). :func:`stage` and
  :func:`add_stage_provider`: the pipeline stage reads are made in (``leaseline._stage``).

Every value reaches the process masker (:mod:`leaseline.masking`) through the resolver before a
scope sees it.

Ownership (docs/processes.md): a scope belongs to the process that opened it. In a forked child
every scope starts empty: what the parent holds through it is the parent's to release (the
child's resolver serves it read-only), and the child releases only what it holds itself. A
resolver keeps its own ownership rules; a :class:`Resolvers` cache only gets a new lock in the
child, so the child keeps serving the inherited cache.

Why ~400 lines: this is the one module adapters may import beside the public names (a test pins
it), so the scope, its registries and the few core helpers they use are all here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Mapping, MutableMapping
from typing import Any, Generic, TypeVar

from . import masking
from ._config import Config, load_config
from ._detectors import PATTERNS as CREDENTIAL_PATTERNS
from ._detectors import looks_like_credential
from ._lifetime import install_signal_handlers
from ._refs import SecretRef, environment_references
from ._registry import BUILTIN
from ._resolver import LeaseHandle, Resolver, RotateCallback
from ._secret import Secret
from ._stage import add_stage_provider, stage

__all__ = [
    "BUILTIN",
    "CREDENTIAL_PATTERNS",
    "LeaseHandle",
    "Resolvers",
    "RotateCallback",
    "Scope",
    "Scopes",
    "add_stage_provider",
    "aliases",
    "config_with_store",
    "looks_like_credential",
    "references_in_env",
    "restore_signal_handlers",
    "stage",
]

K = TypeVar("K", bound=Hashable)

#: variables leaseline itself reads (``LEASELINE_AUDIT__HMAC_KEY=env://...``): never resolved
#: into an environment by :func:`references_in_env`
_OWN_PREFIXES = ("LEASELINE_",)


class Scope:
    """One unit of work that holds leases and releases them at its end.

    >>> with Scope("lookup") as scope:  # doctest: +SKIP
    ...     password = scope.resolve(resolver, "vault://database/creds/reader#password")
    ... # the lease is revoked here (unless another holder still holds it)

    Thread-safe. Holding is idempotent per (resolver, reference): a reference read ten times in
    one scope is held, and released, once. A scope that has ended refuses new holds
    (:class:`RuntimeError`); :class:`Scopes` opens a fresh one for the next unit.
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_held",
        "_lock",
        "_owned",
        "_resolved",
        "_stack",
        "name",
    )

    def __init__(self, name: str = "scope") -> None:
        # cheap to open (Airflow opens one per lookup outside a task): the rest is made on use
        self.name = name
        self._lock = threading.Lock()
        self._stack: contextlib.ExitStack | None = None
        self._resolved: masking.Masker | None = None
        self._held: set[tuple[int, str]] = set()
        self._owned: set[int] = set()
        self._closed = False

    def __repr__(self) -> str:
        state = "ended" if self._closed else f"holding {len(self._held)}"
        return f"<Scope {self.name} {state}>"

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- holding --------------------------------------------------------------------------

    def hold(self, resolver: Resolver, ref: str | SecretRef) -> LeaseHandle:
        """Hold ``ref``'s lease on ``resolver`` until the scope ends; the handle always gives
        the current credential. Raises what :meth:`Resolver.get` raises."""
        parsed = resolver.parse(ref)
        key = (id(resolver), parsed.key)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"leaseline: scope {self.name!r} has ended; open a new one")
            if key in self._held:
                return LeaseHandle(resolver, parsed)
            self._held.add(key)
            stack = self._open_stack()
        try:
            handle = stack.enter_context(resolver.lease(parsed))
        except BaseException:
            with self._lock:
                self._held.discard(key)
            raise
        with self._lock:
            ended = self._stack is not stack
        if ended:  # the scope ended (another thread) while this lease was taken: release it too
            stack.close()
            raise RuntimeError(f"leaseline: scope {self.name!r} has ended; open a new one")
        return handle

    def get(self, resolver: Resolver, ref: str | SecretRef) -> Secret:
        """:meth:`Resolver.get`, holding the secret's lease (if it has one) for the scope.

        Static values (KV) have no lease: they stay in the resolver's cache after the scope.
        """
        parsed = resolver.parse(ref)
        secret = resolver.get(parsed)
        if secret.lease is not None and secret.lease.id:
            self.hold(resolver, parsed)
        return secret

    async def aget(self, resolver: Resolver, ref: str | SecretRef) -> Secret:
        """:meth:`get` for asyncio: a cold read does not block the event loop."""
        parsed = resolver.parse(ref)
        secret = await resolver.aget(parsed)
        if secret.lease is not None and secret.lease.id:
            self.hold(resolver, parsed)  # a warm hit now: no store request
        return secret

    def resolve(self, resolver: Resolver, ref: str | SecretRef) -> str:
        """:meth:`Resolver.resolve` through :meth:`get`: the ``#field``, or the only field."""
        parsed = resolver.parse(ref)
        value: str = self.get(resolver, parsed).reveal(parsed.field)
        return value

    def set_env(
        self,
        resolver: Resolver,
        refs: Mapping[str, str | SecretRef],
        environ: MutableMapping[str, str] | None = None,
    ) -> None:
        """Set each variable of ``refs`` (name -> reference) to its value for the scope's life.

        Every lease is held until the scope ends; then the variables get back what they held
        before (or are removed). Raises what :meth:`Resolver.get` raises, naming the reference.
        """
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        saved = {name: env.get(name) for name in refs}

        def restore() -> None:
            for name, old in saved.items():
                if old is None:
                    env.pop(name, None)
                else:
                    env[name] = old

        self.callback(restore)
        for name, ref in sorted(refs.items()):
            handle = self.hold(resolver, ref)
            self.resolved.add_many(handle.secret.values())
            env[name] = handle.reveal()

    @property
    def resolved(self) -> masking.Masker:
        """The values :meth:`set_env` put into the environment (every field of their secrets)."""
        with self._lock:
            if self._resolved is None:
                self._resolved = masking.Masker()
            return self._resolved

    def own(self, resolvers: Resolver | Resolvers[Any]) -> None:
        """Close ``resolvers`` when the scope ends (idempotent): a resolver revokes everything
        this process holds through it, its per-task token included; a :class:`Resolvers`
        cache closes every resolver it built and forgets them."""
        with self._lock:
            if id(resolvers) in self._owned:
                return
            self._owned.add(id(resolvers))
        self.callback(resolvers.close)

    def callback(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` when the scope ends (last registered, first called, as holds are)."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"leaseline: scope {self.name!r} has ended; open a new one")
            stack = self._open_stack()
        stack.callback(fn)

    def _open_stack(self) -> contextlib.ExitStack:  # with the lock held
        if self._stack is None:
            self._stack = contextlib.ExitStack()
            _live_scopes.add(self)  # from now on it holds something a fork must not unwind
        return self._stack

    def held(self) -> list[str]:
        """References whose leases this scope holds (diagnostics and tests)."""
        with self._lock:
            return sorted(key for _, key in self._held)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the scope: release what it holds (revoked when no other holder is left) and run
        its callbacks, last first; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
            _live_scopes.discard(self)

    def _after_fork_in_child(self) -> None:
        # The parent's holds are the parent's: park them (never unwound here, not even by the
        # garbage collector) and start empty.
        if self._stack is not None:
            _parked.append(self._stack)
        self._stack = None
        self._held = set()
        self._owned = set()
        self._lock = threading.Lock()


class Scopes:
    """The open scopes of a process by key: opened on first use, ended by the adapter's
    end-of-unit hook (a flow-run state hook, a task listener).

    >>> runs = Scopes("prefect flow run")
    >>> runs.open("run-1").name
    'prefect flow run run-1'
    >>> runs.end("run-1"), runs.end("run-1")
    (True, False)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._open: dict[Hashable, Scope] = {}
        self._lock = threading.Lock()
        _live_registries.add(self)

    def open(self, key: Hashable) -> Scope:
        """The open scope for ``key``, opened now if there is none."""
        scope = self._open.get(key)
        if scope is None:
            with self._lock:
                scope = self._open.get(key)
                if scope is None:
                    scope = self._open[key] = Scope(f"{self.kind} {key}")
        return scope

    def get(self, key: Hashable) -> Scope | None:
        """The open scope for ``key``, or ``None``."""
        return self._open.get(key)

    def end(self, key: Hashable) -> bool:
        """End ``key``'s scope (releasing what it holds); ``False`` when none was open."""
        with self._lock:
            scope = self._open.pop(key, None)
        if scope is None:
            return False
        scope.close()
        return True

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


class Resolvers(Generic[K]):
    """One resolver per config key, built by ``build(key)`` on first use and shared by every
    caller with that key (one cache, one set of leases, one child token).

    A warm :meth:`get` is one dict lookup; only the first one per key takes the lock.

    >>> files = Resolvers(lambda path: Resolver.from_config(path))  # doctest: +SKIP
    >>> files.get("/etc/leaseline.toml") is files.get("/etc/leaseline.toml")  # doctest: +SKIP
    True
    """

    def __init__(self, build: Callable[[K], Resolver] | None = None) -> None:
        self._build = build
        self._resolvers: dict[K, Resolver] = {}
        self._lock = threading.Lock()
        _live_registries.add(self)

    def get(self, key: K, build: Callable[[], Resolver] | None = None) -> Resolver:
        """The resolver for ``key``, built on first use by ``build()`` (else by the cache's
        ``build(key)``); raises what building it raises (a bad config file...)."""
        resolver = self._resolvers.get(key)
        if resolver is None:
            with self._lock:
                resolver = self._resolvers.get(key)
                if resolver is None:
                    if build is None:
                        if self._build is None:
                            raise TypeError("Resolvers.get: no build function for a new key")
                        resolver = self._build(key)
                    else:
                        resolver = build()
                    self._resolvers[key] = resolver
        return resolver

    def __len__(self) -> int:
        return len(self._resolvers)

    def close(self) -> None:
        """Close every resolver built (each revokes what this process holds through it) and
        forget them: the next :meth:`get` builds anew."""
        with self._lock:
            resolvers = list(self._resolvers.values())
            self._resolvers.clear()
        for resolver in resolvers:
            resolver.close()

    def _after_fork_in_child(self) -> None:
        # another thread may have held the lock at the fork; the resolvers stay (they serve the
        # parent's cache read-only and take their own credentials)
        self._lock = threading.Lock()


_live_scopes: weakref.WeakSet[Scope] = weakref.WeakSet()
_live_registries: weakref.WeakSet[Scopes | Resolvers[Any]] = weakref.WeakSet()
#: the parent's holds, in a forked child: kept alive so that nothing ever unwinds them here
_parked: list[contextlib.ExitStack] = []


def _after_fork() -> None:
    for registry in list(_live_registries):
        registry._after_fork_in_child()
    for scope in list(_live_scopes):
        scope._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)


# -- what else adapters use from the core ----------------------------------------------------


def references_in_env(environ: Mapping[str, str], resolver: Resolver) -> dict[str, str]:
    """The variables of ``environ`` whose value is a reference to one of ``resolver``'s stores:
    the core's one rule (:func:`leaseline._refs.environment_references`, as ``leaseline run``).

    ``http://...`` has the shape of a reference but names no store, so ``VAULT_ADDR`` is left
    alone; ``file://``/``env://`` values are ordinary URLs unless those stores are configured;
    ``LEASELINE_*`` variables are leaseline's own settings.
    """
    return environment_references(
        environ, configured=resolver.config.stores, store_names=resolver.store_names
    )


def aliases() -> Mapping[str, str]:
    """The ``[aliases]`` of the configuration (environment and config file)."""
    return load_config().aliases


def config_with_store(name: str, table: Mapping[str, Any]) -> Config:
    """The configuration from the environment and config file, with ``[stores.NAME]`` set to
    ``table`` (aliases, audit and resolver settings still apply)."""
    base = load_config()
    return dataclasses.replace(base, stores={**base.stores, name: dict(table)})


def restore_signal_handlers() -> None:
    """Put the core's revoke-on-SIGTERM/SIGHUP handler back in front of the one a framework
    installed after it (Airflow's task runner does); a no-op outside the main thread."""
    install_signal_handlers()
