"""The audit trail: one JSON line per store request, hash-chained.

Every read, lease issue/renew/revoke, rotation, denial and error becomes an event with the
reference (never a value), the store, the field names, ``value_hmac`` (HMAC-SHA256 of the values
under the audit key), the actor, the outcome and the latency. Cache hits are counted per
(reference, actor) and flushed as one ``cache_hits`` event per interval and at close, so the hot
path does no I/O. ``prev`` is the SHA-256 of the previous line: ``leaseline audit verify`` checks it.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

__all__ = [
    "Auditor",
    "FileSink",
    "LoggingSink",
    "NullAuditor",
    "Sink",
    "StdoutSink",
    "actor",
    "build_auditor",
]

GENESIS = "0" * 64


class Sink(Protocol):
    def write(self, line: str) -> None: ...
    def close(self) -> None: ...


class FileSink:
    """Append-only JSON lines; ``fsync`` is ``always``, ``interval`` (once a second) or ``never``."""

    def __init__(self, path: str | os.PathLike[str], fsync: str = "interval") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fh: IO[str] = os.fdopen(fd, "a", encoding="utf-8")
        self._fsync = fsync
        self._last_sync = time.monotonic()

    def last_line(self) -> str | None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 65536))
                lines = fh.read().splitlines()
        except OSError:
            return None
        for raw in reversed(lines):
            text = raw.decode("utf-8", "replace")
            if text.strip():
                try:
                    json.loads(text)
                except ValueError:
                    continue
                return text
        return None

    def write(self, line: str) -> None:
        self._fh.write(line + "\n")
        self._fh.flush()
        if self._fsync == "always" or (
            self._fsync == "interval" and time.monotonic() - self._last_sync > 1.0
        ):
            os.fsync(self._fh.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        try:
            self._fh.flush()
            if self._fsync != "never":
                os.fsync(self._fh.fileno())
        finally:
            self._fh.close()


class StdoutSink:
    def write(self, line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass


class LoggingSink:
    def __init__(self, name: str = "leaseline.audit") -> None:
        import logging

        self._log = logging.getLogger(name)

    def write(self, line: str) -> None:
        self._log.info(line)

    def close(self) -> None:
        pass


_context_providers: list[Callable[[], Mapping[str, Any]]] = []


def add_context_provider(fn: Callable[[], Mapping[str, Any]]) -> None:
    """Orchestrator adapters add a function returning their run context (dag/task/run ids...)."""
    if fn not in _context_providers:
        _context_providers.append(fn)


def _env_context() -> dict[str, Any]:
    env = os.environ
    ctx: dict[str, Any] = {}
    airflow = {
        "dag_id": env.get("AIRFLOW_CTX_DAG_ID"),
        "task_id": env.get("AIRFLOW_CTX_TASK_ID"),
        "run_id": env.get("AIRFLOW_CTX_DAG_RUN_ID"),
        "try_number": env.get("AIRFLOW_CTX_TRY_NUMBER"),
    }
    if any(airflow.values()):
        ctx["airflow"] = {k: v for k, v in airflow.items() if v}
    prefect = {
        "flow_run_id": env.get("PREFECT__FLOW_RUN_ID"),
    }
    if any(prefect.values()):
        ctx["prefect"] = {k: v for k, v in prefect.items() if v}
    kfp = {
        "pipeline": env.get("KFP_PIPELINE_NAME"),
        "run_id": env.get("KFP_RUN_ID"),
        "task": env.get("KFP_TASK_NAME") or env.get("KFP_POD_NAME"),
    }
    if any(kfp.values()):
        ctx["kfp"] = {k: v for k, v in kfp.items() if v}
    return ctx


def actor() -> dict[str, Any]:
    """Who is acting: user, host, pid, plus whatever orchestrator context is present."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    info: dict[str, Any] = {"user": user, "host": socket.gethostname(), "pid": os.getpid()}
    info.update(_env_context())
    for provider in _context_providers:
        try:
            info.update(provider())
        except Exception:  # context is best effort; an event is never lost for it
            pass
    return info


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


