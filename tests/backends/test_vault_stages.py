"""Per-stage child tokens (``child_token = { policies = "per-stage" }``) against the real OpenBao.

The worker logs in with a token that may only make tokens (its own per-task one, and per-stage
ones through the token role); each stage's reads are made with a token holding only the
stage's policy, so the server, not the client, refuses what the stage's plan does not name.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac.exceptions
import leaseline
import pytest
from leaseline import AccessDenied, ConfigError, Resolver
from leaseline._config import Config
from leaseline._stage import policy_name
from leaseline.backends import StageTokens
from leaseline.backends.vault import VaultConfig
from leaseline.plan._server import Vault, worker_policy

from tests.servers import DatabaseEngine, OpenBao


@dataclass
class Pipeline:
    """Two stages, each with its own secret and policy, and a worker token that reads nothing."""

    name: str
    role: str
    refs: dict[str, str]  # stage -> reference
    paths: dict[str, str]  # stage -> the KV v2 data path Vault checks
    worker: str  # the worker's login token

    def stage(self, task: str) -> str:
        return f"{self.name}/{task}"

    def store(self, **child: Any) -> dict[str, Any]:
        table = {"policies": "per-stage", "role": self.role, "ttl": "600s", **child}
        return {"addr": "", "token": self.worker, "child_token": table}


@pytest.fixture
def pipeline(openbao: OpenBao, canary: Any) -> Pipeline:
    name = f"pipe{secrets.token_hex(4)}"
    client = openbao.client()
    refs, paths = {}, {}
    for task in ("load", "score"):
        stage = f"{name}/{task}"
        path = f"stages/{name}/{task}"
        client.secrets.kv.v2.create_or_update_secret(
            path=path, secret={"value": canary.new(task)}, mount_point="secret"
        )
        refs[stage] = f"vault://secret/{path}#value"
        paths[stage] = f"secret/data/{path}"
        client.sys.create_or_update_policy(
            name=policy_name(stage),
            policy=f'path "secret/data/{path}" {{\n  capabilities = ["read"]\n}}\n',
        )
    role = f"leaseline-{name}"
    Vault(openbao.addr, openbao.root_token).write_token_role(role, [policy_name(s) for s in refs])
    worker = openbao.token_with_policy(worker_policy(role))
    return Pipeline(name, role, refs, paths, worker)


def resolver(openbao: OpenBao, store: dict[str, Any], tmp_path: Path) -> Resolver:
    store = {**store, "addr": openbao.addr}
    config = {"stores": {"vault": store}, "ledger": {"path": str(tmp_path / "ledger.jsonl")}}
    return Resolver(Config.from_mapping(config), handle_signals=False)


def token_policies(openbao: OpenBao, accessor: str) -> list[str]:
    return sorted(openbao.client().auth.token.lookup_accessor(accessor)["data"]["policies"])


def reads_of(openbao: OpenBao, path: str, since: int) -> list[dict[str, Any]]:
    """The audit log's requests for ``path`` (with the policies of the token that made them)."""
    return [
        line
        for line in openbao.audit_lines()[since:]
        if line.get("type") == "request" and line["request"].get("path") == path
    ]


def frozen(openbao: OpenBao) -> None:
    """Wait until the stopped server no longer answers (SIGSTOP lands a moment after kill())."""
    import urllib.error
    import urllib.request

    for _ in range(50):
        try:
            urllib.request.urlopen(f"{openbao.addr}/v1/sys/health", timeout=0.5).close()
        except (urllib.error.URLError, TimeoutError, OSError):
            return
    raise AssertionError("the frozen server still answers")


def alive(openbao: OpenBao, accessor: str) -> bool:
    try:
        openbao.client().auth.token.lookup_accessor(accessor)
    except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
        return False
    return True


def test_each_stage_reads_with_a_token_holding_only_its_policy(
    openbao: OpenBao, pipeline: Pipeline, tmp_path: Path
) -> None:
    load, score = pipeline.stage("load"), pipeline.stage("score")
    seen = len(openbao.audit_lines())
    with resolver(openbao, pipeline.store(), tmp_path) as r:
        for stage in (load, score):
            with leaseline.stage(stage):
                assert r.resolve(pipeline.refs[stage])
        backend = r.backend("vault")
        assert isinstance(backend, StageTokens) and backend.per_stage
        accessors = backend.stage_token_accessors
        assert sorted(accessors) == [load, score]
        for stage, accessor in accessors.items():
            assert token_policies(openbao, accessor) == ["default", policy_name(stage)]
        for stage in (load, score):
            (line,) = reads_of(openbao, pipeline.paths[stage], seen)
            assert line["auth"]["policies"] == ["default", policy_name(stage)]
    for accessor in accessors.values():  # revoked at close
        assert not alive(openbao, accessor)


