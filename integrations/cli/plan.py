"""``leaseline plan PATH...``: the least Vault, IAM and Azure grants per pipeline stage, no secret
read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from . import Options, fail


def _backend_kwargs(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        data = json.loads(text)
    except ValueError as exc:
        fail(f"--airflow-backend-kwargs: not JSON ({str(exc).splitlines()[0]})")
    if not isinstance(data, dict):
        fail("--airflow-backend-kwargs: expected a JSON object, as in [secrets] backend_kwargs")
    return data


@click.command("plan")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hcl", "json", "table"]),
    default="hcl",
    show_default=True,
    help="hcl: per stage its references and Vault policy (and IAM JSON, az role assignment "
    "commands); json: one document; table: stage, reference, grant.",
)
@click.option(
    "--airflow-backend-kwargs",
    metavar="JSON|@FILE",
    help="The LeaselineBackend's backend_kwargs, to map Variable.get/Connection.get keys to "
    "references (variables_ref, connections_ref, connections).",
)
@click.option(
    "--addr",
    metavar="URL",
    help="Ask this Vault/OpenBao which engine (KV v1/v2, database...) serves each path "
    "(sys/internal/ui/mounts; reads no secret). Default: assume KV v2.",
)
@click.option(
    "--apply",
    is_flag=True,
    help="Write each stage's policy to Vault as leaseline-STAGE (VAULT_ADDR/--addr, VAULT_TOKEN).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Compare each stage's leaseline-STAGE policy in Vault (and --azure-current role "
    "assignments) with the plan; exit 1 when one grants more or less than planned (or is "
    "missing).",
)
@click.option("--aws-region", default="*", show_default=True, help="Region in IAM ARNs.")
@click.option("--aws-account", default="*", show_default=True, help="Account id in IAM ARNs.")
@click.option(
    "--prefect-api",
    metavar="URL",
    is_flag=False,
    flag_value="PREFECT_API_URL",
    help="Read leaseline's Prefect blocks saved in this Prefect API (block documents only: "
    "references, no secret) and plan them for the flows that load them. Alone (--prefect-api "
    "after the paths): PREFECT_API_URL.",
)
@click.option(
    "--azure-subscription",
    metavar="ID",
    help="Subscription id in Azure role assignment scopes (default: the placeholder "
    "SUBSCRIPTION_ID).",
)
@click.option(
    "--azure-resource-group",
    "azure_resource_groups",
    metavar="[VAULT=]RG",
    multiple=True,
    help="Resource group of the key vaults (VAULT=RG for one vault; repeatable). Default: the "
    "placeholder RESOURCE_GROUP.",
)
@click.option(
    "--azure-current",
    metavar="STAGE=FILE",
    multiple=True,
    help="With --check: a stage identity's role assignments, as `az role assignment list "
    "--assignee ID --all -o json` prints them (repeatable).",
)
@click.pass_context
def plan(
    ctx: click.Context,
    paths: tuple[str, ...],
    fmt: str,
    airflow_backend_kwargs: str | None,
    addr: str | None,
    apply: bool,
    check: bool,
    aws_region: str,
    aws_account: str,
    prefect_api: str | None,
    azure_subscription: str | None,
    azure_resource_groups: tuple[str, ...],
    azure_current: tuple[str, ...],
) -> None:
    """Print, per pipeline stage, the references it uses and the least policy that serves them.

    \b
    PATH is a file or a folder: Airflow DAG files and flow code (Python, read with ast, never
    run), compiled KFP pipeline specs (YAML), leaseline.toml aliases and `leaseline run`
    manifests; with --prefect-api, the Prefect blocks that flow code loads. No secret is read:
    the references come from the files and the block documents.

    \b
    Examples:
      leaseline plan examples/
      leaseline plan dags/ --airflow-backend-kwargs @backend_kwargs.json --format json
      leaseline plan pipeline.yaml --addr https://vault:8200 --apply
      leaseline plan flows/ --prefect-api http://prefect:4200/api --format table
      leaseline plan flows/ --azure-subscription SUB --azure-resource-group ml-rg

    \b
    Exit codes: 0 ok, 1 --check found a policy (or Azure role assignments) that differs from
    the plan, 2 usage or config error, 4 denied, 5 Vault or the Prefect API unavailable.
    """
    from .._config import load_config
    from ..plan import AirflowMapping, collisions, vault_locators
    from ..plan import plan as make_plan
    from ..plan._prefect import PrefectApi
    from ..plan._server import Vault

    opts = ctx.find_object(Options) or Options()
    config = load_config(opts.config)
    kwargs = _backend_kwargs(airflow_backend_kwargs)
    options: dict[str, Any] = {
        "stores": config.stores,
        "aliases": config.aliases,
        "airflow": AirflowMapping.from_kwargs(kwargs) if kwargs else None,
        "aws_region": aws_region,
        "aws_account": aws_account,
        "azure_subscription": azure_subscription,
        "azure_resource_groups": _resource_groups(azure_resource_groups),
    }
    if prefect_api is not None:
        url = (
            os.environ.get("PREFECT_API_URL", "")
            if prefect_api == "PREFECT_API_URL"
            else prefect_api
        )
        if not url:
            fail("--prefect-api: give the API's URL (http://HOST:4200/api) or set PREFECT_API_URL")
        api = PrefectApi(url)
        options["prefect_blocks"] = api.block_documents()
        options["prefect_api"] = api.shown
    plans = make_plan(paths, **options)
    if apply and check:
        fail("--apply and --check: choose one (--check after --apply finds nothing)")
    shared = collisions(plans) if apply or check else []
    if shared:
        fail(
            f"stages would share the policy name(s) {', '.join(shared)}: plan them separately "
            "(one PATH per pipeline) or rename a DAG/pipeline; nothing was written"
        )
    if azure_current and not check:
        fail("--azure-current is compared with the plan by --check: add --check")
    current = _azure_current(azure_current)
    needs_vault = addr or apply or (check and any(p.grants for p in plans))
    vault = Vault(addr) if needs_vault else None
    if vault is not None:
        mounts = vault.mounts(vault_locators(plans))
        plans = make_plan(paths, mounts=mounts, **options)
    if fmt == "json":
        click.echo(json.dumps([p.as_dict() for p in plans], indent=2))
    elif fmt == "table":
        _table(plans)
    else:
        _hcl(plans)
    if apply and vault is not None:
        for p in plans:
            if p.grants:
                vault.write_policy(p.policy, p.hcl)
                click.echo(f"leaseline: wrote policy {p.policy}", err=True)
        _write_token_role(vault, config, [p.policy for p in plans if p.grants])
    if check:
        _check(vault, plans, current)


def _write_token_role(vault: Any, config: Any, policies: list[str]) -> None:
    """The token role per-stage child tokens are made with (``child_token.role``)."""
    from ..plan._server import worker_policy

    if not policies:
        return
    roles = {
        str((t.get("child_token") or {}).get("role") or "leaseline")
        for n, t in config.stores.items()
        if t.get("type", n) == "vault" and isinstance(t.get("child_token"), dict)
    } or {"leaseline"}
    for role in sorted(roles):
        allowed = vault.write_token_role(role, policies)
        click.echo(
            f"leaseline: wrote token role {role} (allowed policies: {', '.join(allowed)}); "
            "a worker's login needs this policy to hand each stage its own token:",
            err=True,
        )
        click.echo(worker_policy(role), err=True, nl=False)


def _resource_groups(given: tuple[str, ...]) -> dict[str, str]:
    groups: dict[str, str] = {}
    for item in given:
        vault, _, group = item.rpartition("=")
        if not group or (vault == "" and "=" in item):
            fail(f"--azure-resource-group {item!r}: expected RG or VAULT=RG")
        groups[vault] = group
    return groups


def _azure_current(given: tuple[str, ...]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for item in given:
        stage, _, path = item.partition("=")
        if not stage or not path:
            fail(f"--azure-current {item!r}: expected STAGE=FILE")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(
                f"--azure-current {stage}: cannot read {path} as JSON ({str(exc).splitlines()[0]})"
            )
        if not isinstance(data, list) or not all(isinstance(a, dict) for a in data):
            fail(
                f"--azure-current {stage}: {path} is not a list of role assignments (write it "
                "with `az role assignment list --assignee ID --all -o json`)"
            )
        found[stage] = data
    return found


def _check(vault: Any, plans: list[Any], azure: dict[str, list[Any]]) -> None:
    from ..plan._policy import compare, compare_role_assignments, parse_hcl

    differs = 0
    for p in plans:
        problems = []
        if p.grants:
            policy = vault.read_policy(p.policy)
            found = (
                ["is missing from Vault: write it with `leaseline plan --apply`"]
                if policy is None
                else compare(p.grants, parse_hcl(policy))
            )
            problems += [f"{p.policy} {problem}" for problem in found]
        if p.azure:
            current = azure.get(p.stage.name)
            found = (
                [
                    "are not checked: pass --azure-current STAGE=FILE (`az role assignment list "
                    "--assignee ID --all -o json`)"
                ]
                if current is None
                else compare_role_assignments(p.azure, current)
            )
            problems += [f"Azure role assignments {problem}" for problem in found]
        for problem in problems:
            click.echo(f"leaseline: stage {p.stage.name}: {problem}", err=True)
        differs += bool(problems)
    unknown = sorted(set(azure) - {p.stage.name for p in plans if p.azure})
    if unknown:
        fail(f"--azure-current: no stage with Azure references is named {', '.join(unknown)}")
    if differs:
        fail(f"{differs} stage policy(ies) differ from the plan", 1)
    click.echo("leaseline: every stage's policy matches the plan", err=True)


def _hcl(plans: list[Any]) -> None:
    from ..plan._policy import az_command

    for p in plans:
        if p.stage.kind == "unused-block":
            click.echo(f"# Prefect block {p.stage.name} (saved in {p.stage.source}, unused)")
        else:
            click.echo(f"# stage {p.stage.name} ({p.stage.kind}, {p.stage.source})")
        for block in sorted(p.stage.blocks):
            click.echo(f"#   loads Prefect block {block[0]}/{block[1]}")
        for ref in sorted(p.stage.references):
            click.echo(f"#   uses {ref}")
        for note in [*p.stage.notes, *p.notes]:
            click.echo(f"#   note: {note}")
        if p.grants:
            click.echo(f"# policy {p.policy}")
            click.echo(p.hcl, nl=False)
        if p.iam:
            click.echo(f"# IAM policy for {p.stage.name}:")
            for line in json.dumps(p.iam, indent=2).splitlines():
                click.echo(f"#   {line}")
        if p.azure:
            click.echo(f"# Azure role assignments for {p.stage.name} (one per secret):")
            for assignment in p.azure:
                click.echo(f"#   {az_command(assignment)}")
        click.echo()


def _table(plans: list[Any]) -> None:
    rows = [("STAGE", "REFERENCE", "GRANT")]
    for p in plans:
        for grant in p.grants:
            for ref in grant.references or ("-",):
                rows.append((p.stage.name, ref, f"{','.join(grant.capabilities)} {grant.path}"))
        for statement in (p.iam or {}).get("Statement", []):
            for resource in statement["Resource"]:
                rows.append((p.stage.name, "-", f"{statement['Action'][0]} {resource}"))
        for assignment in p.azure:
            for ref in assignment["references"]:
                role, scope = assignment["roleDefinitionName"], assignment["scope"]
                rows.append((p.stage.name, ref, f"{role} {scope}"))
        if p.stage.kind == "unused-block":
            for ref in sorted(p.stage.references) or ["-"]:
                rows.append((p.stage.name, ref, "(Prefect block no stage loads: no policy)"))
        elif not p.grants and not p.iam and not p.azure:
            for ref in sorted(p.stage.references):
                rows.append(
                    (p.stage.name, ref, "(no store policy: not a Vault, AWS or Azure reference)")
                )
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for row in rows:
        click.echo(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip())
