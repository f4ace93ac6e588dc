"""The vault store against a real OpenBao (and PostgreSQL behind its database engine)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import hvac.exceptions
import leaseline
import psycopg
import pytest
from leaseline import AccessDenied, BackendUnavailable, Resolver, SecretNotFound
from leaseline._config import Config

from tests.servers import DatabaseEngine, OpenBao


def vault_resolver(bao: OpenBao, auth: dict[str, Any] | None = None, **resolver: Any) -> Resolver:
    store: dict[str, Any] = {"addr": bao.addr}
    if auth is None:
        store["token"] = bao.root_token
    else:
        store["auth"] = auth
    return Resolver(Config.from_mapping({"stores": {"vault": store}, "resolver": resolver}))


def approle(bao: OpenBao) -> dict[str, Any]:
    assert bao.seeds is not None
    return {
        "method": "approle",
        "role_id": bao.seeds.role_id,
        "secret_id": bao.seeds.new_secret_id(bao),
    }


def _putter(bao: OpenBao, mount: str, v2: bool) -> Callable[..., str]:
    client = bao.client()

    def put(fields: dict[str, str], ref: str | None = None) -> str:
        path = ref.split("://", 1)[1].split("/", 1)[1] if ref else f"conf/{secrets.token_hex(6)}"
        if v2:
            client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=fields, mount_point=mount
            )
        else:
            client.secrets.kv.v1.create_or_update_secret(
                path=path, secret=fields, mount_point=mount
            )
        return f"vault://{mount}/{path}"

    return put


def test_kv_v1_and_v2_through_the_same_form(openbao: OpenBao, canary: Any) -> None:
    v1, v2 = canary.new(), canary.new()
    c = openbao.client()
    c.secrets.kv.v1.create_or_update_secret(
        path="llm/same", secret={"api_key": v1}, mount_point="kv1"
    )
    c.secrets.kv.v2.create_or_update_secret(
        path="llm/same", secret={"api_key": v2}, mount_point="secret"
    )
    with vault_resolver(openbao) as r:
        assert r.resolve("vault://kv1/llm/same#api_key") == v1
        assert r.resolve("vault://secret/llm/same#api_key") == v2
        assert r.resolve("vault://secret/llm/same") == v2  # one field: no #field needed


def test_kv_v2_version_pin(openbao: OpenBao, canary: Any) -> None:
    old, new = canary.new(), canary.new()
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret(
        path="llm/pinned", secret={"k": old}, mount_point="secret"
    )
    c.secrets.kv.v2.create_or_update_secret(
        path="llm/pinned", secret={"k": new}, mount_point="secret"
    )
    with vault_resolver(openbao) as r:
        current = r.get("vault://secret/llm/pinned")
        first = int(current.version or 0) - 1
        assert r.resolve("vault://secret/llm/pinned#k") == new
        assert r.resolve(f"vault://secret/llm/pinned?version={first}#k") == old


def test_approle_and_jwt_logins(openbao: OpenBao, canary: Any) -> None:
    value = canary.new()
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="llm/login", secret={"api_key": value}, mount_point="secret"
    )
    assert openbao.seeds is not None
    with vault_resolver(openbao, approle(openbao)) as r:
        assert r.resolve("vault://secret/llm/login#api_key") == value
    jwt = openbao.seeds.mint_jwt()
    import os

    os.environ["LEASELINE_TEST_CI_JWT"] = jwt
    try:
        auth = {
            "method": "jwt",
            "role": openbao.seeds.jwt_role,
            "jwt": "env://LEASELINE_TEST_CI_JWT",
        }
        with vault_resolver(openbao, auth) as r:
            assert r.resolve("vault://secret/llm/login#api_key") == value
    finally:
        del os.environ["LEASELINE_TEST_CI_JWT"]


def test_bad_login_is_access_denied(openbao: OpenBao) -> None:
    auth = {"method": "approle", "role_id": "not-a-role", "secret_id": "not-a-secret"}
    with vault_resolver(openbao, auth) as r, pytest.raises(AccessDenied) as info:
        r.resolve("vault://secret/llm/login#api_key")
    assert "approle" in str(info.value)


def _audit_reads(bao: OpenBao, path: str) -> int:
    return sum(
        1
        for line in bao.audit_lines()
        if line.get("type") == "request" and (line.get("request") or {}).get("path") == path
    )


def test_dynamic_database_creds_one_lease_two_fields(
    openbao: OpenBao, vault_db: DatabaseEngine
) -> None:
    path = vault_db.creds_path("reader")
    before = _audit_reads(openbao, path)
    with vault_resolver(openbao, approle(openbao)) as r:
        user = r.resolve(f"vault://{path}#username")
        password = r.resolve(f"vault://{path}#password")
        secret = r.get(f"vault://{path}")
        assert secret.lease is not None and secret.lease.id and secret.lease.renewable
        assert r.requests[f"vault://{path}"] == 1
        time.sleep(0.2)  # the audit device writes asynchronously to the file
        assert _audit_reads(openbao, path) - before == 1
        with psycopg.connect(
            host=vault_db.pg.host,
            port=vault_db.pg.port,
            dbname="postgres",
            user=user,
            password=password,
        ) as conn:
            assert conn.execute("select count(*) from training_rows").fetchone()[0] > 0
        assert user in vault_db.pg.roles()
        lease_id = secret.lease.id
    # closing the resolver revoked the lease: the role is gone and OpenBao forgets the lease
    assert user not in vault_db.pg.roles()
    c = openbao.client()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        c.sys.read_lease(lease_id)


def test_child_token_revoked_at_close(openbao: OpenBao, vault_db: DatabaseEngine) -> None:
    with vault_resolver(openbao, approle(openbao)) as r:
        r.get(f"vault://{vault_db.creds_path('reader')}")
        backend = r.backend("vault")
        accessor = backend.child_token_accessor  # type: ignore[attr-defined]
        assert accessor
        assert openbao.client().auth.token.lookup_accessor(accessor)["data"]["display_name"]
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
        openbao.client().auth.token.lookup_accessor(accessor)


def test_missing_secret_and_field(openbao: OpenBao, canary: Any) -> None:
    value = canary.new()
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="llm/fields", secret={"api_key": value}, mount_point="secret"
    )
    with vault_resolver(openbao) as r:
        with pytest.raises(SecretNotFound) as info:
            r.resolve("vault://secret/llm/nothing-here")
        assert "vault://secret/llm/nothing-here" in str(info.value)
        with pytest.raises(SecretNotFound) as info:
            r.resolve("vault://secret/llm/fields#nope")
        assert "api_key" in str(info.value) and value not in str(info.value)


def test_denied_path_names_path_and_capability(openbao: OpenBao) -> None:
    token = openbao.token_with_policy('path "secret/data/llm/allowed" { capabilities = ["read"] }')
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret(
        path="llm/forbidden", secret={"k": "v-" + secrets.token_hex(8)}, mount_point="secret"
    )
    r = Resolver(Config.from_mapping({"stores": {"vault": {"addr": openbao.addr, "token": token}}}))
    with r, pytest.raises(AccessDenied) as info:
        r.resolve("vault://secret/llm/forbidden#k")
    message = str(info.value)
    assert "secret/data/llm/forbidden" in message and "'read'" in message


def test_unreachable_server(unused_port: int) -> None:
    config = {
        "stores": {"vault": {"addr": f"http://127.0.0.1:{unused_port}", "token": "x" * 8}},
        "resolver": {"deadline": "2s"},
    }
    started = time.monotonic()
    with Resolver(Config.from_mapping(config)) as r, pytest.raises(BackendUnavailable) as info:
        r.resolve("vault://secret/llm/openai#api_key")
    assert f"127.0.0.1:{unused_port}" in str(info.value)
    assert time.monotonic() - started < 10
    assert isinstance(info.value, ConnectionError)


def test_missing_extra_names_the_pip_command() -> None:
    code = (
        "import sys; sys.modules['hvac'] = None\n"
        "import leaseline\n"
        "try:\n"
        "    leaseline.Resolver().resolve('vault://secret/x#y')\n"
        "except leaseline.BackendNotInstalled as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'leaseline[vault]'" in out.stdout


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_module_level_api_uses_environment(vault_env: OpenBao, canary: Any) -> None:
    value = canary.new()
    vault_env.client().secrets.kv.v2.create_or_update_secret(
        path="llm/env", secret={"api_key": value}, mount_point="secret"
    )
    from leaseline._api import _reset_default

    _reset_default()
    try:
        assert leaseline.resolve("vault://secret/llm/env#api_key") == value
    finally:
        _reset_default()


def test_token_reads_import_neither_hvac_nor_requests(vault_env: OpenBao) -> None:
    """The start-up budget of `leaseline run`: with a token, hvac and requests (~50 ms of
    imports) stay out; HTTP goes through urllib3. A login method that needs hvac brings them."""
    path = f"light/{secrets.token_hex(4)}"
    value = secrets.token_hex(16)
    vault_env.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"v": value}, mount_point="secret"
    )
    code = (
        "import os, sys, leaseline\n"
        f"same = leaseline.resolve('vault://secret/{path}#v') == os.environ['EXPECTED']\n"
        "print(same, sorted(m for m in ('hvac', 'requests') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "EXPECTED": value},
    )
    assert out.stdout.strip() == "True []"


# -- proxy = true: the store behind a node's `leaseline proxy` ---------------------------------


def test_proxy_option_takes_no_token_and_allows_unix_addresses() -> None:
    from leaseline import ConfigError
    from leaseline.backends.vault import VaultConfig

    config = VaultConfig.from_table(
        "vault", {"proxy": "true", "addr": "unix:/run/leaseline/proxy.sock"}, 3600.0
    )
    assert config.proxy and not config.child_token
    assert config.addr == "unix:/run/leaseline/proxy.sock"
    with pytest.raises(ConfigError, match="unix:/ABSOLUTE/PATH"):
        VaultConfig.from_table("vault", {"proxy": True, "addr": "unix:proxy.sock"}, None)
    with pytest.raises(ConfigError, match=r"http\(s\)://HOST:PORT, got"):
        VaultConfig.from_table("vault", {"addr": "unix:/run/leaseline/proxy.sock"}, None)


def test_a_store_behind_a_missing_proxy_says_how_to_start_it() -> None:

    sock = f"/tmp/ll-{secrets.token_hex(4)}.sock"  # nothing listens there
    from leaseline._config import ResolverSettings

    config = Config(
        stores={"vault": {"proxy": True, "addr": f"unix:{sock}"}},
        resolver=ResolverSettings(deadline=1.0),
    )
    with Resolver(config) as r, pytest.raises(BackendUnavailable) as err:
        r.resolve("vault://secret/x#y")
    assert f"leaseline proxy at unix:{sock}" in str(err.value)
    assert f"`leaseline proxy --listen unix:{sock}`" in str(err.value)
