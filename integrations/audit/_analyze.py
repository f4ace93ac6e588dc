"""Alerts over access records (pure: records and settings in, alerts out).

Rules (``[audit.analyze]`` settings in brackets):

- ``disallowed_network`` (high): a source address outside ``allowed_networks`` (CIDRs; the rule
  is off while the list is empty).
- ``new_source`` (medium): an identity uses an address it has not used before, in this input or
  in ``known_sources`` (``{identity = [addresses]}``); an identity's first address is learned.
- ``off_hours`` (medium): access outside ``business_hours`` (``"08:00-19:00"``, seconds allowed,
  a window may wrap midnight) on ``business_days`` (default mon-fri) in ``timezone``.
- ``spike`` (high): per identity and secret, a ``spike_bucket`` (default 1m) whose count exceeds
  the median of all buckets by ``spike_factor`` (default 5) robust deviations (MAD x 1.4826, at
  least the Poisson noise sqrt(median)), and is at least ``spike_min_count`` (default 20); needs
  ``spike_min_buckets`` (default 5) buckets of history.
- ``denial_burst`` (high): ``denial_threshold`` (default 5) denials for one identity within
  ``denial_window`` (default 5m).

Each rule raises at most one alert per subject (identity, or identity and secret/address),
with the first and last time and the count.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._readers import Access

__all__ = ["SEVERITIES", "Alert", "Settings", "analyze"]

SEVERITIES = ("low", "medium", "high")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Alert:
    severity: str
    rule: str
    identity: str
    secret: str | None
    address: str | None
    first: dt.datetime
    last: dt.datetime
    count: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "rule": self.rule,
            "identity": self.identity,
            "secret": self.secret,
            "address": self.address,
            "first": self.first.isoformat().replace("+00:00", "Z"),
            "last": self.last.isoformat().replace("+00:00", "Z"),
            "count": self.count,
            "message": self.message,
        }


def _duration(value: object, where: str) -> float:
    from .._config import parse_duration

    return float(value) if isinstance(value, int | float) else parse_duration(value, where)


def _clock(text: str, where: str) -> dt.time:
    parts = text.strip().split(":")
    try:
        numbers = [int(p) for p in parts]
        if not 2 <= len(numbers) <= 3:
            raise ValueError
        if numbers[0] == 24 and not any(numbers[1:]):
            return dt.time.max
        h, m, sec = (*numbers, 0)[:3]
        return dt.time(h, m, sec)
    except ValueError:
        raise ValueError(f"{where}: expected HH:MM or HH:MM:SS, got {text!r}") from None


@dataclass(frozen=True)
class Settings:
    allowed_networks: tuple[Network, ...] = ()
    known_sources: Mapping[str, frozenset[str]] = field(default_factory=dict)
    business_hours: tuple[dt.time, dt.time] | None = None
    timezone: dt.tzinfo = dt.timezone.utc
    business_days: frozenset[int] = frozenset(range(5))
    spike_bucket: float = 60.0
    spike_factor: float = 5.0
    spike_min_count: int = 20
    spike_min_buckets: int = 5
    denial_threshold: int = 5
    denial_window: float = 300.0

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Settings:
        """From ``[audit.analyze]``; raises ``ValueError`` naming the key that is wrong."""
        w = "[audit.analyze]"
        nets = []
        for item in table.get("allowed_networks", ()) or ():
            try:
                nets.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError:
                raise ValueError(f"{w} allowed_networks: not a network: {item!r}") from None
        hours = None
        if table.get("business_hours"):
            text = str(table["business_hours"])
            start, sep, end = text.partition("-")
            if not sep:
                raise ValueError(f"{w} business_hours: expected 'HH:MM-HH:MM', got {text!r}")
            hours = (_clock(start, f"{w} business_hours"), _clock(end, f"{w} business_hours"))
        tz: dt.tzinfo = dt.timezone.utc
        if table.get("timezone"):
            try:
                tz = ZoneInfo(str(table["timezone"]))
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{w} timezone: unknown time zone {table['timezone']!r}") from None
        days = cls.business_days
        if "business_days" in table:
            raw = table["business_days"]
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            picked = set()
            for item in items:
                name = str(item).strip().lower()[:3]
                if name not in _DAYS:
                    raise ValueError(f"{w} business_days: not a weekday: {item!r}")
                picked.add(_DAYS.index(name))
            days = frozenset(picked)
        known = {
            str(k): frozenset(str(a) for a in v)
            for k, v in (table.get("known_sources") or {}).items()
        }
        return cls(
            allowed_networks=tuple(nets),
            known_sources=known,
            business_hours=hours,
            timezone=tz,
            business_days=days,
            spike_bucket=_duration(table.get("spike_bucket", 60.0), f"{w} spike_bucket"),
            spike_factor=float(table.get("spike_factor", 5.0)),
            spike_min_count=int(table.get("spike_min_count", 20)),
            spike_min_buckets=int(table.get("spike_min_buckets", 5)),
            denial_threshold=int(table.get("denial_threshold", 5)),
            denial_window=_duration(table.get("denial_window", 300.0), f"{w} denial_window"),
        )


class _Group:
    __slots__ = ("count", "first", "last", "secrets")

    def __init__(self, a: Access) -> None:
        self.first = self.last = a.time
        self.count = 0
        self.secrets: dict[str, int] = defaultdict(int)

    def add(self, a: Access) -> None:
        self.last = max(self.last, a.time)
        self.count += a.count
        self.secrets[a.secret] += a.count


def _allowed(address: str, nets: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def _sources(accesses: Sequence[Access], s: Settings) -> list[Alert]:
    known: dict[str, set[str]] = {k: set(v) for k, v in s.known_sources.items()}
    groups: dict[tuple[str, str, str], _Group] = {}
    for a in accesses:
        if not a.address:
            continue
        if s.allowed_networks and not _allowed(a.address, s.allowed_networks):
            key = ("disallowed_network", a.identity, a.address)
        else:
            seen = known.get(a.identity)
            if seen is None:
                known[a.identity] = {a.address}
                continue
            if a.address in seen:
                continue
            key = ("new_source", a.identity, a.address)
        groups.setdefault(key, _Group(a)).add(a)
    alerts = []
    for (rule, identity, address), g in groups.items():
        if rule == "disallowed_network":
            msg = f"{g.count} access(es) from {address}, outside the allowed networks"
            sev = "high"
        else:
            before = ", ".join(sorted(known.get(identity, ()))) or "-"
            msg = f"first access from {address} (known: {before}); {g.count} access(es)"
            sev = "medium"
        alerts.append(_alert(sev, rule, identity, None, address, g, msg))
    return alerts


def _in_hours(t: dt.datetime, s: Settings) -> bool:
    assert s.business_hours is not None
    local = t.astimezone(s.timezone)
    start, end = s.business_hours
    now = local.time()
    if start <= end:
        return local.weekday() in s.business_days and start <= now < end
    # a window over midnight belongs to the day it starts on
    if now >= start:
        return local.weekday() in s.business_days
    return (local.weekday() - 1) % 7 in s.business_days and now < end


def _off_hours(accesses: Sequence[Access], s: Settings) -> list[Alert]:
    if s.business_hours is None:
        return []
    groups: dict[str, _Group] = {}
    for a in accesses:
        if not _in_hours(a.time, s):
            groups.setdefault(a.identity, _Group(a)).add(a)
    start, end = s.business_hours
    window = f"{start.isoformat()}-{end.isoformat()} {s.timezone}"
    alerts = []
    for identity, g in groups.items():
        top = ", ".join(k for k, _ in sorted(g.secrets.items(), key=lambda kv: -kv[1])[:3])
        msg = f"{g.count} access(es) outside business hours ({window}): {top}"
        alerts.append(_alert("medium", "off_hours", identity, None, None, g, msg))
    return alerts


def _spikes(accesses: Sequence[Access], s: Settings) -> list[Alert]:
    if not accesses:
        return []
    width = max(s.spike_bucket, 1e-3)
    t0 = accesses[0].time.timestamp()
    n_buckets = int((accesses[-1].time.timestamp() - t0) // width) + 1
    if n_buckets < s.spike_min_buckets:
        return []
    counts: dict[tuple[str, str], list[int]] = {}
    firsts: dict[tuple[str, str], list[Access]] = defaultdict(list)
    for a in accesses:
        key = (a.identity, a.secret)
        row = counts.setdefault(key, [0] * n_buckets)
        i = int((a.time.timestamp() - t0) // width)
        row[i] += a.count
        firsts[key].append(a)
    alerts = []
    for key, row in counts.items():
        median = statistics.median(row)
        mad = statistics.median(abs(c - median) for c in row) * 1.4826
        spread = max(mad, math.sqrt(max(median, 1.0)))
        limit = max(float(s.spike_min_count), median + s.spike_factor * spread)
        hot = [i for i, c in enumerate(row) if c >= limit]
        if not hot:
            continue
        lo = dt.datetime.fromtimestamp(t0 + hot[0] * width, dt.timezone.utc)
        hi = dt.datetime.fromtimestamp(t0 + (hot[-1] + 1) * width, dt.timezone.utc)
        in_hot = [a for a in firsts[key] if lo <= a.time < hi]
        g = _Group(in_hot[0])
        for a in in_hot:
            g.add(a)
        peak = max(row[i] for i in hot)
        msg = (
            f"peak {peak} per {width:g}s against a median of {median:g} "
            f"(threshold {limit:.1f}); {len(hot)} bucket(s) over it"
        )
        alerts.append(_alert("high", "spike", key[0], key[1], None, g, msg))
    return alerts


def _denials(accesses: Sequence[Access], s: Settings) -> list[Alert]:
    by_identity: dict[str, list[Access]] = defaultdict(list)
    for a in accesses:
        if a.outcome == "denied":
            by_identity[a.identity].append(a)
    alerts = []
    for identity, denied in by_identity.items():
        best = 0
        best_window: tuple[int, int] = (0, 0)
        lo = 0
        for hi, a in enumerate(denied):
            while (a.time - denied[lo].time).total_seconds() > s.denial_window:
                lo += 1
            if hi - lo + 1 > best:
                best, best_window = hi - lo + 1, (lo, hi)
        if best >= s.denial_threshold:
            burst = denied[best_window[0] : best_window[1] + 1]
            g = _Group(burst[0])
            for a in burst:
                g.add(a)
            top = ", ".join(k for k, _ in sorted(g.secrets.items(), key=lambda kv: -kv[1])[:3])
            msg = f"{best} denials within {s.denial_window:g}s: {top}"
            alerts.append(_alert("high", "denial_burst", identity, None, None, g, msg))
    return alerts


def _alert(
    severity: str,
    rule: str,
    identity: str,
    secret: str | None,
    address: str | None,
    g: _Group,
    message: str,
) -> Alert:
    return Alert(severity, rule, identity, secret, address, g.first, g.last, g.count, message)


def analyze(accesses: Iterable[Access], settings: Settings | None = None) -> list[Alert]:
    """Every alert the rules raise over ``accesses``, most severe first."""
    s = settings or Settings()
    ordered = sorted(accesses, key=lambda a: a.time)
    alerts = [
        *_sources(ordered, s),
        *_off_hours(ordered, s),
        *_spikes(ordered, s),
        *_denials(ordered, s),
    ]
    alerts.sort(key=lambda a: (-SEVERITIES.index(a.severity), a.first, a.rule))
    return alerts
