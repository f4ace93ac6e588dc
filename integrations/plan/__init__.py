"""``leaseline plan``: the least privilege each pipeline stage needs, derived from its files.

:func:`plan` finds the references a pipeline uses (``_sources``: compiled KFP specs,
``leaseline.toml`` aliases, ``leaseline run`` manifests; ``_python``: DAG files and flow code;
``_prefect``: the Prefect blocks that code loads, as saved in a Prefect API) without reading any
secret, groups them by stage, and gives each stage its least Vault/OpenBao policy, IAM document
and Azure role assignments (``_policy``). ``_server`` asks Vault which engine serves a path and
writes policies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._refs import parse
from ._policy import Grant, azure_role_assignments, iam_plan, policy_name, vault_grants, vault_hcl
from ._prefect import BlockDocument, documents
from ._sources import AirflowMapping, Stage, find_stages

__all__ = [
    "AirflowMapping",
    "BlockDocument",
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
    #: Azure role assignments: ``roleDefinitionName``, ``scope`` (one secret), ``references``
    azure: list[dict[str, Any]] = field(default_factory=list)
    #: the stores of Vault type its references name (configured, or a Prefect block's)
    vault_stores: frozenset[str] = frozenset({"vault"})

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
            "azure_role_assignments": self.azure or None,
            "prefect_blocks": sorted(f"{slug}/{name}" for slug, name in self.stage.blocks),
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
    prefect_blocks: list[dict[str, Any]] | None = None,
    prefect_api: str = "",
    azure_subscription: str | None = None,
    azure_resource_groups: Mapping[str, str] | None = None,
) -> list[StagePlan]:
    """The plan for every stage under ``paths``.

    ``stores`` is the config's ``[stores]`` (named stores and their ``type``), ``aliases`` its
    ``[aliases]`` (for manifests' values), ``airflow`` the
    ``LeaselineBackend`` mapping of Variables and Connections, ``mounts`` the server's mounts
    (:meth:`leaseline.plan._server.Vault.mounts`; ``None``: KV v2 assumed). ``prefect_blocks``
    are the block documents of :meth:`leaseline.plan._prefect.PrefectApi.block_documents` (from
    ``prefect_api``; ``None``: no API asked): the blocks flow code loads give their references to
    its stages, and each block no stage loads is listed as a plan of kind ``unused-block``.
    """
    configured = {name: dict(table) for name, table in (stores or {}).items()}
    saved = documents(prefect_blocks or [], stores=configured, aliases=aliases or {})
    for doc in saved.values():
        for name, table in doc.stores.items():
            configured.setdefault(name, table)
    types = {name: str(table.get("type", name)) for name, table in configured.items()}
    stages = find_stages(paths, airflow=airflow, stores=configured, aliases=aliases)
    used = _load_blocks(stages, saved, prefect_blocks is not None, prefect_api)
    for key in sorted(set(saved) - used):
        doc = saved[key]
        stage = Stage(doc.label, "unused-block", prefect_api, set(doc.references))
        stage.notes = [*doc.notes, "no flow or task among the files planned loads this block"]
        stages.append(stage)
    vault_stores = {"vault"} | {name for name, kind in types.items() if kind == "vault"}
    plans = []
    for stage in sorted(stages, key=lambda s: (s.kind == "unused-block", s.source, s.name)):
        if stage.kind == "unused-block":
            plans.append(StagePlan(stage, policy_name(stage.name)))
            continue
        vault = vault_grants(stage.references, vault_stores=vault_stores, mounts=mounts)
        iam, iam_notes = iam_plan(
            stage.references,
            store_types=types,
            region=aws_region,
            account=aws_account,
            stores=configured,
        )
        azure, azure_notes = azure_role_assignments(
            stage.references,
            stores=configured,
            subscription=azure_subscription,
            resource_groups=azure_resource_groups,
        )
        notes = [*vault.notes, *iam_notes, *azure_notes]
        plans.append(
            StagePlan(
                stage,
                policy_name(stage.name),
                vault.grants,
                iam,
                notes,
                azure,
                frozenset(vault_stores),
            )
        )
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


def _load_blocks(
    stages: Iterable[Stage],
    saved: Mapping[tuple[str, str], BlockDocument],
    asked: bool,
    api: str,
) -> set[tuple[str, str]]:
    """Give each stage the references of the blocks its code loads; the blocks used."""
    used: set[tuple[str, str]] = set()
    for stage in stages:
        for key in sorted(stage.blocks):
            label = f"{key[0]}/{key[1]}"
            doc = saved.get(key)
            if doc is None:
                stage.notes.append(
                    f"Prefect block {label} is not saved in the Prefect API at {api}"
                    if asked
                    else f"Prefect block {label}: its reference is saved in the Prefect API: "
                    "pass --prefect-api URL (or set PREFECT_API_URL) to plan it"
                )
                continue
            todo, seen = [key], set()
            while todo:  # the block and the saved store documents it nests
                current = saved.get(todo.pop())
                if current is None or (current.slug, current.name) in seen:
                    continue
                seen.add((current.slug, current.name))
                stage.references |= current.references
                stage.notes += [n for n in current.notes if n not in stage.notes]
                todo += sorted(current.nested)
            used |= seen
    return used


def collisions(plans: Iterable[StagePlan]) -> list[str]:
    """Policy names two or more stages with grants would share (``--apply`` refuses them)."""
    seen: dict[str, int] = {}
    for p in plans:
        if p.grants:
            seen[p.policy] = seen.get(p.policy, 0) + 1
    return sorted(name for name, n in seen.items() if n > 1)


def vault_locators(
    plans: Iterable[StagePlan], vault_stores: Iterable[str] | None = None
) -> set[str]:
    """Every Vault locator the plans name (to look their mounts up); ``vault_stores``: the
    stores of Vault type (default: each plan's own)."""
    given = None if vault_stores is None else set(vault_stores)
    return {
        parse(ref).locator
        for p in plans
        for ref in p.stage.references
        if parse(ref).store in (p.vault_stores if given is None else given)
    }
