"""The lease engine against OpenBao + PostgreSQL with short TTLs (issue: lease engine)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from leaseline import BackendUnavailable, Resolver, Secret
from leaseline._config import Config

from tests.servers import DatabaseEngine, OpenBao


def resolver_for(bao: OpenBao, **resolver: Any) -> Resolver:
    store = {"addr": bao.addr, "token": bao.root_token, "timeout": 1}
    return Resolver(
        Config.from_mapping({"stores": {"vault": store}, "resolver": resolver}),
        handle_signals=False,
    )


def live_leases(bao: OpenBao, role: str) -> list[str]:
    client = bao.client()
    try:
        keys = client.list(f"sys/leases/lookup/database/creds/{role}/")
    except Exception:  # the prefix disappears with its last lease
        return []
    return list((keys or {}).get("data", {}).get("keys", []))


def db_users(engine: DatabaseEngine) -> set[str]:
    return {r for r in engine.pg.roles() if r.startswith("v-")}


def wait_until(predicate: Any, timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def test_twenty_tasks_outlive_max_ttl_with_zero_failed_queries(
    openbao: OpenBao, vault_db: DatabaseEngine
) -> None:
    role = vault_db.create_db_role("short-" + secrets.token_hex(3), default_ttl="3s", max_ttl="6s")
    ref = f"vault://{vault_db.creds_path(role)}"
    hold_for = 3 * 6.0
    failures: list[str] = []
    report: list[tuple[set[str], set[str]]] = []  # (credentials used, credentials announced)

    def task(n: int) -> None:
        announced: set[str] = set()
        swap = threading.Event()

        def on_rotate(_ref: str, old: Secret, new: Secret) -> None:
            announced.add(new.reveal("username"))
            swap.set()

        with resolver_for(openbao) as r, r.lease(ref, on_rotate=on_rotate) as held:
            announced.add(held.reveal("username"))  # the first credential needs no announcement
            used: set[str] = set()

            def connect() -> psycopg.Connection[Any]:
                user = held.reveal("username")
                used.add(user)
                return psycopg.connect(
                    host=vault_db.pg.host,
                    port=vault_db.pg.port,
                    dbname="postgres",
                    user=user,
                    password=held.reveal("password"),
                    connect_timeout=5,
                )

            conn = connect()
            end = time.monotonic() + hold_for
            while time.monotonic() < end:
                used.add(held.reveal("username"))  # what the resolver serves right now
                if swap.is_set():  # the pool swaps connections when the credential changes
                    swap.clear()
                    conn.close()
                    conn = connect()
                try:
                    conn.execute("select count(*) from training_rows").fetchone()
                except Exception as exc:
                    failures.append(f"task {n}: {type(exc).__name__}")
                time.sleep(0.1)
            conn.close()
            report.append((used, set(announced)))

    threads = [threading.Thread(target=task, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures[:5]
    assert len(report) == 20
    for used, announced in report:
        assert len(used) >= 3, "3x max_ttl must need at least two fresh credentials"
        assert used <= announced, "every credential change fired on_rotate"
    assert wait_until(lambda: not live_leases(openbao, role), 15)


CHILD = textwrap.dedent(
    """
    import os, sys, time, leaseline
    r = leaseline.Resolver()
    held = r.lease(sys.argv[1])
    h = held.__enter__()
    print(h.reveal("username"), flush=True)
    mode = sys.argv[2]
    if mode == "exit":
        held.__exit__(None, None, None)
        sys.exit(0)
    if mode == "raise":
        raise RuntimeError("training failed")
    if mode == "atexit":
        sys.exit(0)  # no explicit close: interpreter exit revokes
    time.sleep(60)
    """
)


@pytest.mark.parametrize("mode", ["exit", "raise", "atexit", "sigterm", "sigint"])
def test_no_lease_outlives_the_task(
    openbao: OpenBao, vault_db: DatabaseEngine, mode: str, tmp_path: Path
) -> None:
    role = vault_db.create_db_role("end-" + mode, default_ttl="10m", max_ttl="1h")
    env = {
        **os.environ,
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "LEASELINE_CONFIG": str(tmp_path / "none.toml"),
    }
    (tmp_path / "none.toml").write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, f"vault://{vault_db.creds_path(role)}", mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a runner that started us in the background (SIGINT ignored, which
        # children inherit and Python then respects) must not turn Ctrl-C into a no-op here
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    user = proc.stdout.readline().strip()
    assert user.startswith("v-"), proc.stderr.read() if proc.stderr else ""
    if mode in ("sigterm", "sigint"):
        assert user in db_users(vault_db) and live_leases(openbao, role)
        proc.send_signal(signal.SIGTERM if mode == "sigterm" else signal.SIGINT)
    proc.wait(timeout=30)
    assert not live_leases(openbao, role)
    assert user not in db_users(vault_db)


def test_after_sigkill_nothing_outlives_the_child_token(
    openbao: OpenBao, vault_db: DatabaseEngine, tmp_path: Path
) -> None:
    role = vault_db.create_db_role("killed", default_ttl="10m", max_ttl="1h")
    (tmp_path / "none.toml").write_text("")
    env = {
        **os.environ,
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "LEASELINE_CONFIG": str(tmp_path / "none.toml"),
        "LEASELINE_STORES__VAULT__CHILD_TOKEN__TTL": "4s",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, f"vault://{vault_db.creds_path(role)}", "hold"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    user = proc.stdout.readline().strip()
    assert user in db_users(vault_db)
    time.sleep(5)  # past the child token's first TTL: renewal keeps it (and the lease) alive
    assert live_leases(openbao, role) and user in db_users(vault_db)
    proc.kill()
    proc.wait()
    assert live_leases(openbao, role), "SIGKILL revokes nothing by itself"
    assert wait_until(lambda: not live_leases(openbao, role), 20)
    assert wait_until(lambda: user not in db_users(vault_db), 10)


def test_frozen_server_serves_cache_fails_fast_and_resumes(
    openbao: OpenBao, vault_db: DatabaseEngine, canary: Any
) -> None:
    value = canary.new()
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="llm/frozen", secret={"k": value}, mount_point="secret"
    )
    role = vault_db.create_db_role("frozen", default_ttl="20s", max_ttl="1h")
    ref = f"vault://{vault_db.creds_path(role)}"
    with resolver_for(openbao, deadline="3s", refresh_after="2s") as r:
        assert r.resolve("vault://secret/llm/frozen#k") == value
        first = r.get(ref)
        assert first.lease is not None
        first_expiry = first.lease.expires_at
        openbao.freeze()
        try:
            frozen_until = time.monotonic() + 10
            while time.monotonic() < frozen_until:
                assert r.resolve("vault://secret/llm/frozen#k") == value  # stale-if-error
                assert r.resolve(ref + "#username") == first.reveal("username")
                time.sleep(0.5)
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as info:
                r.resolve("vault://secret/llm/never-cached#k")
            assert time.monotonic() - started < 3 + 1 + 1.5  # deadline + one request timeout
            assert openbao.addr.split("://")[1] in str(info.value)
        finally:
            openbao.thaw()
        assert wait_until(lambda: (r.get(ref).lease.expires_at or 0) > first_expiry, 15)  # type: ignore[union-attr]
        assert r.get(ref).reveal("username") == first.reveal("username")  # renewed, not replaced
