"""Every record stays true: failed revocations stay pending, a reused pid hides nothing, SIGHUP
revokes. Real OpenBao + PostgreSQL, real processes, a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import secrets
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from leaseline._ledger import Ledger

from tests.servers import DatabaseEngine, OpenBao, Postgres
from tests.servers.vault_db import configure_database_engine

LEASELINE = [sys.executable, "-m", "leaseline.cli"]


def live_leases(bao: OpenBao, role: str) -> list[str]:
    try:
        keys = bao.client().list(f"sys/leases/lookup/database/creds/{role}/")
    except Exception:  # the prefix disappears with its last lease
        return []
    return list((keys or {}).get("data", {}).get("keys", []))


def db_users(pg: Postgres) -> set[str]:
    return {r for r in pg.roles() if r.startswith("v-")}


def eventually(predicate: object, timeout: float = 15) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return bool(predicate())


def cli_env(bao: OpenBao, tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "none.toml").write_text("")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "LEASELINE_"))
    }
    return {
        **env,
        **bao.env(),
        "LEASELINE_CONFIG": str(tmp_path / "none.toml"),
        "LEASELINE_LEDGER__PATH": str(tmp_path / "ledger.jsonl"),
        "LEASELINE_RESOLVER__DEADLINE": "3s",
        **extra,
    }


@pytest.fixture
def own_openbao(tmp_path: Path, postgres: Postgres) -> Iterator[tuple[OpenBao, DatabaseEngine]]:
    """An OpenBao of this test's own (it gets sealed), wired to the session's PostgreSQL."""
    bao = OpenBao.start(tmp_path / "openbao")
    try:
        yield bao, configure_database_engine(bao, postgres, role="sealed")
    finally:
        bao.stop()


SEAL = textwrap.dedent(
    """
    import json, sys, urllib.request
    addr, token = sys.argv[1], open(sys.argv[2]).read()
    req = urllib.request.Request(
        addr + "/v1/sys/seal", method="PUT", headers={"X-Vault-Token": token}
    )
    urllib.request.urlopen(req, timeout=10).read()
    print("sealed the store", flush=True)
    """
)


def test_revocation_that_fails_while_sealed_stays_pending_until_revoke_orphaned(
    own_openbao: tuple[OpenBao, DatabaseEngine], tmp_path: Path
) -> None:
    bao, engine = own_openbao
    (tmp_path / "seal.py").write_text(SEAL)
    (tmp_path / "root-token").write_text(bao.root_token)
    env = cli_env(bao, tmp_path)
    before = db_users(engine.pg)
    run = subprocess.run(
        [
            *LEASELINE,
            "run",
            "--env",
            f"DB_USER=vault://{engine.creds_path()}#username",
            "--",
            sys.executable,
            str(tmp_path / "seal.py"),
            bao.addr,
            str(tmp_path / "root-token"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert "sealed the store" in run.stdout, run.stderr
        assert bao.sealed()
        # the run reports it, says the fix, and does not exit 0
        assert run.returncode == 5, run.stderr
        assert "could not be revoked" in run.stderr
        assert "leaseline leases revoke --orphaned" in run.stderr
        users = db_users(engine.pg) - before
        assert len(users) == 1, "the credential is still alive: the store could not revoke it"

        listed = subprocess.run(
            [*LEASELINE, "leases", "list", "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert {r["kind"]: r["status"] for r in rows} == {"lease": "pending", "token": "pending"}
    finally:
        bao.unseal()

    revoke = subprocess.run(
        [*LEASELINE, "leases", "revoke", "--orphaned"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    assert eventually(lambda: not users & db_users(engine.pg)), "the PostgreSQL role is gone"
    assert not live_leases(bao, "sealed")
    assert Ledger(tmp_path / "ledger.jsonl").entries() == []


def test_a_reused_pid_does_not_mark_a_killed_runs_leases_revoked(tmp_path: Path) -> None:
    """In a container every run is pid 1: run A (killed, never finished) and run B (finished)
    share the pid but not the start time."""
    ledger = Ledger(tmp_path / "ledger.jsonl")
    killed, finished = "1111", "2222"  # start times; pid 1's real one is neither
    ledger.append(
        {"op": "run", "pid": 1, "started": killed, "cmd": "train", "dir": None, "time": 1.0},
        {
            "op": "lease",
            "pid": 1,
            "started": killed,
            "store": "vault",
            "ref": "vault://database/creds/reader",
            "lease_id": "database/creds/reader/killed-run",
            "expires_at": time.time() + 3600,
            "time": 1.0,
        },
        {"op": "run", "pid": 1, "started": finished, "cmd": "train", "dir": None, "time": 2.0},
        {"op": "done", "pid": 1, "started": finished, "time": 3.0},
    )
    [entry] = ledger.entries()
    assert entry.lease_id == "database/creds/reader/killed-run"
    assert entry.status() == "orphaned"
    ledger.compact()
    assert [e.lease_id for e in ledger.entries()] == ["database/creds/reader/killed-run"]


HOLDER = textwrap.dedent(
    """
    import time, leaseline
    with leaseline.lease(__import__("sys").argv[1]) as held:
        print("holding", held.reveal("username"), flush=True)
        time.sleep(120)
    """
)


def test_sighup_from_a_closed_terminal_revokes_a_python_lease(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path
) -> None:
    role = vault_db.create_db_role("hup-" + secrets.token_hex(3), default_ttl="10m")
    env = cli_env(openbao, tmp_path)
    pid, master = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        os.execve(
            sys.executable,
            [sys.executable, "-c", HOLDER, f"vault://{vault_db.creds_path(role)}"],
            env,
        )
    output = b""
    deadline = time.monotonic() + 60
    while b"holding" not in output or not output.endswith(b"\n"):
        assert time.monotonic() < deadline, output
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                output += os.read(master, 4096)
            except OSError:
                break
    assert b"holding" in output, output
    user = output.split(b"holding", 1)[1].split()[0].decode()
    assert user in db_users(vault_db.pg) and live_leases(openbao, role)
    os.close(master)  # the terminal goes away: the kernel sends SIGHUP to the session leader
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 1  # still ends as SIGHUP says
    assert eventually(lambda: not live_leases(openbao, role))
    assert user not in db_users(vault_db.pg)


def test_agent_stopped_while_the_store_is_sealed_exits_non_zero_and_keeps_it_pending(
    own_openbao: tuple[OpenBao, DatabaseEngine], tmp_path: Path
) -> None:
    import shutil
    import signal
    import tempfile

    bao, engine = own_openbao
    env = cli_env(bao, tmp_path)
    files = Path(tempfile.mkdtemp(prefix="leaseline-agent-", dir="/dev/shm"))
    target = files / "db.json"
    agent = subprocess.Popen(
        [*LEASELINE, "agent", "--file", f"{target}=vault://{engine.creds_path()}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert eventually(target.exists, 60), "the agent rendered its file"
        bao.seal()
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
        assert agent.returncode == 5, stderr
        assert "could not be revoked" in stderr and "leases revoke --orphaned" in stderr
        statuses = {e.kind: e.status() for e in Ledger(tmp_path / "ledger.jsonl").entries()}
        assert statuses == {"lease": "pending", "token": "pending"}
    finally:
        if agent.poll() is None:
            agent.kill()
        if bao.sealed():
            bao.unseal()
        shutil.rmtree(files, ignore_errors=True)
    revoke = subprocess.run(
        [*LEASELINE, "leases", "revoke", "--orphaned"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    assert not live_leases(bao, "sealed")


# -- issue 21: one writer of the record format ---------------------------------------------------


def test_only_the_ledger_module_spells_out_a_record() -> None:
    """``run``, ``render``, ``agent`` and ``leases revoke`` build every record through
    ``leaseline._ledger`` (before, the agent and ``leases revoke`` wrote their own copies)."""
    import re

    import leaseline

    root = Path(leaseline.__file__).parent
    spelled = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "_ledger.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""["']op["']\s*:""", line)
    ]
    assert spelled == []


