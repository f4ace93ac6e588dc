"""Rotation against real stores: OpenBao (KV v2, database static roles over the real PostgreSQL)
and moto's Secrets Manager server. Ages come from the stores' own metadata; the clock of
``check`` is injected; readers ride through each rotation with ``retry_on_rotation``."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import leaseline
import psycopg
import pytest
from leaseline import Resolver, Secret
from leaseline._config import Config
from leaseline.rotation import DAY, check, run

from tests.servers import DatabaseEngine, MotoServer, OpenBao

from .conftest import ListSink


class Rejected(Exception):
    """What a consumer's SDK raises for a credential its service no longer accepts."""


@pytest.fixture
def prefix() -> str:
    return f"rot{secrets.token_hex(4)}"


@pytest.fixture
def make(
    vault_env: OpenBao, aws_env: MotoServer, tmp_path: Path
) -> Iterator[Callable[..., tuple[Resolver, ListSink]]]:
    made: list[Resolver] = []

    def build(policies: list[dict[str, Any]], **rotation: Any) -> tuple[Resolver, ListSink]:
        from leaseline.audit import Auditor

        sink = ListSink()
        section = {"policies": policies, "deploy_marker": str(tmp_path / "deploy.json"), **rotation}
        config = Config.from_mapping(
            {"stores": {"vault": {"child_token": False}}, "rotation": section}
        )
        r = Resolver(config, auditor=Auditor(sink, hmac_key=b"k"), handle_signals=False)
        made.append(r)
        return r, sink

    yield build
    for r in made:
        r.close()


def put_kv(bao: OpenBao, path: str, fields: dict[str, str]) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret=fields, mount_point="secret"
    )


def kv_meta(bao: OpenBao, path: str) -> dict[str, Any]:
    meta: dict[str, Any] = bao.client().secrets.kv.v2.read_secret_metadata(
        path=path, mount_point="secret"
    )["data"]
    return meta


# -- check ----------------------------------------------------------------------------------------


def test_check_flags_exactly_the_overdue_references(
    make: Callable[..., tuple[Resolver, ListSink]],
    vault_env: OpenBao,
    vault_db: DatabaseEngine,
    aws_env: MotoServer,
    prefix: str,
    canary: Any,
) -> None:
    for path in ("llm/openai", "llm/anthropic", "cloud/gcp", "team/a/registry"):
        put_kv(vault_env, f"{prefix}/{path}", {"api_key": canary.new()})
    sm = aws_env.client("secretsmanager")
    sm.create_secret(
        Name=f"{prefix}/cloud/aws", SecretString=json.dumps({"secret_access_key": canary.new()})
    )
    sm.create_secret(Name=f"{prefix}/llm/mistral", SecretString=canary.new())
    sm.create_secret(
        Name=f"{prefix}x/cloud/other", SecretString=canary.new()
    )  # not under the prefix
    role = vault_db.create_static_role(f"{prefix}-app", f"{prefix}_app")
    static = f"vault://database/static-creds/{role}"
    r, _ = make(
        [
            {"match": f"vault://secret/{prefix}/llm/*", "kind": "llm-api-key"},
            {"match": f"vault://secret/{prefix}/cloud/*", "kind": "cloud-credential"},
            {"match": f"vault://secret/{prefix}/team/**", "kind": "registry-token"},
            {"match": f"aws-sm://{prefix}/cloud/*", "kind": "cloud-credential"},
            {"match": f"aws-sm://{prefix}/llm/*", "kind": "llm-api-key"},
            {
                "match": "vault://database/static-creds/*",
                "kind": "database-password",
                "max_age": "14d",
            },
        ],
        kinds={"registry-token": "45d"},
        warn_before="7d",
    )
    today = {c.ref: c.status for c in check(r) if prefix in c.ref}
    assert set(today.values()) == {"ok"}, today
    later = {c.ref: c for c in check(r, now=time.time() + 40 * DAY) if prefix in c.ref}
    assert {ref: c.status for ref, c in later.items()} == {
        f"vault://secret/{prefix}/llm/anthropic": "ok",
        f"vault://secret/{prefix}/llm/openai": "ok",
        f"vault://secret/{prefix}/cloud/gcp": "overdue",
        f"vault://secret/{prefix}/team/a/registry": "due-soon",
        f"aws-sm://{prefix}/cloud/aws": "overdue",
        f"aws-sm://{prefix}/llm/mistral": "ok",
        static: "overdue",
    }
    gcp = later[f"vault://secret/{prefix}/cloud/gcp"]
    assert (
        gcp.limit == "30d"
        and gcp.kind == "cloud-credential"
        and 39 * DAY < (gcp.age or 0) < 41 * DAY
    )
    assert later[static].version is None and later[static].updated_at is not None


