"""Rotation policies: kinds of secrets, ``[[rotation.policies]]`` and the globs they match.

The parts of rotation that need no store: :mod:`leaseline.rotation` (checks, runs) and
:mod:`leaseline.rotation._rotators` (what makes a new version) both build on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import parse_duration
from .._exceptions import ConfigError, LeaselineError
from .._refs import SecretRef, parse

__all__ = [
    "BUILTIN_KINDS",
    "DAY",
    "Kind",
    "Policy",
    "RotationSettings",
    "iso_time",
    "matches",
]

DAY = 86400.0

# -- kinds and policies -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of secret: its maximum age, and/or rotation on every deployment."""

    name: str
    max_age: float | None = None
    per_deploy: bool = False
    #: default rotator for references of this kind (``None``: by store, see _rotators)
    rotator: str | None = None


BUILTIN_KINDS: Mapping[str, Kind] = {
    "llm-api-key": Kind("llm-api-key", 90 * DAY),
    "cloud-credential": Kind("cloud-credential", 30 * DAY),
    "database-password": Kind("database-password", None, per_deploy=True),
}
_PER_DEPLOY = {"deploy", "per-deploy", "every-deploy"}


@dataclass(frozen=True, slots=True)
class Policy:
    """One ``[[rotation.policies]]`` entry, with its kind's defaults applied."""

    match: str
    kind: Kind
    max_age: float | None = None
    per_deploy: bool = False
    rotator: str | None = None
    verify: str | None = None
    grace: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RotationSettings:
    """The ``[rotation]`` section."""

    policies: tuple[Policy, ...] = ()
    kinds: Mapping[str, Kind] = field(default_factory=lambda: dict(BUILTIN_KINDS))
    warn_before: float = 7 * DAY
    deploy_marker: Path = Path(".leaseline/deploy.json")

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> RotationSettings:
        """Validate ``[rotation]``; raises :class:`ConfigError` naming the key path."""
        known = {"policies", "kinds", "warn_before", "deploy_marker", "grace"}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(
                f"[rotation]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        kinds = dict(BUILTIN_KINDS)
        raw_kinds = section.get("kinds", {})
        if not isinstance(raw_kinds, Mapping):
            raise ConfigError('[rotation] kinds: expected a table such as { token = "14d" }')
        for name, spec in raw_kinds.items():
            kinds[str(name)] = _kind(str(name), spec)
        grace = parse_duration(section.get("grace", 0), "rotation.grace")
        raw = section.get("policies", [])
        if not isinstance(raw, list):
            raise ConfigError("[rotation] policies: expected [[rotation.policies]] entries")
        policies = tuple(_policy(i, entry, kinds, grace) for i, entry in enumerate(raw))
        return cls(
            policies=policies,
            kinds=kinds,
            warn_before=parse_duration(section.get("warn_before", "7d"), "rotation.warn_before"),
            deploy_marker=Path(str(section.get("deploy_marker", ".leaseline/deploy.json"))),
        )

    def policy_for(self, ref: str | SecretRef) -> Policy | None:
        """The first policy whose ``match`` covers ``ref``."""
        return next((p for p in self.policies if matches(p.match, ref)), None)


def _kind(name: str, spec: object) -> Kind:
    where = f"rotation.kinds.{name}"
    if isinstance(spec, str | int | float) and not isinstance(spec, bool):
        if isinstance(spec, str) and spec.strip().lower() in _PER_DEPLOY:
            return Kind(name, None, per_deploy=True)
        return Kind(name, parse_duration(spec, where))
    if isinstance(spec, Mapping):
        extra = sorted(set(spec) - {"max_age", "per_deploy", "rotator"})
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}")
        max_age = spec.get("max_age")
        per_deploy = bool(spec.get("per_deploy", False))
        if max_age is None and not per_deploy:
            raise ConfigError(f'{where}: give max_age (e.g. "14d") or per_deploy = true')
        return Kind(
            name,
            None if max_age is None else parse_duration(max_age, f"{where}.max_age"),
            per_deploy,
            str(spec["rotator"]) if spec.get("rotator") else None,
        )
    raise ConfigError(f'{where}: expected a duration ("14d"), "per-deploy" or a table')


def _policy(index: int, entry: object, kinds: Mapping[str, Kind], grace: float) -> Policy:
    where = f"rotation.policies[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table with match and kind")
    known = {"match", "kind", "max_age", "rotator", "verify", "grace", "options"}
    extra = sorted(set(entry) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}; known: {sorted(known)}")
    match, kind_name = entry.get("match"), entry.get("kind")
    if not isinstance(match, str) or "://" not in match:
        raise ConfigError(
            f'{where}.match: expected a reference glob such as "vault://secret/llm/*"'
        )
    try:
        parse(match.replace("*", "x"))
    except LeaselineError as exc:
        raise ConfigError(f"{where}.match: {exc}") from None
    if not isinstance(kind_name, str) or kind_name not in kinds:
        raise ConfigError(
            f"{where}.kind: expected one of {', '.join(sorted(kinds))} "
            "(add custom kinds under [rotation] kinds), got " + repr(kind_name)
        )
    kind = kinds[kind_name]
    max_age, per_deploy = kind.max_age, kind.per_deploy
    if entry.get("max_age") is not None:
        spec = entry["max_age"]
        if isinstance(spec, str) and spec.strip().lower() in _PER_DEPLOY:
            max_age, per_deploy = None, True
        else:
            max_age = parse_duration(spec, f"{where}.max_age")
    options = entry.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}.options: expected a table")
    verify = entry.get("verify")
    if verify is not None and (not isinstance(verify, str) or ":" not in verify):
        raise ConfigError(f'{where}.verify: expected "module:function", got {verify!r}')
    return Policy(
        match=match,
        kind=kind,
        max_age=max_age,
        per_deploy=per_deploy,
        rotator=str(entry["rotator"]) if entry.get("rotator") else kind.rotator,
        verify=verify,
        grace=parse_duration(entry.get("grace", grace), f"{where}.grace"),
        options=dict(options),
    )


# -- globs over references ----------------------------------------------------------------------

GLOB = re.compile(r"\*\*|\*")  # no "?": it starts a reference's options


def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts, pos = [], 0
    for m in GLOB.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        parts.append(".*" if m.group() == "**" else "[^/]*")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts))


def split_field(text: str) -> tuple[str, str | None]:
    base, sep, fld = text.partition("#")
    return base.split("?", 1)[0], (fld if sep else None)


def matches(pattern: str, ref: str | SecretRef) -> bool:
    """Whether the glob ``pattern`` covers ``ref`` (``*`` within a segment, ``**`` across).

    >>> matches("vault://secret/llm/*", "vault://secret/llm/openai#api_key")
    True
    >>> matches("vault://secret/llm/*", "vault://secret/llm/team/openai")
    False
    """
    base, fld = split_field(pattern)
    ref_base, ref_field = split_field(str(ref))
    if fld is not None and ref_field is not None and fld != ref_field:
        return False
    return _glob_regex(base).fullmatch(ref_base) is not None


def is_glob(pattern: str) -> bool:
    return GLOB.search(split_field(pattern)[0]) is not None


# -- time ----------------------------------------------------------------------------------------


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
