"""``leaseline plan``: the least privilege each pipeline stage needs, derived from its files.

:func:`plan` finds the references a pipeline uses (``_sources``: DAG files, flow code, compiled
KFP specs, ``leaseline.toml`` aliases, ``leaseline run`` manifests) without reading any secret,
groups them by stage, and gives each stage its least Vault/OpenBao policy and IAM document
(``_policy``). ``_server`` asks Vault which engine serves a path and writes policies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._refs import parse
from ._policy import Grant, iam_policy, policy_name, vault_grants, vault_hcl
from ._sources import AirflowMapping, Stage, find_stages

__all__ = [
    "AirflowMapping",
    "Grant",
    "StagePlan",
    "collisions",
    "plan",
    "policy_name",
    "vault_locators",
]


@dataclass
class StagePlan:
    """One stage, its references and the least policies that serve them."""

    stage: Stage
    policy: str  #: the Vault policy name, ``leaseline-STAGE``
    grants: list[Grant] = field(default_factory=list)
    iam: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def hcl(self) -> str:
        from ._policy import VaultPlan

        return vault_hcl(VaultPlan(self.grants))

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage.name,
            "kind": self.stage.kind,
            "source": self.stage.source,
            "references": sorted(self.stage.references),
            "vault_policy_name": self.policy if self.grants else None,
            "vault_policy": self.hcl if self.grants else None,
            "iam_policy": self.iam,
            "notes": [*self.stage.notes, *self.notes],
        }


def plan(
    paths: Iterable[str | Path],
    *,
    stores: Mapping[str, Mapping[str, Any]] | None = None,
    aliases: Mapping[str, str] | None = None,
    airflow: AirflowMapping | None = None,
    mounts: Mapping[str, int | None] | None = None,
    aws_region: str = "*",
    aws_account: str = "*",
) -> list[StagePlan]:
    """The plan for every stage under ``paths``.

    ``stores`` is the config's ``[stores]`` (named stores and their ``type``), ``aliases`` its
    ``[aliases]`` (for manifests' values), ``airflow`` the
    ``LeaselineBackend`` mapping of Variables and Connections, ``mounts`` the server's mounts
    (:meth:`leaseline.plan._server.Vault.mounts`; ``None``: KV v2 assumed).
    """
    configured = dict(stores or {})
    types = {name: str(table.get("type", name)) for name, table in configured.items()}
    stages = find_stages(paths, airflow=airflow, stores=configured, aliases=aliases)
    vault_stores = {"vault"} | {name for name, kind in types.items() if kind == "vault"}
    plans = []
    for stage in sorted(stages, key=lambda s: (s.source, s.name)):
        vault = vault_grants(stage.references, vault_stores=vault_stores, mounts=mounts)
        iam = iam_policy(
            stage.references, store_types=types, region=aws_region, account=aws_account
        )
        plans.append(StagePlan(stage, policy_name(stage.name), vault.grants, iam, vault.notes))
    owners: dict[str, list[StagePlan]] = {}
    for p in plans:
        if p.grants:
            owners.setdefault(p.policy, []).append(p)
    for same in owners.values():
        if len(same) > 1:
            for p in same:
                others = ", ".join(f"{o.stage.name} ({o.stage.source})" for o in same if o is not p)
                p.notes.append(f"policy name {p.policy} is also the name of {others}")
    return plans


def collisions(plans: Iterable[StagePlan]) -> list[str]:
    """Policy names two or more stages with grants would share (``--apply`` refuses them)."""
    seen: dict[str, int] = {}
    for p in plans:
        if p.grants:
            seen[p.policy] = seen.get(p.policy, 0) + 1
    return sorted(name for name, n in seen.items() if n > 1)


def vault_locators(
    plans: Iterable[StagePlan], vault_stores: Iterable[str] = ("vault",)
) -> set[str]:
    """Every Vault locator the plans name (to look their mounts up)."""
    stores = set(vault_stores)
    return {
        parse(ref).locator
        for p in plans
        for ref in p.stage.references
        if parse(ref).store in stores
    }