def test_database_password_is_due_after_a_deploy(
    make: Callable[..., tuple[Resolver, ListSink]], vault_db: DatabaseEngine, prefix: str
) -> None:
    role = vault_db.create_static_role(f"{prefix}-deploy", f"{prefix}_deploy")
    r, _ = make([{"match": f"vault://database/static-creds/{role}", "kind": "database-password"}])
    (before,) = check(r)
    assert before.status == "ok" and before.limit == "per deploy"
    time.sleep(1.1)  # last_vault_rotation has one-second precision on some servers
    checks, dry = run(r, deploy="release-1", dry_run=True)
    assert [c.status for c in checks] == ["overdue"] and dry[0].outcome == "would-rotate"


# -- run, with 8 readers ----------------------------------------------------------------------------


class Readers:
    """8 threads calling ``work(value)`` through ``retry_on_rotation`` until stopped."""

    def __init__(
        self,
        ref: str,
        resolver: Resolver,
        use: Callable[[str], None],
        on: tuple[type[BaseException], ...] = (Rejected,),
    ) -> None:
        self.errors: list[str] = []
        self.calls = 0
        self.retries = 0
        self.values: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()

        @leaseline.retry_on_rotation(ref, on=on, resolver=resolver, window=30.0)
        def call() -> str:
            value = resolver.resolve(ref)
            try:
                use(value)
            except on:
                with self._lock:
                    self.retries += 1
                raise
            return value

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    value = call()
                except Exception as exc:  # what a reader would see: must never happen
                    with self._lock:
                        self.errors.append(type(exc).__name__)
                    continue
                with self._lock:
                    self.calls += 1
                    self.values.add(value)
                time.sleep(0.005)

        self._threads = [threading.Thread(target=loop, daemon=True) for _ in range(8)]

    def __enter__(self) -> Readers:
        for t in self._threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)  # readers keep going after the rotation ends
        self._stop.set()
        for t in self._threads:
            t.join(10)