def test_a_stage_reading_another_stages_secret_is_denied_by_the_server(
    openbao: OpenBao, pipeline: Pipeline, tmp_path: Path
) -> None:
    load, score = pipeline.stage("load"), pipeline.stage("score")
    with resolver(openbao, pipeline.store(), tmp_path) as r:
        with leaseline.stage(load):
            assert r.resolve(pipeline.refs[load])  # cached now, under load's key
        seen = len(openbao.audit_lines())
        with leaseline.stage(score), pytest.raises(AccessDenied) as denied:
            r.resolve(pipeline.refs[load])
        message = str(denied.value)
        assert pipeline.paths[load] in message
        assert f"stage '{score}'" in message
        assert policy_name(score) in message
        assert "leaseline plan --apply" in message
        # the server refused it: score's token asked, and was not served from load's cache
        lines = reads_of(openbao, pipeline.paths[load], seen)
        assert lines  # (the resolver's one retry after a denial asks again, same token)
        assert all(ln["auth"]["policies"] == ["default", policy_name(score)] for ln in lines)
        # no second login or stage token for a denial a new login cannot change
        creates = [
            line
            for line in openbao.audit_lines()[seen:]
            if line.get("type") == "request"
            and line["request"]["path"].startswith("auth/token/create")
        ]
        assert len(creates) == 1  # score's own token, once
        with leaseline.stage(load):  # load still reads its own, from the cache
            assert r.resolve(pipeline.refs[load])
        assert r.requests[f"{pipeline.refs[load].split('#')[0]} (stage {load})"] == 1


def test_the_cache_is_kept_per_stage(openbao: OpenBao, pipeline: Pipeline, tmp_path: Path) -> None:
    load, score = pipeline.stage("load"), pipeline.stage("score")
    ref = pipeline.refs[load]
    with resolver(openbao, pipeline.store(), tmp_path) as r:
        with leaseline.stage(load):
            first = r.get(ref)
            assert r.get(ref) is first  # a warm hit inside the stage
        with leaseline.stage(score), pytest.raises(AccessDenied):
            r.get(ref)  # not load's cached value
        with leaseline.stage(score), pytest.raises(AccessDenied):
            r.get(ref)  # nor on a second try


def test_outside_any_stage_reads_use_the_per_task_token_as_before(
    openbao: OpenBao, pipeline: Pipeline, canary: Any, tmp_path: Path
) -> None:
    path = f"stages/{pipeline.name}/shared"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"value": canary.new("shared")}, mount_point="secret"
    )
    worker = openbao.token_with_policy(
        worker_policy(pipeline.role)
        + f'path "secret/data/{path}" {{\n  capabilities = ["read"]\n}}\n'
    )
    store = {**pipeline.store(), "token": worker}
    seen = len(openbao.audit_lines())
    with resolver(openbao, store, tmp_path) as r:
        assert r.resolve(f"vault://secret/{path}#value")
        backend = r.backend("vault")
        assert isinstance(backend, StageTokens)
        assert backend.stage_token_accessors == {}  # no stage: no stage token
        (line,) = reads_of(openbao, f"secret/data/{path}", seen)
        assert "leaseline-" not in " ".join(line["auth"]["policies"])
        assert line["auth"]["metadata"]["leaseline"] == "per-task"
        assert [k for k, _ in r._cache.items()] == [f"vault://secret/{path}"]


def test_an_explicit_map_gives_each_stage_its_policies_and_no_token_to_others(
    openbao: OpenBao, pipeline: Pipeline, tmp_path: Path
) -> None:
    load, score = pipeline.stage("load"), pipeline.stage("score")
    policies = {load: [policy_name(load)]}
    with resolver(openbao, pipeline.store(policies=policies), tmp_path) as r:
        with leaseline.stage(load):
            assert r.resolve(pipeline.refs[load])
        with leaseline.stage(score), pytest.raises(AccessDenied) as denied:
            r.resolve(pipeline.refs[score])
        assert f"stage '{score}' is not in [stores.vault] child_token.policies" in str(denied.value)
        backend = r.backend("vault")
        assert isinstance(backend, StageTokens)
        assert list(backend.stage_token_accessors) == [load]


def test_a_stage_whose_policy_the_role_does_not_allow_says_to_apply_the_plan(
    openbao: OpenBao, pipeline: Pipeline, tmp_path: Path
) -> None:
    with resolver(openbao, pipeline.store(), tmp_path) as r:
        with leaseline.stage(f"{pipeline.name}/unplanned"), pytest.raises(AccessDenied) as e:
            r.resolve(pipeline.refs[pipeline.stage("load")])
    assert f"token role '{pipeline.role}'" in str(e.value)
    assert "leaseline plan --apply" in str(e.value)


def test_a_forked_child_takes_its_own_stage_token_and_leaves_the_parents(
    openbao: OpenBao, pipeline: Pipeline, tmp_path: Path
) -> None:
    load = pipeline.stage("load")
    with resolver(openbao, pipeline.store(), tmp_path) as r:
        with leaseline.stage(load):
            r.resolve(pipeline.refs[load])
        backend = r.backend("vault")
        assert isinstance(backend, StageTokens)
        parents = backend.stage_token_accessors[load]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: reads again (its own token), closes, exits
            code = 1
            try:
                os.close(read)
                with leaseline.stage(load):
                    r.refresh(pipeline.refs[load])
                child = r.backend("vault")
                assert isinstance(child, StageTokens)
                os.write(write, child.stage_token_accessors[load].encode())
                r.close()
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        childs = os.read(read, 200).decode()
        os.close(read)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert childs and childs != parents
        assert not alive(openbao, childs)  # the child revoked its own
        assert alive(openbao, parents)  # and left the parent's
    assert not alive(openbao, parents)


