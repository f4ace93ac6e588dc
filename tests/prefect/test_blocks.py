"""Leaseline's Prefect blocks against a real Prefect API, OpenBao and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import hvac.exceptions
import psycopg
import pytest
from leaseline import InvalidReference
from leaseline.prefect import (
    AwsRoleCredentials,
    DatabaseCredentials,
    LeaselineStore,
    SecretReference,
    revoke_leases,
)
from leaseline.prefect._runs import held_leases
from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler
from pydantic import ValidationError

from tests.prefect.conftest import PrefectServer, store_options, subprocess_env
from tests.servers import DatabaseEngine, MotoServer, OpenBao

ROOT = Path(__file__).resolve().parents[2]


def put_kv(bao: OpenBao, path: str, **fields: str) -> str:
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret=fields, mount_point="secret"
    )
    return f"vault://secret/{path}"


def run_logs(flow_run_id: Any) -> list[str]:
    """Every log message of a flow run (and its task runs) as stored by the Prefect API."""
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(str(flow_run_id))]))
        )
    return [log.message for log in logs]


def lease_alive(bao: OpenBao, lease_id: str) -> bool:
    try:
        bao.client().sys.read_lease(lease_id)
    except hvac.exceptions.InvalidRequest:
        return False
    return True


def block_document(name: str, slug: str) -> str:
    """The saved document as the API returns it to anyone who asks for secrets."""
    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name(name, slug, include_secrets=True)
    return json.dumps(doc.model_dump(mode="json"))


# -- save-time validation --------------------------------------------------------------------


def test_malformed_reference_is_refused_at_save(prefect_server: PrefectServer) -> None:
    with pytest.raises(
        ValidationError, match=r"SecretReference.ref is refused:\ninvalid reference"
    ):
        SecretReference(ref="vault://secret/llm/openai#")
    block = SecretReference(ref="vault://secret/llm/openai#api_key")
    block.ref = "Vault://secret/llm/openai"  # changed after construction: caught by save()
    name = f"bad-{secrets.token_hex(4)}"
    with pytest.raises(InvalidReference, match="store name must be lowercase") as info:
        block.save(name)
    assert "did you mean 'vault'" in str(info.value)
    with pytest.raises(ValueError, match="Unable to find block document"):
        SecretReference.load(name)


def test_values_are_refused_where_references_belong(canary: Any) -> None:
    key = f"sk-proj-{canary.new('k').replace('-', '')}"
    with pytest.raises(ValidationError) as info:
        SecretReference(ref=key)
    assert "looks like a credential" in str(info.value) and key not in str(info.value)
    token = f"s.{secrets.token_urlsafe(24)}"
    with pytest.raises(ValidationError, match=r"options.token looks like a credential"):
        LeaselineStore(options={"addr": "http://127.0.0.1:8200", "token": token})
    with pytest.raises(ValidationError, match="give the whole credential"):
        DatabaseCredentials(ref="vault://database/creds/reader#password", host="h", database="d")
    store = LeaselineStore(store_name="prod-vault", store_type="vault")
    with pytest.raises(ValidationError, match="write it as 'prod-vault://secret/x'"):
        SecretReference(ref="vault://secret/x", store=store)


# -- in a flow, in this process --------------------------------------------------------------


def test_flow_values_masked_leases_revoked_on_success(
    prefect_server: PrefectServer,
    openbao: OpenBao,
    vault_db: DatabaseEngine,
    vault_token_env: str,
    canary: Any,
) -> None:
    value = canary.new()
    ref = put_kv(openbao, f"llm/{secrets.token_hex(4)}", api_key=value)
    store = LeaselineStore(store_name="vault", options=store_options(openbao))
    key = SecretReference(ref=f"{ref}#api_key", store=store)
    db = DatabaseCredentials(
        ref="vault://database/creds/reader",
        store=store,
        host=vault_db.pg.host,
        port=vault_db.pg.port,
        database="postgres",
        query={"sslmode": "disable"},
    )
    seen: dict[str, Any] = {}

    @task
    def count_rows() -> int:
        with psycopg.connect(db.get_url()) as conn:
            row = conn.execute("SELECT count(*) FROM training_rows").fetchone()
        assert row is not None
        return int(row[0])

    @flow(log_prints=True)
    def uses_values() -> int:
        logger = get_run_logger()
        api_key = key.get()
        url = db.get_url()
        logger.info("the key is %s", api_key)
        logger.info(f"connecting to {url}")
        print("printed key:", api_key)
        resolver = db.get_resolver()
        seen["leases"] = [lease.id for _, lease in resolver.leases()]
        seen["user"] = db.get_connect_kwargs()["user"]
        return count_rows()

    state = uses_values(return_state=True)
    assert state.is_completed()
    assert state.result() == 3
    flow_run_id = state.state_details.flow_run_id
    assert seen["leases"] and all(seen["leases"])
    assert not any(lease_alive(openbao, lease) for lease in seen["leases"])
    assert seen["user"] not in vault_db.pg.roles()  # the database user is gone
    assert held_leases(str(flow_run_id)) == []
    logs = "\n".join(run_logs(flow_run_id))
    assert "the key is ***" in logs and "printed key: ***" in logs
    assert value not in logs and "***@" in logs


def test_leases_revoked_when_the_flow_fails_or_crashes(
    prefect_server: PrefectServer,
    openbao: OpenBao,
    vault_db: DatabaseEngine,
    vault_token_env: str,
) -> None:
    store = LeaselineStore(store_name="vault", options=store_options(openbao))
    db = DatabaseCredentials(
        ref="vault://database/creds/reader", store=store, host=vault_db.pg.host, database="x"
    )
    seen: list[str] = []

    class Crash(BaseException):
        pass

    @flow
    def fails(kind: str) -> None:
        db.get_url()
        seen.extend(lease.id or "" for _, lease in db.get_resolver().leases())
        if kind == "fail":
            raise ValueError("training diverged")
        raise Crash("killed")

    state = fails("fail", return_state=True)
    assert state.is_failed()
    assert seen and not any(lease_alive(openbao, lease) for lease in seen)

    seen.clear()
    with pytest.raises(Crash):
        fails("crash")
    assert seen and not any(lease_alive(openbao, lease) for lease in seen)
    assert revoke_leases in fails.on_crashed_hooks


def test_audit_events_carry_flow_and_task_run_ids(
    prefect_server: PrefectServer,
    openbao: OpenBao,
    vault_token_env: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    canary: Any,
) -> None:
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv("LEASELINE_AUDIT__SINK", f"file://{audit}")
    path = f"llm/{secrets.token_hex(4)}"
    put_kv(openbao, path, api_key=canary.new())
    # a store name of its own: a fresh resolver, built with the audit sink above
    store = LeaselineStore(store_name="audited", store_type="vault", options=store_options(openbao))
    key = SecretReference(ref=f"audited://secret/{path}#api_key", store=store)

    @task
    def read_key() -> int:
        return len(key.get())

    @flow
    def audited() -> int:
        return read_key()

    state = audited(return_state=True)
    assert state.is_completed()
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    reads = [e for e in events if e.get("ref") == f"audited://secret/{path}"]
    assert reads, events
    prefect_ctx = reads[0]["actor"]["prefect"]
    assert prefect_ctx["flow_run_id"] == str(state.state_details.flow_run_id)
    assert uuid.UUID(prefect_ctx["task_run_id"])
    assert prefect_ctx["task_name"] == "read_key"


# -- blocks saved here, loaded and used in a new process --------------------------------------

SCRIPT = r"""
import json, sys
from prefect import flow, get_run_logger
from prefect.blocks.core import Block
from leaseline.prefect import DatabaseCredentials
import psycopg

