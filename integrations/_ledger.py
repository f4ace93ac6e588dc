"""The lease ledger: what ``leaseline run`` holds, on disk, so a killed run can be cleaned up.

A JSON-lines file (``[ledger] path``, else ``$XDG_STATE_HOME/leaseline/ledger.jsonl``, else
``~/.local/state/leaseline/ledger.jsonl``), mode 0600, appended under ``flock`` and fsync'd on
every write but ``done``. Records hold lease ids, token accessors, pids and expiry times: never a
value, never a token. Kinds:

- ``{"op": "run", "pid", "started", "child_pid", "cmd", "dir"}``: a run began (``dir``: its
  private directory of ``--file`` secrets, if any);
- ``{"op": "lease", "pid", "store", "ref", "lease_id", "expires_at"}``;
- ``{"op": "token", "pid", "store", "accessor", "addr"}``: the per-task child token;
- ``{"op": "revoked", "id"}`` and ``{"op": "done", "pid"}``: cleaned up.

An entry is *orphaned* when its run's process is gone (pid dead, or reused: the start time
recorded from ``/proc`` no longer matches) and it was never marked revoked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Entry", "Ledger", "default_path", "process_start"]


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


@dataclass
class Entry:
    """One lease or token a run took, folded from the ledger's records."""

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
    revoked: bool = False
    run: dict[str, Any] = field(default_factory=dict)

    def alive(self) -> bool:
        started = self.run.get("started")
        now = process_start(self.pid)
        if now is None:
            return False
        return started is None or now == "?" or now == started

    def status(self) -> str:
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and self.expires_at < time.time():
            return "expired"
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
        }


class Ledger:
    """Append-only, crash-safe record of leases held by ``leaseline run`` processes."""

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
        """Write ``records`` (one write) and fsync before returning.

        ``sync=False`` skips the fsync, for records whose loss is harmless: a ``done`` lost in
        a crash only makes ``leases revoke --orphaned`` retry revocations that already happened.
        """
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
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def entries(self, *, include_revoked: bool = False) -> list[Entry]:
        """Every lease and token recorded, folded (latest state wins)."""
        runs: dict[int, dict[str, Any]] = {}
        found: dict[str, Entry] = {}
        revoked: set[str] = set()
        done: set[int] = set()
        for r in self._records():
            op = r.get("op")
            pid = int(r.get("pid") or 0)
            if op == "run":
                runs[pid] = r
                done.discard(pid)
            elif op == "lease" and r.get("lease_id"):
                lid = str(r["lease_id"])
                found[lid] = Entry(
                    lid,
                    "lease",
                    pid,
                    str(r.get("store")),
                    ref=r.get("ref"),
                    lease_id=lid,
                    expires_at=r.get("expires_at"),
                    taken_at=float(r.get("time") or 0),
                )
                revoked.discard(lid)
            elif op == "token" and r.get("accessor"):
                tid = f"accessor:{r['accessor']}"
                found[tid] = Entry(
                    tid,
                    "token",
                    pid,
                    str(r.get("store")),
                    accessor=str(r["accessor"]),
                    addr=r.get("addr"),
                    expires_at=r.get("expires_at"),
                    taken_at=float(r.get("time") or 0),
                )
                revoked.discard(tid)
            elif op == "revoked":
                revoked.add(str(r.get("id")))
            elif op == "done":
                done.add(pid)
        out = []
        for entry in found.values():
            entry.run = runs.get(entry.pid, {})
            entry.revoked = entry.id in revoked or entry.pid in done
            if include_revoked or not entry.revoked:
                out.append(entry)
        return sorted(out, key=lambda e: (e.taken_at, e.id))

    def runs(self) -> list[dict[str, Any]]:
        """``run`` records whose process is gone and that never finished (orphaned runs)."""
        live: dict[int, dict[str, Any]] = {}
        for r in self._records():
            pid = int(r.get("pid") or 0)
            if r.get("op") == "run":
                live[pid] = r
            elif r.get("op") == "done":
                live.pop(pid, None)
        return list(live.values())

    def compact(self) -> None:
        """Rewrite the file keeping only records of runs that are not finished."""
        with self._locked("r+") as fh:
            fh.seek(0)
            records = []
            for line in fh.read().splitlines():
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
            finished = {int(r.get("pid") or 0) for r in records if r.get("op") == "done"}
            keep = [
                r for r in records if isinstance(r, dict) and int(r.get("pid") or 0) not in finished
            ]
            kept_ids = {str(r.get("lease_id")) for r in keep if r.get("op") == "lease"}
            kept_ids |= {f"accessor:{r.get('accessor')}" for r in keep if r.get("op") == "token"}
            keep = [r for r in keep if r.get("op") != "revoked" or str(r.get("id")) in kept_ids]
            fh.seek(0)
            fh.truncate()
            fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
            fh.flush()
            os.fsync(fh.fileno())
