"""The least policy for a stage's references: Vault/OpenBao HCL and an AWS IAM document.

Vault: ``read`` on each exact path the store reads (KV v2 ``MOUNT/data/PATH``, KV v1 and dynamic
engines' ``MOUNT/creds/ROLE`` as they are), ``update`` on ``sys/leases/renew`` and
``sys/leases/revoke`` only when a dynamic credential is among them, and the token's own
management (renew, revoke and look up itself; create the per-task child token). Whether a mount
is KV v1 or v2 is known only to the server: without ``mounts`` a path that is not a dynamic
engine's is taken as KV v2, and the plan says so.

AWS: ``secretsmanager:GetSecretValue`` on the exact ARN when the reference names one, else on
the name's ARN pattern with the ``-??????`` suffix Secrets Manager appends; ``ssm:GetParameter``
on the parameter's ARN; ``sts:AssumeRole`` on the role ARN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._refs import parse
from .._stage import policy_name  # the name per-stage child tokens are made with

__all__ = [
    "Grant",
    "compare",
    "iam_policy",
    "parse_hcl",
    "policy_name",
    "vault_grants",
    "vault_hcl",
]

#: path segments after the mount that name a dynamic engine's credential endpoint
_DYNAMIC = frozenset({"creds", "static-creds", "sts", "issue", "sign"})
_TOKEN_SELF: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("auth/token/lookup-self", ("read",)),
    ("auth/token/renew-self", ("update",)),
    ("auth/token/revoke-self", ("update",)),
    ("auth/token/create", ("update",)),
)
_LEASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sys/leases/renew", ("update",)),
    ("sys/leases/revoke", ("update",)),
)


@dataclass(frozen=True)
class Grant:
    """One path and its capabilities, with the references that need it."""

    path: str
    capabilities: tuple[str, ...]
    references: tuple[str, ...] = ()


@dataclass
class VaultPlan:
    grants: list[Grant] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def vault_grants(
    refs: Iterable[str],
    *,
    vault_stores: Iterable[str] = ("vault",),
    mounts: Mapping[str, int | None] | None = None,
) -> VaultPlan:
    """The grants for the Vault references among ``refs``.

    ``mounts`` maps a mount path (``secret/``) to its KV version (1 or 2) or ``None`` (not KV),
    as the server reports it; without it, KV v2 is assumed (and noted) for non-dynamic paths.
    """
    stores = set(vault_stores)
    paths: dict[str, set[str]] = {}
    dynamic = False
    assumed: set[str] = set()
    for text in refs:
        ref = parse(text)
        if ref.store not in stores:
            continue
        locator = ref.locator
        mount, kv = _mount_of(locator, mounts)
        rest = locator[len(mount) :]
        second = rest.split("/", 1)[0]
        if second in _DYNAMIC and kv in (None, 0):
            path, dynamic = locator, True
        elif kv in (1, None):  # KV v1, or another engine the server named
            path = locator
        else:
            if kv == 0:
                assumed.add(mount)
            path = f"{mount}data/{rest}"
        paths.setdefault(path, set()).add(ref.key)
    plan = VaultPlan()
    if not paths:
        return plan
    for path in sorted(paths):
        plan.grants.append(Grant(path, ("read",), tuple(sorted(paths[path]))))
    for path, caps in (_LEASES if dynamic else ()) + _TOKEN_SELF:
        plan.grants.append(Grant(path, caps))
    if assumed:
        why = (
            "(no server asked): pass --addr to look the mounts up"
            if mounts is None
            else "(the server named no mount for it: missing, or hidden from the token)"
        )
        plan.notes.append(f"{', '.join(sorted(assumed))} taken as KV v2 {why}")
    return plan


def _mount_of(locator: str, mounts: Mapping[str, int | None] | None) -> tuple[str, int | None]:
    """The mount serving ``locator`` and its KV version (``None``: not KV; ``0``: unknown)."""
    for mount in sorted(mounts or {}, key=len, reverse=True):
        if locator.startswith(mount):
            return mount, (mounts or {})[mount]
    return locator.split("/", 1)[0] + "/", 0


def vault_hcl(plan: VaultPlan) -> str:
    """The grants as a Vault/OpenBao ACL policy."""
    blocks = []
    for grant in plan.grants:
        caps = ", ".join(json.dumps(c) for c in grant.capabilities)
        why = f"  # {', '.join(grant.references)}" if grant.references else ""
        blocks.append(f'path "{grant.path}" {{{why}\n  capabilities = [{caps}]\n}}')
    return "\n".join(blocks) + ("\n" if blocks else "")


def iam_policy(
    refs: Iterable[str],
    *,
    store_types: Mapping[str, str],
    region: str = "*",
    account: str = "*",
    partition: str = "aws",
) -> dict[str, Any] | None:
    """The IAM policy document for the AWS references among ``refs``, or ``None``."""
    actions: dict[str, set[str]] = {}
    for text in refs:
        ref = parse(text)
        kind = store_types.get(ref.store, ref.store)
        if kind == "aws-sm":
            name = ref.locator
            arn = (
                name
                if name.startswith("arn:")
                else f"arn:{partition}:secretsmanager:{region}:{account}:secret:{name}-??????"
            )
            actions.setdefault("secretsmanager:GetSecretValue", set()).add(arn)
        elif kind == "aws-ssm":
            name = ref.locator if ref.locator.startswith("/") else "/" + ref.locator
            arn = (
                ref.locator
                if ref.locator.startswith("arn:")
                else f"arn:{partition}:ssm:{region}:{account}:parameter{name}"
            )
            actions.setdefault("ssm:GetParameter", set()).add(arn)
        elif kind == "aws-sts":
            actions.setdefault("sts:AssumeRole", set()).add(ref.locator)
    if not actions:
        return None
    statements = []
    for action in sorted(actions):
        sid = "".join(part.capitalize() for part in action.replace(":", " ").split())
        statements.append(
            {
                "Sid": sid,
                "Effect": "Allow",
                "Action": [action],
                "Resource": sorted(actions[action]),
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


_PATH_BLOCK = re.compile(r'path\s+"([^"]+)"\s*\{(.*?)\n?\s*\}', re.DOTALL)
_CAPABILITIES = re.compile(r"capabilities\s*=\s*\[([^\]]*)\]")


def parse_hcl(text: str) -> dict[str, frozenset[str]]:
    """``path "P" { capabilities = [...] }`` blocks of an ACL policy: path -> capabilities."""
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    found: dict[str, frozenset[str]] = {}
    for match in _PATH_BLOCK.finditer(text):
        caps = _CAPABILITIES.search(match.group(2))
        names = re.findall(r'"([^"]+)"', caps.group(1)) if caps else []
        found[match.group(1)] = found.get(match.group(1), frozenset()) | frozenset(names)
    return found


def compare(planned: Iterable[Grant], current: Mapping[str, frozenset[str]]) -> list[str]:
    """What ``current`` grants beyond ``planned`` (``more: ...``) and what it lacks (``less: ...``)."""
    want = {g.path: frozenset(g.capabilities) for g in planned}
    problems = []
    for path in sorted(set(want) | set(current)):
        extra = current.get(path, frozenset()) - want.get(path, frozenset())
        missing = want.get(path, frozenset()) - current.get(path, frozenset())
        if extra:
            problems.append(f'grants more than planned: {", ".join(sorted(extra))} on "{path}"')
        if missing:
            problems.append(
                f'grants less than planned: no {", ".join(sorted(missing))} on "{path}"'
            )
    return problems