names = json.loads(sys.argv[1])

@flow
def train(db_name: str, key_slug: str) -> int:
    key = Block.load(key_slug)            # by slug/name
    db = DatabaseCredentials.load(db_name)  # by class and name
    value = key.get()
    logger = get_run_logger()
    logger.info("resolved key %s for %s", value, db.get_url())
    with psycopg.connect(db.get_url()) as conn:
        rows = conn.execute("SELECT text FROM training_rows").fetchall()
    logger.info(f"trained on {len(rows)} rows with key={value}")
    return len(rows)

state = train(names["db"], names["key"], return_state=True)
db = DatabaseCredentials.load(names["db"])
print(json.dumps({
    "rows": state.result(),
    "flow_run_id": str(state.state_details.flow_run_id),
    "leases_after_run": len(db.get_resolver().leases()),
}))
"""


def test_blocks_hold_references_and_work_in_a_new_process(
    prefect_server: PrefectServer,
    openbao: OpenBao,
    vault_db: DatabaseEngine,
    vault_token_env: str,
    canary: Any,
) -> None:
    value = canary.new()
    path = f"llm/{secrets.token_hex(4)}"
    put_kv(openbao, path, api_key=value)
    suffix = secrets.token_hex(3)
    store = LeaselineStore(store_name="vault", options=store_options(openbao))
    store.save(f"vault-{suffix}")
    SecretReference(ref=f"vault://secret/{path}#api_key", store=store).save(f"key-{suffix}")
    DatabaseCredentials(
        ref="vault://database/creds/reader",
        store=store,
        host=vault_db.pg.host,
        port=vault_db.pg.port,
        database="postgres",
        query={"sslmode": "disable"},
    ).save(f"db-{suffix}")

    for name, slug in [
        (f"vault-{suffix}", "leaseline-store"),
        (f"key-{suffix}", "leaseline-secret-reference"),
        (f"db-{suffix}", "leaseline-database-credentials"),
    ]:
        document = block_document(name, slug)
        assert value not in document and openbao.root_token not in document
        assert "vault://" in document or "env://" in document

    roles_before = vault_db.pg.roles()
    names = {"db": f"db-{suffix}", "key": f"leaseline-secret-reference/key-{suffix}"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(names)],
        env=subprocess_env(prefect_server, openbao),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    print(proc.stdout, proc.stderr)  # scanned by the canary plugin
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == 3
    assert result["leases_after_run"] == 0
    logs = "\n".join(run_logs(result["flow_run_id"]))
    assert "resolved key *** for postgresql://***:***@" in logs
    assert "with key=***" in logs and value not in logs
    assert not {r for r in vault_db.pg.roles() - roles_before if r.startswith("v-")}


def test_secret_options_are_hidden_from_readers_without_include_secrets(
    prefect_server: PrefectServer, canary: Any
) -> None:
    """Prefect hides a block's secret fields from a reader who does not ask for secrets; for a
    dict of secrets it hides only what the schema names with ``.*``. ``secret_options`` was
    named bare, so its values came back in clear to every API reader."""
    literal = canary.new("secret-id")
    name = f"store-{secrets.token_hex(3)}"
    LeaselineStore(
        store_name="vault",
        options={"addr": "http://127.0.0.1:8200", "auth": {"method": "approle", "role_id": "r"}},
        secret_options={"auth.secret_id": literal},
    ).save(name)
    with get_client(sync_client=True) as client:
        hidden = client.read_block_document_by_name(name, "leaseline-store", include_secrets=False)
    shown = json.dumps(hidden.model_dump(mode="json"))
    assert literal not in shown
    assert "auth.secret_id" in shown  # the key stays visible, the value does not
    assert "secret_options.*" in hidden.block_schema.fields["secret_fields"]
    # the block itself, loaded with its secrets, still has the value for its resolver
    loaded = LeaselineStore.load(name)
    assert loaded.table()["auth"]["secret_id"] == literal


def test_prefect_block_register_finds_the_blocks(prefect_server: PrefectServer) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "leaseline.prefect"],
        env={**subprocess_env_base(), **prefect_server.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with get_client(sync_client=True) as client:
        for slug in (
            "leaseline-store",
            "leaseline-secret-reference",
            "leaseline-database-credentials",
            "leaseline-aws-role-credentials",
        ):
            assert client.read_block_type_by_slug(slug).slug == slug


def subprocess_env_base() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}


# -- AWS --------------------------------------------------------------------------------------


def test_aws_role_credentials_session(aws_env: MotoServer) -> None:
    role = AwsRoleCredentials(ref="arn:aws:iam::123456789012:role/train", region_name="us-east-1")
    assert role.ref == "aws-sts://arn:aws:iam::123456789012:role/train"
    arn = role.get_client("sts").get_caller_identity()["Arn"]
    assert ":assumed-role/train/" in arn


def test_async_flow_aget_lease_revoked(
    prefect_server: PrefectServer,
    openbao: OpenBao,
    vault_db: DatabaseEngine,
    vault_token_env: str,
) -> None:
    store = LeaselineStore(store_name="vault", options=store_options(openbao))
    user = SecretReference(ref="vault://database/creds/reader#username", store=store)
    seen: list[str] = []

    @flow
    async def async_training() -> bool:
        name = await user.aget()
        seen.extend(lease.id or "" for _, lease in user.get_resolver().leases())
        return name in vault_db.pg.roles()

    assert asyncio.run(async_training()) is True
    assert seen and not any(lease_alive(openbao, lease) for lease in seen)
