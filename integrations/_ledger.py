"""The lease ledger: what a process holds, on disk, so a killed run can be cleaned up.

A JSON-lines file (``[ledger] path``, else ``$XDG_STATE_HOME/leaseline/ledger.jsonl``, else
``~/.local/state/leaseline/ledger.jsonl``), mode 0600, appended under ``flock`` and fsync'd on
every write. Records hold lease ids, token accessors, pids, process start times, file paths and
expiry times: never a value, never a token. Every record names its process as ``pid`` plus
``started`` (the kernel's start time of that pid): a pid alone is reused (in a container every
run is pid 1). Kinds:

- ``{"op": "run", "pid", "started", "child_pid", "cmd", "dir", "files"}``: a run began (``dir``:
  its private directory of ``--file`` secrets; ``files``: the ``--file /abs/path`` files);
- ``{"op": "lease", "pid", "started", "store", "ref", "lease_id", "expires_at"}``;
- ``{"op": "token", "pid", "started", "store", "accessor", "addr"}``: the per-task child token;
- ``{"op": "pending", "id", "kind", ...}``: revoking it failed (store down or sealed at exit):
  ``leases revoke --orphaned`` retries it;
- ``{"op": "revoked", "id"}`` and ``{"op": "done", "pid", "started"}``: cleaned up (``done``
  covers every entry of its run that is not pending).

An entry is *orphaned* when its process is gone (pid dead, or reused: the start time read from
``/proc`` no longer matches) and it was never revoked; *pending* when its revocation failed.

Why ~440 lines: one file format, so its record builders, the locked appender, the reader
that folds records into runs, compaction and the resolver's Recorder stay side by side.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._stage import base_key
from .backends import PerTaskTokens, ServedLeases, StageTokens

if TYPE_CHECKING:
    from ._resolver import Resolver

__all__ = [
    "Entry",
    "Ledger",
    "Recorder",
    "Unrevoked",
    "default_path",
    "done_record",
    "identity",
    "lease_record",
    "process_start",
    "revoked_record",
    "run_alive",
    "run_record",
    "token_record",
]

RunKey = tuple[int, Any]  # (pid, started)


def default_path(section: Mapping[str, Any] | None = None) -> Path:
    """``[ledger] path``, else the XDG state directory."""
    configured = (section or {}).get("path")
    if configured:
        return Path(str(configured)).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "leaseline" / "ledger.jsonl"


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or ``None`` when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"  # no /proc (macOS): alive, start time unknown
    return stat.rsplit(")", 1)[1].split()[19]


_identity: tuple[int, str | None] | None = None


def identity() -> tuple[int, str | None]:
    """This process as the ledger names it: (pid, start time); computed again after a fork."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, process_start(pid))
    return _identity


# -- the record format: every record any command writes is built here ---------------------------


def _own(op: str, **fields: Any) -> dict[str, Any]:
    """A record of this process: ``op``, its (pid, start time), ``fields``, the time."""
    pid, started = identity()
    return {"op": op, "pid": pid, "started": started, "time": time.time(), **fields}


def run_record(**fields: Any) -> dict[str, Any]:
    """``op: run``: this process began a run (``fields``: ``cmd``, ``child_pid``, ``dir``...)."""
    return _own("run", **{"child_pid": None, "cmd": None, "dir": None, "files": [], **fields})


def lease_record(
    store: str, ref: str | None, lease_id: str | None, expires_at: float | None
) -> dict[str, Any]:
    """``op: lease``: this process holds ``lease_id`` (taken, or adopted from a gone process)."""
    return _own("lease", store=store, ref=ref, lease_id=lease_id, expires_at=expires_at)


def token_record(store: str, accessor: str, addr: str | None) -> dict[str, Any]:
    """``op: token``: this process holds the per-task child token with ``accessor``."""
    return _own("token", store=store, accessor=accessor, addr=addr)


def revoked_record(entry_id: str) -> dict[str, Any]:
    """``op: revoked``: the lease or token ``entry_id`` (an :attr:`Entry.id`) is gone."""
    return {"op": "revoked", "id": entry_id, "time": time.time()}


def done_record(pid: int | None = None, started: Any = None) -> dict[str, Any]:
    """``op: done``: the run of (``pid``, ``started``) ended; this process's run by default."""
    if pid is None:
        return _own("done")
    return {"op": "done", "pid": pid, "started": started, "time": time.time()}


