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

Azure: one role assignment per Key Vault secret, the built-in role ``Key Vault Secrets User``
scoped to that secret (``.../vaults/VAULT/secrets/NAME``), never to the vault or a group; the
keys are those of ``az role assignment list`` (``roleDefinitionName``, ``scope``), so that
:func:`compare_role_assignments` can hold the plan against what Azure has.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._refs import parse
from .._stage import policy_name  # the name per-stage child tokens are made with

__all__ = [
    "AZURE_ROLE",
    "Grant",
    "azure_role_assignments",
    "compare",
    "compare_role_assignments",
    "iam_plan",
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
    partition: str | None = None,
    stores: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The IAM policy document for the AWS references among ``refs``, or ``None``."""
    return iam_plan(
        refs,
        store_types=store_types,
        region=region,
        account=account,
        partition=partition,
        stores=stores,
    )[0]


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


_ARN = {
    "aws-sm": re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[^*?]+\Z"),
    "aws-ssm": re.compile(r"arn:aws[a-z-]*:ssm:[a-z0-9-]+:\d{12}:parameter/[^*?]+\Z"),
    "aws-sts": re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[^*?]+\Z"),
}


def iam_plan(
    refs: Iterable[str],
    *,
    store_types: Mapping[str, str],
    region: str = "*",
    account: str = "*",
    partition: str | None = None,
    stores: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """:func:`iam_policy` and the notes on references it could not name exactly.

    A store's own ``region`` (``[stores.NAME] region``) wins over ``region`` for its references,
    as it does when the store calls AWS; the partition follows the region (``cn-*``: ``aws-cn``,
    ``us-gov-*``: ``aws-us-gov``) unless given.
    """
    actions: dict[str, set[str]] = {}
    notes: list[str] = []
    for text in refs:
        ref = parse(text)
        kind = store_types.get(ref.store, ref.store)
        if kind not in _ARN:
            continue
        where = str((stores or {}).get(ref.store, {}).get("region") or region)
        part = partition or _partition(where)
        locator = ref.locator
        if locator.startswith("arn:") or kind == "aws-sts":
            if not _ARN[kind].match(locator):
                what = {"aws-sm": "secret", "aws-ssm": "parameter", "aws-sts": "IAM role"}[kind]
                notes.append(f"{ref.key}: not an exact {what} ARN: no IAM statement planned for it")
                continue
            arn = locator
        elif kind == "aws-sm":
            # Secrets Manager appends six random characters to a secret's ARN
            arn = f"arn:{part}:secretsmanager:{where}:{account}:secret:{locator}-??????"
        else:
            name = locator if locator.startswith("/") else "/" + locator
            arn = f"arn:{part}:ssm:{where}:{account}:parameter{name}"
        action = {
            "aws-sm": "secretsmanager:GetSecretValue",
            "aws-ssm": "ssm:GetParameter",
            "aws-sts": "sts:AssumeRole",
        }[kind]
        actions.setdefault(action, set()).add(arn)
    if not actions:
        return None, notes
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
    return {"Version": "2012-10-17", "Statement": statements}, notes


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


#: the built-in role that reads secret values, and only them
AZURE_ROLE = "Key Vault Secrets User"
SUBSCRIPTION_PLACEHOLDER = "SUBSCRIPTION_ID"
RESOURCE_GROUP_PLACEHOLDER = "RESOURCE_GROUP"
_KV_VAULT = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{1,22}[A-Za-z0-9]\Z")  # as backends/azure.py
_KV_NAME = re.compile(r"[A-Za-z0-9-]{1,127}\Z")


def azure_role_assignments(
    refs: Iterable[str],
    *,
    stores: Mapping[str, Mapping[str, Any]],
    subscription: str | None = None,
    resource_groups: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The role assignments the ``azure-kv`` references among ``refs`` need, and notes.

    ``stores`` are the configured stores (a store with ``vault_url`` reads one fixed vault);
    ``resource_groups`` maps a vault name to its resource group, ``""`` to the default one.
    Without a subscription or a resource group, the scope holds ``SUBSCRIPTION_ID`` /
    ``RESOURCE_GROUP`` and a note says which option fills it.
    """
    groups = dict(resource_groups or {})
    scopes: dict[str, set[str]] = {}
    notes: list[str] = []
    missing: set[str] = set()
    for text in refs:
        ref = parse(text)
        table = stores.get(ref.store) or {}
        if str(table.get("type", ref.store)) != "azure-kv":
            continue
        parts = ref.locator.split("/")
        if table.get("vault_url"):
            host = urllib.parse.urlsplit(str(table["vault_url"])).hostname or ""
            vault, name = host.split(".", 1)[0], parts[0] if len(parts) == 1 else ""
        else:
            vault, name = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
        if not (_KV_VAULT.match(vault) and _KV_NAME.match(name)):
            notes.append(
                f"{ref.key}: not a Key Vault secret (azure-kv://VAULT/NAME, or STORE://NAME for "
                "a store with vault_url): no role assignment planned"
            )
            continue
        group = groups.get(vault) or groups.get("")
        if not subscription:
            missing.add("--azure-subscription")
        if not group:
            missing.add("--azure-resource-group")
        scope = (
            f"/subscriptions/{subscription or SUBSCRIPTION_PLACEHOLDER}"
            f"/resourceGroups/{group or RESOURCE_GROUP_PLACEHOLDER}"
            f"/providers/Microsoft.KeyVault/vaults/{vault}/secrets/{name}"
        )
        scopes.setdefault(scope, set()).add(ref.key)
    if missing:
        notes.append(
            "Azure scopes hold placeholders (SUBSCRIPTION_ID, RESOURCE_GROUP): pass "
            + " and ".join(sorted(missing))
        )
    assignments = [
        {"roleDefinitionName": AZURE_ROLE, "scope": scope, "references": sorted(scopes[scope])}
        for scope in sorted(scopes)
    ]
    return assignments, notes


def az_command(assignment: Mapping[str, Any]) -> str:
    """The ``az role assignment create`` command for one planned assignment."""
    return (
        f'az role assignment create --assignee "$STAGE_IDENTITY" '
        f'--role "{assignment["roleDefinitionName"]}" --scope "{assignment["scope"]}"'
    )


#: roles that can give an identity more Key Vault access than planned, wherever they sit above
_ADMIN_ROLES = frozenset(
    {"Owner", "User Access Administrator", "Role Based Access Control Administrator"}
)


def compare_role_assignments(
    planned: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]]
) -> list[str]:
    """What ``current`` (``az role assignment list --assignee ID --all -o json``) grants beyond
    ``planned`` and what it lacks, as ``grant more/less than planned: ...``.

    Counted as more: a ``Key Vault *`` role on any Key Vault scope or on a scope above a planned
    one (the vault, its resource group, the subscription), and a role that can assign roles
    (Owner...) above a planned scope. Other assignments (storage, compute...) are not the plan's
    business. Scopes compare case-insensitively, as Azure's do.
    """
    want = {(str(a["roleDefinitionName"]), str(a["scope"]).lower()): a for a in planned}
    scopes = {scope for _, scope in want}
    have: dict[tuple[str, str], Mapping[str, Any]] = {}
    for a in current:
        role, scope = str(a.get("roleDefinitionName")), str(a.get("scope", "")).rstrip("/")
        key = (role, scope.lower())
        above = any(s == key[1] or s.startswith(key[1] + "/") for s in scopes)
        vault_role = role.startswith("Key Vault") and (
            above or "/providers/microsoft.keyvault/" in key[1]
        )
        if vault_role or (role in _ADMIN_ROLES and above):
            have[key] = a
    problems = [
        f'grant more than planned: {role} on "{have[(role, scope)].get("scope")}"'
        for role, scope in sorted(set(have) - set(want))
    ]
    problems += [
        f'grant less than planned: no {role} on "{want[(role, scope)]["scope"]}"'
        for role, scope in sorted(set(want) - set(have))
    ]
    return problems