def test_stage_tokens_left_valid_when_the_store_is_down_at_exit_go_to_the_ledger(
    openbao: OpenBao, pipeline: Pipeline, tmp_path: Path
) -> None:
    load, score = pipeline.stage("load"), pipeline.stage("score")
    r = resolver(openbao, {**pipeline.store(), "timeout": "1s"}, tmp_path)
    for stage in (load, score):
        with leaseline.stage(stage):
            r.resolve(pipeline.refs[stage])
    backend = r.backend("vault")
    assert isinstance(backend, StageTokens)
    accessors = set(backend.stage_token_accessors.values())
    openbao.freeze()  # connections accepted, never answered
    try:
        frozen(openbao)
        r.close()
    finally:
        openbao.thaw()
    pending = {u.accessor for u in r.unrevoked if u.kind == "token"}
    assert accessors <= pending
    ledger = (tmp_path / "ledger.jsonl").read_text()
    for accessor in accessors:
        assert accessor in ledger
        openbao.client().auth.token.revoke_accessor(accessor)


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        ({"policies": "per_stage"}, 'expected "per-stage"'),
        ({"policies": ["leaseline-a"]}, "got a list"),
        ({"policies": {}}, "got an empty table"),
        ({"policies": {"dag/task": 3}}, 'child_token.policies."dag/task": expected a list'),
        ({"policies": {"dag/task": ["bad name"]}}, "expected a list of policy names"),
        ({"polices": "per-stage"}, "unknown key(s) polices"),
        ({"policies": "per-stage", "role": "a/b"}, "child_token.role: expected a token role"),
        ({"policies": "per-stage", "enabled": False}, "remove enabled = false"),
    ],
)
def test_a_bad_child_token_table_is_a_clear_config_error(
    child: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as error:
        VaultConfig.from_table("vault", {"addr": "http://127.0.0.1:1", "child_token": child}, None)
    assert "[stores.vault] child_token" in str(error.value)
    assert expected in str(error.value)


def test_per_stage_tokens_need_the_store_to_talk_to_vault_itself() -> None:
    with pytest.raises(ConfigError, match="proxy holds the only token"):
        VaultConfig.from_table(
            "vault",
            {"addr": "http://127.0.0.1:1", "proxy": True, "child_token": {"policies": "per-stage"}},
            None,
        )


def test_the_map_form_is_read_as_stage_to_policies() -> None:
    config = VaultConfig.from_table(
        "vault",
        {
            "addr": "http://127.0.0.1:1",
            "child_token": {"policies": {"d/t": ["a", "b"], "d/u": "c"}, "role": "r"},
        },
        None,
    )
    assert config.stage_policies == {"d/t": ("a", "b"), "d/u": ("c",)}
    assert config.token_role == "r"


def test_a_dynamic_lease_taken_in_a_stage_is_renewed_and_revoked_with_its_token(
    openbao: OpenBao, vault_db: DatabaseEngine, pipeline: Pipeline, tmp_path: Path
) -> None:
    from leaseline._ledger import Ledger, Recorder

    stage = f"{pipeline.name}/extract"
    creds = vault_db.creds_path()
    openbao.client().sys.create_or_update_policy(
        name=policy_name(stage),
        policy=(
            f'path "{creds}" {{\n  capabilities = ["read"]\n}}\n'
            'path "sys/leases/renew" {\n  capabilities = ["update"]\n}\n'
            'path "sys/leases/revoke" {\n  capabilities = ["update"]\n}\n'
        ),
    )
    Vault(openbao.addr, openbao.root_token).write_token_role(pipeline.role, [policy_name(stage)])
    seen = len(openbao.audit_lines())
    with resolver(openbao, pipeline.store(), tmp_path) as r:
        with leaseline.stage(stage):
            secret = r.get(f"vault://{creds}")
        assert secret.lease is not None and secret.lease.id
        lease = secret.lease
        (key, held), *_ = r.leases()
        assert key == f"vault://{creds} (stage {stage})" and held.id == lease.id
        # the lease ledger (leaseline run's writer) records the lease and the stage's token
        ledger = Ledger(tmp_path / "run-ledger.jsonl")
        Recorder(ledger, r, "test").record(["vault"])
        backend = r.backend("vault")
        assert isinstance(backend, StageTokens)
        accessor = backend.stage_token_accessors[stage]
        text = (tmp_path / "run-ledger.jsonl").read_text()
        assert accessor in text and str(lease.id) in text
        backend.renew(lease)  # renewed with the stage's token, which the lease was issued under
        (renewal,) = reads_of(openbao, "sys/leases/renew", seen)
        assert renewal["auth"]["policies"] == ["default", policy_name(stage)]
    assert not alive(openbao, accessor)  # closed: the token and its lease are revoked
    with pytest.raises(hvac.exceptions.InvalidRequest):
        openbao.client().sys.read_lease(lease.id)