def test_run_rotates_kv_with_readers(
    make: Callable[..., tuple[Resolver, ListSink]], vault_env: OpenBao, prefix: str, canary: Any
) -> None:
    path = f"{prefix}/svc/webhook"
    old = canary.new()
    vault_env.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"token": old, "port": 8443, "tags": ["a"]}, mount_point="secret"
    )
    ref = f"vault://secret/{path}#token"
    client = vault_env.client()

    def service_accepts(token: str) -> None:
        """The service accepts every version that is not deleted (current + grace window)."""
        meta = kv_meta(vault_env, path)
        for number, info in meta["versions"].items():
            if not info["deletion_time"] and not info["destroyed"]:
                data = client.secrets.kv.v2.read_secret_version(
                    path=path,
                    version=int(number),
                    mount_point="secret",
                    raise_on_deleted_version=False,
                )["data"]["data"]
                if data and data.get("token") == token:
                    return
        raise Rejected("token not accepted")

    r, sink = make(
        [
            {
                "match": f"vault://secret/{prefix}/svc/*",
                "kind": "webhook",
                "rotator": "random-token",
                "grace": "1s",
            }
        ],
        kinds={"webhook": "1h"},
    )
    reader, _ = make([])
    rotated: list[str] = []
    r.on_rotate(lambda key, old_s, new_s: rotated.append(key))
    assert r.resolve(ref) == old
    with Readers(ref, reader, service_accepts) as readers:
        _, results = run(r, refs=[ref])
    assert [x.outcome for x in results] == ["rotated"], results[0].message
    new = r.resolve(ref)
    assert new != old and readers.values == {old, new}
    assert readers.errors == [] and readers.retries > 0 and readers.calls > 50
    assert rotated == [f"vault://secret/{path}"]
    meta = kv_meta(vault_env, path)
    assert meta["current_version"] == 2 and meta["versions"]["1"]["deletion_time"]
    data = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert data["port"] == 8443 and data["tags"] == ["a"]  # other fields keep their JSON types
    assert sink.phases() == [("stage", "ok"), ("verify", "ok"), ("promote", "ok"), ("retire", "ok")]
    assert results[0].previous_version == "1" and results[0].version == "2"


def test_run_rotates_secrets_manager_through_staging_labels(
    make: Callable[..., tuple[Resolver, ListSink]], aws_env: MotoServer, prefix: str, canary: Any
) -> None:
    name = f"{prefix}/cloud/partner"
    old = canary.new()
    sm = aws_env.client("secretsmanager")
    first = sm.create_secret(
        Name=name, SecretString=json.dumps({"api_key": old, "account": "acme"})
    )["VersionId"]
    ref = f"aws-sm://{name}#api_key"

    def stages() -> dict[str, list[str]]:
        versions = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
        return {v["VersionId"]: sorted(v.get("VersionStages", [])) for v in versions}

    def service_accepts(key: str) -> None:
        for stage in ("AWSCURRENT", "AWSPREVIOUS"):
            try:
                value = json.loads(
                    sm.get_secret_value(SecretId=name, VersionStage=stage)["SecretString"]
                )
            except sm.exceptions.ResourceNotFoundException:
                continue
            if value["api_key"] == key:
                return
        raise Rejected("key not accepted")

    observed: list[dict[str, list[str]]] = []

    def verify(secret: Secret) -> bool:
        observed.append(stages())  # the new version is pending, the old one still current
        return secret.reveal("account") == "acme" and secret.reveal("api_key") != old

    r, sink = make(
        [
            {
                "match": f"aws-sm://{prefix}/cloud/*",
                "kind": "cloud-credential",
                "rotator": "random-token",
                "grace": "1s",
            }
        ]
    )
    reader, _ = make([])
    with Readers(ref, reader, service_accepts) as readers:
        _, results = run(r, refs=[ref], verify=verify)
    (result,) = results
    assert result.outcome == "rotated", result.message
    assert observed == [{first: ["AWSCURRENT"], result.version: ["AWSPENDING"]}]
    assert stages()[result.version] == ["AWSCURRENT"]
    assert stages().get(first, []) == []  # retired: AWSPREVIOUS removed after the grace window
    new = r.resolve(ref)
    assert new != old and r.resolve(f"aws-sm://{name}#account") == "acme"
    assert readers.errors == [] and readers.values == {old, new} and readers.retries > 0
    assert [p for p, _ in sink.phases()] == ["stage", "verify", "promote", "retire"]


def _login(vault_db: DatabaseEngine, user: str, password: str) -> None:
    with psycopg.connect(
        host=vault_db.pg.host,
        port=vault_db.pg.port,
        dbname="postgres",
        user=user,
        password=password,
        connect_timeout=5,
    ) as conn:
        conn.execute("SELECT 1")