@dataclass(frozen=True)
class Unrevoked:
    """A lease or child token whose revocation failed: kept in the ledger as pending."""

    kind: str  # "lease" | "token"
    store: str
    ref: str | None = None
    lease_id: str | None = None
    accessor: str | None = None
    addr: str | None = None
    expires_at: float | None = None
    error: str = ""

    @property
    def id(self) -> str:
        return f"accessor:{self.accessor}" if self.kind == "token" else str(self.lease_id)

    @classmethod
    def from_entry(cls, entry: Entry, error: str) -> Unrevoked:
        """An entry of the ledger (an adopted lease...) whose revocation failed with ``error``."""
        return cls(
            entry.kind,
            entry.store,
            entry.ref,
            entry.lease_id,
            accessor=entry.accessor,
            addr=entry.addr,
            expires_at=entry.expires_at,
            error=error,
        )

    def describe(self) -> str:
        return self.ref or f"the per-task token (accessor {self.accessor})"

    def record(self) -> dict[str, Any]:
        """``op: pending``: this process could not revoke it (``leases revoke --orphaned`` will)."""
        return _own(
            "pending",
            id=self.id,
            kind=self.kind,
            store=self.store,
            ref=self.ref,
            lease_id=self.lease_id,
            accessor=self.accessor,
            addr=self.addr,
            expires_at=self.expires_at,
            error=self.error,
        )


@dataclass
class Entry:
    """One lease or token a process took, folded from the ledger's records."""

    id: str  # lease id, or "accessor:<accessor>"
    kind: str  # "lease" | "token"
    pid: int
    store: str
    ref: str | None = None
    lease_id: str | None = None
    accessor: str | None = None
    addr: str | None = None
    expires_at: float | None = None
    taken_at: float = 0.0
    started: Any = None
    revoked: bool = False
    pending: str | None = None  # why revoking it failed
    run: dict[str, Any] = field(default_factory=dict)

    def alive(self) -> bool:
        """Its process still runs (same pid *and* same start time)."""
        return run_alive(self.pid, self.started)

    def status(self) -> str:
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and self.expires_at < time.time():
            return "expired"
        if self.pending is not None:
            return "pending"
        return "held" if self.alive() else "orphaned"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "pid": self.pid,
            "store": self.store,
            "ref": self.ref,
            "lease_id": self.lease_id,
            "accessor": self.accessor,
            "expires_at": self.expires_at,
            "status": self.status(),
            "error": self.pending,
        }


def run_alive(pid: int, started: Any) -> bool:
    """The process (pid, start time) still runs (a start time of None: any process of pid)."""
    now = process_start(pid)
    if now is None:
        return False
    return started is None or now == "?" or now == started


def _record_id(r: Mapping[str, Any]) -> str | None:
    op = r.get("op")
    if op == "lease":
        return str(r["lease_id"]) if r.get("lease_id") else None
    if op == "token":
        return f"accessor:{r['accessor']}" if r.get("accessor") else None
    if op in ("pending", "revoked"):
        return str(r["id"]) if r.get("id") else None
    return None


