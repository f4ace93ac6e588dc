"""Smoke tests: the session's real servers start and are wired as the suite expects."""

from __future__ import annotations

import json
import secrets
import time

import hvac
import pytest

from tests.canary import CanaryFixture
from tests.servers import DatabaseEngine, MotoServer, OpenBao, Postgres, TcpProxy

pytestmark = pytest.mark.integration


def test_openbao_health_and_kv2(openbao: OpenBao, canary: CanaryFixture) -> None:
    c = openbao.client()
    assert c.is_authenticated()
    health = c.sys.read_health_status(method="GET")
    assert health["initialized"] and not health["sealed"]
    value = canary.new("kv2")
    c.secrets.kv.v2.create_or_update_secret(
        path="llm/openai", secret={"api_key": value}, mount_point="secret"
    )
    read = c.secrets.kv.v2.read_secret_version(
        path="llm/openai", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"]["api_key"] == value


def test_audit_log_receives_hmacd_lines(openbao: OpenBao, canary: CanaryFixture) -> None:
    before = len(openbao.audit_lines())
    value = canary.new("audit")
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret(path="audit/probe", secret={"v": value})
    c.secrets.kv.v2.read_secret_version(
        path="audit/probe", mount_point="secret", raise_on_deleted_version=True
    )
    lines = openbao.audit_lines()
    assert len(lines) > before
    paths = {rec.get("request", {}).get("path") for rec in lines[before:]}
    assert "secret/data/audit/probe" in paths
    # values are HMAC'd by default: the canary plugin (which watches the audit log) stays quiet
    assert value not in openbao.audit_log.read_text()


def test_kv1_mount(openbao: OpenBao, canary: CanaryFixture) -> None:
    c = openbao.client()
    value = canary.new("kv1")
    c.secrets.kv.v1.create_or_update_secret(path="app/db", secret={"pw": value}, mount_point="kv1")
    assert c.secrets.kv.v1.read_secret(path="app/db", mount_point="kv1")["data"]["pw"] == value


def test_approle_login(openbao: OpenBao) -> None:
    assert openbao.seeds is not None
    s = openbao.seeds
    c = hvac.Client(url=openbao.addr)
    resp = c.auth.approle.login(role_id=s.role_id, secret_id=s.secret_id)
    assert s.policy in resp["auth"]["policies"]
    assert c.is_authenticated()
    # the seeded policy may create child tokens and read KV
    child = c.auth.token.create(ttl="5m", policies=[s.policy])
    assert child["auth"]["client_token"]
    c.secrets.kv.v2.read_secret_version(
        path="llm/openai", mount_point="secret", raise_on_deleted_version=True
    )


def test_jwt_login(openbao: OpenBao) -> None:
    assert openbao.seeds is not None
    s = openbao.seeds
    c = hvac.Client(url=openbao.addr)
    resp = c.auth.jwt.jwt_login(role=s.jwt_role, jwt=s.mint_jwt(sub="ci-job-7"), path=s.jwt_mount)
    assert s.policy in resp["auth"]["policies"]
    assert resp["auth"]["metadata"]["role"] == s.jwt_role
    with pytest.raises(hvac.exceptions.InvalidRequest):  # wrong audience is refused
        c.auth.jwt.jwt_login(role=s.jwt_role, jwt=s.mint_jwt(aud="someone-else"), path="jwt")


def test_token_with_policy_is_denied_elsewhere(openbao: OpenBao) -> None:
    token = openbao.token_with_policy('path "secret/data/only/*" { capabilities = ["read"] }')
    c = openbao.client(token)
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.kv.v2.read_secret_version(
            path="llm/openai", mount_point="secret", raise_on_deleted_version=True
        )


def test_database_creds_log_in(vault_db: DatabaseEngine, postgres: Postgres) -> None:
    c = vault_db.bao.client()
    resp = c.read(vault_db.creds_path())
    assert resp["lease_id"].startswith("database/creds/reader/")
    assert resp["renewable"] and resp["lease_duration"] == 3600
    user, pw = resp["data"]["username"], resp["data"]["password"]
    assert user in postgres.roles()
    with postgres.connect(user, pw) as conn:
        rows = conn.execute("SELECT id, text FROM public.training_rows ORDER BY id").fetchall()
    assert len(rows) == 3
    c.sys.revoke_lease(resp["lease_id"])
    deadline = time.monotonic() + 10
    while user in postgres.roles() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert user not in postgres.roles()


def test_short_ttl_and_static_roles(vault_db: DatabaseEngine, postgres: Postgres) -> None:
    c = vault_db.bao.client()
    vault_db.create_db_role("short", default_ttl="5s", max_ttl="10s")
    resp = c.read(vault_db.creds_path("short"))
    assert resp["lease_duration"] == 5
    name = "static-" + secrets.token_hex(3)
    vault_db.create_static_role(name, username=f"svc_{name[-6:]}", rotation_period="1h")
    creds = c.read(vault_db.static_creds_path(name))["data"]
    with postgres.connect(creds["username"], creds["password"]) as conn:
        assert conn.execute("SELECT count(*) FROM public.training_rows").fetchone() == (3,)


def test_moto_secretsmanager(aws_env: MotoServer, canary: CanaryFixture) -> None:
    import boto3

    value = canary.new("aws")
    sm = boto3.client("secretsmanager")  # from AWS_* in the environment only
    sm.create_secret(Name="prod/openai", SecretString=json.dumps({"api_key": value}))
    got = aws_env.client("secretsmanager").get_secret_value(SecretId="prod/openai")
    assert json.loads(got["SecretString"])["api_key"] == value


def test_freeze_thaw_and_proxy(openbao: OpenBao) -> None:
    import requests

    proxy = TcpProxy.start("127.0.0.1", openbao.port)
    try:
        assert requests.get(f"{proxy.addr}/v1/sys/health", timeout=5).status_code == 200
        proxy.refuse()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{proxy.addr}/v1/sys/health", timeout=5)
        proxy.refuse(mode="reset")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{proxy.addr}/v1/sys/health", timeout=5)
        proxy.accept()
        assert requests.get(f"{proxy.addr}/v1/sys/health", timeout=5).status_code == 200
        assert proxy.connections == 2
    finally:
        proxy.stop()
    openbao.freeze()
    try:
        with pytest.raises(requests.Timeout):
            requests.get(f"{openbao.addr}/v1/sys/health", timeout=0.5)
    finally:
        openbao.thaw()
    assert requests.get(f"{openbao.addr}/v1/sys/health", timeout=5).status_code == 200
