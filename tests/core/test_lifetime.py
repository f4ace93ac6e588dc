"""Leases belong to the process that took them: forks, pools, DataLoader, prefork workers, spawn.

Real processes against OpenBao + PostgreSQL. The parent (``process_scenarios.py``) takes a
dynamic credential, forks or spawns workers the way ML code does, and logs in to PostgreSQL with
its credential throughout; OpenBao's audit log shows which store requests were made.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.servers import DatabaseEngine, OpenBao

SCENARIOS = Path(__file__).with_name("process_scenarios.py")


def live_leases(bao: OpenBao, role: str) -> list[str]:
    try:
        keys = bao.client().list(f"sys/leases/lookup/database/creds/{role}/")
    except Exception:  # the prefix disappears with its last lease
        return []
    return list((keys or {}).get("data", {}).get("keys", []))


def requests_to(bao: OpenBao, since: int, path: str) -> int:
    """Requests for ``path`` in OpenBao's audit log after its first ``since`` lines."""
    lines = bao.audit_lines()[since:]
    return sum(
        1
        for line in lines
        if line.get("type") == "request" and line.get("request", {}).get("path") == path
    )


def scenario_env(
    bao: OpenBao, engine: DatabaseEngine, tmp_path: Path, **extra: str
) -> dict[str, str]:
    (tmp_path / "none.toml").write_text("")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "LEASELINE_"))
    }
    return {
        **env,
        **bao.env(),
        "LEASELINE_CONFIG": str(tmp_path / "none.toml"),
        "LEASELINE_LEDGER__PATH": str(tmp_path / "ledger.jsonl"),
        "PGHOST": engine.pg.host,
        "PGPORT": str(engine.pg.port),
        **extra,
    }


def start(scenario: str, ref: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCENARIOS), scenario, ref],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def report_of(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[dict[str, Any], str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"the parent failed ({proc.returncode}):\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1]), err


def gone(bao: OpenBao, engine: DatabaseEngine, role: str, users: set[str]) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not live_leases(bao, role) and not users & engine.pg.roles():
            return True
        time.sleep(0.25)
    return False


def check(
    bao: OpenBao,
    engine: DatabaseEngine,
    role: str,
    since: int,
    report: dict[str, Any],
    stderr: str,
) -> None:
    parent = set(report["parent"])
    assert len(parent) == 1, "the parent kept one credential and logged in with it throughout"
    assert set(report["children"]) <= parent, "forked children used the parent's credential"
    # one read of the credential, by the parent: the children asked the store for nothing
    assert requests_to(bao, since, engine.creds_path(role)) == 1
    # one revocation of the per-task token: the parent's, at its exit (none by a child)
    assert requests_to(bao, since, "auth/token/revoke-self") == 1
    assert "revoke" not in stderr, stderr[-2000:]
    assert gone(bao, engine, role, parent), "after the parent's exit no credential is left"


@pytest.mark.parametrize("scenario", ["pool", "terminate", "sys_exit", "dataloader"])
def test_forked_children_never_revoke_the_parents_credential(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path, scenario: str
) -> None:
    role = vault_db.create_db_role("fork-" + secrets.token_hex(3), default_ttl="10m")
    since = len(openbao.audit_lines())
    proc = start(
        scenario, f"vault://{vault_db.creds_path(role)}", scenario_env(openbao, vault_db, tmp_path)
    )
    report, stderr = report_of(proc)
    if scenario == "pool":
        assert len(report["children"]) == 6
    if scenario == "dataloader":
        assert len(report["children"]) == 12
        assert sorted(report["exitcodes"]) == [-signal.SIGTERM] + [0] * 5
    if scenario == "terminate":
        assert report["exitcodes"] == [-signal.SIGTERM]
    check(openbao, vault_db, role, since, report, stderr)


def test_celery_style_prefork_worker_shut_down_with_sigterm(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path
) -> None:
    role = vault_db.create_db_role("prefork-" + secrets.token_hex(3), default_ttl="10m")
    since = len(openbao.audit_lines())
    proc = start(
        "prefork", f"vault://{vault_db.creds_path(role)}", scenario_env(openbao, vault_db, tmp_path)
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
    proc.send_signal(signal.SIGTERM)
    report, stderr = report_of(proc)
    assert len(report["children"]) == 6, "two workers ran three tasks each"
    assert report["exitcodes"] == [-signal.SIGTERM] * 2
    check(openbao, vault_db, role, since, report, stderr)


def test_what_a_forked_worker_takes_itself_it_owns_and_revokes(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path
) -> None:
    role = vault_db.create_db_role("shared-" + secrets.token_hex(3), default_ttl="10m")
    own = vault_db.create_db_role("own-" + secrets.token_hex(3), default_ttl="10m")
    env = scenario_env(openbao, vault_db, tmp_path, OWN_REF=f"vault://{vault_db.creds_path(own)}")
    proc = start("pool", f"vault://{vault_db.creds_path(role)}", env)
    report, stderr = report_of(proc)
    parent = set(report["parent"])
    theirs = set(report["children"]) - parent
    assert theirs, "the workers took credentials of their own"
    assert gone(openbao, vault_db, own, theirs), "each worker revoked its own at its end"
    assert gone(openbao, vault_db, role, parent)
    assert "revoke" not in stderr, stderr[-2000:]


def test_spawned_children_own_their_own(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path
) -> None:
    role = vault_db.create_db_role("spawn-" + secrets.token_hex(3), default_ttl="10m")
    since = len(openbao.audit_lines())
    proc = start(
        "spawn", f"vault://{vault_db.creds_path(role)}", scenario_env(openbao, vault_db, tmp_path)
    )
    report, stderr = report_of(proc)
    parent, children = set(report["parent"]), set(report["children"])
    assert len(parent) == 1 and children and not children & parent
    assert requests_to(openbao, since, vault_db.creds_path(role)) == 1 + len(children)
    assert gone(openbao, vault_db, role, parent | children), "spawned children leave nothing"
    assert "revoke" not in stderr, stderr[-2000:]


def test_sigterm_while_the_http_client_holds_its_pool_lock_still_revokes(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path
) -> None:
    """Seen as a hang of Pool.terminate() with spawned workers (1 run in ~10): the worker was in
    urllib3's exit finalizer, holding its pool's lock, when the SIGTERM came, and the revocation
    the handler started waited for that lock for ever."""
    role = vault_db.create_db_role("sigpool-" + secrets.token_hex(3), default_ttl="10m")
    proc = start(
        "sigterm_in_http",
        f"vault://{vault_db.creds_path(role)}",
        scenario_env(openbao, vault_db, tmp_path),
    )
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the SIGTERM handler deadlocked on the HTTP pool's lock")
    assert proc.returncode == -signal.SIGTERM, stderr[-2000:]
    assert live_leases(openbao, role) == [] and gone(openbao, vault_db, role, set()), stderr[-2000:]
    assert "revoke" not in stderr, stderr[-2000:]