class Auditor:
    """Writes hash-chained events to a sink. Thread-safe."""

    enabled = True

    def __init__(
        self,
        sink: Sink,
        *,
        hmac_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 60.0,
        required: bool = False,
    ) -> None:
        self._sink = sink
        self._key = hmac_key
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: Counter[tuple[str, str]] = Counter()
        self._flush_interval = flush_interval
        self._last_flush = clock()
        self._required = required
        last = sink.last_line() if isinstance(sink, FileSink) else None
        self._prev = hashlib.sha256(last.encode()).hexdigest() if last else GENESIS

    def value_hmac(self, values: Iterable[str]) -> str | None:
        if self._key is None:
            return None
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for value in values:
            mac.update(value.encode())
            mac.update(b"\x00")
        return "hmac-sha256:" + mac.hexdigest()

    def emit(
        self,
        event: str,
        *,
        ref: str | None = None,
        store: str | None = None,
        fields: Iterable[str] = (),
        values: Iterable[str] = (),
        outcome: str = "ok",
        latency_ms: float | None = None,
        lease_id: str | None = None,
        error: str | None = None,
        identity: str | None = None,
        source: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "time": self._clock(),
            "event": event,
            "ref": ref,
            "store": store,
            "fields": sorted(fields),
            "outcome": outcome,
            "actor": actor(),
        }
        vals = list(values)
        if vals:
            record["value_hmac"] = self.value_hmac(vals)
        if latency_ms is not None:
            record["latency_ms"] = round(latency_ms, 3)
        if lease_id is not None:
            record["lease_id"] = lease_id
        if error is not None:
            record["error"] = error
        if identity is not None:
            record["identity"] = identity
        if source is not None:
            record["source"] = source
        if extra:
            record.update(extra)
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        with self._lock:
            record["prev"] = self._prev
            line = json.dumps(record, sort_keys=True, separators=(",", ":"))
            for attempt in range(3):
                try:
                    self._sink.write(line)
                    break
                except OSError as exc:
                    if attempt == 2:
                        msg = f"leaseline: audit sink failed, event {record['event']} lost: {exc}"
                        if self._required:
                            raise RuntimeError(msg) from exc
                        print(msg, file=sys.stderr)
                        return
            self._prev = hashlib.sha256(line.encode()).hexdigest()

    def hit(self, ref: str, store: str) -> None:
        self._hits[(ref, store)] += 1
        if self._clock() - self._last_flush > self._flush_interval:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            hits, self._hits = self._hits, Counter()
            self._last_flush = self._clock()
        for (ref, store), count in sorted(hits.items()):
            self.emit("cache_hits", ref=ref, store=store, extra={"count": count})

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._sink.close()


def build_auditor(
    section: Mapping[str, Any], resolve: Callable[[str], str] | None = None
) -> Auditor | NullAuditor:
    """An auditor from the ``[audit]`` config table (``sink``, ``hmac_key``, ``fsync``, ``required``)."""
    sink_spec = section.get("sink")
    if not sink_spec:
        return NullAuditor()
    sink: Sink
    spec = str(sink_spec)
    if spec == "stdout":
        sink = StdoutSink()
    elif spec == "logging":
        sink = LoggingSink()
    elif spec.startswith("file://"):
        sink = FileSink(spec[len("file://") :], fsync=str(section.get("fsync", "interval")))
    else:
        sink = FileSink(spec, fsync=str(section.get("fsync", "interval")))
    key: bytes | None = None
    key_spec = section.get("hmac_key")
    if key_spec:
        key_text = resolve(str(key_spec)) if resolve and "://" in str(key_spec) else str(key_spec)
        key = key_text.encode()
    required = str(section.get("required", "false")).lower() in {"true", "1", "yes"}
    return Auditor(sink, hmac_key=key, required=required)
