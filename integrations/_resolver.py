"""The resolver: references in, values and leases out, cached inside their lease.

Thread-safe. A warm hit is a dict lookup and a clock read. Cold requests for one reference are
collapsed into one store read (single flight). Renewable leases are renewed at ~2/3 of their TTL
by one timer thread; at ``max_ttl`` (or for non-renewable leases) a fresh credential is issued
ahead of time and ``on_rotate`` callbacks fire. ``close()`` revokes every lease it holds.

Ownership: a lease or token belongs to the process that took it. After ``fork`` the child serves
the inherited cache read-only (no store request for it) and never renews or revokes what the
parent holds; what the child takes itself (through stores it builds anew: its own HTTP
connections, login and child token), it owns and revokes. A revocation that fails is logged
with the fix and kept in the lease ledger as pending for ``leaseline leases revoke --orphaned``.

Why ~900 lines: the read path, the cache, single flight, renewal, re-issue at max TTL and
revocation share one lock, one cache and one scheduler; split apart, each half would reach into
the other's state. Process lifetime (exit, fork, signals) is in ``_lifetime``, stores' optional
abilities in ``backends._protocols``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
import typing
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _lifetime, masking
from ._config import Config, load_config, parse_duration
from ._exceptions import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    LeaselineError,
    SecretNotFound,
    UnknownStore,
)
from ._ledger import Unrevoked
from ._refs import SecretRef, parse
from ._registry import backend_class, known_types
from ._renewal import Scheduler, renewal_time, renewal_window
from ._retry import call_with_retry
from ._secret import Lease, Secret
from ._stage import StagedRef, current_stage, staged
from .audit import Auditor, NullAuditor, build_auditor
from .backends import (
    Backend,
    BackendContext,
    PerTaskTokens,
    ReadResult,
    Reauthenticating,
    RefreshDefault,
    SecretMetadata,
    StageTokens,
)

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["LeaseHandle", "Resolver", "RotateCallback"]

log = logging.getLogger("leaseline")

RotateCallback = Callable[[str, Secret, Secret], None]
T = typing.TypeVar("T")
_FOREVER = math.inf


@dataclass(slots=True)
class _Entry:
    ref: SecretRef
    secret: Secret
    refresh_at: float
    serve_until: float
    base_ttl: float = 0.0


class _Flight:
    __slots__ = ("error", "event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: _Entry | None = None
        self.error: BaseException | None = None


class Resolver:
    """Resolves secret references through the configured stores.

    ``Resolver()`` builds itself from the environment and the config file;
    ``Resolver.from_config(path)`` from a file; ``Resolver(config, stores={...})`` from parts.

    >>> with Resolver() as r:  # doctest: +SKIP
    ...     key = r.resolve("vault://secret/llm/openai#api_key")
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        stores: Mapping[str, Backend] | None = None,
        cache: bool | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        masker: masking.Masker | None = None,
        auditor: Auditor | NullAuditor | None = None,
        handle_signals: bool = True,
    ) -> None:
        self._config = config if config is not None else load_config()
        settings = self._config.resolver
        self._settings = settings
        self._cache_on = settings.cache if cache is None else cache
        self._clock = clock
        self._rng = rng
        self._masker = masker or masking.masker()
        masking.install_logging(self._masker)
        self._lock = threading.RLock()
        self._backends: dict[str, Backend] = dict(stores or {})
        self._refresh_after: dict[str, float] = {}
        self._parsed: dict[str, SecretRef] = {}
        #: stores whose reads inside a stage use the stage's own token: cached per stage
        self._per_stage = _per_stage_stores(self._config, self._backends)
        self._staged: dict[tuple[SecretRef, str], StagedRef] = {}
        self._cache: dict[str, _Entry] = {}
        self._misses: dict[str, tuple[float, str]] = {}
        self._flights: dict[str, _Flight] = {}
        self._holders: Counter[str] = Counter()
        self._key_callbacks: defaultdict[str, list[RotateCallback]] = defaultdict(list)
        self._callbacks: list[RotateCallback] = []
        self._retired: list[tuple[str, str, Lease]] = []
        self._scheduler = Scheduler(clock)
        self._executor: ThreadPoolExecutor | None = None  # made on first background refresh
        self._closed = False
        self._pid = os.getpid()  # the process that owns what this resolver takes
        self._built: set[str] = set()  # stores built from config (rebuilt after a fork)
        self._owned_stores: set[str] = set(self._backends)  # closed by close()
        self._inherited: set[str] = set()  # lease ids the parent holds: never ours to end
        self._parked: list[Backend] = []  # the parent's store objects, kept alive, never used
        #: leases and tokens whose revocation failed (also in the ledger, as pending)
        self.unrevoked: list[Unrevoked] = []
        #: store requests made, per reference key (tests and benchmarks read this)
        self.requests: Counter[str] = Counter()
        self._auditor: Auditor | NullAuditor = NullAuditor()
        self._auditor = auditor if auditor is not None else self._build_auditor()
        _lifetime.track(self, handle_signals=handle_signals)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **kwargs: Any) -> Resolver:
        """A resolver from the config file at ``path`` (environment variables still apply)."""
        return cls(load_config(path), **kwargs)

    def _build_auditor(self) -> Auditor | NullAuditor:
        section = self._config.section("audit")
        try:
            return build_auditor(section, resolve=self.resolve)
        except OSError as exc:
            raise ConfigError(f"[audit] sink cannot be opened: {exc}") from None

    @property
    def config(self) -> Config:
        return self._config

    @property
    def auditor(self) -> Auditor | NullAuditor:
        return self._auditor

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Resolver stores={sorted(self._backends)} cached={len(self._cache)}>"

    # -- stores ---------------------------------------------------------------------------------

    def store_names(self) -> list[str]:
        """Configured store names plus the default store of every built-in type."""
        return sorted(set(self._config.stores) | set(known_types()) | set(self._backends))

    def backend(self, store: str) -> Backend:
        """The backend of store ``store``, built on first use.

        Raises :class:`UnknownStore` listing the configured stores and the store types.
        """
        backend = self._backends.get(store)
        if backend is not None:
            return backend
        with self._lock:
            backend = self._backends.get(store)
            if backend is not None:
                return backend
            table = dict(self._config.stores.get(store, {}))
            type_ = str(table.get("type", store))
            try:
                cls = backend_class(type_)
            except LookupError:
                configured = ", ".join(sorted(self._config.stores)) or "none"
                if store in self._config.stores:
                    raise ConfigError(
                        f"[stores.{store}] has type '{type_}', which is not a store type; "
                        f"known types: {', '.join(known_types())}"
                    ) from None
                raise UnknownStore(
                    f"unknown store '{store}': it is not configured (configured stores: "
                    f"{configured}) and not a store type ({', '.join(known_types())}); "
                    f"add [stores.{store}] with a 'type' to leaseline.toml",
                    store=store,
                ) from None
            refresh = table.pop("refresh_after", None)
            if refresh is not None:
                self._refresh_after[store] = parse_duration(
                    refresh, f"stores.{store}.refresh_after"
                )
            context = BackendContext(
                clock=self._clock,
                resolve=self.resolve,
                task_ttl=self._settings.task_ttl,
                renew_token=self._renew_token,
            )
            backend = cls(store, table, context)
            self._backends[store] = backend
            self._built.add(store)
            self._owned_stores.add(store)
            return backend

    # -- parsing --------------------------------------------------------------------------------

    def parse(self, ref: str | SecretRef) -> SecretRef:
        """Parse ``ref`` with this resolver's aliases (memoised); inside a stage, a reference to
        a per-stage store is that stage's (:class:`leaseline._stage.StagedRef`)."""
        if isinstance(ref, SecretRef):
            return self._in_stage(ref) if self._per_stage else ref
        parsed = self._parsed.get(ref)
        if parsed is None:
            parsed = parse(ref, aliases=self._config.aliases)
            if len(self._parsed) > 10_000:
                self._parsed.clear()
            self._parsed[ref] = parsed
        return self._in_stage(parsed) if self._per_stage else parsed

    def _in_stage(self, ref: SecretRef) -> SecretRef:
        """``ref`` as the running stage's, for a per-stage store: cached apart, so what one
        stage read (under its token) is never served to another."""
        if ref.store not in self._per_stage or isinstance(ref, StagedRef):
            return ref
        name = current_stage()
        if name is None:
            return ref
        found = self._staged.get((ref, name))
        if found is None:
            if len(self._staged) > 10_000:
                self._staged.clear()
            found = self._staged[(ref, name)] = staged(ref, name)
        return found

    # -- the read path --------------------------------------------------------------------------

    def get(self, ref: str | SecretRef) -> Secret:
        """The :class:`Secret` behind ``ref`` (every field of it), from cache when valid.

        Raises :class:`InvalidReference`, :class:`UnknownStore`, :class:`SecretNotFound`,
        :class:`AccessDenied`, :class:`BackendUnavailable`, :class:`BackendNotInstalled`.
        """
        parsed = self._parsed.get(ref) if type(ref) is str else None
        if parsed is None:
            parsed = self.parse(ref)
        elif self._per_stage:
            parsed = self._in_stage(parsed)
        entry = self._cache.get(parsed._key)
        if entry is not None:
            now = self._clock()
            if now < entry.refresh_at:
                if self._auditor.enabled:
                    self._auditor.hit(parsed._key, parsed.store)
                return entry.secret
            if now < entry.serve_until:
                self._refresh_in_background(entry, now)
                if self._auditor.enabled:
                    self._auditor.hit(parsed._key, parsed.store)
                return entry.secret
        try:
            return self._load(parsed).secret
        except BaseException as exc:
            masking.scrub_exception(exc)  # the frames it left keep no value for a reporter
            raise

    def resolve(self, ref: str | SecretRef) -> str:
        """The value ``ref`` points at: its ``#field``, or the only field of a one-field secret.

        >>> Resolver().resolve("env://HOME")  # doctest: +SKIP
        '/root'
        """
        parsed = self._parsed.get(ref) if type(ref) is str else None
        if parsed is None:
            parsed = self.parse(ref)
        return self.get(parsed).reveal(parsed.field)

    async def aget(self, ref: str | SecretRef) -> Secret:
        """:meth:`get` for asyncio: a warm hit returns at once, a cold read runs in a thread."""
        parsed = self.parse(ref)
        entry = self._cache.get(parsed.key)
        if entry is not None and self._clock() < entry.refresh_at:
            return self.get(parsed)
        import asyncio  # not at module level: it costs ~20 ms of every CLI start

        return await asyncio.to_thread(self.get, parsed)

    async def aresolve(self, ref: str | SecretRef) -> str:
        """:meth:`resolve` for asyncio; never blocks the event loop."""
        parsed = self.parse(ref)
        return (await self.aget(parsed)).reveal(parsed.field)

    def invalidate(self, ref: str | SecretRef) -> None:
        """Forget the cached value of ``ref`` (any field) so the next request reads the store.

        The lease, if any, is kept until it expires or the resolver closes.
        """
        parsed = self.parse(ref)
        with self._lock:
            entry = self._cache.pop(parsed.key, None)
            self._misses.pop(parsed.key, None)
            if entry is not None and self._owns(entry.secret.lease):
                assert entry.secret.lease is not None
                self._scheduler.cancel(("renew", parsed.key))
                self._retired.append((parsed.store, parsed.key, entry.secret.lease))

    def refresh(self, ref: str | SecretRef) -> Secret:
        """Read ``ref`` from its store now, replacing the cached value (``on_rotate`` fires when
        the credential changed). The previous lease is kept until it ends or the resolver closes."""
        parsed = self.parse(ref)
        try:
            return self._load(parsed, force=True).secret
        except BaseException as exc:
            masking.scrub_exception(exc)
            raise

    @property
    def clock(self) -> Callable[[], float]:
        """The wall clock this resolver measures leases with."""
        return self._clock

    def metadata(self, ref: str | SecretRef) -> SecretMetadata:
        """The store's own metadata for ``ref`` (ages and versions, for rotation checks)."""
        parsed = self.parse(ref)
        backend = self.backend(parsed.store)
        return self._call(parsed, "metadata", lambda: backend.metadata(parsed))

    def _load(self, ref: SecretRef, *, force: bool = False) -> _Entry:
        key = ref.key
        with self._lock:
            if self._closed:
                raise LeaselineError("this resolver is closed; create a new one", ref=key)
            if not force:
                entry = self._cache.get(key)
                if entry is not None and self._clock() < entry.serve_until:
                    return entry
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.event.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.result is not None
            return flight.result
        try:
            entry = self._fetch(ref)
            flight.result = entry
            return entry
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.event.set()

    def _call(self, ref: SecretRef, what: str, fn: Callable[[], T]) -> T:
        """One store call with retries inside the deadline and one re-login on denial."""
        backend = self.backend(ref.store)

        def attempt() -> T:
            try:
                return fn()
            except AccessDenied:
                if not isinstance(backend, Reauthenticating):
                    raise
                backend.reauthenticate()
                return fn()

        return call_with_retry(
            attempt, deadline=self._settings.deadline, what=f"{what} {ref.key}", rng=self._rng
        )

    def _fetch(self, ref: SecretRef) -> _Entry:
        key = ref.key
        now = self._clock()
        miss = self._misses.get(key)
        if miss is not None and now < miss[0]:
            raise SecretNotFound(miss[1], ref=key, store=ref.store)
        backend = self.backend(ref.store)
        started = time.monotonic()
        self.requests[key] += 1
        try:
            result: ReadResult = self._call(ref, "reading", lambda: backend.read(ref))
        except LeaselineError as exc:
            latency = (time.monotonic() - started) * 1000
            if exc.ref is None:
                exc.ref = key
            if isinstance(exc, SecretNotFound):
                self._misses[key] = (self._clock() + self._settings.negative_ttl, exc.message)
                outcome = "not_found"
            elif isinstance(exc, AccessDenied):
                outcome = "denied"
            else:
                outcome = "error"
            self._auditor.emit(
                "read",
                ref=key,
                store=ref.store,
                outcome=outcome,
                latency_ms=latency,
                error=type(exc).__name__,
            )
            stale = self._cache.get(key)
            if (
                isinstance(exc, BackendUnavailable)
                and stale is not None
                and self._clock() < stale.serve_until
            ):
                log.warning(
                    "leaseline: %s unavailable; serving %s from cache inside its lease",
                    ref.store,
                    key,
                )
                return stale
            raise
        latency = (time.monotonic() - started) * 1000
        values = list(result.fields.values())
        self._masker.add_many(values)
        now = self._clock()
        lease = result.lease
        secret = Secret(key, result.fields, lease, version=result.version)
        self._auditor.emit(
            "lease_issue" if lease and lease.id else "read",
            ref=key,
            store=ref.store,
            fields=result.fields.keys(),
            values=values,
            latency_ms=latency,
            lease_id=lease.id if lease else None,
            identity=result.identity,
        )
        entry = self._entry_for(ref, secret, now)
        if self._cache_on:
            with self._lock:
                old = self._cache.get(key)
                self._cache[key] = entry
                self._misses.pop(key, None)
            if lease is not None and lease.id and lease.renewable:
                self._schedule_renewal(key, now, lease.ttl, lambda: self._renew(key))
            if old is not None and old.secret is not secret:
                self._rotated(ref, old, entry)
        elif lease is not None and lease.id:
            with self._lock:
                self._retired.append((ref.store, key, lease))
        return entry

    def _entry_for(self, ref: SecretRef, secret: Secret, now: float) -> _Entry:
        lease = secret.lease
        if lease is None:
            refresh = self._refresh_after.get(ref.store)
            if refresh is None:
                backend = self.backend(ref.store)
                if isinstance(backend, RefreshDefault):
                    refresh = backend.default_refresh_after
            if refresh is None:
                refresh = self._settings.refresh_after
            return _Entry(ref, secret, refresh_at=now + refresh, serve_until=_FOREVER)
        ttl = max(0.0, lease.expires_at - now)
        margin = min(self._settings.safety_margin, ttl / 10)
        serve_until = lease.expires_at - margin
        if lease.renewable and lease.id:
            refresh_at = serve_until  # renewal keeps it fresh; see _renew
        else:
            refresh_at = renewal_time(now, ttl, self._rng)
        return _Entry(ref, secret, refresh_at, serve_until, base_ttl=lease.ttl)

    def _refresh_in_background(self, entry: _Entry, now: float) -> None:
        key = entry.ref.key
        if key in self._flights or self._closed:
            return
        entry.refresh_at = now + 1.0  # don't re-trigger on every hit while this runs

        def refresh() -> None:
            try:
                self._load(entry.ref, force=True)
            except LeaselineError as exc:
                log.warning(
                    "leaseline: refreshing %s failed (%s); still serving the cached value",
                    key,
                    type(exc).__name__,
                )
                entry.refresh_at = self._clock() + min(30.0, max(1.0, self._settings.negative_ttl))

        with self._lock:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(4, thread_name_prefix="leaseline-refresh")
            executor = self._executor
        try:
            executor.submit(refresh)
        except RuntimeError:  # shutting down
            pass

    # -- renewal and rotation -------------------------------------------------------------------

    def _schedule(self, job: tuple[str, str], when: float, fn: Callable[[], None]) -> None:
        self._scheduler.at(when, job, fn)
        self._scheduler.start()

    def _schedule_renewal(
        self, key: str, issued: float, ttl: float, fn: Callable[[], None]
    ) -> None:
        earliest, latest = renewal_window(issued, ttl)
        self._scheduler.spread(earliest, latest, ("renew", key), fn, self._rng)
        self._scheduler.start()

    def _renew_token(
        self, key: str, issued_at: float, ttl: float, renew: Callable[[], float | None]
    ) -> None:
        """A store's own token (``BackendContext.renew_token``), renewed like a lease: in the
        window ending at 2/3 of its TTL, again 10 s after a failure, until ``renew()`` says the
        token is gone (``None``). The jobs live in this resolver's scheduler, so close stops them
        and a forked child (a new scheduler) never renews the parent's tokens."""

        def run() -> None:
            if self._closed:
                return
            try:
                new_ttl = renew()
            except LeaselineError as exc:
                log.warning(
                    "leaseline: renewing the token %s failed (%s); retrying in 10 s",
                    key,
                    type(exc).__name__,
                )
                self._schedule(("token", key), self._clock() + 10, run)
                return
            if new_ttl:
                self._renew_token(key, self._clock(), new_ttl, renew)

        earliest, latest = renewal_window(issued_at, ttl)
        self._scheduler.spread(earliest, latest, ("token", key), run, self._rng)
        self._scheduler.start()

    def _renew(self, key: str) -> None:
        entry = self._cache.get(key)
        if entry is None or entry.secret.lease is None or self._closed:
            return
        lease = entry.secret.lease
        backend = self.backend(entry.ref.store)
        now = self._clock()
        started = time.monotonic()
        try:
            renewed: Lease = self._call(entry.ref, "renewing", lambda: backend.renew(lease))
        except LeaselineError as exc:
            self._auditor.emit(
                "lease_renew",
                ref=key,
                store=entry.ref.store,
                outcome="error",
                lease_id=lease.id,
                error=type(exc).__name__,
            )
            remaining = lease.expires_at - self._clock()
            if remaining > max(2.0, 0.1 * lease.ttl):  # time left: keep trying to renew
                self._schedule(
                    ("renew", key),
                    self._clock() + min(30.0, remaining / 3),
                    lambda: self._renew(key),
                )
            else:
                self._reissue(key)
            return
        self._auditor.emit(
            "lease_renew",
            ref=key,
            store=entry.ref.store,
            lease_id=lease.id,
            latency_ms=(time.monotonic() - started) * 1000,
        )
        entry.secret.lease = renewed
        entry.serve_until = renewed.expires_at - min(self._settings.safety_margin, renewed.ttl / 10)
        entry.refresh_at = entry.serve_until
        capped = renewed.ttl < 0.9 * entry.base_ttl or (
            renewed.max_expires_at is not None and renewed.expires_at >= renewed.max_expires_at
        )
        if capped:
            # max_ttl reached: issue the fresh credential now, so consumers have the whole rest of
            # the old one's life to swap over (on_rotate) before it ends.
            self._schedule(("renew", key), now, lambda: self._reissue(key))
        else:
            self._schedule_renewal(key, now, renewed.ttl, lambda: self._renew(key))

    def _reissue(self, key: str) -> None:
        entry = self._cache.get(key)
        if entry is None or self._closed:
            return
        try:
            self._load(entry.ref, force=True)  # _fetch fires on_rotate
        except LeaselineError as exc:
            log.warning(
                "leaseline: issuing a fresh credential for %s failed (%s); retrying",
                key,
                type(exc).__name__,
            )
            lease = entry.secret.lease
            if lease is not None and lease.expires_at > self._clock():
                self._schedule(
                    ("renew", key),
                    self._clock() + max(1.0, lease.remaining() / 4),
                    lambda: self._reissue(key),
                )

    def _rotated(self, ref: SecretRef, old: _Entry, new: _Entry) -> None:
        old_lease = old.secret.lease
        new_lease = new.secret.lease
        same = new_lease is not None and old_lease is not None and old_lease.id == new_lease.id
        if same and old_lease is not None and old_lease.id:
            return  # the same lease served again (a node's proxy caches it): no rotation
        if old_lease is not None and old_lease.id and self._owns(old_lease):
            # The old credential stays valid until it ends on its own, so consumers can swap
            # connections; it is revoked then (or at close).
            with self._lock:
                self._retired.append((ref.store, ref.key, old_lease))
            self._schedule(
                ("retire", old_lease.id),
                old_lease.expires_at,
                lambda: self._revoke_retired(old_lease.id or ""),
            )
        if (
            old.secret.version == new.secret.version
            and old.secret.lease is None
            and (list(old.secret.values()) == list(new.secret.values()))
        ):
            return  # a static secret re-read unchanged
        self._auditor.emit(
            "rotation",
            ref=ref.key,
            store=ref.store,
            lease_id=new.secret.lease.id if new.secret.lease else None,
        )
        for callback in [*self._callbacks, *self._key_callbacks.get(ref.key, ())]:
            try:
                callback(ref.key, old.secret, new.secret)
            except Exception:
                log.exception("leaseline: on_rotate callback for %s failed", ref.key)

    def _revoke_retired(self, lease_id: str) -> None:
        with self._lock:
            found = [item for item in self._retired if item[2].id == lease_id]
            self._retired = [item for item in self._retired if item[2].id != lease_id]
        for store, key, lease in found:
            self._revoke(store, key, lease)

    def on_rotate(self, callback: RotateCallback) -> RotateCallback:
        """Call ``callback(ref, old_secret, new_secret)`` whenever a credential is replaced.

        Usable as a decorator.
        """
        self._callbacks.append(callback)
        return callback

    # -- leases -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lease(
        self, ref: str | SecretRef, *, on_rotate: RotateCallback | None = None
    ) -> Iterator[LeaseHandle]:
        """Hold ``ref``'s lease: renewed while the block runs, revoked when the last holder exits.

        >>> with resolver.lease("vault://database/creds/reader") as held:  # doctest: +SKIP
        ...     connect(user=held.reveal("username"), password=held.reveal("password"))
        """
        parsed = self.parse(ref)
        key = parsed.key
        with self._lock:
            self._holders[key] += 1
            if on_rotate is not None:
                self._key_callbacks[key].append(on_rotate)
        handle = LeaseHandle(self, parsed)
        try:
            self.get(parsed)
            yield handle
        finally:
            with self._lock:
                if on_rotate is not None:
                    with contextlib.suppress(ValueError):
                        self._key_callbacks[key].remove(on_rotate)
                self._holders[key] -= 1
                last = self._holders[key] <= 0
                if last:
                    del self._holders[key]
            if last:
                self.release(parsed)

    def release(self, ref: str | SecretRef) -> None:
        """Revoke the leases held for ``ref`` now and forget its cached value."""
        parsed = self.parse(ref)
        with self._lock:
            entry = self._cache.pop(parsed.key, None)
            retired = [item for item in self._retired if item[1] == parsed.key]
            self._retired = [item for item in self._retired if item[1] != parsed.key]
        self._scheduler.cancel(("renew", parsed.key))
        if entry is not None and self._owns(entry.secret.lease):
            assert entry.secret.lease is not None
            self._revoke(parsed.store, parsed.key, entry.secret.lease)
        elif entry is not None:  # the parent's: keep serving it read-only
            with self._lock:
                self._cache.setdefault(parsed.key, entry)
        for store, key, lease in retired:
            self._revoke(store, key, lease)

    def _owns(self, lease: Lease | None) -> bool:
        """``lease`` is this process's to renew and revoke (not inherited through a fork)."""
        return lease is not None and bool(lease.id) and lease.id not in self._inherited

    def _revoke(self, store: str, key: str, lease: Lease, *, down: set[str] | None = None) -> bool:
        """Revoke one lease; a failure is reported and kept as pending. ``down``: stores found
        unreachable during this close (the rest of their leases go pending without waiting)."""
        if down is not None and store in down:
            self._failed(
                Unrevoked("lease", store, key, lease.id, expires_at=lease.expires_at), None
            )
            return False
        backend = self.backend(store)
        started = time.monotonic()
        try:
            call_with_retry(
                lambda: backend.revoke(lease),
                deadline=min(10.0, self._settings.deadline),
                what=f"revoking a lease of {key}",
                rng=self._rng,
            )
        except LeaselineError as exc:
            if down is not None and isinstance(exc, BackendUnavailable):
                down.add(store)
            self._auditor.emit(
                "lease_revoke",
                ref=key,
                store=store,
                lease_id=lease.id,
                outcome="error",
                error=type(exc).__name__,
            )
            self._failed(Unrevoked("lease", store, key, lease.id, expires_at=lease.expires_at), exc)
            return False
        self._auditor.emit(
            "lease_revoke",
            ref=key,
            store=store,
            lease_id=lease.id,
            latency_ms=(time.monotonic() - started) * 1000,
        )
        return True

    def _failed(self, what: Unrevoked, exc: BaseException | None) -> None:
        """Report a revocation that failed (with the fix) and keep it in the ledger as pending."""
        from dataclasses import replace

        from ._ledger import Ledger, default_path

        reason = type(exc).__name__ if exc is not None else "store unavailable"
        what = replace(what, error=reason)
        self.unrevoked.append(what)
        path = default_path(self._config.section("ledger"))
        try:
            Ledger(path).append(what.record())
            kept = f"kept as pending in the lease ledger {path}"
        except OSError as err:
            kept = f"and it could not be written to the lease ledger {path} ({err.strerror})"
        detail = f": {exc}" if exc is not None else " (unavailable earlier in this close)"
        log.warning(
            "leaseline: could not revoke %s in store %s%s; it stays valid until it expires, %s. "
            "Fix: once the store is reachable (unsealed), run `leaseline leases revoke --orphaned`",
            what.describe(),
            what.store,
            detail,
            kept,
        )

    def leases(self) -> list[tuple[str, Lease]]:
        """Every live lease this process holds through this resolver, as (reference, lease);
        leases inherited from the parent process through a fork are not listed."""
        with self._lock:
            held = [(k, e.secret.lease) for k, e in self._cache.items() if e.secret.lease]
            held += [(k, lease) for _, k, lease in self._retired]
        return [(k, lease) for k, lease in held if self._owns(lease)]

    def detach(self) -> list[tuple[str, Lease]]:
        """Hand every lease over to someone else (a sidecar, a later cleanup): stop renewing,
        forget them without revoking, and leave them out of the exit-time close. Returns what was
        held. The resolver cannot be used afterwards."""
        with self._lock:
            held = self.leases()
            self._closed = True
            self._cache.clear()
            self._retired.clear()
        self._scheduler.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._auditor.close()
        _lifetime.untrack(self)
        return held

    def close(self) -> None:
        """Revoke every lease and per-task token this process holds through this resolver;
        idempotent. In a forked child, what the parent holds is left alone.

        A revocation that fails is logged with the fix, listed in :attr:`unrevoked` and kept in
        the lease ledger as pending (``leaseline leases revoke --orphaned`` retries it).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            entries = list(self._cache.values())
            retired = list(self._retired)
            self._cache.clear()
            self._retired.clear()
        self._scheduler.close()
        if self._executor is not None and self._pid == os.getpid():
            self._executor.shutdown(wait=False, cancel_futures=True)
        down: set[str] = set()
        for entry in entries:
            if self._owns(entry.secret.lease):
                assert entry.secret.lease is not None
                self._revoke(entry.ref.store, entry.ref.key, entry.secret.lease, down=down)
        for store, key, lease in retired:
            if self._owns(lease):
                self._revoke(store, key, lease, down=down)
        for name, backend in list(self._backends.items()):
            if name not in self._owned_stores:
                continue  # the parent's (passed in before a fork): not ours to close
            tokens = backend if isinstance(backend, PerTaskTokens) else None
            try:
                backend.close()
            except LeaselineError as exc:
                # what is left valid, by the store's own account after closing
                left = [tokens.child_token_accessor] if tokens is not None else []
                if isinstance(backend, StageTokens):
                    left += backend.stage_token_accessors.values()
                left = [accessor for accessor in left if accessor]
                if tokens is None or not left:
                    log.warning("leaseline: closing store %s failed: %s", name, exc)
                    continue
                for accessor in left:
                    self._failed(Unrevoked("token", name, accessor=accessor, addr=tokens.addr), exc)
            except Exception as exc:
                log.warning("leaseline: closing store %s failed: %s", name, type(exc).__name__)
        self._auditor.close()
        _lifetime.untrack(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: what the parent holds is served read-only, never ended here."""
        self._lock = threading.RLock()  # another thread may have held it at the fork
        self._flights = {}  # the parent's in-flight reads never finish here
        self._executor = None  # its threads did not survive the fork
        self._scheduler = Scheduler(self._clock)  # the parent renews its own leases
        self._inherited |= {lease.id for _, lease in self.leases() if lease.id}
        self._retired = []
        # Stores built from config hold the parent's token, child token and HTTP connections:
        # build them again on first use, so what the child reads is under its own. Stores passed
        # in as objects are kept (they cannot be rebuilt) but not closed by the child.
        self._parked += [b for n, b in self._backends.items() if n in self._built]
        self._backends = {n: b for n, b in self._backends.items() if n not in self._built}
        self._built = set()
        self._owned_stores = set()
        self._pid = os.getpid()
        self.unrevoked = []
        _lifetime.after_fork_in_child()


def _per_stage_stores(config: Config, stores: Mapping[str, Backend]) -> frozenset[str]:
    """Stores configured with ``child_token.policies`` (or passed in as such)."""
    names = {
        name
        for name, table in config.stores.items()
        if isinstance(table.get("child_token"), Mapping)
        and table["child_token"].get("policies") is not None
    }
    names |= {n for n, b in stores.items() if isinstance(b, StageTokens) and b.per_stage}
    return frozenset(names)


class LeaseHandle:
    """What ``Resolver.lease()`` yields: always the *current* credential behind a reference."""

    __slots__ = ("_ref", "_resolver")

    def __init__(self, resolver: Resolver, ref: SecretRef) -> None:
        self._resolver = resolver
        self._ref = ref

    @property
    def ref(self) -> str:
        return str(self._ref)

    @property
    def secret(self) -> Secret:
        return self._resolver.get(self._ref)

    @property
    def lease(self) -> Lease | None:
        return self.secret.lease

    def reveal(self, field: str | None = None) -> str:
        return self.secret.reveal(field if field is not None else self._ref.field)

    def __repr__(self) -> str:
        return f"<LeaseHandle {self.secret!r}>"
