"""`leaseline agent` against OpenBao + PostgreSQL: a `.pgpass` kept valid across 3x max_ttl."""

from __future__ import annotations

import json
import re
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.runtime.conftest import cli_env
from tests.servers import DatabaseEngine, OpenBao

pytestmark = pytest.mark.integration

LEASELINE = [sys.executable, "-m", "leaseline.cli"]
#: host:port:db:user:password, ":" and "\" escaped
PGPASS_LINE = re.compile(r"([^:\\]|\\.)+(:([^:\\]|\\.)+){4}\n\Z")


def live_leases(bao: OpenBao, role: str) -> list[str]:
    try:
        keys = bao.client().list(f"sys/leases/lookup/database/creds/{role}/")
    except Exception:  # the prefix disappears with its last lease
        return []
    return list((keys or {}).get("data", {}).get("keys", []))


def wait_until(predicate: Any, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def pgpass_template(tmp_path: Path, engine: DatabaseEngine, role: str) -> Path:
    ref = f"vault://{engine.creds_path(role)}"
    tpl = tmp_path / "pgpass.tpl"
    tpl.write_text(
        f"{engine.pg.host}:{engine.pg.port}:postgres:"
        f"{{{{ {ref}#username | pgpass }}}}:{{{{ {ref}#password | pgpass }}}}\n"
    )
    return tpl


def unescape(field: str) -> str:
    return re.sub(r"\\(.)", r"\1", field)


class Reader(threading.Thread):
    """Every 100 ms: read the file, check it is whole, log in through it (libpq's passfile)."""

    def __init__(self, path: Path, engine: DatabaseEngine) -> None:
        super().__init__(daemon=True)
        self.path, self.engine = path, engine
        self.stop = threading.Event()
        self.reads = 0
        self.logins = 0
        self.failures: list[str] = []
        self.torn = 0
        self.users: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                text = self.path.read_text()
            except OSError as exc:
                self.failures.append(f"read: {type(exc).__name__}")
                continue
            self.reads += 1
            if not PGPASS_LINE.match(text):
                self.torn += 1
            else:
                user = unescape(re.split(r"(?<!\\):", text.rstrip("\n"))[3])
                self.users.add(user)
                try:
                    with psycopg.connect(
                        host=self.engine.pg.host,
                        port=self.engine.pg.port,
                        dbname="postgres",
                        user=user,
                        passfile=str(self.path),
                        connect_timeout=5,
                    ) as conn:
                        conn.execute("select count(*) from training_rows").fetchone()
                    self.logins += 1
                except Exception as exc:
                    self.failures.append(f"login as {user}: {type(exc).__name__}")
            self.stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))


def start_agent(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen([*LEASELINE, "agent", *args], env=env, stdout=fh, stderr=fh)


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    ok = wait_until(lambda: path.exists() or proc.poll() is not None, 30)
    assert ok and proc.poll() is None, log.read_text()


def test_pgpass_stays_valid_across_three_max_ttls_and_sigterm_revokes_all(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path, secret_dir: Path
) -> None:
    role = vault_db.create_db_role("agent-" + secrets.token_hex(3), default_ttl="3s", max_ttl="6s")
    tpl = pgpass_template(tmp_path, vault_db, role)
    pgpass = secret_dir / ".pgpass"
    # an "application" that counts the SIGHUPs the agent sends it after each re-render
    hups = tmp_path / "hups"
    app = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal,sys,time\n"
            "f=open(sys.argv[1],'a')\n"
            "signal.signal(signal.SIGHUP, lambda *a: (f.write('hup\\n'), f.flush()))\n"
            "while True: time.sleep(1)\n",
            str(hups),
        ]
    )
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{app.pid}\n")
    env = cli_env(tmp_path, **openbao.env())
    log = tmp_path / "agent.log"
    agent = start_agent(
        ["--template", f"{tpl}:{pgpass}", "--signal", f"{pidfile}:HUP", "--interval", "0.2"],
        env,
        log,
    )
    reader = Reader(pgpass, vault_db)
    try:
        wait_for_file(pgpass, agent, log)
        assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
        reader.start()
        time.sleep(3 * 6.0)  # three times the role's max_ttl
        reader.stop.set()
        reader.join(timeout=30)
        assert agent.poll() is None, log.read_text()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log.read_text()
    finally:
        reader.stop.set()
        if agent.poll() is None:
            agent.kill()
        app.kill()
        app.wait()
    assert reader.failures == [], reader.failures[:5]
    assert reader.torn == 0
    assert reader.reads >= 100  # ~10 reads a second for 18 s
    assert reader.logins == reader.reads
    assert len(reader.users) >= 3, "3x max_ttl needs at least two fresh credentials"
    assert len(hups.read_text().splitlines()) >= 2  # --signal after each re-render
    assert live_leases(openbao, role) == []  # SIGTERM revoked every lease before exiting
    assert not {u for u in vault_db.pg.roles() if u in reader.users}
    records = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert records[-1]["op"] == "done"
    assert sum(r["op"] == "lease" for r in records) >= 3
    text = log.read_text()
    assert "re-rendered" in text and "every lease revoked" in text


def test_agent_takes_over_what_render_handed_over(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path, secret_dir: Path
) -> None:
    role = vault_db.create_db_role("handover-" + secrets.token_hex(3), default_ttl="10m")
    tpl = pgpass_template(tmp_path, vault_db, role)
    pgpass = secret_dir / ".pgpass"
    env = cli_env(tmp_path, **openbao.env())
    rendered = subprocess.run(
        [*LEASELINE, "render", "--template", f"{tpl}:{pgpass}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "1 lease(s) handed over" in rendered.stderr
    handed = live_leases(openbao, role)
    assert len(handed) == 1  # render exited; the init container's credential lives on
    user = unescape(re.split(r"(?<!\\):", pgpass.read_text().rstrip("\n"))[3])
    with psycopg.connect(
        host=vault_db.pg.host,
        port=vault_db.pg.port,
        dbname="postgres",
        user=user,
        passfile=str(pgpass),
        connect_timeout=5,
    ) as conn:
        conn.execute("select 1")

    listed = subprocess.run(
        [*LEASELINE, "leases", "list", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert any(
        e["ref"] == f"vault://{vault_db.creds_path(role)}" for e in json.loads(listed.stdout)
    )

    log = tmp_path / "agent.log"
    agent = start_agent(["--template", f"{tpl}:{pgpass}"], env, log)
    try:
        assert wait_until(lambda: "holding" in log.read_text() or agent.poll() is not None, 30)
        assert "took over 1 lease(s)" in log.read_text()
        assert len(live_leases(openbao, role)) == 2  # the handed-over one and the agent's own
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
    assert live_leases(openbao, role) == []
