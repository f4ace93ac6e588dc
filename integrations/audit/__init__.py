"""The audit trail: one JSON line per store request, chained by HMAC under the audit key.

Every read, lease issue/renew/revoke, rotation, denial and error becomes an event (schema:
``event.schema.json``, shipped in the package) with the reference (never a value), the
store, the field names, ``value_hmacs`` (per field, HMAC-SHA256 of the value alone under the
audit key, as Vault's audit devices do: ``leaseline audit hash`` computes one for a leaked
value), the actor (user, host, pid, orchestrator context), the source address, the outcome and
the latency. ``prev`` is the HMAC-SHA256 under the audit key of the previous line (``chain``
says ``hmac-sha256``; plain SHA-256, ``chain: sha256``, only without a key) and ``seq`` counts
lines along the chain: ``leaseline audit verify`` checks both.

Cache hits are counted per reference without I/O or locks on the hot path, and flushed as one
``cache_hits`` event per reference per interval (a background thread), when the orchestrator
context changes, and at close/exit. The counts are attributed to the actor whose store read
filled the cache entry.

>>> from leaseline.audit import build_auditor
>>> auditor = build_auditor({"sink": "file:///tmp/audit.jsonl", "hmac_key": "k"})  # doctest: +SKIP

Why ~460 lines: the Auditor is one object (event building, the keyed chain, counted cache
hits and their flush thread, context providers); sinks, readers, verify and analyze are modules
of their own.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import hashlib
import hmac
import itertools
import json
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._config import as_bool
from .._exceptions import ConfigError, LeaselineError
from ._actor import actor, add_context_provider, context_of, source_address, static_actor
from ._sinks import ChainedSink, FileSink, LoggingSink, Sink, StdoutSink
from ._verify import GENESIS, chain_link

__all__ = [
    "GENESIS",
    "SCHEMA_VERSION",
    "AuditSinkError",
    "Auditor",
    "FileSink",
    "LoggingSink",
    "NullAuditor",
    "Sink",
    "StdoutSink",
    "actor",
    "add_context_provider",
    "audit_key",
    "build_auditor",
    "chain_link",
    "line_hash",
    "schema",
    "value_hmac",
]

#: 2: ``prev`` keyed (``chain``), ``value_hmacs`` per field (1: plain SHA-256, one ``value_hmac``)
SCHEMA_VERSION = 2


class AuditSinkError(LeaselineError, OSError):
    """The audit sink failed after retries and ``[audit] required = true``."""


def line_hash(line: str | bytes) -> str:
    """SHA-256 of one line as written (without its newline): ``prev`` of an unkeyed chain."""
    return chain_link(line, None)


def value_hmac(key: bytes, value: str) -> str:
    """``hmac-sha256:<hex>`` of one value under the audit key: what ``value_hmacs`` holds.

    The same digest as Vault's audit devices (and ``sys/audit-hash``) compute under their salt,
    so a responder holding one leaked value can grep the trail for it:

    >>> value_hmac(b"k", "hunter2")[:20]
    'hmac-sha256:0cd9cde6'
    """
    return "hmac-sha256:" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def audit_key(
    section: Mapping[str, Any], resolve: Callable[[str], str] | None = None
) -> bytes | None:
    """The ``[audit] hmac_key`` (a reference, resolved with ``resolve``, or literal); ``None``
    without one. Raises :class:`ConfigError` for a reference with nothing to resolve it."""
    spec = section.get("hmac_key")
    if not spec:
        return None
    text = str(spec)
    if "://" in text:
        if resolve is None:
            raise ConfigError(f"[audit] hmac_key {text!r} is a reference and needs a resolver")
        text = resolve(text)
    if not text:
        raise ConfigError("[audit] hmac_key resolved to an empty value")
    return text.encode("utf-8")


def schema() -> dict[str, Any]:
    """The JSON Schema of an audit event (``leaseline/audit/event.schema.json``)."""
    from importlib import resources

    text = resources.files("leaseline.audit").joinpath("event.schema.json").read_text("utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def format_time(ts: float) -> str:
    """RFC 3339 UTC with microseconds, as SIEMs parse it: ``2025-01-31T08:00:00.000001Z``."""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- auditors -----------------------------------------------------------------------------------


class NullAuditor:
    """Auditing off: every call is a no-op."""

    enabled = False

    def emit(self, event: str, **fields: Any) -> None:
        pass

    def hit(self, ref: str, store: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


#: events whose actor filled a cache entry (cache hits on it are attributed to that actor)
_FILLS = frozenset({"read", "lease_issue"})

_live: weakref.WeakSet[Auditor] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for auditor in list(_live):
        try:
            auditor.flush()
            auditor.sync()
        except Exception:  # exit must go on; flush already reported on stderr
            pass


class Auditor:
    """Writes hash-chained events to a sink. Thread-safe.

    A sink that fails is retried (``retries`` times, short backoff); then the event line itself
    is printed on stderr so it is not lost, and with ``required=True`` :class:`AuditSinkError` is
    raised to the caller (the store request that caused it fails).
    """

    enabled = True

    def __init__(
        self,
        sink: Sink | ChainedSink,
        *,
        hmac_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 60.0,
        required: bool = False,
        retries: int = 3,
        retry_delay: float = 0.05,
    ) -> None:
        self._sink = sink
        self._chained = isinstance(sink, ChainedSink)
        self._key = hmac_key
        self._clock = clock
        self._lock = threading.Lock()
        self._flush_interval = flush_interval
        self._required = required
        self._retries = max(1, retries)
        self._retry_delay = retry_delay
        # hot path: reference -> itertools.count (next() is atomic under the GIL)
        self._hits: dict[str, itertools.count[int]] = {}
        self._hit_store: dict[str, str] = {}
        self._flushed: dict[str, int] = {}
        self._window_start = clock()
        self._ref_actor: dict[str, dict[str, Any]] = {}
        self._last_context: tuple[tuple[str, str], ...] | None = None
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        #: events that could not be written (reported on stderr)
        self.dropped = 0
        self._chain = "sha256" if hmac_key is None else "hmac-sha256"
        last = sink.last_line() if isinstance(sink, FileSink) else None
        self._prev, self._seq = self._chain_after(last)
        _live.add(self)

    def _chain_after(self, last: str | None) -> tuple[str, int]:
        if not last:
            return GENESIS, 0
        try:
            seq = int(json.loads(last).get("seq", -1)) + 1
        except (ValueError, TypeError, AttributeError):
            seq = 0
        return chain_link(last, self._key), max(seq, 0)

    def value_hmacs(self, values: Mapping[str, str]) -> dict[str, str] | None:
        """``{field: "hmac-sha256:<hex>"}``, each of the value alone; ``None`` without a key."""
        if self._key is None:
            return None
        return {name: value_hmac(self._key, value) for name, value in sorted(values.items())}

    def emit(
        self,
        event: str,
        *,
        ref: str | None = None,
        store: str | None = None,
        fields: Iterable[str] = (),
        values: Mapping[str, str] | Iterable[str] = (),
        outcome: str = "ok",
        latency_ms: float | None = None,
        lease_id: str | None = None,
        error: str | None = None,
        identity: str | None = None,
        source: str | None = None,
        extra: Mapping[str, Any] | None = None,
        who: Mapping[str, Any] | None = None,
    ) -> None:
        """Write one event. ``values`` only feed ``value_hmacs``; they are never written.

        ``values`` maps field names to values, or lists the values in the order of ``fields``.
        """
        acting = dict(who) if who is not None else actor()
        if who is None:
            context = context_of(acting)
            if self._last_context is not None and context != self._last_context and self._hits:
                self.flush()  # pending hits belong to the previous task
            self._last_context = context
        names = list(fields)
        if isinstance(values, Mapping):
            by_field = dict(values)
        else:
            listed = list(values)  # in the order of ``fields``
            by_field = dict(zip(names, listed, strict=True)) if listed else {}
        record: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "time": format_time(self._clock()),
            "event": event,
            "ref": ref,
            "store": store,
            "fields": sorted(names),
            "outcome": outcome,
            "actor": acting,
            "source": source if source is not None else source_address(),
        }
        if by_field and self._key is not None:
            record["value_hmacs"] = self.value_hmacs(by_field)
        if latency_ms is not None:
            record["latency_ms"] = round(latency_ms, 3)
        if lease_id is not None:
            record["lease_id"] = lease_id
        if error is not None:
            record["error"] = error
        if identity is not None:
            record["identity"] = identity
        if extra:
            for key, value in extra.items():
                record.setdefault(key, value)
        if ref is not None and outcome == "ok" and who is None and event in _FILLS:
            self._ref_actor[ref] = acting
        self._write(record)

    # -- writing --------------------------------------------------------------------------------

    def _build(self, record: dict[str, Any], last: str | None) -> str:
        if last is not None:
            self._prev, self._seq = self._chain_after(last)
        record["seq"] = self._seq
        record["prev"] = self._prev
        record["chain"] = self._chain
        return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)

    def _write(self, record: dict[str, Any]) -> None:
        line = ""
        with self._lock:
            for attempt in range(self._retries):
                try:
                    if self._chained:
                        chained: Any = self._sink
                        line = chained.append(lambda last: self._build(record, last))
                    else:
                        line = self._build(record, None)
                        plain: Any = self._sink
                        plain.write(line)
                    break
                except Exception as exc:
                    if attempt + 1 < self._retries:
                        time.sleep(self._retry_delay * (4**attempt))
                        continue
                    self.dropped += 1
                    lost = line or json.dumps(record, sort_keys=True, default=str)
                    message = (
                        f"leaseline: audit sink {self._sink!r} failed after {self._retries} "
                        f"attempts ({type(exc).__name__}: {exc}); event not recorded there: {lost}"
                    )
                    print(message, file=sys.stderr, flush=True)
                    if self._required:
                        raise AuditSinkError(
                            f"audit sink {self._sink!r} failed and [audit] required = true: "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                    return
            self._prev = chain_link(line, self._key)
            self._seq += 1

    # -- cache hits -----------------------------------------------------------------------------

    def hit(self, ref: str, store: str) -> None:
        """Count a warm cache hit: a dict lookup and an atomic increment, no I/O, no lock."""
        try:
            next(self._hits[ref])
        except KeyError:
            next(self._new_counter(ref, store))

    def _new_counter(self, ref: str, store: str) -> itertools.count[int]:
        with self._lock:
            counter = self._hits.get(ref)
            if counter is None:
                counter = itertools.count()
                self._hit_store[ref] = store
                self._hits[ref] = counter
            if self._flusher is None and self._flush_interval > 0 and not self._closed:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="leaseline-audit-flush", daemon=True
                )
                self._flusher.start()
        return counter

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._flush_interval):
            try:
                self.flush()
                self.sync()
            except Exception:  # reported by _write; the loop must survive
                pass

    def flush(self) -> None:
        """Write one ``cache_hits`` event per reference hit since the last flush."""
        now = self._clock()
        pending: list[tuple[str, int]] = []
        with self._lock:
            for ref, counter in list(self._hits.items()):
                total = int(repr(counter)[6:-1])  # "count(N)": N calls so far
                delta = total - self._flushed.get(ref, 0)
                if delta > 0:
                    pending.append((ref, delta))
                    self._flushed[ref] = total
            since, self._window_start = self._window_start, now
        for ref, count in sorted(pending):
            store, who = self._hit_store.get(ref, ""), self._ref_actor.get(ref)
            self.emit(
                "cache_hits",
                ref=ref,
                store=store,
                who=who if who is not None else static_actor(),
                extra={"count": count, "window_start": format_time(since)},
            )

    def sync(self) -> None:
        """fsync what the sink buffered (fsync policy ``interval``)."""
        if self._chained:
            sink: Any = self._sink
            sink.sync()

    def close(self) -> None:
        """Flush pending hit counts and close the sink; idempotent."""
        if self._closed:
            return
        self._stop.set()
        self.flush()
        with self._lock:
            self._closed = True
            self._sink.close()
        _live.discard(self)


def _number(section: Mapping[str, Any], key: str, default: float) -> float:
    raw = section.get(key, default)
    if isinstance(raw, str):
        from .._config import parse_duration

        try:
            return float(raw) if raw.replace(".", "", 1).isdigit() else parse_duration(raw)
        except Exception as exc:
            raise ConfigError(f"[audit] {key}: expected a number or duration, got {raw!r}") from exc
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"[audit] {key}: expected a number, got {raw!r}") from None


def _size(section: Mapping[str, Any], key: str) -> int:
    raw = section.get(key, 0)
    if isinstance(raw, str):
        text = raw.strip().upper().removesuffix("B")
        units = {"K": 1024, "M": 1024**2, "G": 1024**3}
        mult = units.get(text[-1:], 1)
        text = text[:-1] if text[-1:] in units else text
        try:
            return int(float(text) * mult)
        except ValueError:
            raise ConfigError(f"[audit] {key}: expected a size like 100MB, got {raw!r}") from None
    return int(raw or 0)


def sink_from_spec(spec: str, section: Mapping[str, Any] | None = None) -> Sink | ChainedSink:
    """A sink from ``file:///path`` (or a bare path), ``stdout`` or ``logging[:name]``."""
    section = section or {}
    if spec == "stdout":
        return StdoutSink()
    if spec == "logging" or spec.startswith("logging:"):
        return LoggingSink(spec.partition(":")[2] or "leaseline.audit")
    path = spec[len("file://") :] if spec.startswith("file://") else spec
    fsync = str(section.get("fsync", "interval"))
    try:
        return FileSink(
            path,
            fsync=fsync,
            max_bytes=_size(section, "max_bytes"),
            backups=int(section.get("backups", 5)),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def build_auditor(
    section: Mapping[str, Any], resolve: Callable[[str], str] | None = None
) -> Auditor | NullAuditor:
    """An auditor from the ``[audit]`` config table; a :class:`NullAuditor` without ``sink``.

    Keys: ``sink`` (``file:///path``, ``stdout``, ``logging``), ``hmac_key`` (a reference such
    as ``env://LEASELINE_AUDIT_KEY``, resolved with ``resolve``), ``fsync``
    (``always|interval|never``), ``required``, ``max_bytes``, ``backups``, ``flush_interval``.
    Raises :class:`ConfigError` for a bad value, ``OSError`` when the file cannot be opened.
    """
    sink_spec = section.get("sink")
    if not sink_spec:
        return NullAuditor()
    key = audit_key(section, resolve)
    sink = sink_from_spec(str(sink_spec), section)
    return Auditor(
        sink,
        hmac_key=key,
        required=as_bool(section.get("required", False), "[audit] required"),
        flush_interval=_number(section, "flush_interval", 60.0),
    )
