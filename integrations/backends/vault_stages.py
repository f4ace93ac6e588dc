"""Per-stage child tokens for the vault store: ``child_token = { policies = "per-stage" }``.

Inside a pipeline stage (``leaseline._stage``), the store reads with a token made for that stage
alone: ``POST auth/token/create/ROLE`` (the token role ``leaseline plan --apply`` writes) with
``policies = [leaseline-STAGE]`` (:func:`leaseline._stage.policy_name`), or the policies an
explicit map gives the stage (``policies = { "DAG/TASK" = ["pol-a"] }``). One token per stage
per process, made on the stage's first read, a child of the per-task token (so revoking that
revokes them too), renewed like it and revoked at close; a forked child makes its own.

This module holds the config rules, the per-process table of stage tokens and the messages;
the HTTP calls stay in :mod:`leaseline.backends.vault`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._exceptions import AccessDenied, ConfigError
from .._stage import policy_name

__all__ = ["StageToken", "StageTokenTable", "child_token_options", "stage_denied"]

PER_STAGE = "per-stage"
DEFAULT_ROLE = "leaseline"
_CHILD_KEYS = {"enabled", "ttl", "policies", "role"}
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}\Z")  # token role and policy names

#: what child_token.policies holds: "per-stage", an explicit stage -> policies map, or None
StagePolicies = str | Mapping[str, tuple[str, ...]] | None


def child_token_options(child: Mapping[str, Any], where: str) -> tuple[StagePolicies, str]:
    """``child_token``'s per-stage settings: (``policies``, token role); raises
    :class:`ConfigError` naming the key and what is expected."""
    unknown = sorted(set(child) - _CHILD_KEYS)
    if unknown:
        raise ConfigError(
            f"{where} child_token: unknown key(s) {', '.join(unknown)}; known keys: "
            f"{', '.join(sorted(_CHILD_KEYS))}"
        )
    role = child.get("role", DEFAULT_ROLE)
    if not isinstance(role, str) or not _NAME.match(role):
        raise ConfigError(
            f"{where} child_token.role: expected a token role name (letters, digits, "
            f"'_', '-', '.'), such as \"{DEFAULT_ROLE}\""
        )
    raw = child.get("policies")
    if raw is None:
        return None, role
    expected = (
        f'expected "{PER_STAGE}" (each stage gets the policy `leaseline plan --apply` writes '
        'for it) or a table of stage = ["policy", ...], such as '
        '{ "llm_training/train" = ["leaseline-llm_training-train"] }'
    )
    if isinstance(raw, str):
        if raw != PER_STAGE:
            raise ConfigError(f"{where} child_token.policies: {expected}; got the string {raw!r}")
        return PER_STAGE, role
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where} child_token.policies: {expected}; got {_kind(raw)}")
    table: dict[str, tuple[str, ...]] = {}
    for stage, policies in raw.items():
        if isinstance(policies, str):
            policies = [policies]
        if (
            not isinstance(policies, list | tuple)
            or not policies
            or not all(isinstance(p, str) and _NAME.match(p) for p in policies)
        ):
            raise ConfigError(
                f'{where} child_token.policies."{stage}": expected a list of policy names '
                f"(letters, digits, '_', '-', '.'), such as [\"{policy_name(str(stage))}\"]"
            )
        table[str(stage)] = tuple(policies)
    return table, role


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an empty table"
    return {list: "a list", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def policies_for(config: StagePolicies, stage: str, store: str) -> tuple[str, ...]:
    """The policies the token of ``stage`` is made with; :class:`AccessDenied` when an explicit
    map does not name the stage (it gets no token at all, rather than the worker's)."""
    if config == PER_STAGE:
        return (policy_name(stage),)
    assert isinstance(config, Mapping)
    found = config.get(stage)
    if found is None:
        known = ", ".join(f'"{s}"' for s in sorted(config)) or "none"
        raise AccessDenied(
            f"stage '{stage}' is not in [stores.{store}] child_token.policies (stages there: "
            f'{known}): add "{stage}" = ["{policy_name(stage)}"], or use policies = '
            f'"{PER_STAGE}"',
            store=store,
        )
    return tuple(found)


@dataclass(frozen=True)
class StageToken:
    stage: str
    token: str
    accessor: str
    policies: tuple[str, ...]
    #: made with the per-task token (revoking that revokes this one too)
    under_child: bool


class StageTokenTable:
    """The stage tokens of one store in one process (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # held while a stage's token is being made
        self._tokens: dict[str, StageToken] = {}
        self._by_token: dict[str, StageToken] = {}
        self._by_lease: dict[str, StageToken] = {}
        self._abandoned: list[StageToken] = []  # replaced by a re-login: revoked at close
        self.unrevoked: dict[str, str] = {}  # after close: stage -> accessor not revoked

    def get(self, stage: str) -> StageToken | None:
        return self._tokens.get(stage)

    def add(self, token: StageToken) -> None:
        self._tokens[token.stage] = token
        self._by_token[token.token] = token

    def holds(self, token: str) -> bool:
        return token in self._by_token

    def of_token(self, token: str | None) -> StageToken | None:
        return self._by_token.get(token or "")

    def issued(self, lease_id: str, token: StageToken) -> None:
        """``lease_id`` was issued under ``token``: renew and revoke it with that token."""
        self._by_lease[lease_id] = token

    def for_lease(self, lease_id: str | None) -> StageToken | None:
        return self._by_lease.get(lease_id or "")

    def abandon(self) -> None:
        """A re-login replaced the per-task token: make the stages' tokens anew (the old ones
        are revoked at close)."""
        with self.lock:
            self._abandoned += self._tokens.values()
            self._tokens = {}

    def accessors(self) -> dict[str, str]:
        with self.lock:
            live = {t.stage: t.accessor for t in self._tokens.values()}
        return {**self.unrevoked, **live}

    def take_all(self) -> list[StageToken]:
        """Every token to revoke at close (the table is empty afterwards)."""
        with self.lock:
            tokens = [*self._abandoned, *self._tokens.values()]
            self._abandoned, self._tokens = [], {}
            self._by_token, self._by_lease = {}, {}
        return tokens


def stage_denied(
    ref: str, path: str, capability: str, token: StageToken, addr: str, store: str
) -> AccessDenied:
    """The denial of a read under a stage's token: the path, the stage, the policies it holds
    and what to do. No value, no token."""
    policies = ", ".join(token.policies)
    return AccessDenied(
        f"{ref}: permission denied on {path} at {addr} for stage '{token.stage}': its "
        f"per-stage token holds only the policies {policies} (and Vault's default), which do "
        f"not grant '{capability}' on \"{path}\". If the stage needs this secret, add the "
        f"reference to the stage's code (or its backend mapping) and run `leaseline plan "
        f"--apply` again; otherwise read it in the stage that owns it",
        ref=ref,
        store=store,
    )
