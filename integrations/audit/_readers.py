"""Reading access records out of three kinds of log, into one shape (:class:`Access`).

- leaseline's own trail (JSON lines with ``event`` and ``prev``); ``cache_hits`` lines count
  ``count`` accesses;
- Vault/OpenBao file audit devices (JSON lines with ``type`` request/response): the response
  lines, with ``request.remote_address``, ``request.path`` and ``auth.display_name``;
- AWS CloudTrail: a ``{"Records": [...]}`` file (as delivered to S3), a JSON array, or JSON lines
  (as ``aws cloudtrail lookup-events`` output / a log shipper writes them), with
  ``sourceIPAddress``, ``userIdentity.arn`` and ``requestParameters.secretId``/``name``.

The format is detected per line, so one file may even mix them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Access", "parse_time", "read_accesses", "records_from_text"]


@dataclass(frozen=True)
class Access:
    time: dt.datetime  # aware, UTC
    origin: str  # leaseline, openbao, cloudtrail
    identity: str
    secret: str
    address: str | None
    outcome: str  # ok, denied, not_found, error
    operation: str
    count: int = 1


_FRACTION = re.compile(r"\.(\d+)")


def parse_time(text: str) -> dt.datetime:
    """RFC 3339 with any number of fraction digits (Vault writes nanoseconds), as aware UTC."""
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    value = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], value, count=1)
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _leaseline(r: Mapping[str, Any]) -> Access | None:
    who = r.get("actor") or {}
    identity = f"{who.get('user', '?')}@{who.get('host', '?')}"
    for kind, keys in (
        ("airflow", ("dag_id", "task_id")),
        ("prefect", ("flow_name", "task_name")),
        ("kfp", ("pipeline", "task")),
    ):
        ctx = who.get(kind)
        if isinstance(ctx, Mapping):
            parts = [str(ctx[k]) for k in keys if ctx.get(k)]
            if parts:
                identity += f" {kind}:{'/'.join(parts)}"
                break
    event = str(r.get("event", ""))
    outcome = str(r.get("outcome", "ok"))
    count = int(r.get("count", 1)) if event == "cache_hits" else 1
    return Access(
        time=parse_time(str(r["time"])),
        origin="leaseline",
        identity=identity,
        secret=str(r.get("ref") or "-"),
        address=r.get("source"),
        outcome=outcome if outcome in {"ok", "denied", "not_found"} else "error",
        operation=event,
        count=max(count, 0),
    )


_DENIED = re.compile(r"permission denied|403|invalid token|access denied", re.I)


def _vault(r: Mapping[str, Any]) -> Access | None:
    if r.get("type") != "response":
        return None  # each request is logged twice; the response carries the outcome
    req = r.get("request") or {}
    auth = r.get("auth") or {}
    error = str(r.get("error") or "")
    resp = r.get("response") or {}
    if not error and isinstance(resp.get("data"), Mapping):
        error = str(resp["data"].get("error") or "")
    if not error:
        outcome = "ok"
    elif _DENIED.search(error):
        outcome = "denied"
    else:
        outcome = "error"
    identity = (
        auth.get("entity_id") or auth.get("display_name") or auth.get("accessor") or "anonymous"
    )
    return Access(
        time=parse_time(str(r["time"])),
        origin="openbao",
        identity=str(identity),
        secret=str(req.get("path") or "-"),
        address=req.get("remote_address"),
        outcome=outcome,
        operation=str(req.get("operation") or ""),
    )


def _cloudtrail(r: Mapping[str, Any]) -> Access | None:
    ident = r.get("userIdentity") or {}
    params = r.get("requestParameters") or {}
    secret = "-"
    if isinstance(params, Mapping):
        for key in ("secretId", "name", "roleArn", "keyId"):
            if params.get(key):
                secret = str(params[key])
                break
    error = str(r.get("errorCode") or "")
    if not error:
        outcome = "ok"
    elif "denied" in error.lower() or "unauthorized" in error.lower():
        outcome = "denied"
    elif "notfound" in error.lower():
        outcome = "not_found"
    else:
        outcome = "error"
    identity = ident.get("arn") or ident.get("principalId") or ident.get("type") or "unknown"
    return Access(
        time=parse_time(str(r["eventTime"])),
        origin="cloudtrail",
        identity=str(identity),
        secret=secret,
        address=r.get("sourceIPAddress"),
        outcome=outcome,
        operation=f"{r.get('eventSource', '')}:{r.get('eventName', '')}",
    )


def classify(r: Mapping[str, Any]) -> Access | None:
    """One record of any supported log as an :class:`Access` (``None``: not an access)."""
    if "prev" in r and "event" in r:
        return _leaseline(r)
    if r.get("type") in {"request", "response"} and "request" in r:
        return _vault(r)
    if "eventTime" in r and ("eventName" in r or "eventSource" in r):
        return _cloudtrail(r)
    return None


def records_from_text(text: str) -> Iterator[Mapping[str, Any]]:
    """JSON objects from JSON lines, a JSON array, or a CloudTrail ``{"Records": [...]}``."""
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and '"Records"' in text[:4096]):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, Mapping) and isinstance(doc.get("Records"), list):
            yield from (x for x in doc["Records"] if isinstance(x, Mapping))
            return
        if isinstance(doc, list):
            yield from (x for x in doc if isinstance(x, Mapping))
            return
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn line
        if isinstance(rec, Mapping):
            if isinstance(rec.get("Records"), list):
                yield from (x for x in rec["Records"] if isinstance(x, Mapping))
            else:
                yield rec


def read_accesses(paths: Iterable[Path]) -> list[Access]:
    """Every access in ``paths``, oldest first."""
    found: list[Access] = []
    for path in paths:
        text = path.read_text("utf-8", errors="replace")
        for rec in records_from_text(text):
            try:
                access = classify(rec)
            except (KeyError, ValueError, TypeError):
                continue
            if access is not None:
                found.append(access)
    found.sort(key=lambda a: a.time)
    return found
