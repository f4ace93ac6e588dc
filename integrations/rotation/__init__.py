"""Rotation: policies by secret kind, ages from the stores' own metadata, two-phase rotation.

Policies map reference globs to kinds; a kind has a maximum age (NIST SP 800-57 calls it a
cryptoperiod) or is rotated on every deployment::

    [rotation]
    warn_before = "7d"                          # "due soon" this long before the limit
    deploy_marker = ".leaseline/deploy.json"    # where `rotation run --deploy ID` records deploys
    kinds = { registry-token = "14d" }          # custom kinds (or a table: { max_age = "14d" })

    [[rotation.policies]]
    match = "vault://secret/llm/*"              # * is one path segment, ** any number
    kind = "llm-api-key"                        # 90d; cloud-credential 30d; database-password: deploy
    rotator = "openai-admin-keys"               # from the `leaseline.rotators` entry-point group
    verify = "mypkg.checks:openai_key_works"    # called with the new Secret; False/raise = fail
    grace = "10m"                               # old version stays valid this long after promote

:func:`check` lists every managed reference with its age, limit, due date and status (pure
evaluation in :func:`evaluate`, clock injected). :func:`run` rotates what is due through a
:class:`~leaseline.rotation._rotators.Rotator`: stage, verify, promote, grace window, retire, each step
audited; a failure before promote leaves the old version current.

Policies and globs are in ``rotation._policy``, the rotators and the store side in
``rotation._rotators`` (imported one way: rotators know nothing of this module). Why ~550 lines here: deploy markers,
the pure evaluation, enumeration and the two-phase run are one feature's steps, read in order.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, LeaselineError
from .._refs import SecretRef
from .._secret import Secret
from ..backends import Listable
from ._policy import (
    BUILTIN_KINDS,
    DAY,
    GLOB,
    Kind,
    Policy,
    RotationSettings,
    is_glob,
    iso_time,
    matches,
    split_field,
)
from ._rotators import Job, make_rotator

if TYPE_CHECKING:
    from .._resolver import Resolver

__all__ = [
    "BUILTIN_KINDS",
    "DAY",
    "Check",
    "DeployMarker",
    "Kind",
    "Policy",
    "RotationResult",
    "RotationSettings",
    "Verifier",
    "check",
    "evaluate",
    "managed_references",
    "matches",
    "record_deploy",
    "rotate",
    "run",
]

log = logging.getLogger("leaseline.rotation")
Verifier = Callable[[Secret], object]

# -- deploy markers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeployMarker:
    """The last deployment recorded: per-deploy secrets older than ``at`` are due."""

    id: str
    at: float

    @classmethod
    def read(cls, path: Path) -> DeployMarker | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(str(data["id"]), float(data["at"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"deploy marker {path} is unreadable: {exc}") from None


def record_deploy(path: Path, deploy_id: str, now: float) -> DeployMarker:
    """Record deployment ``deploy_id`` (once: re-recording the same id keeps its time)."""
    current = DeployMarker.read(path)
    if current is not None and current.id == deploy_id:
        return current
    marker = DeployMarker(deploy_id, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"id": marker.id, "at": marker.at}), encoding="utf-8")
    os.replace(tmp, path)
    return marker


# -- evaluation (pure) ---------------------------------------------------------------------------

OK, DUE_SOON, OVERDUE, UNKNOWN, ERROR = "ok", "due-soon", "overdue", "unknown", "error"


@dataclass(frozen=True, slots=True)
class Check:
    """One managed reference against its policy."""

    ref: str
    kind: str
    status: str
    updated_at: float | None = None
    age: float | None = None
    limit: str = ""
    due_at: float | None = None
    detail: str = ""
    version: str | None = None

    @property
    def due(self) -> bool:
        """Whether ``rotation run`` rotates it (overdue or inside the warning window)."""
        return self.status in (OVERDUE, DUE_SOON)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "kind": self.kind,
            "status": self.status,
            "age_seconds": None if self.age is None else round(self.age, 3),
            "limit": self.limit,
            "updated_at": iso_time(self.updated_at),
            "due_at": iso_time(self.due_at),
            "version": self.version,
            "detail": self.detail,
        }


def format_duration(seconds: float) -> str:
    """``"90d"``, ``"12h"``, ``"30s"`` (largest whole unit, for tables)."""
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and (seconds % size == 0 or seconds >= 10 * size):
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def evaluate(
    ref: str,
    policy: Policy,
    updated_at: float | None,
    now: float,
    *,
    warn_before: float,
    deploy: DeployMarker | None = None,
    version: str | None = None,
) -> Check:
    """The status of ``ref`` last changed at ``updated_at`` under ``policy`` at time ``now``.

    The warning window is ``warn_before`` capped at half the maximum age, so a "30s" kind is not
    permanently "due soon" under a "7d" window. Per-deploy kinds are due when they are older than
    the recorded ``deploy``; a per-deploy policy with a ``max_age`` is due on either condition.
    """
    limits = []
    if policy.max_age is not None:
        limits.append(format_duration(policy.max_age))
    if policy.per_deploy:
        limits.append("per deploy")
    limit = " + ".join(limits)
    kind = policy.kind.name
    if updated_at is None:
        return Check(ref, kind, UNKNOWN, limit=limit, version=version, detail="no change time")
    age = max(0.0, now - updated_at)
    due_at: float | None = None
    status, detail = OK, ""
    if policy.max_age is not None:
        due_at = updated_at + policy.max_age
        warn = min(warn_before, policy.max_age / 2)
        if now >= due_at:
            status, detail = OVERDUE, f"older than {format_duration(policy.max_age)}"
        elif now >= due_at - warn:
            status, detail = DUE_SOON, f"due within {format_duration(warn)}"
    if policy.per_deploy:
        if deploy is None:
            detail = detail or "no deploy recorded yet"
        elif updated_at < deploy.at:
            status, detail = OVERDUE, f"not rotated since deploy {deploy.id}"
            due_at = deploy.at if due_at is None else min(due_at, deploy.at)
        elif due_at is None:
            detail = f"rotated for deploy {deploy.id}"
    return Check(ref, kind, status, updated_at, age, limit, due_at, detail, version)


# -- enumeration and checks against the stores ---------------------------------------------------


def _list_prefix(pattern: str) -> tuple[str, str, bool]:
    """(store, locator prefix up to the last ``/`` before the first glob, recursive?)."""
    base, _ = split_field(pattern)
    store, _, locator = base.partition("://")
    first = GLOB.search(locator)
    assert first is not None
    head = locator[: first.start()]
    prefix = head[: head.rfind("/") + 1] if "/" in head else ""
    rest = locator[len(prefix) :]
    return store, prefix, "/" in rest or "**" in rest


def _list_store(resolver: Resolver, store: str, prefix: str, recursive: bool) -> list[str]:
    backend = resolver.backend(store)
    if not isinstance(backend, Listable):
        raise LeaselineError(
            f"store '{store}' ({backend.type}) cannot list secrets, so a glob "
            "policy cannot enumerate it: match concrete references instead",
            store=store,
        )
    out: list[str] = []
    pending = [prefix]
    while pending:
        for name in backend.list(pending.pop()):
            name = str(name)
            if name.endswith("/"):
                if recursive:
                    pending.append(name)
            else:
                out.append(name)
    return sorted(out)


def managed_references(
    resolver: Resolver, settings: RotationSettings
) -> list[tuple[str, Policy | None, str | None]]:
    """Every concrete reference the policies cover, with its (first) policy.

    A concrete ``match`` is itself managed; a glob lists the store under its fixed prefix. A
    listing that fails yields ``(match, None, error message)``.
    """
    seen: dict[str, Policy] = {}
    failures: list[tuple[str, Policy | None, str | None]] = []
    for policy in settings.policies:
        if not is_glob(policy.match):
            seen.setdefault(policy.match, policy)
            continue
        store, prefix, recursive = _list_prefix(policy.match)
        _, fld = split_field(policy.match)
        try:
            names = _list_store(resolver, store, prefix, recursive)
        except LeaselineError as exc:
            failures.append((policy.match, None, exc.message))
            continue
        for name in names:
            ref = f"{store}://{name}" + (f"#{fld}" if fld else "")
            if matches(policy.match, ref) and settings.policy_for(ref) is policy:
                seen.setdefault(ref, policy)
    return [(ref, pol, None) for ref, pol in sorted(seen.items())] + failures


def check(
    resolver: Resolver,
    *,
    settings: RotationSettings | None = None,
    now: float | None = None,
    deploy: DeployMarker | None = None,
) -> list[Check]:
    """Every managed reference against its policy, at ``now`` (default: the resolver's clock).

    >>> [c.status for c in check(resolver, now=time.time() + 40 * 86400)]  # doctest: +SKIP
    ['ok', 'overdue']
    """
    settings = settings or RotationSettings.from_section(resolver.config.section("rotation"))
    at = resolver.clock() if now is None else now
    marker = deploy if deploy is not None else DeployMarker.read(settings.deploy_marker)
    out: list[Check] = []
    for ref, policy, failure in managed_references(resolver, settings):
        if policy is None:
            out.append(Check(ref, "?", ERROR, detail=f"cannot list: {failure}"))
            continue
        try:
            meta = resolver.metadata(ref)
        except LeaselineError as exc:
            out.append(Check(ref, policy.kind.name, ERROR, detail=exc.message))
            continue
        out.append(
            evaluate(
                ref,
                policy,
                meta.updated_at,
                at,
                warn_before=settings.warn_before,
                deploy=marker,
                version=meta.version,
            )
        )
    return out


# -- rotation ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What happened to one reference. ``outcome``: rotated, failed, would-rotate."""

    ref: str
    rotator: str
    outcome: str
    phase: str = ""
    previous_version: str | None = None
    version: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "rotator": self.rotator,
            "outcome": self.outcome,
            "phase": self.phase,
            "previous_version": self.previous_version,
            "version": self.version,
            "message": self.message,
        }


