"""``leaseline proxy`` against real OpenBao, PostgreSQL and ``bao proxy``: one credential per
node, workers without a token, revocation at SIGTERM, recovery after a crash, rotation at max_ttl.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.test_lifetime import live_leases, requests_to
from tests.servers import DatabaseEngine, OpenBao
from tests.servers._util import free_port

WORKER = Path(__file__).with_name("proxy_worker.py")


class NodeProxy:
    """A ``leaseline proxy`` subprocess at ``listen``, logged in with the root token."""

    def __init__(self, bao: OpenBao, tmp_path: Path, listen: str) -> None:
        (tmp_path / "none.toml").write_text("")
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VAULT_", "BAO_", "LEASELINE_"))
        }
        self.base = {
            **base,
            "LEASELINE_CONFIG": str(tmp_path / "none.toml"),
            "LEASELINE_LEDGER__PATH": str(tmp_path / "ledger.jsonl"),
        }
        self.env = {**self.base, **bao.env()}
        self.listen = listen
        self.addr = listen if listen.startswith("unix:") else f"http://{listen}"
        self.log = tmp_path / f"proxy-{secrets.token_hex(3)}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeProxy:
        self.log = self.log.with_name(f"proxy-{secrets.token_hex(3)}.log")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "leaseline.cli", "proxy", "--listen", self.listen],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while "serving store" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.1)
        return self

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(signum)
        return self.proc.wait(30)

    def worker_env(self, engine: DatabaseEngine, **extra: str) -> dict[str, str]:
        return {
            **self.base,  # no VAULT_TOKEN, no VAULT_ADDR
            "LEASELINE_STORES__VAULT__PROXY": "true",
            "LEASELINE_STORES__VAULT__ADDR": self.addr,
            "LEASELINE_RESOLVER__DEADLINE": "2",
            "PGHOST": engine.pg.host,
            "PGPORT": str(engine.pg.port),
            **extra,
        }


@pytest.fixture
def node(openbao: OpenBao, tmp_path: Path) -> Iterator[NodeProxy]:
    proxy = NodeProxy(openbao, tmp_path, f"127.0.0.1:{free_port()}")
    yield proxy
    if proxy.proc is not None and proxy.proc.poll() is None:
        proxy.stop()


def worker(mode: str, ref: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, ref, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    data: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return data


def test_eight_workers_share_one_database_login_which_ends_with_the_proxy(
    openbao: OpenBao, vault_db: DatabaseEngine, node: NodeProxy
) -> None:
    role = vault_db.create_db_role("fleet-" + secrets.token_hex(3), default_ttl="10m")
    ref = f"vault://{vault_db.creds_path(role)}"
    node.start()
    since = len(openbao.audit_lines())
    env = node.worker_env(vault_db)
    assert "VAULT_TOKEN" not in env and "BAO_TOKEN" not in env
    procs = [worker("once", ref, env) for _ in range(8)]
    logins = [result(p) for p in procs]
    users = {r["username"] for r in logins}
    assert len(users) == 1, "every worker got the same database login"
    assert len({r["lease_id"] for r in logins}) == 1
    assert users <= vault_db.pg.roles()
    # the workers are gone: the credential is still served, and still logs in
    assert result(worker("once", ref, env))["username"] in users
    assert users <= vault_db.pg.roles(), "a worker's exit revoked nothing"
    assert requests_to(openbao, since, vault_db.creds_path(role)) == 1, "one read for all 9"

    stopped = time.monotonic()
    assert node.stop(signal.SIGTERM) == 0, node.log.read_text()[-3000:]
    while users & vault_db.pg.roles() and time.monotonic() - stopped < 10:
        time.sleep(0.2)
    assert not users & vault_db.pg.roles(), "the PostgreSQL role is gone within 10 s"
    assert not live_leases(openbao, role)
    assert "node token and its leases are revoked" in node.log.read_text()


def _lines_until(proc: subprocess.Popen[str], want: str, timeout: float = 60) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"the worker ended: {proc.stderr.read() if proc.stderr else ''}"
        seen.append(line.strip())
        if line.startswith(want):
            return seen
    raise AssertionError(f"no {want!r} line within {timeout}s: {seen[-5:]}")


def test_a_killed_proxy_is_reported_with_how_to_start_it_and_workers_recover(
    openbao: OpenBao, vault_db: DatabaseEngine, node: NodeProxy, tmp_path: Path
) -> None:
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret(path="fleet/kv", secret={"v": secrets.token_hex(8)})
    node.start()
    proc = worker(
        "loop",
        "vault://secret/fleet/kv#v",
        node.worker_env(vault_db, **{"LEASELINE_RESOLVER__CACHE": "false"}),
    )
    try:
        _lines_until(proc, "ok")
        node.stop(signal.SIGKILL)  # leaseline and, with it, its bao proxy child
        failed = _lines_until(proc, "err")[-1]
        assert "BackendUnavailable" in failed, failed
        assert f"leaseline proxy at {node.addr}" in failed, failed
        assert f"`leaseline proxy --listen {node.listen}`" in failed, failed
        node.start()  # a new proxy on the same address: the worker recovers on its own
        _lines_until(proc, "ok")
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()
    node.stop()
    # the killed proxy's node token is an orphan in the ledger: revoke --orphaned ends it
    out = subprocess.run(
        [sys.executable, "-m", "leaseline.cli", "leases", "revoke", "--orphaned"],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "revoked" in out.stdout + out.stderr


def test_the_proxy_child_is_restarted_when_it_crashes(
    openbao: OpenBao, vault_db: DatabaseEngine, node: NodeProxy
) -> None:
    role = vault_db.create_db_role("crash-" + secrets.token_hex(3), default_ttl="10m")
    ref = f"vault://{vault_db.creds_path(role)}"
    node.start()
    env = node.worker_env(vault_db)
    first = result(worker("once", ref, env))["username"]
    assert node.proc is not None
    children = Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while "restarting" not in node.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "exited with code" in node.log.read_text()
    again = result(worker("once", ref, {**env, "LEASELINE_RESOLVER__DEADLINE": "15"}))
    # a new proxy has an empty cache: a second credential, under the same node token
    assert again["username"] in vault_db.pg.roles()
    assert node.stop() == 0
    deadline = time.monotonic() + 10
    while {first, again["username"]} & vault_db.pg.roles() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not {first, again["username"]} & vault_db.pg.roles()


def test_a_lease_reaching_max_ttl_behind_the_proxy_rotates_without_reader_errors(
    openbao: OpenBao, vault_db: DatabaseEngine, node: NodeProxy
) -> None:
    role = vault_db.create_db_role(
        "maxttl-" + secrets.token_hex(3), default_ttl="6s", max_ttl="12s"
    )
    ref = f"vault://{vault_db.creds_path(role)}"
    node.start()
    env = node.worker_env(vault_db, LEASELINE_RESOLVER__DEADLINE="10")
    procs = [worker("rotate", ref, env, "30") for _ in range(2)]
    reports = [result(p) for p in procs]
    for report in reports:
        assert report["errors"] == [], report["errors"]
        assert int(str(report["rotations"])) >= 1, report
        # on_rotate fires for a new credential, never for a re-read of the same served lease
        # (a reader's retry_on_rotation may invalidate first: that new credential comes
        # without a rotation event, so fewer rotations than new credentials is possible)
        assert int(str(report["rotations"])) <= len(report["users"]) - 1, report  # type: ignore[arg-type]
    # both workers were served the same credentials: one per node, also after rotation
    assert set(reports[0]["users"]) & set(reports[1]["users"])  # type: ignore[call-overload]


def test_the_proxy_listens_on_a_unix_socket_made_0660(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path
) -> None:
    import stat
    import tempfile

    sock = Path(tempfile.mkdtemp(prefix="ll-", dir="/tmp")) / "proxy.sock"  # AF_UNIX: short path
    node = NodeProxy(openbao, tmp_path, f"unix:{sock}").start()
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        role = vault_db.create_db_role("sock-" + secrets.token_hex(3), default_ttl="10m")
        got = result(
            worker("once", f"vault://{vault_db.creds_path(role)}", node.worker_env(vault_db))
        )
        assert got["username"] in vault_db.pg.roles()
    finally:
        assert node.stop() == 0
    assert not sock.exists()


@pytest.mark.parametrize("listen", ["0.0.0.0:8100", "10.1.2.3:8100", "example.com:80", "8100"])
def test_a_listen_address_off_loopback_is_refused(listen: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "leaseline.cli", "proxy", "--listen", listen],
        env={**os.environ, "LEASELINE_LEDGER__PATH": str(tmp_path / "ledger.jsonl")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--listen" in out.stderr
    assert ("loopback" in out.stderr) or ("HOST:PORT" in out.stderr), out.stderr


def test_a_run_behind_the_proxy_records_no_lease_for_cleanup_to_revoke(
    openbao: OpenBao, vault_db: DatabaseEngine, node: NodeProxy, tmp_path: Path
) -> None:
    """The served lease is the node's: a killed task's `revoke --orphaned` must not end it for
    every other process, so the ledger holds no lease of it (and no token: the task has none)."""
    role = vault_db.create_db_role("run-" + secrets.token_hex(3), default_ttl="10m")
    node.start()
    ledger = tmp_path / "task-ledger.jsonl"
    env = {**node.worker_env(vault_db), "LEASELINE_LEDGER__PATH": str(ledger)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "leaseline.cli",
            "run",
            "--env",
            f"DB_USER=vault://{vault_db.creds_path(role)}#username",
            "--",
            sys.executable,
            "-c",
            "import os; assert os.environ['DB_USER']",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    ops = [json.loads(line)["op"] for line in ledger.read_text().splitlines()]
    assert "run" in ops
    assert "lease" not in ops and "token" not in ops, ops


def test_the_node_token_is_replaced_when_its_login_reaches_max_ttl(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path
) -> None:
    """An AppRole login whose token lives 30 s at most: the proxy logs in again before the node
    token dies, and the workers never see an error."""
    assert openbao.seeds is not None
    c = openbao.client()
    role = "proxy-short-" + secrets.token_hex(3)
    c.auth.approle.create_or_update_approle(
        role_name=role,
        token_policies=[openbao.seeds.policy],
        token_ttl="30s",
        token_max_ttl="30s",
        mount_point="approle",
    )
    role_id = c.auth.approle.read_role_id(role_name=role, mount_point="approle")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id(role_name=role, mount_point="approle")["data"][
        "secret_id"
    ]
    c.secrets.kv.v2.create_or_update_secret(path="fleet/short", secret={"v": secrets.token_hex(8)})
    node = NodeProxy(openbao, tmp_path, f"127.0.0.1:{free_port()}")
    auth = {"method": "approle", "role_id": role_id, "secret_id": secret_id}
    node.env = {
        **node.base,
        "VAULT_ADDR": openbao.addr,
        "LEASELINE_STORES__VAULT__AUTH": json.dumps(auth),
    }
    since = len(openbao.audit_lines())
    node.start()
    env = node.worker_env(
        vault_db, LEASELINE_RESOLVER__CACHE="false", LEASELINE_RESOLVER__DEADLINE="15"
    )
    proc = worker("loop", "vault://secret/fleet/short#v", env)
    try:
        _lines_until(proc, "ok")
        time.sleep(40)  # past the first login's max TTL
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert node.stop() == 0, node.log.read_text()[-3000:]
    lines = out.splitlines()
    assert lines and not [line for line in lines if line.startswith("err")], lines[-5:]
    assert "logging in again" in node.log.read_text()
    assert requests_to(openbao, since, "auth/approle/login") >= 2