def test_the_record_builders_fold_back_into_what_leases_list_shows(tmp_path: Path) -> None:
    from leaseline._ledger import (
        Unrevoked,
        done_record,
        identity,
        lease_record,
        revoked_record,
        run_record,
        token_record,
    )

    ledger = Ledger(tmp_path / "ledger.jsonl")
    pid, started = identity()
    ledger.append(
        run_record(cmd="render", dir="/dev/shm/x"),
        lease_record("vault", "vault://database/creds/r", "database/creds/r/abc", 4e9),
        lease_record("vault", "vault://database/creds/r", "database/creds/r/def", 4e9),
        token_record("vault", "acc1", "http://127.0.0.1:8200"),
    )
    (run,) = ledger.runs()
    assert (run["pid"], run["started"], run["cmd"], run["dir"], run["files"]) == (
        pid,
        started,
        "render",
        "/dev/shm/x",
        [],
    )
    by_id = {e.id: e for e in ledger.entries()}
    assert set(by_id) == {"database/creds/r/abc", "database/creds/r/def", "accessor:acc1"}
    assert {e.status() for e in by_id.values()} == {"held"}
    assert by_id["accessor:acc1"].addr == "http://127.0.0.1:8200"
    ledger.append(revoked_record("database/creds/r/abc"))
    failed = Unrevoked.from_entry(by_id["database/creds/r/def"], "BackendUnavailable")
    ledger.append(failed.record(), done_record())
    by_id = {e.id: e for e in ledger.entries(include_revoked=True)}
    assert by_id["database/creds/r/abc"].status() == "revoked"
    assert by_id["accessor:acc1"].status() == "revoked"  # covered by 'done'
    assert by_id["database/creds/r/def"].status() == "pending"
    assert by_id["database/creds/r/def"].pending == "BackendUnavailable"
    assert ledger.runs() == []
    # one JSON object per line, keys sorted: what older readers read
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert all(json.dumps(json.loads(line), sort_keys=True) == line for line in lines)