def test_run_rotates_database_static_role(
    make: Callable[..., tuple[Resolver, ListSink]], vault_db: DatabaseEngine, prefix: str
) -> None:
    user = f"{prefix}_svc"
    role = vault_db.create_static_role(f"{prefix}-svc", user)
    ref = f"vault://database/static-creds/{role}#password"
    r, sink = make(
        [{"match": f"vault://database/static-creds/{prefix}-*", "kind": "database-password"}]
    )
    reader, _ = make([])
    old = r.resolve(ref)
    _login(vault_db, user, old)
    logged_in: list[str] = []

    def verify(secret: Secret) -> bool:
        _login(vault_db, secret.reveal("username"), secret.reveal("password"))
        logged_in.append(secret.reveal("username"))
        return True

    with Readers(
        ref, reader, lambda pw: _login(vault_db, user, pw), on=(psycopg.OperationalError,)
    ) as readers:
        time.sleep(1.1)  # a distinct last_vault_rotation
        _, results = run(r, deploy=f"deploy-{prefix}", verify=verify)
    mine = [x for x in results if x.ref == f"vault://database/static-creds/{role}"]
    assert [x.outcome for x in mine] == ["rotated"], mine[0].message
    assert mine[0].rotator == "vault-db-static-role" and mine[0].previous_version != mine[0].version
    new = r.resolve(ref)
    assert logged_in == [user]
    assert new != old
    with pytest.raises(psycopg.OperationalError):
        _login(vault_db, user, old)  # the old password stopped working
    _login(vault_db, user, new)
    assert readers.errors == [] and readers.values >= {old, new} and readers.retries > 0
    assert ("retire", "ok") in sink.phases(f"vault://database/static-creds/{role}")


# -- failures -------------------------------------------------------------------------------------


def test_failing_verify_leaves_old_versions_current(
    make: Callable[..., tuple[Resolver, ListSink]],
    vault_env: OpenBao,
    aws_env: MotoServer,
    vault_db: DatabaseEngine,
    prefix: str,
    canary: Any,
) -> None:
    put_kv(vault_env, f"{prefix}/bad/kv", {"token": (kv_old := canary.new())})
    sm = aws_env.client("secretsmanager")
    sm_name = f"{prefix}/bad/sm"
    first = sm.create_secret(Name=sm_name, SecretString=(sm_old := canary.new()))["VersionId"]
    role = vault_db.create_static_role(f"{prefix}-bad", f"{prefix}_bad")
    r, sink = make(
        [
            {"match": f"vault://secret/{prefix}/bad/*", "kind": "k", "rotator": "random-token"},
            {"match": f"aws-sm://{prefix}/bad/*", "kind": "k", "rotator": "random-token"},
            {"match": f"vault://database/static-creds/{role}", "kind": "k"},
        ],
        kinds={"k": "1d"},
    )
    refs = [
        f"vault://secret/{prefix}/bad/kv",
        f"aws-sm://{sm_name}",
        f"vault://database/static-creds/{role}",
    ]
    _, results = run(r, refs=refs, verify=lambda s: False)
    by_ref = {x.ref: x for x in results}
    for ref in refs[:2]:
        assert by_ref[ref].outcome == "failed" and by_ref[ref].phase == "verify"
        assert "the old version is still current" in by_ref[ref].message
    assert "replaced the credential in place" in by_ref[refs[2]].message
    assert kv_meta(vault_env, f"{prefix}/bad/kv")["current_version"] == 1
    assert r.resolve(f"vault://secret/{prefix}/bad/kv#token") == kv_old
    versions = sm.list_secret_version_ids(SecretId=sm_name, IncludeDeprecated=True)["Versions"]
    assert {
        v["VersionId"]: v.get("VersionStages", []) for v in versions if v.get("VersionStages")
    } == {first: ["AWSCURRENT"]}  # the staged version lost AWSPENDING
    assert sm.get_secret_value(SecretId=sm_name)["SecretString"] == sm_old
    assert [e for e in sink.events() if e["outcome"] == "failed" and e["phase"] == "verify"]
