"""Azure RBAC in the plan: ``Key Vault Secrets User`` on each exact secret, one assignment per
secret, no wildcard; the output formats and ``--check`` against ``az role assignment list``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from leaseline.plan import plan
from leaseline.plan._policy import azure_role_assignments, compare_role_assignments

from tests.cli.conftest import base_env, leaseline

SUB = "00000000-1111-2222-3333-444444444444"
KV = "/providers/Microsoft.KeyVault/vaults"
STORES = {"kv": {"type": "azure-kv", "vault_url": "https://fixed-vault.vault.azure.net"}}
REFS = [
    "azure-kv://ml-keys/openai-key",
    "azure-kv://ml-keys/openai-key?version=3d31e6c4b0f24f5e9a4c0c2f0d1a2b3c",  # same secret
    "azure-kv://data-keys/warehouse#password",
    "kv://hf-token",  # a store with one fixed vault
    "vault://secret/llm/openai#api_key",  # not Azure: no assignment
]


def test_one_assignment_per_secret_scoped_to_the_exact_secret() -> None:
    assignments, notes = azure_role_assignments(
        REFS, stores=STORES, subscription=SUB, resource_groups={"": "ml-rg", "data-keys": "data-rg"}
    )
    assert notes == []
    assert [(a["roleDefinitionName"], a["scope"]) for a in assignments] == [
        ("Key Vault Secrets User", f"/subscriptions/{SUB}/resourceGroups/data-rg{KV}/data-keys/secrets/warehouse"),
        ("Key Vault Secrets User", f"/subscriptions/{SUB}/resourceGroups/ml-rg{KV}/fixed-vault/secrets/hf-token"),
        ("Key Vault Secrets User", f"/subscriptions/{SUB}/resourceGroups/ml-rg{KV}/ml-keys/secrets/openai-key"),
    ]  # fmt: skip
    assert assignments[2]["references"] == [
        "azure-kv://ml-keys/openai-key",
        "azure-kv://ml-keys/openai-key?version=3d31e6c4b0f24f5e9a4c0c2f0d1a2b3c",
    ]
    assert not any("*" in a["scope"] for a in assignments)


def test_without_subscription_or_group_the_scope_says_what_to_pass() -> None:
    assignments, notes = azure_role_assignments(["azure-kv://ml-keys/openai-key"], stores={})
    assert assignments[0]["scope"] == (
        f"/subscriptions/SUBSCRIPTION_ID/resourceGroups/RESOURCE_GROUP{KV}/ml-keys/secrets/openai-key"
    )
    assert notes == [
        "Azure scopes hold placeholders (SUBSCRIPTION_ID, RESOURCE_GROUP): pass "
        "--azure-resource-group and --azure-subscription"
    ]


def test_a_reference_that_names_no_single_secret_gets_a_note_not_a_wider_scope() -> None:
    assignments, notes = azure_role_assignments(
        ["azure-kv://ml-keys", "azure-kv://ml-keys/a/b", "kv://x/y"],
        stores=STORES,
        subscription=SUB,
        resource_groups={"": "rg"},
    )
    assert assignments == []
    assert len(notes) == 3
    assert notes[0] == (
        "azure-kv://ml-keys: not a Key Vault secret (azure-kv://VAULT/NAME, or STORE://NAME for a "
        "store with vault_url): no role assignment planned"
    )


def flow(folder: Path) -> Path:
    path = folder / "flow.py"
    path.write_text(
        textwrap.dedent(
            """
            from leaseline.prefect import SecretReference
            from prefect import flow, task

            @task
            def embed():
                return SecretReference(ref="azure-kv://ml-keys/openai-key").get()

            @task
            def load():
                return SecretReference(ref="azure-kv://data-keys/warehouse#password").get()

            @flow
            def nightly():
                embed(); load()
            """
        )
    )
    return path


def test_cli_formats_show_the_assignments(tmp_path: Path) -> None:
    code, env = flow(tmp_path), base_env(tmp_path)
    azure = ["--azure-subscription", SUB, "--azure-resource-group", "ml-rg"]
    azure += ["--azure-resource-group", "data-keys=data-rg"]
    doc = leaseline("plan", str(code), "--format", "json", *azure, env=env)
    assert doc.returncode == 0, doc.stderr
    stages = {s["stage"]: s for s in json.loads(doc.stdout)}
    scope = f"/subscriptions/{SUB}/resourceGroups/ml-rg{KV}/ml-keys/secrets/openai-key"
    assert stages["nightly/embed"]["azure_role_assignments"] == [
        {
            "roleDefinitionName": "Key Vault Secrets User",
            "scope": scope,
            "references": ["azure-kv://ml-keys/openai-key"],
        }
    ]
    assert stages["nightly/embed"]["notes"] == []
    assert stages["nightly/embed"]["vault_policy"] is None

    hcl = leaseline("plan", str(code), *azure, env=env).stdout
    assert "# Azure role assignments for nightly/embed (one per secret):\n" in hcl
    assert (
        '#   az role assignment create --assignee "$STAGE_IDENTITY" '
        f'--role "Key Vault Secrets User" --scope "{scope}"\n'
    ) in hcl

    table = leaseline("plan", str(code), "--format", "table", *azure, env=env).stdout
    rows = [line.split(None, 2) for line in table.splitlines()]
    assert [
        "nightly/embed",
        "azure-kv://ml-keys/openai-key",
        f"Key Vault Secrets User {scope}",
    ] in rows

    bad = leaseline("plan", str(code), "--azure-resource-group", "=rg", env=env)
    assert bad.returncode == 2
    assert "expected RG or VAULT=RG" in bad.stderr


def az_list(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    """What `az role assignment list --assignee ID --all -o json` prints (the keys compared)."""
    return [
        {"principalType": "ServicePrincipal", "roleDefinitionName": role, "scope": scope}
        for role, scope in pairs
    ]


def test_check_compares_with_az_role_assignment_list(tmp_path: Path) -> None:
    code, env = flow(tmp_path), base_env(tmp_path)
    rg = f"/subscriptions/{SUB}/resourceGroups/ml-rg"
    embed_scope = f"{rg}{KV}/ml-keys/secrets/openai-key"
    load_scope = f"{rg}{KV}/data-keys/secrets/warehouse"
    exact = tmp_path / "embed.json"
    exact.write_text(json.dumps(az_list(("Key Vault Secrets User", embed_scope.upper()))))
    wide = tmp_path / "load.json"
    wide.write_text(
        json.dumps(
            az_list(
                ("Key Vault Secrets User", f"{rg}{KV}/data-keys"),  # the whole vault: more
                ("Storage Blob Data Reader", f"{rg}/providers/Microsoft.Storage/x"),  # not ours
            )
        )
    )
    args = ["plan", str(code), "--check", "--azure-subscription", SUB]
    args += ["--azure-resource-group", "ml-rg", "--azure-current", f"nightly/embed={exact}"]
    only_embed = leaseline(*args, env=env)  # no Vault asked: no stage has a Vault grant
    assert only_embed.returncode == 1
    assert "stage nightly/embed" not in only_embed.stderr
    assert "stage nightly/load: Azure role assignments are not checked" in only_embed.stderr

    both = leaseline(*args, "--azure-current", f"nightly/load={wide}", env=env)
    assert both.returncode == 1
    assert (
        "stage nightly/load: Azure role assignments grant more than planned: Key Vault Secrets "
        f'User on "{rg}{KV}/data-keys"'
    ) in both.stderr
    assert f'grant less than planned: no Key Vault Secrets User on "{load_scope}"' in both.stderr
    assert "Storage" not in both.stderr
    assert "1 stage policy(ies) differ" in both.stderr

    without_check = [a for a in args if a != "--check"]
    refused = leaseline(*without_check, env=env)
    assert refused.returncode == 2
    assert "--azure-current is compared with the plan by --check" in refused.stderr
    not_json = tmp_path / "not.json"
    not_json.write_text("{}")
    bad = leaseline(*args, "--azure-current", f"nightly/load={not_json}", env=env)
    assert bad.returncode == 2
    assert "is not a list of role assignments" in bad.stderr

    wide.write_text(json.dumps(az_list(("Key Vault Secrets User", load_scope))))
    same = leaseline(*args, "--azure-current", f"nightly/load={wide}", env=env)
    assert same.returncode == 0, same.stderr


def test_an_owner_above_the_secret_is_more_than_planned() -> None:
    scope = f"/subscriptions/{SUB}/resourceGroups/rg{KV}/v/secrets/s"
    planned = [{"roleDefinitionName": "Key Vault Secrets User", "scope": scope}]
    current = az_list(
        ("Key Vault Secrets User", scope),
        ("Owner", f"/subscriptions/{SUB}/resourceGroups/rg"),
        ("Owner", f"/subscriptions/{SUB}/resourceGroups/other"),  # elsewhere: not this plan's
    )
    assert compare_role_assignments(planned, current) == [
        f'grant more than planned: Owner on "/subscriptions/{SUB}/resourceGroups/rg"'
    ]


def test_plan_of_a_named_azure_store_from_config(tmp_path: Path) -> None:
    code = tmp_path / "job.py"
    code.write_text('from prefect import flow\n\n@flow\ndef job():\n    return "kv://hf-token"\n')
    [only] = plan([code], stores=STORES, azure_subscription=SUB, azure_resource_groups={"": "rg"})
    assert only.stage.name == "job"
    assert [a["scope"] for a in only.azure] == [
        f"/subscriptions/{SUB}/resourceGroups/rg{KV}/fixed-vault/secrets/hf-token"
    ]


def test_the_azure_example_gets_one_exact_scope_per_stage_and_secret(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "azure" / "nightly_flow.py"
    plans = plan([example], azure_subscription=SUB, azure_resource_groups={"": "ml-rg"})
    rg = f"/subscriptions/{SUB}/resourceGroups/ml-rg{KV}"
    assert {p.stage.name: [a["scope"] for a in p.azure] for p in plans} == {
        "nightly-embeddings/embed": [f"{rg}/ml-keys/secrets/openai-key"],
        "nightly-embeddings/load-rows": [f"{rg}/ml-data/secrets/warehouse"],
    }
    assert all(p.grants == [] and p.iam is None and p.notes == [] for p in plans)