def _load_verifier(spec: str) -> Verifier:
    import importlib

    module, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f'verify hook "{spec}" cannot be loaded: {type(exc).__name__}') from None
    if not callable(fn):
        raise ConfigError(f'verify hook "{spec}" is not callable')
    return fn  # type: ignore[no-any-return]


def rotate(
    resolver: Resolver,
    ref: str,
    policy: Policy | None = None,
    *,
    rotator: str | None = None,
    verify: Verifier | None = None,
    grace: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RotationResult:
    """Rotate one reference: stage, verify, promote, keep the old one ``grace`` seconds, retire.

    ``verify(new_secret)`` returning ``False`` or raising fails the rotation before promote: the
    old version stays current. Every step is an audit event ``rotation`` with its ``phase``.
    """
    policy = policy or Policy(match=ref, kind=Kind("custom"))
    parsed = resolver.parse(ref)
    rot = make_rotator(rotator or policy.rotator, parsed, policy, resolver)
    job = Job(resolver, parsed, policy)
    if verify is None and policy.verify:
        verify = _load_verifier(policy.verify)
    name = rot.name
    emit = _emitter(resolver, parsed, name)

    def failed(phase: str, why: str, previous: str | None, kept: bool = True) -> RotationResult:
        state = "the old version is still current" if kept else why_in_place
        message = f"{phase} failed: {why}; {state}"
        emit(phase, "failed", error=why, previous=previous)
        log.warning("leaseline: rotating %s: %s", parsed.key, message)
        return RotationResult(parsed.key, name, "failed", phase, previous, None, message)

    why_in_place = "the store replaced the credential in place, so the new one is current"
    try:
        staged = rot.stage(job)
    except Exception as exc:
        return failed("stage", _reason(exc), None)
    prev = staged.previous_version
    emit("stage", "ok", secret=staged.secret, previous=prev, version=staged.version)
    try:
        accepted = verify(staged.secret) if verify is not None else True
        reason = "the verify hook returned False"
    except Exception as exc:
        accepted, reason = False, _reason(exc)
    if accepted is False:
        try:
            rot.abort(job, staged)
        except Exception as exc:
            reason += f" (and discarding the staged version failed: {_reason(exc)})"
        return failed("verify", reason, prev, kept=not staged.in_place)
    emit("verify", "ok", secret=staged.secret, previous=prev, version=staged.version)
    try:
        rot.promote(job, staged)
    except Exception as exc:
        try:
            rot.abort(job, staged)
        except Exception:
            pass
        return failed("promote", _reason(exc), prev, kept=not staged.in_place)
    emit("promote", "ok", secret=staged.secret, previous=prev, version=staged.version)
    try:  # this process's readers (and on_rotate callbacks) move to the new version now
        resolver.refresh(parsed)
    except LeaselineError as exc:
        log.warning("leaseline: re-reading %s after promote failed: %s", parsed.key, exc)
    wait = policy.grace if grace is None else grace
    if wait > 0 and not staged.in_place:
        sleep(wait)
    try:
        rot.retire(job, staged)
    except Exception as exc:
        why = _reason(exc)
        emit("retire", "failed", error=why, previous=prev, version=staged.version)
        return RotationResult(
            parsed.key,
            name,
            "failed",
            "retire",
            prev,
            staged.version,
            f"retire failed: {why}; the new version is current, the old one is still valid",
        )
    emit("retire", "ok", previous=prev, version=staged.version)
    return RotationResult(parsed.key, name, "rotated", "retire", prev, staged.version)


def _reason(exc: BaseException) -> str:
    from .. import masking

    text = str(exc) if isinstance(exc, LeaselineError) else f"{type(exc).__name__}: {exc}"
    return masking.masker().mask(text)[:500]


def _emitter(resolver: Resolver, ref: SecretRef, rotator: str) -> Callable[..., None]:
    def emit(
        phase: str,
        outcome: str,
        *,
        secret: Secret | None = None,
        error: str | None = None,
        previous: str | None = None,
        version: str | None = None,
    ) -> None:
        extra = {"phase": phase, "rotator": rotator}
        if previous is not None:
            extra["previous_version"] = previous
        if version is not None:
            extra["version"] = version
        resolver.auditor.emit(
            "rotation",
            ref=ref.key,
            store=ref.store,
            fields=secret.fields if secret is not None else (),
            values={f: secret.reveal(f) for f in secret.fields} if secret is not None else (),
            outcome=outcome,
            error=error,
            extra=extra,
        )

    return emit


def run(
    resolver: Resolver,
    *,
    settings: RotationSettings | None = None,
    deploy: str | None = None,
    dry_run: bool = False,
    refs: Sequence[str] | None = None,
    verify: Mapping[str, Verifier] | Verifier | None = None,
    now: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Check], list[RotationResult]]:
    """Rotate every due reference (overdue or due soon; with ``refs``, only those).

    ``deploy`` records a deployment first, so per-deploy kinds older than it become due.
    ``verify`` is one hook for all, or a mapping reference -> hook (overrides the policies').
    """
    settings = settings or RotationSettings.from_section(resolver.config.section("rotation"))
    at = resolver.clock() if now is None else now
    marker = None
    if deploy is not None:
        marker = (
            DeployMarker(deploy, at)
            if dry_run
            else record_deploy(settings.deploy_marker, deploy, at)
        )
    checks = check(resolver, settings=settings, now=at, deploy=marker)
    wanted = None if refs is None else {resolver.parse(r).key for r in refs}
    results: list[RotationResult] = []
    managed = {resolver.parse(c.ref).key for c in checks}
    for key in sorted((wanted or set()) - managed):
        results.append(
            RotationResult(
                key,
                "-",
                "failed",
                "setup",
                message="not covered by any [[rotation.policies]] match; nothing was changed",
            )
        )
    for item in _targets(checks, wanted, resolver):
        policy = settings.policy_for(item.ref)
        assert policy is not None
        if dry_run:
            results.append(
                RotationResult(item.ref, policy.rotator or "auto", "would-rotate", "", item.version)
            )
            continue
        hook = verify.get(item.ref) if isinstance(verify, Mapping) else verify
        try:
            results.append(rotate(resolver, item.ref, policy, verify=hook, sleep=sleep))
        except LeaselineError as exc:  # no rotator for it, bad hook: nothing was changed
            results.append(
                RotationResult(
                    item.ref,
                    policy.rotator or "auto",
                    "failed",
                    "setup",
                    item.version,
                    message=f"{exc.message}; nothing was changed",
                )
            )
    return checks, results


def _targets(checks: Iterable[Check], wanted: set[str] | None, resolver: Resolver) -> list[Check]:
    out = []
    for item in checks:
        if item.status == ERROR:
            continue
        if wanted is not None:
            if resolver.parse(item.ref).key in wanted:
                out.append(item)
        elif item.due:
            out.append(item)
    return out