class _Fold:
    """The ledger's records read in order: run keys, entries, and what ended."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.keyed: list[tuple[RunKey, dict[str, Any]]] = []
        self.runs: dict[RunKey, dict[str, Any]] = {}
        self.found: dict[str, Entry] = {}
        self.revoked: set[str] = set()
        self.pending: dict[str, str] = {}
        self.done: set[RunKey] = set()
        latest: dict[int, Any] = {}  # pid -> start time of its latest run (records before 0.x)
        for r in records:
            op = r.get("op")
            pid = int(r.get("pid") or 0)
            key: RunKey = (pid, r["started"] if "started" in r else latest.get(pid))
            self.keyed.append((key, r))
            rid = _record_id(r)
            if op == "run":
                latest[pid] = r.get("started")
                self.runs[key] = r
                self.done.discard(key)
            elif op in ("lease", "token") and rid:
                self._entry(rid, r, key)
                self.revoked.discard(rid)
            elif op == "pending" and rid:
                if rid not in self.found:
                    self._entry(rid, r, key)
                self.pending[rid] = str(r.get("error") or "revocation failed")
                self.revoked.discard(rid)
            elif op == "revoked" and rid:
                self.revoked.add(rid)
                self.pending.pop(rid, None)
            elif op == "done":
                self.done.add(key)

    def _entry(self, rid: str, r: Mapping[str, Any], key: RunKey) -> None:
        kind = "token" if rid.startswith("accessor:") else "lease"
        self.found[rid] = Entry(
            rid,
            kind,
            key[0],
            str(r.get("store")),
            ref=r.get("ref"),
            lease_id=r.get("lease_id") if kind == "lease" else None,
            accessor=str(r["accessor"]) if kind == "token" else None,
            addr=r.get("addr"),
            expires_at=r.get("expires_at"),
            taken_at=float(r.get("time") or 0),
            started=key[1],
        )

    def entries(self) -> list[Entry]:
        out = []
        for entry in self.found.values():
            key = (entry.pid, entry.started)
            entry.run = self.runs.get(key, {})
            entry.pending = self.pending.get(entry.id)
            entry.revoked = entry.id in self.revoked or (key in self.done and entry.pending is None)
            out.append(entry)
        return out


class Ledger:
    """Append-only, crash-safe record of the leases and tokens processes hold."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self, mode: str = "a") -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_RDWR | os.O_CREAT | (os.O_APPEND if mode == "a" else 0)
        fd = os.open(self.path, flags, 0o600)
        with os.fdopen(fd, "r+" if mode != "a" else "a+", encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def append(self, *records: Mapping[str, Any], sync: bool = True) -> None:
        """Write ``records`` (one write) and fsync before returning (``sync=False``: don't)."""
        if not records:
            return
        text = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in records)
        with self._locked() as fh:
            fh.write(text)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())

    def _records(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return _parse(text)

    def entries(self, *, include_revoked: bool = False) -> list[Entry]:
        """Every lease and token recorded, folded (latest state wins)."""
        out = [e for e in _Fold(self._records()).entries() if include_revoked or not e.revoked]
        return sorted(out, key=lambda e: (e.taken_at, e.id))

    def runs(self) -> list[dict[str, Any]]:
        """``run`` records that never finished (``done``)."""
        fold = _Fold(self._records())
        return [r for key, r in fold.runs.items() if key not in fold.done]

    def compact(self) -> None:
        """Rewrite the file keeping only what still matters: runs not finished, and every record
        of a run that has a revocation pending. Kept records name their run explicitly."""
        with self._locked("r+") as fh:
            fh.seek(0)
            fold = _Fold(_parse(fh.read()))
            fold.entries()
            open_runs = {(e.pid, e.started) for e in fold.found.values() if e.id in fold.pending}
            keep: list[dict[str, Any]] = []
            for key, r in fold.keyed:
                if r.get("op") == "revoked" or (key in fold.done and key not in open_runs):
                    continue
                keep.append({**r, "started": key[1]} if r.get("pid") is not None else r)
            kept_ids = {_record_id(r) for r in keep} - {None}
            keep += [
                r for _, r in fold.keyed if r.get("op") == "revoked" and _record_id(r) in kept_ids
            ]
            fh.seek(0)
            fh.truncate()
            fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
            fh.flush()
            os.fsync(fh.fileno())


def _parse(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out


class Recorder:
    """The one writer of a process's ledger records: its run, leases and child tokens (once
    each), and how it ended. Used by ``leaseline run``, ``render`` and ``agent``."""

    def __init__(self, ledger: Ledger, resolver: Resolver, cmd: str, **extra: Any) -> None:
        self.ledger = ledger
        self.resolver = resolver
        self.cmd = cmd
        self.extra = extra
        self._seen: set[str] = set()
        self._run: dict[str, Any] = {}

    @property
    def started(self) -> bool:
        """The run record was written."""
        return "run" in self._seen

    def record(self, stores: Iterable[str], **run: Any) -> None:
        """Write the run (first call; ``run`` adds fields such as ``child_pid``, ``dir``,
        ``files``) and every lease and child token not written yet; fsync'd."""
        records: list[dict[str, Any]] = []
        fields = {"cmd": self.cmd, **self.extra, **run}
        if "run" not in self._seen or fields != self._run:
            # the first call, or the same run with more known (the child's pid once started):
            # the reader keeps a run's latest record
            self._seen.add("run")
            self._run = fields
            records.append(run_record(**fields))
        for key, lease in self.resolver.leases():
            if str(lease.id) in self._seen:
                continue
            self._seen.add(str(lease.id))
            store = self.resolver.parse(base_key(key)).store  # a stage's read: its store
            backend = self.resolver.backend(store)
            if isinstance(backend, ServedLeases) and backend.leases_served:
                continue  # the node proxy's lease: ends with its token, never revoked from here
            expires = lease.max_expires_at or lease.expires_at
            records.append(lease_record(store, key, lease.id, expires))
        for store in sorted(set(stores)):
            backend = self.resolver.backend(store)
            if not isinstance(backend, PerTaskTokens):
                continue
            accessors = [backend.child_token_accessor]
            if isinstance(backend, StageTokens):
                accessors += backend.stage_token_accessors.values()
            for accessor in accessors:
                if accessor and f"accessor:{accessor}" not in self._seen:
                    self._seen.add(f"accessor:{accessor}")
                    records.append(token_record(store, accessor, backend.addr))
        self.ledger.append(*records)

    def done(self) -> None:
        """The run ended: its entries are revoked, except those recorded pending."""
        if "run" in self._seen:
            self.ledger.append(done_record())
