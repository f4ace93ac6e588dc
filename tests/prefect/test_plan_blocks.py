"""``leaseline plan --prefect-api``: leaseline's blocks saved in a real Prefect API planned for the
flows whose code loads them; block documents only (references), no secret read or printed."""

from __future__ import annotations

import json
import secrets
import sys
import textwrap
from pathlib import Path
from typing import Any

import leaseline.prefect as prefect_blocks
import pytest
from leaseline.plan._prefect import BLOCK_TYPES
from leaseline.prefect import (
    AwsRoleCredentials,
    DatabaseCredentials,
    LeaselineStore,
    SecretReference,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentCreate

from tests.cli.conftest import base_env, leaseline
from tests.prefect.conftest import PrefectServer

ROLE = "arn:aws:iam::123456789012:role/train"


def test_the_plan_knows_every_block_type_and_its_slug() -> None:
    blocks = {name: getattr(prefect_blocks, name) for name in prefect_blocks.__all__}
    slugs = {
        name: cls._block_type_slug
        for name, cls in blocks.items()
        if hasattr(cls, "_block_type_slug")
    }
    assert dict(BLOCK_TYPES) == slugs


def save_unchecked(name: str, like: str, slug: str, data: dict[str, Any]) -> None:
    """Save ``data`` as a block document of ``slug`` through the API, bypassing the block's own
    checks (as an older leaseline, another client or a hand-written request could)."""
    with get_client(sync_client=True) as client:
        model = client.read_block_document_by_name(like, slug, include_secrets=False)
        client.create_block_document(
            BlockDocumentCreate(
                name=name,
                data=data,
                block_schema_id=model.block_schema_id,
                block_type_id=model.block_type_id,
            )
        )


@pytest.fixture
def saved(prefect_server: PrefectServer, canary: Any) -> dict[str, str]:
    """Blocks saved through the API; their names are unique to this test."""
    tag = secrets.token_hex(4)
    names = {
        k: f"{k}-{tag}"
        for k in ("openai", "warehouse", "role", "unused", "bad", "pasted", "nostore", "word")
    }
    names["literal"] = canary.new("literal-credential")
    store = LeaselineStore(
        store_name="prod",
        store_type="vault",
        options={"addr": "http://127.0.0.1:8200", "token": "env://PROD_VAULT_TOKEN"},
        secret_options={
            "auth.secret_id": names["literal"]
        },  # Prefect stores it; plan never shows it
    )
    store.save(f"prod-store-{tag}")
    SecretReference(ref="vault://secret/llm/openai#api_key").save(names["openai"])
    DatabaseCredentials(
        ref="prod://database/creds/reader", store=store, host="db", database="ml"
    ).save(names["warehouse"])
    AwsRoleCredentials(ref=ROLE).save(names["role"])
    SecretReference(ref="vault://secret/ml/never-loaded#k").save(names["unused"])
    slug = BLOCK_TYPES["SecretReference"]
    save_unchecked(names["bad"], names["openai"], slug, {"ref": "vault://secret/../llm/openai"})
    # A value saved where its reference belongs (an API key pasted into the block, past the
    # block's own check): Prefect keeps a block's non-secret fields in clear in its events table,
    # which the canary plugin searches, so this one is not a canary; the test looks for it itself.
    names["value"] = f"sk-proj-{secrets.token_hex(24)}"
    save_unchecked(names["pasted"], names["openai"], slug, {"ref": names["value"]})
    save_unchecked(names["nostore"], names["openai"], slug, {"ref": "nostore://x/y"})
    save_unchecked(names["word"], names["openai"], slug, {"ref": "openai-key"})  # no such alias
    names["store"] = f"prod-store-{tag}"
    return names


def flow_code(folder: Path, names: dict[str, str]) -> Path:
    path = folder / "flows.py"
    path.write_text(
        textwrap.dedent(
            f"""
            from leaseline.prefect import AwsRoleCredentials, DatabaseCredentials, SecretReference
            from prefect import flow, task

            @task
            def embed():
                return SecretReference.load("{names["openai"]}").get()

            @task
            def load_rows():
                with DatabaseCredentials.load("{names["warehouse"]}").lease() as db:
                    return db.url

            @flow(name="nightly")
            def nightly_run():
                AwsRoleCredentials.load("{names["role"]}").get_boto3_session()
                SecretReference.load("{names["bad"]}")
                SecretReference.load("{names["pasted"]}")
                SecretReference.load("{names["nostore"]}")
                SecretReference.load("{names["word"]}")
                SecretReference.load("missing-{names["openai"]}")
                embed()
                load_rows()
            """
        )
    )
    return path


def test_blocks_saved_in_the_api_are_planned_for_the_stages_that_load_them(
    prefect_server: PrefectServer, saved: dict[str, str], canary: Any, tmp_path: Path
) -> None:
    (tmp_path / "code").mkdir()
    code = flow_code(tmp_path / "code", saved)
    env = base_env(tmp_path)
    result = leaseline(
        "plan", str(code), "--format", "json", "--prefect-api", prefect_server.api_url, env=env
    )
    assert result.returncode == 0, result.stderr
    for value in (saved["literal"], saved["value"]):
        assert value not in result.stdout + result.stderr
    entries = {e["stage"]: e for e in json.loads(result.stdout)}

    embed = entries["nightly/embed"]
    assert embed["prefect_blocks"] == [f"leaseline-secret-reference/{saved['openai']}"]
    assert embed["references"] == ["vault://secret/llm/openai#api_key"]
    assert embed["vault_policy"].startswith('path "secret/data/llm/openai" {')

    rows = entries["nightly/load_rows"]
    # the block's own store: 'prod' is a Vault store, and it logs in with env://PROD_VAULT_TOKEN
    assert rows["references"] == ["env://PROD_VAULT_TOKEN", "prod://database/creds/reader"]
    assert rows["vault_policy"].startswith('path "database/creds/reader" {')

    flow_level = entries["nightly"]
    assert flow_level["kind"] == "flow"
    assert flow_level["references"] == [f"aws-sts://{ROLE}"]
    assert flow_level["iam_policy"]["Statement"][0]["Resource"] == [ROLE]
    slug = "leaseline-secret-reference"
    assert flow_level["notes"] == [
        f"Prefect block {slug}/{saved['bad']}: its ref is malformed (expected "
        "STORE://LOCATOR[?OPTIONS][#FIELD]); no policy is planned for it (fix the block: save "
        "it again with a valid reference)",
        f"Prefect block {slug}/missing-{saved['openai']} is not saved in the Prefect API at "
        f"{prefect_server.api_url}",
        f"Prefect block {slug}/{saved['nostore']}: its ref names store 'nostore', which is "
        "neither configured (leaseline.toml [stores], the block's store) nor a store type; no "
        "policy is planned for it (fix the block: save it again with a valid reference)",
        f"Prefect block {slug}/{saved['pasted']}: its ref looks like a credential (OpenAI API "
        "key), not a reference: move the value to a store; no policy is planned for it (fix the "
        "block: save it again with a valid reference)",
        f"Prefect block {slug}/{saved['word']}: its ref is neither STORE://LOCATOR nor an alias "
        "in leaseline.toml's [aliases]; no policy is planned for it (fix the block: save it "
        "again with a valid reference)",
    ]

    unused = entries[f"{slug}/{saved['unused']}"]
    assert unused["kind"] == "unused-block"
    assert unused["references"] == ["vault://secret/ml/never-loaded#k"]
    assert unused["vault_policy"] is None
    assert f"leaseline-store/{saved['store']}" not in entries  # nested in a block that is used

    table = leaseline(
        "plan", str(code), "--format", "table", "--prefect-api", prefect_server.api_url, env=env
    )
    assert table.returncode == 0, table.stderr
    for value in (saved["literal"], saved["value"]):
        assert value not in table.stdout + table.stderr
    hcl = leaseline("plan", str(code), "--prefect-api", prefect_server.api_url, env=env).stdout
    assert f"#   loads Prefect block {slug}/{saved['openai']}\n" in hcl
    assert (
        f"# Prefect block {slug}/{saved['unused']} (saved in {prefect_server.api_url}, unused)"
        in hcl
    )


def test_prefect_api_alone_takes_prefect_api_url_and_without_it_blocks_are_noted(
    prefect_server: PrefectServer, saved: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "code").mkdir()
    code = flow_code(tmp_path / "code", saved)
    env = {**base_env(tmp_path), "PREFECT_API_URL": prefect_server.api_url}
    result = leaseline("plan", str(code), "--format", "json", "--prefect-api", env=env)
    assert result.returncode == 0, result.stderr
    stages = {e["stage"]: e for e in json.loads(result.stdout)}
    assert stages["nightly/embed"]["references"] == ["vault://secret/llm/openai#api_key"]

    offline = leaseline("plan", str(code), "--format", "json", env=env)
    assert offline.returncode == 0, offline.stderr
    embed = {e["stage"]: e for e in json.loads(offline.stdout)}["nightly/embed"]
    assert embed["references"] == []
    assert embed["notes"] == [
        f"Prefect block leaseline-secret-reference/{saved['openai']}: its reference is saved in "
        "the Prefect API: pass --prefect-api URL (or set PREFECT_API_URL) to plan it"
    ]


def test_an_unreachable_or_wrong_prefect_api_is_a_clear_error(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    (tmp_path / "f.py").write_text("")
    down = leaseline("plan", str(tmp_path), "--prefect-api", "http://127.0.0.1:9/api", env=env)
    assert down.returncode == 5
    assert "the Prefect API at http://127.0.0.1:9/api is unreachable" in down.stderr
    wrong = leaseline("plan", str(tmp_path), "--prefect-api", "ftp://x", env=env)
    assert wrong.returncode == 2
    assert "--prefect-api (or PREFECT_API_URL) must be http(s)://HOST:PORT/api" in wrong.stderr
    unset = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    alone = leaseline("plan", str(tmp_path), "--prefect-api", env=unset)
    assert alone.returncode == 2
    assert "give the API's URL" in alone.stderr


def test_the_prefect_example_plans_its_blocks_per_task(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    """examples/prefect loads its blocks by the flow's parameters (``DatabaseCredentials.load
    (db_block)``): the parameters' defaults, passed on to the tasks, name the blocks."""
    examples = Path(__file__).resolve().parents[2] / "examples" / "prefect"
    sys.path.insert(0, str(examples))
    try:
        from blocks import save_blocks  # examples/prefect/blocks.py
    finally:
        sys.path.remove(str(examples))
    save_blocks("http://127.0.0.1:8200", "db.internal", 5432)
    result = leaseline(
        "plan", str(examples / "flow.py"), "--format", "json",
        "--prefect-api", prefect_server.api_url, env=base_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stages = {e["stage"]: e for e in json.loads(result.stdout) if e["kind"] != "unused-block"}
    assert set(stages) == {"train-and-describe/load_rows", "train-and-describe/describe"}
    rows, describe = stages["train-and-describe/load_rows"], stages["train-and-describe/describe"]
    assert rows["references"] == ["env://VAULT_TOKEN", "vault://database/creds/reader"]
    assert rows["vault_policy"].startswith('path "database/creds/reader" {')
    assert describe["references"] == ["env://VAULT_TOKEN", "vault://secret/llm/openai#api_key"]
    assert describe["vault_policy"].startswith('path "secret/data/llm/openai" {')
    assert 'path "database/creds/reader"' not in describe["vault_policy"]
